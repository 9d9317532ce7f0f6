/*
 * Backpressure: never more than `window` records in flight, exec_try_submit()
 * says EXEC_EAGAIN when the window is full, exec_submit() blocks until a
 * consumer collects, and memory stays flat on a long input.
 */
#include "testutil.h"

#include <sched.h>

/* What process() sees: the test's own count of records in flight. */
struct bp {
    exec_t *_Atomic ex;
    atomic_long inflight; /* +1 after a submit returned, -1 after a next returned */
    long bound;           /* the most process() may see */
    atomic_long max_seen;
    atomic_uint_fast64_t processed;
};

static int bp_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    struct bp *b = ctx;
    long n = atomic_load(&b->inflight);
    TU_WCHECK(n <= b->bound);
    long m = atomic_load(&b->max_seen);
    while (n > m && !atomic_compare_exchange_weak(&b->max_seen, &m, n))
        ;
    exec_t *ex = atomic_load(&b->ex);
    if (ex) {
        exec_stats_t st;
        TU_WCHECK(exec_stats(ex, &st) == 0);
        exec_options_t o;
        TU_WCHECK(exec_get_options(ex, &o) == 0);
        /* exec_stats reads submitted before delivered: never overstates. */
        TU_WCHECK(st.in_flight <= o.window);
    }
    atomic_fetch_add(&b->processed, 1);
    return tu_rev_write(rec, len, out);
}

static const exec_ops_t bp_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE,
    .name = "bp",
    .process = bp_process,
};

static exec_t *mk(struct bp *b, unsigned workers, unsigned window, unsigned batch, unsigned flags)
{
    exec_options_t o = {.workers = workers, .window = window, .batch = batch, .flags = flags};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &bp_ops, b, EXEC_THREADS, &o), 0);
    atomic_store(&b->ex, ex);
    return ex;
}

/* Collects one result and checks it. */
static void take(exec_t *ex, struct bp *b, tu_tags_t *tags)
{
    exec_result_t r;
    assert_int_equal(exec_next(ex, &r, -1), 0);
    atomic_fetch_sub(&b->inflight, 1);
    assert_true(tu_rev_ok(&r));
    assert_true(tu_tags_mark(tags, r.tag));
}

/* ------------------------------------------------------------------------- */

/* Submits with exec_try_submit until refused; returns how many were taken. */
static uint64_t fill(exec_t *ex, struct bp *b, uint64_t *t, unsigned window)
{
    unsigned char rec[TU_REC_MAX];
    uint64_t n = 0;
    int rc;
    while ((rc = exec_try_submit(ex, rec, tu_rec(*t, rec), *t)) == 0) {
        atomic_fetch_add(&b->inflight, 1);
        (*t)++;
        n++;
        assert_true(n <= window);
    }
    assert_int_equal(rc, EXEC_EAGAIN);
    /* Refused by every submit call while nothing is collected. */
    assert_int_equal(exec_try_submit(ex, rec, tu_rec(*t, rec), *t), EXEC_EAGAIN);
    exec_record_t one = {rec, tu_rec(*t, rec), *t};
    size_t acc = 9;
    assert_int_equal(exec_try_submit_many(ex, &one, 1, &acc), EXEC_EAGAIN);
    assert_int_equal(acc, 0);
    return n;
}

/*
 * From empty, with nobody collecting, exactly `window` records are taken,
 * then EXEC_EAGAIN: the window, not the library's batch count, is the bound
 * (small batches sent early to idle workers must not use up the batches).
 */
static void full_window(unsigned window, unsigned batch)
{
    struct bp b = {.bound = window};
    exec_t *ex = mk(&b, 2, window, batch, 0);
    tu_tags_t tags;
    tu_tags_init(&tags, 2 * (uint64_t)window);
    uint64_t t = 0;
    for (int round = 0; round < 2; round++) {
        uint64_t n = fill(ex, &b, &t, window);
        if (n != window)
            print_error("window %u: refused after %" PRIu64 " records\n", window, n);
        assert_int_equal(n, window);
        exec_stats_t st;
        assert_int_equal(exec_stats(ex, &st), 0);
        tu_stats_sane(&st);
        assert_int_equal(st.submitted, t);
        assert_int_equal(st.in_flight, n);
        /* Collect everything: the window is empty again. */
        for (uint64_t i = 0; i < n; i++)
            take(ex, &b, &tags);
    }
    assert_int_equal(exec_finish(ex), 0);
    exec_result_t r;
    assert_int_equal(exec_next(ex, &r, -1), EXEC_EOF);
    assert_int_equal(atomic_load(&tags.count), t);
    assert_int_equal(atomic_load(&tags.bad), 0);
    tu_tags_free(&tags);
    exec_destroy(ex);
    tu_wfail_check();
}

