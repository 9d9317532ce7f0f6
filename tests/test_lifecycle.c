/*
 * Create and destroy: destroy of NULL, right after create, with records in
 * flight or inside process(); worker_init/worker_fini once per worker thread;
 * a failing worker_init makes exec_create fail with EXEC_EINIT and leaves no
 * thread, descriptor or state behind; ctx_release once at destroy.
 */
#include "testutil.h"

#define MAXW 16

struct wstate {
    unsigned magic;
    pthread_t tid;
    atomic_uint_fast64_t records;
};

#define WS_MAGIC 0x5157u

/* What the callbacks count; reset per test. */
struct life {
    atomic_uint inits, init_ok, finis, releases;
    atomic_uint fini_null; /* fini calls with no state (init never made one) */
    atomic_uint fail_at;   /* the n-th worker_init call (from 1) fails; 0: none */
    atomic_uint live;      /* states allocated and not yet freed */
    pthread_t tids[MAXW];
    pthread_t main_tid;
    void *released_ctx;
    /* Gate for a record held inside process(). */
    atomic_bool hold, holding, held_done;
    atomic_uint spin_us;
    atomic_bool whoami; /* results start with the worker's state pointer */
};

static struct life L;

static void life_reset(void)
{
    memset(&L, 0, sizeof L);
    L.main_tid = pthread_self();
}

static int life_init(void *ctx, void **ws)
{
    TU_WCHECK(ctx == &L);
    TU_WCHECK(!pthread_equal(pthread_self(), L.main_tid));
    unsigned n = atomic_fetch_add(&L.inits, 1) + 1;
    unsigned fail_at = atomic_load(&L.fail_at);
    if (fail_at && (n == fail_at || fail_at == UINT32_MAX))
        return -5; /* refuses before making any state */
    struct wstate *s = calloc(1, sizeof *s);
    TU_WCHECK(s != NULL);
    if (!s)
        return -1;
    s->magic = WS_MAGIC;
    s->tid = pthread_self();
    unsigned i = atomic_fetch_add(&L.init_ok, 1);
    TU_WCHECK(i < MAXW);
    if (i < MAXW)
        L.tids[i] = s->tid;
    atomic_fetch_add(&L.live, 1);
    *ws = s;
    return 0;
}

static void life_fini(void *ctx, void *ws)
{
    (void)ctx;
    struct wstate *s = ws;
    atomic_fetch_add(&L.finis, 1);
    if (!s) {
        atomic_fetch_add(&L.fini_null, 1);
        return;
    }
    /* Only states that worker_init made, each once, on the thread that made it. */
    TU_WCHECK(s->magic == WS_MAGIC);
    TU_WCHECK(pthread_equal(s->tid, pthread_self()));
    s->magic = 0;
    atomic_fetch_sub(&L.live, 1);
    free(s);
}

static int life_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ctx;
    struct wstate *s = ws;
    TU_WCHECK(s && s->magic == WS_MAGIC && pthread_equal(s->tid, pthread_self()));
    if (s)
        atomic_fetch_add(&s->records, 1);
    if (len == 4 && memcmp(rec, "HOLD", 4) == 0) {
        atomic_store(&L.holding, true);
        while (atomic_load(&L.hold))
            tu_sleep_ms(1);
        atomic_store(&L.held_done, true);
    }
    unsigned us = atomic_load(&L.spin_us);
    if (us) {
        struct timespec ts = {0, (long)us * 1000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&L.whoami))
        exec_write(out, &s, sizeof s);
    return tu_rev_write(rec, len, out);
}

static void life_release(void *ctx)
{
    L.released_ctx = ctx;
    atomic_fetch_add(&L.releases, 1);
}

static const exec_ops_t life_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE,
    .name = "life",
    .process = life_process,
    .worker_init = life_init,
    .worker_fini = life_fini,
    .ctx_release = life_release,
};

static exec_t *mk(unsigned workers, unsigned flags, unsigned window)
{
    exec_options_t o = {.workers = workers, .flags = flags, .window = window};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &life_ops, &L, EXEC_THREADS, &o), 0);
    assert_non_null(ex);
    return ex;
}

/* After destroy: every worker ran init and fini once, nothing is left. */
static void check_after(unsigned workers, int threads, int fds)
{
    assert_int_equal(atomic_load(&L.inits), workers);
    assert_int_equal(atomic_load(&L.init_ok), workers);
    assert_int_equal(atomic_load(&L.finis), workers);
    assert_int_equal(atomic_load(&L.fini_null), 0);
    assert_int_equal(atomic_load(&L.live), 0);
    assert_int_equal(atomic_load(&L.releases), 1);
    assert_ptr_equal(L.released_ctx, &L);
    assert_int_equal(tu_threads_settled(threads), threads);
    assert_int_equal(tu_fds(), fds);
    tu_wfail_check();
}

/* ------------------------------------------------------------------------- */

