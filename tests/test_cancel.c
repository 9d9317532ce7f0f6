/* Cancel (queued, running, finished, all) and the insights figures, on EXEC_THREADS;
 * exec_cancel_all()'s count on both backends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "executor.h"
#include "suite.h"

#define NREC 2000

struct cctx {
    atomic_int gate;              /* records with tag == hold_tag wait while 0 */
    uint64_t hold_tag;
    atomic_uint calls[NREC];      /* process() calls per tag */
    atomic_int running_tag_seen;  /* a cooperative record started */
    int cooperative;              /* tag spin_tag polls exec_cancelled() */
    uint64_t spin_tag;
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int c_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    struct cctx *c = ctx;
    uint64_t tag;
    if (len != sizeof tag)
        return 99;
    memcpy(&tag, rec, sizeof tag);
    if (tag < NREC)
        atomic_fetch_add(&c->calls[tag], 1);
    if (tag == c->hold_tag)
        while (!atomic_load(&c->gate))
            sleep_ms(1);
    if (tag == c->spin_tag) {
        atomic_store(&c->running_tag_seen, 1);
        uint64_t t0 = now_ms();
        while (now_ms() - t0 < 10000) {
            if (c->cooperative && exec_cancelled(out))
                return 1; /* stopped early */
            if (!c->cooperative && atomic_load(&c->gate))
                break;
            sleep_ms(1);
        }
    }
    uint64_t r = tag * 3 + 1;
    return exec_write(out, &r, sizeof r);
}

static const exec_ops_t c_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "cancel",
    .process = c_process,
};

static struct cctx *mkctx(void)
{
    struct cctx *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->hold_tag = UINT64_MAX;
    c->spin_tag = UINT64_MAX;
    return c;
}

static exec_t *mk(struct cctx *c, unsigned workers, unsigned flags)
{
    exec_options_t o = {.workers = workers, .flags = flags, .batch = 8};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &c_ops, c, EXEC_THREADS, &o), 0);
    return ex;
}

static void submit(exec_t *ex, uint64_t tag)
{
    assert_int_equal(exec_submit(ex, &tag, sizeof tag, tag), 0);
}

/* Collects every result; checks each tag once; returns statuses by tag. */
static void collect(exec_t *ex, uint64_t n, int *status, unsigned *flags, bool ordered)
{
    unsigned char *seen = calloc(n, 1);
    assert_non_null(seen);
    exec_result_t r;
    uint64_t got = 0;
    int rc;
    while ((rc = exec_next(ex, &r, 20000)) == 0) {
        assert_true(r.tag < n);
        assert_int_equal(seen[r.tag], 0);
        seen[r.tag] = 1;
        if (ordered)
            assert_int_equal(r.tag, got);
        status[r.tag] = r.status;
        flags[r.tag] = r.flags;
        if (r.status == 0) {
            uint64_t v;
            assert_int_equal(r.len, sizeof v);
            memcpy(&v, r.data, sizeof v);
            assert_int_equal(v, r.tag * 3 + 1);
        } else {
            assert_int_equal(r.status, EXEC_ECANCELLED);
            assert_int_equal(r.len, 0);
        }
        got++;
    }
    assert_int_equal(rc, EXEC_EOF);
    assert_int_equal(got, n);
    free(seen);
}

/* Records still queued behind a stuck one are never processed. */
static void queued(unsigned flags)
{
    struct cctx *c = mkctx();
    c->hold_tag = 0;
    exec_t *ex = mk(c, 1, flags);
    for (uint64_t t = 0; t < 100; t++)
        submit(ex, t);
    while (atomic_load(&c->calls[0]) == 0)
        sleep_ms(1);
    for (uint64_t t = 50; t < 60; t++)
        assert_int_equal(exec_cancel(ex, t), 1);
    assert_int_equal(exec_cancel(ex, 55), EXEC_ENOENT); /* already cancelled */
    atomic_store(&c->gate, 1);
    assert_int_equal(exec_finish(ex), 0);
    int status[100];
    unsigned fl[100];
    collect(ex, 100, status, fl, flags & EXEC_ORDERED);
    for (uint64_t t = 0; t < 100; t++) {
        bool cancelled = t >= 50 && t < 60;
        assert_int_equal(status[t], cancelled ? EXEC_ECANCELLED : 0);
        assert_int_equal(atomic_load(&c->calls[t]), cancelled ? 0u : 1u);
        assert_int_equal(fl[t], 0);
    }
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.cancelled, 10);
    assert_int_equal(st.ok, 90);
    exec_destroy(ex);
    free(c);
}