static void test_full_window(void **s)
{
    (void)s;
    full_window(1000, 16);
    full_window(100, 128); /* window smaller than a batch */
    full_window(1, 0);
    full_window(5, 2);
    full_window(256, 0);
    full_window(4096, 0);
    full_window(20000, 64);
}

/*
 * One thread submits with exec_try_submit and collects when refused. Every
 * record it counts was accepted, every one it uncounts was delivered, and it
 * never does both at once, so process() must never see more than `window`.
 */
static void window_single_thread(unsigned workers, unsigned window, unsigned batch, unsigned flags)
{
    const uint64_t n = window < 16 ? 20000 : 200000; /* a tiny window is a round trip each */
    struct bp b = {.bound = window};
    exec_t *ex = mk(&b, workers, window, batch, flags);
    unsigned char rec[TU_REC_MAX];
    tu_tags_t tags;
    tu_tags_init(&tags, n);
    for (uint64_t t = 0; t < n; t++) {
        int rc;
        while ((rc = exec_try_submit(ex, rec, tu_rec(t, rec), t)) == EXEC_EAGAIN)
            take(ex, &b, &tags);
        assert_int_equal(rc, 0);
        atomic_fetch_add(&b.inflight, 1);
        if (t % 4096 == 0) {
            exec_stats_t st;
            assert_int_equal(exec_stats(ex, &st), 0);
            tu_stats_sane(&st);
            assert_true(st.in_flight <= window);
            assert_int_equal(st.submitted, t + 1);
        }
    }
    assert_int_equal(exec_finish(ex), 0);
    while (atomic_load(&b.inflight) > 0)
        take(ex, &b, &tags);
    exec_result_t r;
    assert_int_equal(exec_next(ex, &r, -1), EXEC_EOF);
    assert_true(tu_tags_complete(&tags));
    assert_true(atomic_load(&b.max_seen) <= (long)window);
    tu_tags_free(&tags);
    exec_destroy(ex);
    tu_wfail_check();
}

static void test_window_single_thread(void **s)
{
    (void)s;
    window_single_thread(2, 64, 8, 0);
    window_single_thread(3, 37, 0, EXEC_ORDERED);
    window_single_thread(2, 1, 0, 0);
    window_single_thread(4, 1000, 0, 0);
}

/* ------------------------------------------------------------------------- */

struct consumer {
    exec_t *ex;
    struct bp *b;
    tu_tags_t tags;
    uint64_t got;
    bool slow;
};

static void *consume(void *arg)
{
    struct consumer *c = arg;
    exec_result_t r;
    int rc;
    while ((rc = exec_next(c->ex, &r, -1)) == 0) {
        atomic_fetch_sub(&c->b->inflight, 1);
        TU_WCHECK(tu_rev_ok(&r));
        TU_WCHECK(tu_tags_mark(&c->tags, r.tag));
        c->got++;
        if (c->slow && c->got % 1000 == 0)
            tu_sleep_ms(1);
    }
    TU_WCHECK(rc == EXEC_EOF);
    return NULL;
}

/*
 * A blocking producer and a consumer thread. The consumer holds one result
 * between the library counting it collected and the test uncounting it, so
 * process() may see window + 1, never more.
 */
static void window_two_threads(unsigned workers, unsigned window, unsigned flags, bool slow)
{
    const uint64_t n = window < 16 ? 20000 : 200000;
    struct bp b = {.bound = (long)window + 1};
    exec_t *ex = mk(&b, workers, window, 0, flags);
    struct consumer c = {.ex = ex, .b = &b, .slow = slow};
    tu_tags_init(&c.tags, n);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, consume, &c), 0);
    unsigned char rec[TU_REC_MAX];
    for (uint64_t t = 0; t < n; t++) {
        assert_int_equal(exec_submit(ex, rec, tu_rec(t, rec), t), 0);
        atomic_fetch_add(&b.inflight, 1);
    }
    assert_int_equal(exec_finish(ex), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    tu_wfail_check();
    assert_int_equal(c.got, n);
    assert_true(tu_tags_complete(&c.tags));
    tu_tags_free(&c.tags);
    exec_destroy(ex);
}

