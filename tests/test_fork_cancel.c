/* EXEC_FORK cancel: a queued record is never run, a running one has its
 * worker replaced; either way exactly one result, EXEC_ECANCELLED. */
#include "forkutil.h"

#include <pthread.h>
#include <sys/mman.h>

static exec_t *mk(struct fu_ctx *ctx, unsigned workers)
{
    exec_options_t o = {.workers = workers};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &fu_ops, ctx, EXEC_FORK, &o), 0);
    return ex;
}

static void submit(exec_t *ex, uint8_t action, uint64_t tag)
{
    struct fu_rec r = {.action = action, .value = tag};
    assert_int_equal(exec_submit(ex, &r, sizeof r, tag), 0);
}

/* A record that hangs for ever is cancelled while it runs; the records queued
 * behind it on the same worker still run. */
static void test_cancel_running(void **state)
{
    (void)state;
    struct fu_ctx ctx = {.salt = 8};
    exec_t *ex = mk(&ctx, 1);
    submit(ex, FU_HANG, 0);
    exec_result_t res;
    assert_int_equal(exec_next(ex, &res, 200), EXEC_ETIMEDOUT); /* it is running */
    for (uint64_t t = 1; t <= 50; t++)
        submit(ex, FU_OK, t);
    assert_int_equal(exec_cancel(ex, 0), 1);
    assert_int_equal(exec_finish(ex), 0);
    unsigned char seen[51] = {0};
    int rc;
    while ((rc = exec_next(ex, &res, 10000)) == 0) {
        assert_true(res.tag <= 50);
        assert_int_equal(seen[res.tag]++, 0);
        if (res.tag == 0) {
            assert_int_equal(res.status, EXEC_ECANCELLED);
        } else {
            assert_int_equal(res.status, 0);
            uint64_t v;
            memcpy(&v, res.data, sizeof v);
            assert_int_equal(v, fu_expect(res.tag, ctx.salt));
        }
    }
    assert_int_equal(rc, EXEC_EOF);
    for (int t = 0; t <= 50; t++)
        assert_int_equal(seen[t], 1);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.cancelled, 1);
    assert_true(st.respawns >= 1);
    exec_destroy(ex);
}

/* Records queued behind a hanging one are cancelled without running (a
 * crashing record, cancelled, never crashes its worker). */
static void test_cancel_queued(void **state)
{
    (void)state;
    struct fu_ctx ctx = {.salt = 9};
    exec_t *ex = mk(&ctx, 1);
    submit(ex, FU_HANG, 0);
    exec_result_t res;
    assert_int_equal(exec_next(ex, &res, 200), EXEC_ETIMEDOUT);
    for (uint64_t t = 1; t <= 20; t++)
        submit(ex, t % 2 ? FU_SEGV : FU_OK, t);
    for (uint64_t t = 1; t <= 20; t += 2)
        assert_int_equal(exec_cancel(ex, t), 1);
    assert_int_equal(exec_cancel(ex, 0), 1);
    assert_int_equal(exec_finish(ex), 0);
    unsigned n = 0;
    int rc;
    while ((rc = exec_next(ex, &res, 10000)) == 0) {
        n++;
        if (res.tag == 0 || res.tag % 2)
            assert_int_equal(res.status, EXEC_ECANCELLED);
        else
            assert_int_equal(res.status, 0);
    }
    assert_int_equal(rc, EXEC_EOF);
    assert_int_equal(n, 21);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.crashed, 0);
    exec_destroy(ex);
}