static void test_cancel_queued_unordered(void **s) { (void)s; queued(0); }
static void test_cancel_queued_ordered(void **s) { (void)s; queued(EXEC_ORDERED); }

/* A running record: a cooperative process() stops early; one that ignores the
 * flag runs on, and either way the result says cancelled. */
static void running(int cooperative, unsigned flags)
{
    struct cctx *c = mkctx();
    c->spin_tag = 3;
    c->cooperative = cooperative;
    exec_t *ex = mk(c, 2, flags);
    for (uint64_t t = 0; t < 10; t++)
        submit(ex, t);
    while (!atomic_load(&c->running_tag_seen))
        sleep_ms(1);
    assert_int_equal(exec_cancel(ex, 3), 1);
    if (!cooperative)
        atomic_store(&c->gate, 1);
    assert_int_equal(exec_finish(ex), 0);
    int status[10];
    unsigned fl[10];
    collect(ex, 10, status, fl, flags & EXEC_ORDERED);
    for (uint64_t t = 0; t < 10; t++) {
        assert_int_equal(status[t], t == 3 ? EXEC_ECANCELLED : 0);
        assert_int_equal(fl[t], t == 3 && cooperative ? EXEC_RESULT_EARLY : 0u);
        assert_int_equal(atomic_load(&c->calls[t]), 1);
    }
    exec_destroy(ex);
    free(c);
}

static void test_cancel_running_cooperative(void **s) { (void)s; running(1, 0); }
static void test_cancel_running_ignored(void **s) { (void)s; running(0, EXEC_ORDERED); }

/* A finished record keeps its result; unknown tags are not found. */
static void test_cancel_finished(void **s)
{
    (void)s;
    struct cctx *c = mkctx();
    exec_t *ex = mk(c, 2, 0);
    submit(ex, 7);
    exec_result_t r;
    assert_int_equal(exec_next(ex, &r, 10000), 0);
    assert_int_equal(r.status, 0);
    assert_int_equal(exec_cancel(ex, 7), EXEC_ENOENT);
    assert_int_equal(exec_cancel(ex, 12345), EXEC_ENOENT);
    assert_int_equal(exec_cancel_all(ex), 0);
    assert_int_equal(exec_cancel(NULL, 1), EXEC_EINVAL);
    assert_int_equal(exec_cancel_all(NULL), EXEC_EINVAL);
    assert_int_equal(exec_cancelled(NULL), 0);
    assert_int_equal(exec_finish(ex), 0);
    assert_int_equal(exec_next(ex, &r, 1000), EXEC_EOF);
    exec_destroy(ex);
    free(c);
}

/* cancel_all while a stream flows: every tag exactly once, cancelled records
 * were never processed, the others are correct. */
static void all_under_load(unsigned flags)
{
    struct cctx *c = mkctx();
    c->hold_tag = 500; /* keeps a backlog behind it */
    exec_t *ex = mk(c, 2, flags);
    for (uint64_t t = 0; t < NREC; t++)
        submit(ex, t);
    while (atomic_load(&c->calls[500]) == 0)
        sleep_ms(1);
    int n = exec_cancel_all(ex);
    assert_true(n > 0);
    atomic_store(&c->gate, 1);
    assert_int_equal(exec_finish(ex), 0);
    int *status = calloc(NREC, sizeof *status);
    unsigned *fl = calloc(NREC, sizeof *fl);
    collect(ex, NREC, status, fl, flags & EXEC_ORDERED);
    int cancelled = 0;
    for (uint64_t t = 0; t < NREC; t++) {
        if (status[t] == EXEC_ECANCELLED) {
            cancelled++;
            /* Only the running record (500, or one on the other worker) ran. */
            assert_true(atomic_load(&c->calls[t]) <= 1);
        } else {
            assert_int_equal(atomic_load(&c->calls[t]), 1);
        }
    }
    /* A record finishing at the very moment of the call may keep its result
     * (the header says so): at most one per worker. */
    if (!(cancelled <= n && cancelled + 2 >= n))
        print_error("cancel_all counted %d, results say %d\n", n, cancelled);
    assert_true(cancelled <= n && cancelled + 2 >= n);
    assert_int_equal(status[500], EXEC_ECANCELLED);
    exec_destroy(ex);
    free(status);
    free(fl);
    free(c);
}

static void test_cancel_all_unordered(void **s) { (void)s; all_under_load(0); }
static void test_cancel_all_ordered(void **s) { (void)s; all_under_load(EXEC_ORDERED); }

/*
 * exec_cancel_all()'s count against the results, with batches of 4096 tiny
 * records: a worker runs ahead of the loop that flags them, and what it
 * finishes meanwhile keeps its result, so it must not be counted. Each call
 * may count at most one record per worker that still keeps its result (the
 * one finishing at that very moment).
 */