static void test_window_two_threads(void **s)
{
    (void)s;
    window_two_threads(2, 100, 0, false);
    window_two_threads(3, 500, EXEC_ORDERED, true);
    window_two_threads(2, 1, 0, false);
}

/* ------------------------------------------------------------------------- */

struct blocker {
    exec_t *ex;
    uint64_t n;
    atomic_uint_fast64_t done; /* submits that returned */
};

static void *block_submit(void *arg)
{
    struct blocker *bl = arg;
    unsigned char rec[TU_REC_MAX];
    for (uint64_t t = 0; t < bl->n; t++) {
        int rc = exec_submit(bl->ex, rec, tu_rec(t, rec), t);
        TU_WCHECK(rc == 0);
        if (rc)
            break;
        atomic_fetch_add(&bl->done, 1);
    }
    return NULL;
}

/* With the window full, exec_submit() does not return until results are collected. */
static void blocking_submit(unsigned window, unsigned batch, bool many)
{
    struct bp b = {.bound = LONG_MAX};
    exec_t *ex = mk(&b, 2, window, batch, 0);
    struct blocker bl = {.ex = ex, .n = window + 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, block_submit, &bl), 0);
    assert_true(tu_wait_u64(&bl.done, window, 30000));
    /* Nothing was collected: the last submit must still be waiting. */
    tu_sleep_ms(50);
    assert_int_equal(atomic_load(&bl.done), window);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.submitted, window);
    tu_tags_t tags;
    tu_tags_init(&tags, window + 1);
    uint64_t got = 0;
    exec_result_t rs[64];
    while (got < window + 1) {
        size_t k = 1;
        if (many)
            assert_int_equal(exec_next_many(ex, rs, 64, &k, -1), 0);
        else
            assert_int_equal(exec_next(ex, rs, -1), 0);
        for (size_t i = 0; i < k; i++) {
            assert_true(tu_rev_ok(&rs[i]));
            assert_true(tu_tags_mark(&tags, rs[i].tag));
        }
        got += k;
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(atomic_load(&bl.done), window + 1);
    assert_int_equal(exec_finish(ex), 0);
    assert_int_equal(exec_next(ex, rs, -1), EXEC_EOF);
    assert_true(tu_tags_complete(&tags));
    tu_tags_free(&tags);
    exec_destroy(ex);
    tu_wfail_check();
}

static void test_blocking_submit(void **s)
{
    (void)s;
    blocking_submit(100, 10, false);
    blocking_submit(1, 0, false);
    blocking_submit(300, 0, true);
}

/*
 * A producer that submits one record at a time and waits for it to be done
 * (a server in latency mode) with nobody collecting yet: while fewer than
 * `window` records are in flight, exec_submit() must not block. Each record
 * then travels alone; batches must not run out before the window does.
 */
struct trickle {
    exec_t *ex;
    struct bp *b;
    uint64_t n;
    atomic_uint_fast64_t done;
};

static void *trickle_submit(void *arg)
{
    struct trickle *tr = arg;
    unsigned char rec[TU_REC_MAX];
    for (uint64_t t = 0; t < tr->n; t++) {
        int rc = exec_submit(tr->ex, rec, tu_rec(t, rec), t);
        TU_WCHECK(rc == 0);
        if (rc)
            break;
        atomic_fetch_add(&tr->done, 1);
        /* Give it a moment to run alone (it may also wait in a batch for
         * exec_next, which nobody calls here). */
        uint64_t end = tu_now_ms() + 2;
        while (atomic_load(&tr->b->processed) <= t && tu_now_ms() < end)
            sched_yield();
    }
    return NULL;
}