static void test_destroy_null(void **s)
{
    (void)s;
    exec_destroy(NULL);
}

static void test_destroy_after_create(void **s)
{
    (void)s;
    int threads = tu_threads(), fds = tu_fds();
    for (unsigned i = 0; i < 40; i++) {
        life_reset();
        unsigned w = 1 + i % 5;
        exec_t *ex = mk(w, i % 2 ? EXEC_ORDERED : 0, 0);
        exec_destroy(ex);
        check_after(w, threads, fds);
    }
    /* Also after finish, with nothing submitted. */
    life_reset();
    exec_t *ex = mk(2, 0, 0);
    assert_int_equal(exec_finish(ex), 0);
    exec_destroy(ex);
    check_after(2, threads, fds);
}

/* A whoami result: the worker's state, then tu_rev's result. Worker index
 * i always ran on the same worker (state), and different indices on
 * different ones. */
static void check_who(const exec_result_t *r, void **state_of, unsigned w)
{
    void *ws;
    assert_true(r->worker < w);
    assert_true(r->len > sizeof ws);
    memcpy(&ws, r->data, sizeof ws);
    exec_result_t rest = *r;
    rest.data = (const char *)r->data + sizeof ws;
    rest.len -= sizeof ws;
    assert_true(tu_rev_ok(&rest));
    if (!state_of[r->worker]) {
        for (unsigned i = 0; i < w; i++)
            assert_ptr_not_equal(state_of[i], ws);
        state_of[r->worker] = ws;
    }
    assert_ptr_equal(state_of[r->worker], ws);
}

/* worker_init/worker_fini run once in each worker thread, each on its own
 * thread; process() gets the state of the thread it runs on. */
static void test_init_fini_per_worker(void **s)
{
    (void)s;
    int threads = tu_threads(), fds = tu_fds();
    life_reset();
    atomic_store(&L.whoami, true);
    const unsigned w = 6;
    void *state_of[6] = {0};
    exec_t *ex = mk(w, 0, 0);
    /* Every worker has started before exec_create returned. */
    assert_int_equal(atomic_load(&L.init_ok), w);
    assert_true(tu_threads() >= threads + (int)w);
    for (unsigned i = 0; i < w; i++) {
        assert_false(pthread_equal(L.tids[i], pthread_self()));
        for (unsigned j = 0; j < i; j++)
            assert_false(pthread_equal(L.tids[i], L.tids[j]));
    }
    unsigned char rec[TU_REC_MAX];
    exec_result_t r;
    for (uint64_t t = 0; t < 100000; t++) {
        int rc;
        while ((rc = exec_try_submit(ex, rec, tu_rec(t, rec), t)) == EXEC_EAGAIN) {
            assert_int_equal(exec_next(ex, &r, -1), 0);
            check_who(&r, state_of, w);
        }
        assert_int_equal(rc, 0);
    }
    assert_int_equal(exec_finish(ex), 0);
    int rc;
    while ((rc = exec_next(ex, &r, -1)) == 0)
        check_who(&r, state_of, w);
    assert_int_equal(rc, EXEC_EOF);
    assert_int_equal(atomic_load(&L.inits), w); /* no more inits while running */
    assert_int_equal(atomic_load(&L.finis), 0); /* and no fini before destroy */
    exec_destroy(ex);
    check_after(w, threads, fds);
}

/* A failing worker_init: EXEC_EINIT, *exp NULL, no thread or descriptor left,
 * every state that was made is freed, and ctx stays the caller's. */
static void init_fails(unsigned workers, unsigned fail_at)
{
    int threads = tu_threads(), fds = tu_fds();
    life_reset();
    atomic_store(&L.fail_at, fail_at);
    exec_options_t o = {.workers = workers};
    exec_t *ex = (exec_t *)&o;
    assert_int_equal(exec_create(&ex, &life_ops, &L, EXEC_THREADS, &o), EXEC_EINIT);
    assert_null(ex);
    assert_int_equal(tu_threads_settled(threads), threads);
    assert_int_equal(tu_fds(), fds);
    assert_int_equal(atomic_load(&L.live), 0);
    assert_int_equal(atomic_load(&L.releases), 0);
    tu_wfail_check();
}

static void test_init_fails(void **s)
{
    (void)s;
    init_fails(1, 1);
    init_fails(4, 3);
    init_fails(4, 1);
    init_fails(4, 4);
    init_fails(3, UINT32_MAX); /* all of them */
    /* The next create, with init working again, is fine. */
    int threads = tu_threads(), fds = tu_fds();
    life_reset();
    exec_t *ex = mk(3, 0, 0);
    exec_destroy(ex);
    check_after(3, threads, fds);
}

/* worker_fini pairs with a successful worker_init: a worker whose init
 * refused has no state to tear down, so it gets no fini. */
