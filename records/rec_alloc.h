/*
 * The record sources' allocations: in EXEC_FAULTS builds they can be made to
 * fail on demand (core/faults.c), as the executor's can; elsewhere plain
 * malloc.
 */
#ifndef EXEC_REC_ALLOC_H
#define EXEC_REC_ALLOC_H

#include <stdbool.h>
#include <stdlib.h>

#ifdef EXEC_FAULTS
bool exec__fault(void);
#define REC_FAILS() exec__fault()
#else
#define REC_FAILS() false
#endif

#define rec_malloc(n) (REC_FAILS() ? NULL : malloc(n))
#define rec_calloc(n, size) (REC_FAILS() ? NULL : calloc((n), (size)))
#define rec_realloc(p, n) (REC_FAILS() ? NULL : realloc((p), (n)))

#endif /* EXEC_REC_ALLOC_H */