static void test_submit_within_window_never_blocks(void **s)
{
    (void)s;
    const unsigned window = 1000;
    struct bp b = {.bound = LONG_MAX};
    exec_t *ex = mk(&b, 2, window, 0, 0);
    struct trickle tr = {.ex = ex, .b = &b, .n = window - 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, trickle_submit, &tr), 0);
    bool ok = tu_wait_u64(&tr.done, tr.n, 60000);
    uint64_t stuck_at = atomic_load(&tr.done);
    /* Collect everything so that a blocked producer gets free either way. */
    uint64_t got = 0;
    exec_result_t r;
    while (got < stuck_at || atomic_load(&tr.done) < tr.n) {
        int rc = exec_next(ex, &r, 10);
        if (rc == 0)
            got++;
        else
            assert_int_equal(rc, EXEC_ETIMEDOUT);
        if (got == tr.n)
            break;
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    if (!ok)
        print_error("exec_submit blocked after %" PRIu64 " of %u records in flight (window %u)\n",
                    stuck_at, window - 1, window);
    assert_true(ok);
    assert_int_equal(exec_finish(ex), 0);
    while (exec_next(ex, &r, -1) == 0)
        got++;
    assert_int_equal(got, tr.n);
    exec_destroy(ex);
    tu_wfail_check();
}

/* exec_finish() from another thread releases a submitter blocked on a full
 * window: it returns EXEC_ESTATE and its record is not taken. */
static void test_finish_releases_blocked_submit(void **s)
{
    (void)s;
    struct bp b = {.bound = LONG_MAX};
    exec_t *ex = mk(&b, 2, 10, 0, 0);
    unsigned char rec[TU_REC_MAX];
    for (uint64_t t = 0; t < 10; t++)
        assert_int_equal(exec_try_submit(ex, rec, tu_rec(t, rec), t), 0);
    struct blocker bl = {.ex = ex, .n = 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, block_submit, &bl), 0);
    tu_sleep_ms(20);
    assert_int_equal(exec_finish(ex), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    /* The blocked submit failed (counted by TU_WCHECK), so `done` stays 0. */
    assert_int_equal(atomic_load(&bl.done), 0);
    assert_int_equal(atomic_exchange(&tu_wfail_n, 0), 1);
    uint64_t got = 0;
    exec_result_t r;
    int rc;
    while ((rc = exec_next(ex, &r, -1)) == 0)
        got++;
    assert_int_equal(rc, EXEC_EOF);
    assert_int_equal(got, 10);
    exec_destroy(ex);
}

/* ------------------------------------------------------------------------- */

struct longrun {
    uint64_t next, n, emitted;
    size_t rss_at_1m;
    int bad;
    unsigned char buf[TU_REC_MAX];
};

static int long_read(void *arg, const void **rec, size_t *len, uint64_t *tag)
{
    struct longrun *l = arg;
    if (l->next == l->n)
        return 0;
    *tag = l->next;
    *len = tu_rec(l->next, l->buf);
    *rec = l->buf;
    l->next++;
    return 1;
}

static int long_emit(void *arg, const exec_result_t *r)
{
    struct longrun *l = arg;
    if (!tu_rev_ok(r) || r->seq != r->tag)
        l->bad++;
    if (++l->emitted == 1000000)
        l->rss_at_1m = tu_rss();
    return 0;
}

/* RSS after 5,000,000 records (2,000,000 in a sanitized build) is within a small
 * bound of RSS after 1,000,000. */
static void test_memory_flat(void **s)
{
    (void)s;
    exec_options_t o = {.workers = 2};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &tu_rev_ops, NULL, EXEC_THREADS, &o), 0);
    struct longrun l = {.n = tu_sanitized() ? 2000000 : 5000000};
    assert_int_equal(exec_map(ex, long_read, &l, long_emit, &l), 0);
    size_t rss_end = tu_rss();
    print_message("rss after 1M records: %zu KiB, after 5M: %zu KiB\n", l.rss_at_1m >> 10,
                  rss_end >> 10);
    assert_int_equal(l.bad, 0);
    assert_int_equal(l.emitted, l.n);
    assert_true(l.rss_at_1m > 0);
    assert_true(rss_end <= l.rss_at_1m + ((size_t)2 << 20));
    exec_destroy(ex);
}

/* Room comes back with each result taken, not a whole batch at a time: a
 * window of 4 under batches of 128, on both backends. */
