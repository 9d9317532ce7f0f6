/*
 * Helpers shared by the test suites: a reference classifier with an independent
 * checker, record builders, a tag bitmap that checks exactly-once delivery,
 * failure reporting from worker threads, and process probes (threads, fds, RSS).
 *
 * cmocka's assert_* may only run in the test's own thread (they longjmp), so
 * code running in workers or helper threads reports through TU_WCHECK and the
 * test asserts tu_wfail_check() afterwards.
 */
#ifndef EXEC_TESTUTIL_H
#define EXEC_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "executor.h"
#include "suite.h"

/* ------------------------------------------------------------------------- */
/* Failures seen outside the test's thread                                   */
/* ------------------------------------------------------------------------- */

static atomic_uint tu_wfail_n;
static atomic_int tu_wfail_line;
static const char *_Atomic tu_wfail_expr;

static inline void tu__wfail(const char *expr, int line)
{
    if (atomic_fetch_add(&tu_wfail_n, 1) == 0) {
        atomic_store(&tu_wfail_expr, expr);
        atomic_store(&tu_wfail_line, line);
    }
}

/* A check for worker and helper threads: counts the failure, never aborts. */
#define TU_WCHECK(c)                                                                               \
    do {                                                                                           \
        if (!(c))                                                                                  \
            tu__wfail(#c, __LINE__);                                                               \
    } while (0)

/* In the test's thread: fails the test if any TU_WCHECK failed so far. */
#define tu_wfail_check()                                                                           \
    do {                                                                                           \
        unsigned n_ = atomic_load(&tu_wfail_n);                                                    \
        if (n_) {                                                                                  \
            print_error("%u check(s) failed off the test thread; first: %s at line %d\n", n_,      \
                        atomic_load(&tu_wfail_expr), atomic_load(&tu_wfail_line));                 \
            atomic_store(&tu_wfail_n, 0);                                                          \
            fail();                                                                                \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------------------- */
/* Records and the reference classifier                                      */
/* ------------------------------------------------------------------------- */

#define TU_REC_MAX 72 /* largest record tu_rec() builds */

static inline uint64_t tu_fnv64(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Builds the record for tag into buf (TU_REC_MAX bytes): the tag in its first
 * 8 bytes, then 0..63 bytes derived from it. Returns its length. */
static inline size_t tu_rec(uint64_t tag, unsigned char *buf)
{
    size_t len = 8 + (size_t)(tag * 7 % 64);
    memcpy(buf, &tag, 8);
    uint64_t x = tag * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 8; i < len; i++) {
        x ^= x >> 29;
        x *= 0xbf58476d1ce4e5b9ull;
        buf[i] = (unsigned char)(x >> 56);
    }
    return len;
}

/* The tag a tu_rec() record carries. */
static inline uint64_t tu_rec_tag(const void *rec, size_t len)
{
    uint64_t tag = UINT64_MAX;
    if (len >= 8)
        memcpy(&tag, rec, 8);
    return tag;
}

/* The reference classifier: the record's bytes reversed, then the FNV-1a hash
 * of the record (8 bytes). */
static inline int tu_rev_write(const void *rec, size_t len, exec_writer_t *out)
{
    if (len) {
        unsigned char *p = exec_write_reserve(out, len);
        if (!p)
            return -1;
        const unsigned char *s = rec;
        for (size_t i = 0; i < len; i++)
            p[i] = s[len - 1 - i];
    }
    uint64_t h = tu_fnv64(rec, len);
    return exec_write(out, &h, sizeof h);
}

static int tu_rev_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ctx;
    (void)ws;
    return tu_rev_write(rec, len, out) ? 1 : 0;
}

static const exec_ops_t tu_rev_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE,
    .name = "rev",
    .process = tu_rev_process,
};

/* Computed apart from the classifier: the result tu_rev_process() must give
 * for the record of tag. Returns its length (at most TU_REC_MAX + 8). */
static inline size_t tu_rev_expect(uint64_t tag, unsigned char *out)
{
    unsigned char rec[TU_REC_MAX];
    size_t len = tu_rec(tag, rec);
    for (size_t i = 0; i < len; i++)
        out[i] = rec[len - 1 - i];
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ rec[i]) * 0x100000001b3ull;
    memcpy(out + len, &h, 8);
    return len + 8;
}

/* True when res is the correct, successful result of tu_rev for its tag. */
static inline bool tu_rev_ok(const exec_result_t *res)
{
    unsigned char want[TU_REC_MAX + 8];
    size_t n = tu_rev_expect(res->tag, want);
    return res->status == 0 && res->user_code == 0 && res->data && res->len == n &&
           memcmp(res->data, want, n) == 0;
}