static void test_fini_only_after_successful_init(void **s)
{
    (void)s;
    life_reset();
    atomic_store(&L.fail_at, 2);
    exec_options_t o = {.workers = 4};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &life_ops, &L, EXEC_THREADS, &o), EXEC_EINIT);
    tu_wfail_check(); /* life_fini checks every state it gets came from init */
    assert_int_equal(atomic_load(&L.init_ok), 3);
    assert_int_equal(atomic_load(&L.fini_null), 0);
    assert_int_equal(atomic_load(&L.finis), atomic_load(&L.init_ok));
}

/* ------------------------------------------------------------------------- */

static void in_flight(unsigned workers, unsigned flags, uint64_t n, uint64_t collect, bool fin)
{
    int threads = tu_threads(), fds = tu_fds();
    life_reset();
    atomic_store(&L.spin_us, 20);
    exec_t *ex = mk(workers, flags, 0);
    unsigned char rec[TU_REC_MAX];
    exec_result_t r;
    uint64_t got = 0;
    for (uint64_t t = 0; t < n; t++) {
        int rc;
        while ((rc = exec_try_submit(ex, rec, tu_rec(t, rec), t)) == EXEC_EAGAIN) {
            assert_int_equal(exec_next(ex, &r, -1), 0);
            got++;
        }
        assert_int_equal(rc, 0);
    }
    if (fin)
        assert_int_equal(exec_finish(ex), 0);
    for (; got < collect; got++) {
        assert_int_equal(exec_next(ex, &r, -1), 0);
        assert_true(tu_rev_ok(&r));
    }
    exec_destroy(ex); /* r.data was valid until here; records still in flight */
    check_after(workers, threads, fds);
}

static void test_destroy_in_flight(void **s)
{
    (void)s;
    in_flight(2, 0, 20000, 0, false);
    in_flight(3, EXEC_ORDERED, 20000, 10, false);
    in_flight(2, 0, 5000, 100, true);
    in_flight(1, 0, 3, 1, false); /* records may still sit in an open batch */
    in_flight(4, EXEC_ORDERED, 50000, 49000, true);
}

struct opener {
    atomic_bool *flag;
    unsigned ms;
};

static void *open_gate_later(void *arg)
{
    struct opener *o = arg;
    tu_sleep_ms(o->ms);
    atomic_store(o->flag, false);
    return NULL;
}

/* A record inside process() when destroy is called finishes first: destroy
 * waits for it, then the worker runs fini. */
static void test_destroy_while_processing(void **s)
{
    (void)s;
    int threads = tu_threads(), fds = tu_fds();
    life_reset();
    atomic_store(&L.hold, true);
    exec_t *ex = mk(2, 0, 0);
    assert_int_equal(exec_submit(ex, "HOLD", 4, 1), 0);
    unsigned char rec[TU_REC_MAX];
    for (uint64_t t = 2; t < 200; t++) /* no consumer: few enough never to block */
        assert_int_equal(exec_submit(ex, rec, tu_rec(t, rec), t), 0);
    exec_result_t r;
    /* next() flushes the open batch; wait until the record is inside process(). */
    uint64_t end = tu_now_ms() + 30000;
    while (!atomic_load(&L.holding)) {
        int rc = exec_next(ex, &r, 1);
        assert_true(rc == 0 || rc == EXEC_ETIMEDOUT);
        assert_true(tu_now_ms() < end);
    }
    struct opener op = {&L.hold, 50};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, open_gate_later, &op), 0);
    exec_destroy(ex);
    assert_true(atomic_load(&L.held_done));
    assert_int_equal(pthread_join(th, NULL), 0);
    check_after(2, threads, fds);
}

/* Results delivered but not collected after finish are dropped by destroy. */
static void test_destroy_uncollected(void **s)
{
    (void)s;
    int threads = tu_threads(), fds = tu_fds();
    life_reset();
    exec_t *ex = mk(2, EXEC_ORDERED, 0);
    unsigned char rec[TU_REC_MAX];
    for (uint64_t t = 0; t < 200; t++)
        assert_int_equal(exec_submit(ex, rec, tu_rec(t, rec), t), 0);
    assert_int_equal(exec_finish(ex), 0);
    /* Take one result, leave the rest. */
    exec_result_t r;
    assert_int_equal(exec_next(ex, &r, -1), 0);
    assert_true(tu_rev_ok(&r));
    exec_destroy(ex);
    check_after(2, threads, fds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_destroy_null),
        cmocka_unit_test(test_destroy_after_create),
        cmocka_unit_test(test_init_fini_per_worker),
        cmocka_unit_test(test_init_fails),
        cmocka_unit_test(test_fini_only_after_successful_init),
        cmocka_unit_test(test_destroy_in_flight),
        cmocka_unit_test(test_destroy_while_processing),
        cmocka_unit_test(test_destroy_uncollected),
    };
    return tu_run_group_tests(tests, tu_warm_up, NULL);
}