static void test_room_per_result(void **s)
{
    (void)s;
    static const exec_ops_t ops = {.version = EXEC_OPS_VERSION,
                                   .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
                                   .process = tu_rev_process};
    for (int k = 0; k < 2; k++) {
        if (tu_fork_left_out(k))
            continue;
        exec_options_t o = {.workers = 4, .window = 4};
        exec_t *ex = NULL;
        assert_int_equal(exec_create(&ex, &ops, NULL, k ? EXEC_FORK : EXEC_THREADS, &o), 0);
        unsigned char rec[TU_REC_MAX];
        uint64_t tag = 0;
        for (; tag < 4; tag++)
            assert_int_equal(exec_try_submit(ex, rec, tu_rec(tag, rec), tag), 0);
        assert_int_equal(exec_try_submit(ex, rec, tu_rec(tag, rec), tag), EXEC_EAGAIN);
        exec_result_t r;
        for (int j = 0; j < 20; j++) {
            assert_int_equal(exec_next(ex, &r, 10000), 0);
            assert_true(tu_rev_ok(&r));
            /* One taken: exactly one more fits. */
            assert_int_equal(exec_try_submit(ex, rec, tu_rec(tag, rec), tag), 0);
            tag++;
            assert_int_equal(exec_try_submit(ex, rec, tu_rec(tag, rec), tag), EXEC_EAGAIN);
        }
        assert_int_equal(exec_finish(ex), 0);
        int rc;
        unsigned left = 0;
        while ((rc = exec_next(ex, &r, 10000)) == 0)
            left++;
        assert_int_equal(rc, EXEC_EOF);
        assert_int_equal(left, 4);
        exec_destroy(ex);
    }
}

/*
 * A server's loop: submit one record, then take whatever is ready without
 * waiting (exec_next with timeout 0), again and again. Each empty look sends
 * the open batch, so batches leave with one record each; that must not run
 * the executor out of batches: exec_try_submit may refuse only once the
 * window itself is full, on both backends.
 */
static int slow_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ctx, (void)ws;
    struct timespec ts = {0, 300000};
    nanosleep(&ts, NULL);
    return tu_rev_write(rec, len, out);
}

static void test_polling_consumer_fills_window(void **s)
{
    (void)s;
    static const exec_ops_t ops = {.version = EXEC_OPS_VERSION,
                                   .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
                                   .process = slow_process};
    static const unsigned windows[] = {256, 2000};
    for (int k = 0; k < 2; k++)
        for (unsigned wi = 0; wi < 2; wi++) {
            if (tu_fork_left_out(k))
                continue;
            const unsigned window = windows[wi];
            exec_options_t o = {.workers = 2, .window = window};
            exec_t *ex = NULL;
            assert_int_equal(exec_create(&ex, &ops, NULL, k ? EXEC_FORK : EXEC_THREADS, &o), 0);
            unsigned char rec[TU_REC_MAX];
            uint64_t sent = 0, got = 0;
            exec_result_t r;
            int rc;
            while ((rc = exec_try_submit(ex, rec, tu_rec(sent, rec), sent)) == 0) {
                sent++;
                while (exec_next(ex, &r, 0) == 0) {
                    assert_true(tu_rev_ok(&r));
                    got++;
                }
            }
            assert_int_equal(rc, EXEC_EAGAIN);
            if (sent - got != window)
                print_error("%s, window %u: refused with %" PRIu64 " in flight\n",
                            k ? "fork" : "threads", window, sent - got);
            assert_int_equal(sent - got, window);
            assert_int_equal(exec_finish(ex), 0);
            while ((rc = exec_next(ex, &r, 10000)) == 0)
                got++;
            assert_int_equal(rc, EXEC_EOF);
            assert_int_equal(got, sent);
            exec_destroy(ex);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_window),
        cmocka_unit_test(test_window_single_thread),
        cmocka_unit_test(test_window_two_threads),
        cmocka_unit_test(test_blocking_submit),
        cmocka_unit_test(test_finish_releases_blocked_submit),
        cmocka_unit_test(test_submit_within_window_never_blocks),
        cmocka_unit_test(test_memory_flat),
        cmocka_unit_test(test_room_per_result),
        cmocka_unit_test(test_polling_consumer_fills_window),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