/* ------------------------------------------------------------------------- */
/* Exactly-once accounting                                                   */
/* ------------------------------------------------------------------------- */

typedef struct tu_tags {
    unsigned char *seen;
    uint64_t n;
    atomic_uint_fast64_t count; /* distinct tags seen */
    atomic_uint_fast64_t bad;   /* duplicates and tags out of range */
} tu_tags_t;

static inline void tu_tags_init(tu_tags_t *t, uint64_t n)
{
    t->seen = calloc(n ? n : 1, 1);
    assert_non_null(t->seen);
    t->n = n;
    atomic_store(&t->count, 0);
    atomic_store(&t->bad, 0);
}

/* Marks tag as delivered; false (and counted as bad) if it is out of range or
 * was delivered before. Safe from several threads. */
static inline bool tu_tags_mark(tu_tags_t *t, uint64_t tag)
{
    if (tag >= t->n || __atomic_exchange_n(&t->seen[tag], 1, __ATOMIC_RELAXED)) {
        atomic_fetch_add(&t->bad, 1);
        return false;
    }
    atomic_fetch_add(&t->count, 1);
    return true;
}

/* Every tag in [0, n) seen exactly once, nothing else. */
static inline bool tu_tags_complete(tu_tags_t *t)
{
    return atomic_load(&t->bad) == 0 && atomic_load(&t->count) == t->n;
}

static inline void tu_tags_free(tu_tags_t *t)
{
    free(t->seen);
    t->seen = NULL;
}

/* ------------------------------------------------------------------------- */
/* Process probes                                                            */
/* ------------------------------------------------------------------------- */

/* Entries in a directory, less `own` (descriptors opendir itself holds). */
static inline int tu_count_dir(const char *path, int own) { return tu_res__count_dir(path, own); }

/* Threads of this process. */
static inline int tu_threads(void) { return tu_count_dir("/proc/self/task", 0); }
/* Threads of this process once the count reaches want, or after limit_ms:
 * a joined thread can stay listed in /proc/self/task for a moment after
 * pthread_join() returns, so a count compared with an earlier one waits
 * for the kernel to settle (only a thread that really stays fails). */
static inline int tu_threads_settled(int want)
{
    int n = tu_threads();
    for (int i = 0; i < 2000 && n != want; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        n = tu_threads();
    }
    return n;
}
/* Open descriptors of this process. */
static inline int tu_fds(void) { return tu_count_dir("/proc/self/fd", 1); }

/* Live child processes of this process (any thread's), or -1 if the kernel
 * does not say (/proc/PID/task/TID/children). Zombies count until reaped. */
static inline int tu_children(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/self/task/%s/children", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) {
            n = -1;
            break;
        }
        long pid;
        while (fscanf(f, "%ld", &pid) == 1)
            n++;
        fclose(f);
    }
    closedir(d);
    return n;
}

static void *tu__nop(void *arg) { return arg; }

/* A cmocka group setup: starts and joins one thread, so that threads a
 * sanitizer runtime starts lazily with the first one are not counted
 * against the library by tests that compare tu_threads(). */
static inline int tu_warm_up(void **state)
{
    (void)state;
    pthread_t th;
    if (pthread_create(&th, NULL, tu__nop, NULL) != 0)
        return -1;
    return pthread_join(th, NULL);
}

/* Resident set size in bytes. */
static inline size_t tu_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

static inline void tu_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static inline uint64_t tu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits up to limit_ms for *v to reach want (a liveness bound, not a timing
 * claim: it only fails when something never happens). */
static inline bool tu_wait_u64(atomic_uint_fast64_t *v, uint64_t want, unsigned limit_ms)
{
    uint64_t end = tu_now_ms() + limit_ms;
    while (atomic_load(v) < want) {
        if (tu_now_ms() > end)
            return false;
        tu_sleep_ms(1);
    }
    return true;
}

/* Stats invariants; exec_stats() reads its counters one by one, so call this
 * only while nobody submits or collects (e.g. from the only producer and
 * consumer thread, between calls). */
static inline void tu_stats_sane(const exec_stats_t *st)
{
    assert_int_equal(st->delivered, st->ok + st->user_errors + st->crashed + st->timed_out +
                                        st->too_big + st->cancelled + st->worker_errors);
    assert_int_equal(st->submitted, st->delivered + st->in_flight);
}

#endif /* EXEC_TESTUTIL_H */