/* cancel_all under a running stream: every tag once, ok or cancelled. */
static void test_cancel_all_stream(void **state)
{
    (void)state;
    struct fu_ctx ctx = {.salt = 10};
    exec_t *ex = mk(&ctx, 2);
    const uint64_t n = 100000;
    unsigned char *seen = calloc(n, 1);
    exec_result_t res;
    uint64_t got = 0, cancelled = 0, claimed = 0;
    for (uint64_t i = 0; i < n; i++) {
        struct fu_rec r = {.value = i};
        int rc;
        while ((rc = exec_try_submit(ex, &r, sizeof r, i)) == EXEC_EAGAIN) {
            assert_int_equal(exec_next(ex, &res, 10000), 0);
            assert_int_equal(seen[res.tag]++, 0);
            got++;
            cancelled += res.status == EXEC_ECANCELLED;
            assert_true(res.status == 0 || res.status == EXEC_ECANCELLED);
        }
        assert_int_equal(rc, 0);
        if (i % 20000 == 19999) {
            int c = exec_cancel_all(ex);
            assert_true(c >= 0);
            claimed += (uint64_t)c;
        }
    }
    assert_int_equal(exec_finish(ex), 0);
    int rc;
    while ((rc = exec_next(ex, &res, 10000)) == 0) {
        assert_int_equal(seen[res.tag]++, 0);
        got++;
        cancelled += res.status == EXEC_ECANCELLED;
        assert_true(res.status == 0 || res.status == EXEC_ECANCELLED);
    }
    assert_int_equal(rc, EXEC_EOF);
    assert_int_equal(got, n);
    /* What cancel said it cancelled is exactly what came back cancelled. */
    assert_int_equal(cancelled, claimed);
    free(seen);
    exec_destroy(ex);
}

/*
 * One worker, every record in one batch or two, the last one deaf to
 * cancels and endless; it is cancelled while the records before it wait,
 * finished, to be collected (or after they were). It is stopped at once,
 * and none of the records before it runs twice (EXEC_NO_REPLAY: no canary
 * replay either).
 */
struct deaf {
    unsigned calls[16];
    unsigned deaf_running;
};

static struct deaf *deaf_sh;

static int deaf_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ctx;
    (void)ws;
    uint64_t tag;
    if (len != sizeof tag)
        return 99;
    memcpy(&tag, rec, sizeof tag);
    __atomic_fetch_add(&deaf_sh->calls[tag & 15], 1, __ATOMIC_ACQ_REL);
    if (tag == 9) {
        __atomic_store_n(&deaf_sh->deaf_running, 1, __ATOMIC_RELEASE);
        for (;;)
            pause(); /* never looks at exec_cancelled() */
    }
    return exec_write(out, &tag, sizeof tag);
}

static const exec_ops_t deaf_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_FORK_SAFE,
    .process = deaf_process,
};

static void cancel_deaf(bool collect_first)
{
    deaf_sh = mmap(NULL, sizeof *deaf_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    assert_true(deaf_sh != MAP_FAILED);
    memset(deaf_sh, 0, sizeof *deaf_sh);
    exec_options_t o = {.workers = 1, .batch = 16, .flags = EXEC_NO_REPLAY};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &deaf_ops, NULL, EXEC_FORK, &o), 0);
    uint64_t tags[10];
    exec_record_t recs[10];
    for (unsigned i = 0; i < 10; i++) {
        tags[i] = i;
        recs[i] = (exec_record_t){&tags[i], sizeof tags[i], i};
    }
    size_t acc = 0;
    assert_int_equal(exec_submit_many(ex, recs, 10, &acc), 0);
    assert_int_equal(exec_finish(ex), 0);
    for (int w = 0; w < 20000 && !__atomic_load_n(&deaf_sh->deaf_running, __ATOMIC_ACQUIRE); w++)
        usleep(1000);
    assert_int_equal(deaf_sh->deaf_running, 1);
    exec_result_t res;
    unsigned got = 0;
    int rc;
    if (collect_first) {
        /* Whatever finished (a batch waits for its last record). */
        while ((rc = exec_next(ex, &res, 300)) == 0) {
            assert_true(res.tag < 9);
            assert_int_equal(res.status, 0);
            got++;
        }
        assert_int_equal(rc, EXEC_ETIMEDOUT);
    }
    assert_int_equal(exec_cancel(ex, 9), 1);
    while ((rc = exec_next(ex, &res, 20000)) == 0) {
        got++;
        assert_int_equal(res.status, res.tag == 9 ? EXEC_ECANCELLED : 0);
    }
    assert_int_equal(rc, EXEC_EOF);
    assert_int_equal(got, 10);
    for (unsigned i = 0; i < 10; i++)
        assert_int_equal(deaf_sh->calls[i], 1);
    exec_destroy(ex);
    munmap(deaf_sh, sizeof *deaf_sh);
}

