/*
 * Mutexes that know their holder in checked builds, so that a function's
 * "lock held" precondition is an assertion (EXEC__ASSERT_HELD), as SQLite's
 * sqlite3_mutex_held(). Checked builds: debug (no NDEBUG) and EXEC_CHECKS
 * (the sanitizer presets). Elsewhere these are plain pthread calls and the
 * assertions compile to nothing.
 */
#ifndef EXEC_LOCK_H
#define EXEC_LOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#if !defined(NDEBUG) || defined(EXEC_CHECKS)
#define EXEC__CHECKED 1
#endif

#ifdef EXEC__CHECKED
/* Prints what failed and aborts: checked builds only. Exported like the seam's
 * calls (exec_internal.h), for a backend built as a library of its own. */
#ifdef EXEC_BUILDING
__attribute__((noreturn, visibility("protected")))
#else
__attribute__((noreturn, visibility("default")))
#endif
void exec__assert_fail(const char *what, const char *file, int line);
#define EXEC__ASSERT(c) ((c) ? (void)0 : exec__assert_fail(#c, __FILE__, __LINE__))
#else
#define EXEC__ASSERT(c) ((void)0)
#endif

typedef struct exec__mutex {
    pthread_mutex_t m;
#ifdef EXEC__CHECKED
    pthread_t owner; /* meaningful while held is set; both written by the holder */
    int held;
#endif
} exec__mutex_t;

static inline void exec__mutex_init(exec__mutex_t *l)
{
    pthread_mutex_init(&l->m, NULL);
#ifdef EXEC__CHECKED
    l->held = 0;
#endif
}

static inline void exec__mutex_destroy(exec__mutex_t *l)
{
    pthread_mutex_destroy(&l->m);
}

static inline void exec__took(exec__mutex_t *l)
{
#ifdef EXEC__CHECKED
    __atomic_store_n(&l->owner, pthread_self(), __ATOMIC_RELAXED);
    __atomic_store_n(&l->held, 1, __ATOMIC_RELAXED);
#else
    (void)l;
#endif
}

static inline void exec__lock(exec__mutex_t *l)
{
    pthread_mutex_lock(&l->m);
    exec__took(l);
}

/* 0 when taken, non-zero when someone else holds it. */
static inline int exec__trylock(exec__mutex_t *l)
{
    int rc = pthread_mutex_trylock(&l->m);
    if (rc == 0)
        exec__took(l);
    return rc;
}

static inline void exec__unlock(exec__mutex_t *l)
{
#ifdef EXEC__CHECKED
    EXEC__ASSERT(__atomic_load_n(&l->held, __ATOMIC_RELAXED) &&
                 pthread_equal(__atomic_load_n(&l->owner, __ATOMIC_RELAXED), pthread_self()));
    __atomic_store_n(&l->held, 0, __ATOMIC_RELAXED);
#endif
    pthread_mutex_unlock(&l->m);
}

/* True when the calling thread holds l (checked builds; else always true). */
static inline bool exec__held(exec__mutex_t *l)
{
#ifdef EXEC__CHECKED
    return __atomic_load_n(&l->held, __ATOMIC_RELAXED) &&
           pthread_equal(__atomic_load_n(&l->owner, __ATOMIC_RELAXED), pthread_self());
#else
    (void)l;
    return true;
#endif
}

#define EXEC__ASSERT_HELD(l) EXEC__ASSERT(exec__held(l))

static inline void exec__cond_wait(pthread_cond_t *c, exec__mutex_t *l)
{
#ifdef EXEC__CHECKED
    __atomic_store_n(&l->held, 0, __ATOMIC_RELAXED);
#endif
    pthread_cond_wait(c, &l->m);
    exec__took(l);
}

/* pthread_cond_timedwait's result (0 or ETIMEDOUT). */
static inline int exec__cond_timedwait(pthread_cond_t *c, exec__mutex_t *l,
                                       const struct timespec *deadline)
{
#ifdef EXEC__CHECKED
    __atomic_store_n(&l->held, 0, __ATOMIC_RELAXED);
#endif
    int rc = pthread_cond_timedwait(c, &l->m, deadline);
    exec__took(l);
    return rc;
}

#endif /* EXEC_LOCK_H */