#define CNT_N 300000
#define CNT_EVERY 3000

struct cnt_consumer {
    exec_t *ex;
    unsigned char *seen;
    uint64_t got, cancelled;
    int rc;
};

static void *cnt_consume(void *arg)
{
    struct cnt_consumer *k = arg;
    exec_result_t r;
    int rc;
    while ((rc = exec_next(k->ex, &r, 20000)) == 0) {
        if (r.tag >= CNT_N || k->seen[r.tag]++)
            break;
        k->got++;
        k->cancelled += r.status == EXEC_ECANCELLED;
    }
    k->rc = rc;
    return NULL;
}

static void cancel_all_count(exec_backend_t backend)
{
    if (tu_fork_left_out(backend == EXEC_FORK))
        return;
    struct cctx *c = mkctx();
    exec_options_t o = {.workers = 2, .batch = 4096, .window = 65536};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &c_ops, c, backend, &o), 0);
    struct cnt_consumer k = {.ex = ex, .seen = calloc(CNT_N, 1)};
    assert_non_null(k.seen);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cnt_consume, &k), 0);
    uint64_t counted = 0, calls = 0;
    for (uint64_t t = 0; t < CNT_N; t++) {
        submit(ex, t);
        if (t % CNT_EVERY == CNT_EVERY - 1) {
            int n = exec_cancel_all(ex);
            assert_true(n >= 0);
            counted += (uint64_t)n;
            calls++;
        }
    }
    assert_int_equal(exec_finish(ex), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(k.rc, EXEC_EOF);
    assert_int_equal(k.got, CNT_N);
    if (!(k.cancelled <= counted && counted <= k.cancelled + 2 * calls))
        print_error("%" PRIu64 " calls counted %" PRIu64 ", results say %" PRIu64 " cancelled\n",
                    calls, counted, k.cancelled);
    assert_true(k.cancelled > 0);
    assert_true(k.cancelled <= counted && counted <= k.cancelled + 2 * calls);
    exec_destroy(ex);
    free(k.seen);
    free(c);
}

static void test_cancel_all_count_threads(void **s) { (void)s; cancel_all_count(EXEC_THREADS); }
static void test_cancel_all_count_fork(void **s) { (void)s; cancel_all_count(EXEC_FORK); }

/* Insights: per-worker figures add up, latency samples exist, utilisation sane. */
static void test_insights(void **s)
{
    (void)s;
    struct cctx *c = mkctx();
    exec_t *ex = mk(c, 2, 0);
    for (uint64_t t = 0; t < NREC; t++)
        submit(ex, t);
    assert_int_equal(exec_finish(ex), 0);
    exec_result_t r;
    while (exec_next(ex, &r, 10000) == 0)
        ;
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    uint64_t recs = 0, hist = 0;
    for (unsigned i = 0; i < 2; i++) {
        exec_worker_stats_t ws;
        assert_int_equal(exec_worker_stats(ex, i, &ws), 0);
        assert_int_equal(ws.index, i);
        assert_int_equal(ws.pid, 0);
        recs += ws.records;
        assert_true(ws.batches <= ws.records);
    }
    assert_int_equal(recs, NREC);
    exec_worker_stats_t ws;
    assert_int_equal(exec_worker_stats(ex, 2, &ws), EXEC_EINVAL);
    assert_int_equal(exec_worker_stats(NULL, 0, &ws), EXEC_EINVAL);
    for (unsigned k = 0; k < EXEC_LAT_BUCKETS; k++)
        hist += st.lat_hist[k];
    assert_int_equal(hist, st.lat_samples);
    assert_true(st.lat_samples >= st.batches / 2 && st.lat_samples <= st.batches);
    assert_true(st.lat_p50_ns > 0 && st.lat_p50_ns <= st.lat_p99_ns && st.lat_p99_ns <= st.lat_p999_ns);
    assert_true(st.busy_ns > 0);
    assert_true(st.utilisation > 0.0 && st.utilisation <= 1.0);
    exec_destroy(ex);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_queued_unordered),
        cmocka_unit_test(test_cancel_queued_ordered),
        cmocka_unit_test(test_cancel_running_cooperative),
        cmocka_unit_test(test_cancel_running_ignored),
        cmocka_unit_test(test_cancel_finished),
        cmocka_unit_test(test_cancel_all_unordered),
        cmocka_unit_test(test_cancel_all_ordered),
        cmocka_unit_test(test_cancel_all_count_threads),
        cmocka_unit_test(test_cancel_all_count_fork),
        cmocka_unit_test(test_insights),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