static void test_cancel_deaf_before_collect(void **state)
{
    (void)state;
    cancel_deaf(false);
}

static void test_cancel_deaf_after_collect(void **state)
{
    (void)state;
    cancel_deaf(true);
}

/*
 * Cancels crossed with slot refills: exec_run_records() (whose producer
 * rewrites a refilled slot's flags in one go) runs short records in small
 * batches that keep coming back for refills, while another thread cancels
 * records in flight, which keeps the supervisor's cancel watch looking at
 * the slot each worker's header names. The watch must read a slot's flags
 * only while the slot is its worker's (under its FIFO lock): the header may
 * name a slot just handed back and being refilled, and TSan reported the
 * race with the producer. Each record is cancelled or runs, exactly once,
 * and what exec_cancel() claimed is what comes back cancelled.
 */
static int spin_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ctx;
    (void)ws;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do
        clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000000 + (b.tv_nsec - a.tv_nsec) < 2000 &&
           !exec_cancelled(out));
    return exec_write(out, rec, len);
}

static const exec_ops_t spin_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_FORK_SAFE,
    .process = spin_process,
};

struct refill {
    exec_t *ex;
    uint64_t n, base;   /* this chunk: tags [base, base + n) */
    unsigned char *seen;
    uint64_t got, cancelled, claimed, bad;
    uint32_t stop;
};

static int refill_emit(void *arg, const exec_result_t *res, size_t n)
{
    struct refill *r = arg;
    for (size_t i = 0; i < n; i++) {
        const exec_result_t *x = &res[i];
        uint64_t v = 0;
        if (x->tag >= r->n * 8 || r->seen[x->tag]++)
            r->bad++;
        else if (x->status == EXEC_ECANCELLED)
            r->cancelled++;
        else if (x->status != 0 || x->len != sizeof v || (memcpy(&v, x->data, sizeof v), v != x->tag))
            r->bad++;
        __atomic_store_n(&r->got, r->got + 1, __ATOMIC_RELEASE);
    }
    return 0;
}

static void *refill_canceller(void *arg)
{
    struct refill *r = arg;
    uint64_t k = 0;
    while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
        /* A record a little ahead of what came back: queued or running. */
        uint64_t t = __atomic_load_n(&r->got, __ATOMIC_ACQUIRE) + 4 + k++ % 8;
        int c = exec_cancel(r->ex, t);
        if (c > 0)
            __atomic_fetch_add(&r->claimed, (uint64_t)c, __ATOMIC_ACQ_REL);
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void test_cancel_watch_vs_refill(void **state)
{
    (void)state;
    exec_options_t o = {.workers = 2, .batch = 4};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &spin_ops, NULL, EXEC_FORK, &o), 0);
    const uint64_t n = fu_sanitized() ? 10000 : 40000;
    struct refill r = {.ex = ex, .n = n / 8, .seen = calloc(n, 1)};
    exec_record_t *recs = calloc(n, sizeof *recs);
    uint64_t *tags = calloc(n, sizeof *tags);
    for (uint64_t i = 0; i < n; i++) {
        tags[i] = i;
        recs[i] = (exec_record_t){&tags[i], sizeof tags[i], i};
    }
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, refill_canceller, &r), 0);
    /* In chunks: each call starts a stream afresh. */
    for (uint64_t c = 0; c < 8; c++)
        assert_int_equal(exec_run_records(ex, recs + c * (n / 8), n / 8, refill_emit, &r), 0);
    __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    assert_int_equal(r.bad, 0);
    assert_int_equal(r.got, n);
    assert_int_equal(r.cancelled, r.claimed);
    assert_true(r.claimed > 0);
    free(r.seen);
    free(recs);
    free(tags);
    exec_destroy(ex);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_running),
        cmocka_unit_test(test_cancel_queued),
        cmocka_unit_test(test_cancel_all_stream),
        cmocka_unit_test(test_cancel_deaf_before_collect),
        cmocka_unit_test(test_cancel_deaf_after_collect),
        cmocka_unit_test(test_cancel_watch_vs_refill),
    };
    if (getenv("FU_ONLY"))
        cmocka_set_test_filter(getenv("FU_ONLY"));
    return tu_run_group_tests(tests, NULL, NULL);
}
