/*
 * The library's allocations. Builds with EXEC_FAULTS (the asan preset) can
 * make the Nth of them fail (exec__fault(), core/faults.c), so that a test
 * walks every allocation along a path and checks that each failure gives its
 * documented error and leaks nothing. Other builds call malloc directly and
 * have no such state.
 */
#ifndef EXEC_ALLOC_H
#define EXEC_ALLOC_H

#include <stdbool.h>
#include <stdlib.h>

#ifdef EXEC_FAULTS
/* True when the allocation being made must fail. Any thread. */
bool exec__fault(void);
#else
static inline bool exec__fault(void) { return false; }
#endif

static inline void *exec__malloc(size_t n)
{
    return exec__fault() ? NULL : malloc(n);
}

static inline void *exec__calloc(size_t n, size_t size)
{
    return exec__fault() ? NULL : calloc(n, size);
}

static inline void *exec__realloc(void *p, size_t n)
{
    return exec__fault() ? NULL : realloc(p, n);
}

#endif /* EXEC_ALLOC_H */
