/*
 * The whole-stream calls and the calling thread that works too:
 * exec_run_records() (records read in place on EXEC_THREADS, results a batch
 * at a time, chunk after chunk on one executor), exec_map() and
 * exec_run_records() with the caller running batches while contexts are
 * swapped under load, a host thread registered with liburcu calling them,
 * and their misuse.
 */
#define _LGPL_SOURCE
#include "testutil.h"

#include <sys/mman.h>
#include <urcu/urcu-memb.h>

/* A context: a salt in every result, and whether it was released (a record
 * that reads a released context is a use after release). */
struct rctx {
    uint64_t salt;
    atomic_uint released;
    atomic_uint readers_after_release;
};

/* Shared with forked workers. */
struct rshared {
    atomic_ullong calls, in_place, by_caller, inits_caller, finis_caller;
    atomic_ullong running;
};

struct rsetup {
    struct rshared *sh;
    pthread_t caller;
    const void *base; /* the caller's record bytes, for the zero-copy check */
    size_t span;
    uint64_t spin_ns; /* work per record */
    bool init_waits;  /* the caller's worker_init waits for workers' records */
    bool init_saw;    /* ... and saw them */
    uint64_t init_from; /* records run when the stream began */
    unsigned init_ms; /* the workers' worker_init (not the caller's) takes this long */
};

static struct rsetup R;

static uint64_t r_expect(uint64_t tag, uint64_t salt) { return tag * 0x9e3779b97f4a7c15ull ^ salt; }

static int r_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    struct rctx *c = ctx;
    atomic_fetch_add(&R.sh->running, 1);
    atomic_fetch_add(&R.sh->calls, 1);
    if (atomic_load(&c->released))
        atomic_fetch_add(&c->readers_after_release, 1);
    const char *p = rec;
    if (R.base && p >= (const char *)R.base && p < (const char *)R.base + R.span)
        atomic_fetch_add(&R.sh->in_place, 1);
    if (pthread_equal(pthread_self(), R.caller))
        atomic_fetch_add(&R.sh->by_caller, 1);
    if (R.spin_ns) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do
            clock_gettime(CLOCK_MONOTONIC, &t1);
        while ((uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000u + (uint64_t)t1.tv_nsec -
                   (uint64_t)t0.tv_nsec < R.spin_ns);
    }
    uint64_t tag;
    int rc = 1;
    if (len == sizeof tag) {
        memcpy(&tag, rec, sizeof tag);
        uint64_t v = r_expect(tag, c->salt);
        rc = exec_write(out, &v, sizeof v);
    }
    atomic_fetch_sub(&R.sh->running, 1);
    return rc;
}

static int r_init(void *ctx, void **ws)
{
    (void)ctx;
    *ws = NULL;
    if (!pthread_equal(pthread_self(), R.caller) && R.init_ms) {
        /* A table being built: CPU time (what the library weighs). */
        struct timespec a, b;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
        do
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
        while ((uint64_t)(b.tv_sec - a.tv_sec) * 1000000000u + (uint64_t)b.tv_nsec -
                   (uint64_t)a.tv_nsec < R.init_ms * 1000000ull);
    }
    if (pthread_equal(pthread_self(), R.caller)) {
        atomic_fetch_add(&R.sh->inits_caller, 1);
        /* A slow worker_init in the caller (a model loading): do the
         * workers go on meanwhile? Two batches' worth of records, within 10 s.
         * Counted from the stream's start: until the caller unparks the
         * worker, just before this call, no record runs (it rests, and the
         * caller runs none before its state), and from then on the worker
         * may run the whole window before this thread looks. */
        uint64_t c0 = R.init_from;
        for (int ms = 0; R.init_waits && ms < 10000 && !R.init_saw; ms++) {
            R.init_saw = atomic_load(&R.sh->calls) - c0 >= 128;
            usleep(1000);
        }
    }
    return 0;
}

static void r_fini(void *ctx, void *ws)
{
    (void)ctx;
    (void)ws;
    if (pthread_equal(pthread_self(), R.caller))
        atomic_fetch_add(&R.sh->finis_caller, 1);
}

static void r_release(void *ctx)
{
    atomic_fetch_add(&((struct rctx *)ctx)->released, 1);
}

static const exec_ops_t r_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "run",
    .process = r_process,
    .worker_init = r_init,
    .worker_fini = r_fini,
    .ctx_release = r_release,
};

/* r_ops without worker_init: the caller has its worker state at once. */
static const exec_ops_t r_ops_noinit = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "run",
    .process = r_process,
};

static void r_begin(void)
{
    R.sh = mmap(NULL, sizeof *R.sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(R.sh != MAP_FAILED);
    memset(R.sh, 0, sizeof *R.sh);
    R.caller = pthread_self();
    R.init_waits = R.init_saw = false;
    R.init_from = 0;
    R.init_ms = 0;
    R.base = NULL;
    R.span = 0;
    R.spin_ns = 0;
}

static void r_end(void)
{
    munmap(R.sh, sizeof *R.sh);
    R.sh = NULL;
}

/* Checks results by tag against the salt of the generation they carry. */
struct rcheck {
    unsigned char *seen;
    uint64_t n, got, bad, calls, next_seq;
    bool ordered;
    struct rctx *ctxs;
    unsigned nctx;
};

static int r_emit(void *arg, const exec_result_t *res, size_t k)
{
    struct rcheck *c = arg;
    c->calls++;
    if (k == 0 || k > 128)
        c->bad++;
    for (size_t i = 0; i < k; i++) {
        const exec_result_t *r = &res[i];
        uint64_t v;
        if (r->tag >= c->n || c->seen[r->tag]++ || r->status != 0 || r->len != sizeof v ||
            r->generation >= c->nctx) {
            c->bad++;
            continue;
        }
        memcpy(&v, r->data, sizeof v);
        if (v != r_expect(r->tag, c->ctxs[r->generation].salt))
            c->bad++;
        if (c->ordered && r->seq != c->next_seq)
            c->bad++;
        c->next_seq = r->seq + 1;
        c->got++;
    }
    return 0;
}

/* n records of 8 bytes (their tag) in one array the caller keeps. */
static exec_record_t *r_records(uint64_t n, uint64_t **bytes)
{
    exec_record_t *recs = calloc(n, sizeof *recs);
    uint64_t *b = calloc(n, sizeof *b);
    assert_non_null(recs);
    assert_non_null(b);
    for (uint64_t i = 0; i < n; i++) {
        b[i] = i;
        recs[i] = (exec_record_t){&b[i], sizeof b[i], i};
    }
    *bytes = b;
    R.base = b;
    R.span = n * sizeof *b;
    return recs;
}

/* Chunks of one array through one executor: every result exact, in order
 * within a call when ordered, records read in place on EXEC_THREADS (copied
 * once on EXEC_FORK), the caller running batches (threads). */
static void run_chunks(exec_backend_t be, unsigned flags)
{
    if (tu_fork_left_out(be == EXEC_FORK))
        return;
    r_begin();
    struct rctx ctx = {.salt = 11};
    exec_options_t o = {.workers = 2, .flags = flags};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &r_ops, &ctx, be, &o), 0);
    const uint64_t n = 300000;
    uint64_t *bytes;
    exec_record_t *recs = r_records(n, &bytes);
    struct rcheck c = {.seen = calloc(n, 1), .n = n, .ordered = flags & EXEC_ORDERED,
                       .ctxs = &ctx, .nctx = 1};
    assert_non_null(c.seen);
    /* Uneven chunks, the last one small. */
    const uint64_t chunk[] = {1, 1000, 77777, 100000, 121222};
    uint64_t at = 0;
    for (unsigned k = 0; k < 5; k++) {
        assert_int_equal(exec_run_records(ex, recs + at, chunk[k], r_emit, &c), 0);
        at += chunk[k];
        assert_int_equal(c.got, at); /* every result of the chunk came before it returned */
        exec_stats_t st;
        assert_int_equal(exec_stats(ex, &st), 0);
        assert_int_equal(st.in_flight, 0);
    }
    assert_int_equal(at, n);
    assert_int_equal(c.bad, 0);
    assert_true(c.calls < n); /* a batch at a time, not one record a call */
    if (be == EXEC_THREADS) {
        assert_int_equal(atomic_load(&R.sh->in_place), n);
        assert_true(atomic_load(&R.sh->by_caller) > 0);
        /* The caller's worker state was made once, for every call, and is
         * kept until exec_destroy gives it worker_fini. */
        assert_int_equal(atomic_load(&R.sh->inits_caller), 1);
        assert_int_equal(atomic_load(&R.sh->finis_caller), 0);
    } else {
        assert_int_equal(atomic_load(&R.sh->in_place), 0);
        assert_int_equal(atomic_load(&R.sh->by_caller), 0); /* never process() in the host */
    }
    /* The executor goes on as before. */
    uint64_t tag = 5;
    assert_int_equal(exec_submit(ex, &tag, sizeof tag, tag), 0);
    exec_result_t res;
    assert_int_equal(exec_next(ex, &res, 10000), 0);
    assert_int_equal(res.tag, 5);
    exec_destroy(ex);
    if (be == EXEC_THREADS)
        assert_int_equal(atomic_load(&R.sh->finis_caller), 1);
    free(c.seen);
    free(recs);
    free(bytes);
    r_end();
}

static void test_run_threads_unordered(void **s) { (void)s; run_chunks(EXEC_THREADS, 0); }
static void test_run_threads_ordered(void **s) { (void)s; run_chunks(EXEC_THREADS, EXEC_ORDERED); }
static void test_run_fork_unordered(void **s) { (void)s; run_chunks(EXEC_FORK, 0); }
static void test_run_fork_ordered(void **s) { (void)s; run_chunks(EXEC_FORK, EXEC_ORDERED); }

/* ------------------------------------------------------------------------- */
/* Swaps under load while the caller runs batches                            */
/* ------------------------------------------------------------------------- */

#define NCTX 64

struct swapper {
    exec_t *ex;
    struct rctx *ctxs;
    atomic_bool stop;
    unsigned swaps;
};

static void *swapper_main(void *arg)
{
    struct swapper *w = arg;
    while (!atomic_load(&w->stop) && w->swaps + 1 < NCTX) {
        TU_WCHECK(exec_swap_context(w->ex, &w->ctxs[w->swaps + 1]) == 0);
        w->swaps++;
        tu_sleep_ms(1);
    }
    return NULL;
}

struct mapper {
    uint64_t n, next;
    struct rcheck *c;
};

static int m_read(void *arg, const void **rec, size_t *len, uint64_t *tag)
{
    struct mapper *m = arg;
    static uint64_t buf;
    if (m->next == m->n)
        return 0;
    buf = m->next;
    *rec = &buf;
    *len = sizeof buf;
    *tag = m->next++;
    return 1;
}

static int m_emit(void *arg, const exec_result_t *res)
{
    struct mapper *m = arg;
    return r_emit(m->c, res, 1);
}

static void swaps_under_load(bool use_map, bool registered)
{
    r_begin();
    struct rctx *ctxs = calloc(NCTX, sizeof *ctxs);
    assert_non_null(ctxs);
    for (unsigned k = 0; k < NCTX; k++)
        ctxs[k].salt = 1000 + k;
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &r_ops, &ctxs[0], EXEC_THREADS, &o), 0);
    /* Records of ~2 us: the workers, not the producer, set the pace, so the
     * caller has waits to fill. */
    R.spin_ns = 2000;
    const uint64_t n = 200000;
    struct rcheck c = {.seen = calloc(n, 1), .n = n, .ctxs = ctxs, .nctx = NCTX};
    assert_non_null(c.seen);
    struct swapper w = {.ex = ex, .ctxs = ctxs};
    pthread_t th;
    if (registered)
        urcu_memb_register_thread(); /* the host's own use of liburcu */
    assert_int_equal(pthread_create(&th, NULL, swapper_main, &w), 0);
    if (use_map) {
        struct mapper m = {.n = n, .c = &c};
        assert_int_equal(exec_map(ex, m_read, &m, m_emit, &m), 0);
    } else {
        uint64_t *bytes;
        exec_record_t *recs = r_records(n, &bytes);
        for (uint64_t at = 0; at < n; at += 50000)
            assert_int_equal(exec_run_records(ex, recs + at, 50000, r_emit, &c), 0);
        free(recs);
        free(bytes);
    }
    atomic_store(&w.stop, true);
    pthread_join(th, NULL);
    if (registered) {
        /* The host's RCU still works: a read-side section, then a grace period. */
        urcu_memb_read_lock();
        urcu_memb_read_unlock();
        urcu_memb_synchronize_rcu();
        urcu_memb_unregister_thread();
    }
    tu_wfail_check();
    assert_int_equal(c.got, n);
    assert_int_equal(c.bad, 0);
    assert_true(w.swaps > 0);
    /* (Valgrind runs one thread at a time: whether the caller finds a batch
     * to run there depends on its scheduler, not on the library.) */
    if (!tu_under_valgrind())
        assert_true(atomic_load(&R.sh->by_caller) > 0);
    exec_destroy(ex);
    for (unsigned k = 0; k <= w.swaps; k++) {
        assert_int_equal(atomic_load(&ctxs[k].released), 1);
        assert_int_equal(atomic_load(&ctxs[k].readers_after_release), 0);
    }
    for (unsigned k = w.swaps + 1; k < NCTX; k++)
        assert_int_equal(atomic_load(&ctxs[k].released), 0);
    free(c.seen);
    free(ctxs);
    r_end();
}

static void test_run_swaps_under_load(void **s) { (void)s; swaps_under_load(false, false); }
static void test_map_swaps_under_load(void **s) { (void)s; swaps_under_load(true, false); }
static void test_map_from_urcu_thread(void **s) { (void)s; swaps_under_load(true, true); }
static void test_run_from_urcu_thread(void **s) { (void)s; swaps_under_load(false, true); }

/* ------------------------------------------------------------------------- */
/* Misuse and stopping                                                       */
/* ------------------------------------------------------------------------- */

static int stop_at_3(void *arg, const exec_result_t *res, size_t k)
{
    (void)res;
    unsigned *calls = arg;
    (void)k;
    return ++*calls == 3 ? 77 : 0;
}

static void *submit_other(void *arg)
{
    exec_t *ex = arg;
    uint64_t tag = 1;
    TU_WCHECK(exec_submit(ex, &tag, sizeof tag, tag) == EXEC_EBUSY);
    exec_result_t res;
    TU_WCHECK(exec_next(ex, &res, 0) == EXEC_EBUSY);
    return NULL;
}

/* ------------------------------------------------------------------------- */
/* One worker: the caller takes its place                                    */
/* ------------------------------------------------------------------------- */

/*
 * workers = 1 means one runner, as OpenMP with one thread: while the caller
 * runs batches in exec_run_records() or exec_map(), the one worker thread
 * rests. It may have taken one batch before it saw that (at most `batch`
 * records a call); beyond that every record runs in the caller. (No
 * worker_init here: while the caller makes its worker state, the worker goes
 * on, see test_caller_init_worker_goes_on.)
 */
static void one_worker(bool use_map, unsigned flags)
{
    r_begin();
    struct rctx ctx = {.salt = 21};
    exec_options_t o = {.workers = 1, .batch = 64, .flags = flags};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &r_ops_noinit, &ctx, EXEC_THREADS, &o), 0);
    R.spin_ns = 1000;
    const uint64_t n = 20000;
    const unsigned calls = 4;
    uint64_t *bytes;
    exec_record_t *recs = r_records(n, &bytes);
    struct rcheck c = {.seen = calloc(n, 1), .n = n, .ordered = flags & EXEC_ORDERED,
                       .ctxs = &ctx, .nctx = 1};
    assert_non_null(c.seen);
    if (use_map) {
        struct mapper m = {.n = n, .c = &c};
        assert_int_equal(exec_map(ex, m_read, &m, m_emit, &m), 0);
    } else {
        for (unsigned k = 0; k < calls; k++)
            assert_int_equal(exec_run_records(ex, recs + k * (n / calls), n / calls, r_emit, &c),
                             0);
    }
    assert_int_equal(c.got, n);
    assert_int_equal(c.bad, 0);
    uint64_t by_worker = atomic_load(&R.sh->calls) - atomic_load(&R.sh->by_caller);
    print_message("one worker (%s%s): %" PRIu64 " of %" PRIu64 " records ran in the worker "
                  "thread\n", use_map ? "exec_map" : "exec_run_records",
                  flags & EXEC_ORDERED ? ", ordered" : "", by_worker, n);
    assert_true(by_worker <= (use_map ? 1 : calls) * 64u);
    exec_destroy(ex);
    free(c.seen);
    free(recs);
    free(bytes);
    r_end();
}

/* 20,000 records of 1 us through ex from this thread: exec_map(), or
 * exec_run_records() in two calls (a state the caller made is kept). Every
 * result arrives, and is right. */
static void caller_stream(exec_t *ex, struct rctx *ctx, bool use_map)
{
    R.spin_ns = 1000;
    R.init_from = atomic_load(&R.sh->calls);
    const uint64_t n = 20000;
    uint64_t *bytes;
    exec_record_t *recs = r_records(n, &bytes);
    struct rcheck c = {.seen = calloc(n, 1), .n = n, .ctxs = ctx, .nctx = 1};
    assert_non_null(c.seen);
    if (use_map) {
        struct mapper m = {.n = n, .c = &c};
        assert_int_equal(exec_map(ex, m_read, &m, m_emit, &m), 0);
    } else {
        assert_int_equal(exec_run_records(ex, recs, n / 2, r_emit, &c), 0);
        assert_int_equal(exec_run_records(ex, recs + n / 2, n / 2, r_emit, &c), 0);
    }
    assert_int_equal(c.got, n);
    assert_int_equal(c.bad, 0);
    free(c.seen);
    free(recs);
    free(bytes);
}

/* The caller makes its worker state the first time it has a batch to run;
 * the worker it will stand in for runs meanwhile, however long worker_init
 * takes (it rests from then on). Later calls reuse the state. */
static void caller_init_worker_goes_on(bool use_map)
{
    r_begin();
    struct rctx ctx = {.salt = 23};
    exec_options_t o = {.workers = 1, .batch = 64};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &r_ops, &ctx, EXEC_THREADS, &o), 0);
    R.init_waits = true;
    caller_stream(ex, &ctx, use_map);
    assert_true(R.init_saw);
    assert_int_equal(atomic_load(&R.sh->inits_caller), 1);
    assert_true(atomic_load(&R.sh->by_caller) > 0);
    exec_destroy(ex);
    assert_int_equal(atomic_load(&R.sh->finis_caller), 1);
    r_end();
}

/* Workers whose worker_init took long (here 5 ms of CPU each): the caller makes no
 * state of its own, which would hold the stream up as long (it feeds the
 * workers and collects); it runs no record, and no worker rests. Every
 * record still yields its result, over two calls. */
static void caller_skips_dear_init(bool use_map)
{
    r_begin();
    R.init_ms = 5;
    struct rctx ctx = {.salt = 29};
    exec_options_t o = {.workers = 2, .batch = 64};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &r_ops, &ctx, EXEC_THREADS, &o), 0);
    caller_stream(ex, &ctx, use_map);
    assert_int_equal(atomic_load(&R.sh->inits_caller), 0);
    assert_int_equal(atomic_load(&R.sh->by_caller), 0);
    /* Both workers ran records: none rested for the caller. */
    for (unsigned i = 0; i < 2; i++) {
        exec_worker_stats_t ws;
        assert_int_equal(exec_worker_stats(ex, i, &ws), 0);
        assert_true(ws.startup_ns >= 5000000u);
        assert_true(ws.records > 0);
    }
    exec_destroy(ex);
    assert_int_equal(atomic_load(&R.sh->finis_caller), 0);
    r_end();
}

static void test_caller_skips_dear_init_run(void **s) { (void)s; caller_skips_dear_init(false); }
static void test_caller_skips_dear_init_map(void **s) { (void)s; caller_skips_dear_init(true); }

static void test_caller_init_worker_goes_on_run(void **s) { (void)s; caller_init_worker_goes_on(false); }
static void test_caller_init_worker_goes_on_map(void **s) { (void)s; caller_init_worker_goes_on(true); }

/* ------------------------------------------------------------------------- */
/* The library's own estimate: can this path win at this weight?             */
/* ------------------------------------------------------------------------- */

static void i_spin(uint64_t ns)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do
        clock_gettime(CLOCK_MONOTONIC, &b);
    while ((uint64_t)(b.tv_sec - a.tv_sec) * 1000000000u + (uint64_t)b.tv_nsec -
               (uint64_t)a.tv_nsec < ns);
}

struct ictx {
    uint64_t work_ns;
};

static int i_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    i_spin(((const struct ictx *)ctx)->work_ns);
    return exec_write(out, rec, len);
}

static const exec_ops_t i_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "insight",
    .process = i_process,
};

static uint64_t i_emit_ns;

static int i_emit(void *arg, const exec_result_t *res, size_t n)
{
    (void)arg;
    (void)res;
    i_spin(i_emit_ns * n); /* the caller's own work per result */
    return 0;
}

/* Records of 50 us and a cheap caller: the workers win, nothing to say.
 * Records of ~0 and a caller spending 20 us on each result: a plain loop
 * would be faster, and the executor says so. */
static void insight(exec_backend_t be)
{
    if (tu_fork_left_out(be == EXEC_FORK))
        return;
    if (tu_under_valgrind()) {
        /* Its figures are times, which valgrind stretches unevenly. */
        print_message("under valgrind: left out (figures of time)\n");
        return;
    }
    const struct {
        uint64_t work_ns, emit_ns;
        unsigned hints;
    } cases[2] = {{50000, 0, 0}, {0, 20000, EXEC_HINT_SLOWER | EXEC_HINT_HANDOVER}};
    for (int k = 0; k < 2; k++) {
        struct ictx ctx = {cases[k].work_ns};
        exec_options_t o = {.workers = 2};
        exec_t *ex;
        assert_int_equal(exec_create(&ex, &i_ops, &ctx, be, &o), 0);
        exec_stats_t st;
        assert_int_equal(exec_stats(ex, &st), 0);
        assert_int_equal(st.hints, 0); /* nothing known yet */
        assert_true(st.speedup_est == 0);
        const size_t n = 2000;
        exec_record_t *recs = calloc(n, sizeof *recs);
        uint64_t *v = calloc(n, sizeof *v);
        assert_non_null(recs);
        assert_non_null(v);
        for (size_t i = 0; i < n; i++)
            recs[i] = (exec_record_t){&v[i], sizeof v[i], i};
        i_emit_ns = cases[k].emit_ns;
        assert_int_equal(exec_run_records(ex, recs, n, i_emit, NULL), 0);
        assert_int_equal(exec_stats(ex, &st), 0);
        print_message("%s, records of %" PRIu64 " ns, %" PRIu64 " ns a result in the caller: "
                      "record_ns %" PRIu64 ", caller_ns %" PRIu64 ", speedup_est %.2f, hints %u\n",
                      exec_backend_name(be), cases[k].work_ns, cases[k].emit_ns, st.record_ns,
                      st.caller_ns, st.speedup_est, st.hints);
        /* (The spins count wall time, caller_ns CPU time: a busy machine
         * takes some of it.) */
        assert_true(st.record_ns >= cases[k].work_ns);
        assert_true(st.caller_ns >= cases[k].emit_ns / 2);
        assert_int_equal(st.hints, cases[k].hints);
        exec_destroy(ex);
        free(recs);
        free(v);
    }
}

static int s_count(void *arg, const exec_result_t *res, size_t n)
{
    size_t *ok = arg;
    for (size_t i = 0; i < n; i++)
        *ok += res[i].status == 0;
    return 0;
}

/* A short array of heavy records is spread over the workers: before the
 * first results nobody knows their weight, and full batches of them would
 * leave a worker idle while another ran the rest (on EXEC_FORK no worker
 * takes records queued to another: 46 of 48 went to one worker before). */
static void spread(exec_backend_t be)
{
    if (tu_fork_left_out(be == EXEC_FORK))
        return;
    struct ictx ctx = {2000000}; /* 2 ms a record */
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &i_ops, &ctx, be, &o), 0);
    enum { N = 48 };
    exec_record_t recs[N];
    uint64_t v[N];
    for (size_t i = 0; i < N; i++) {
        v[i] = i;
        recs[i] = (exec_record_t){&v[i], sizeof v[i], i};
    }
    size_t ok = 0;
    assert_int_equal(exec_run_records(ex, recs, N, s_count, &ok), 0);
    assert_int_equal(ok, N);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    /* Eight batches a worker at least. */
    assert_true(st.batches >= 16);
    uint64_t w[2] = {0, 0};
    for (unsigned i = 0; i < 2; i++) {
        exec_worker_stats_t ws;
        assert_int_equal(exec_worker_stats(ex, i, &ws), 0);
        w[i] = ws.records;
    }
    print_message("%s: workers ran %" PRIu64 " and %" PRIu64 " of %d records in %" PRIu64
                  " batches\n",
                  exec_backend_name(be), w[0], w[1], N, st.batches);
    if (be == EXEC_FORK && !tu_under_valgrind()) {
        /* (Under valgrind a worker may take long enough to start that the
         * other is given its share.) */
        assert_true(w[0] >= N / 4 && w[1] >= N / 4);
    }
    if (be == EXEC_THREADS)
        assert_true(w[0] + w[1] < N); /* the caller ran some itself */
    exec_destroy(ex);
}

/* EXEC_THREADS keeps its batches in mappings of groups of batches, the
 * record bytes there or malloc'd, a first result buffer there that grows
 * into malloc'd memory. Each layout, through exec_run_records() (in place)
 * and exec_map() (copies), chunk after chunk on one executor: every result
 * exact. */
static void batch_memory(exec_options_t o, uint64_t n)
{
    r_begin();
    struct rctx ctx = {.salt = 23};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &r_ops_noinit, &ctx, EXEC_THREADS, &o), 0);
    uint64_t *bytes;
    exec_record_t *recs = r_records(n, &bytes);
    for (int round = 0; round < 2; round++) { /* the second on batches used before */
        struct rcheck c = {.seen = calloc(n, 1), .n = n, .ordered = o.flags & EXEC_ORDERED,
                           .ctxs = &ctx, .nctx = 1, .next_seq = (uint64_t)round * n};
        assert_non_null(c.seen);
        assert_int_equal(exec_run_records(ex, recs, n, r_emit, &c), 0);
        assert_int_equal(c.got, n);
        assert_int_equal(c.bad, 0);
        free(c.seen);
    }
    exec_destroy(ex);
    assert_int_equal(atomic_load(&R.sh->in_place), 2 * n);
    /* exec_map() copies each record into its batch: a fresh executor. */
    assert_int_equal(exec_create(&ex, &r_ops_noinit, &ctx, EXEC_THREADS, &o), 0);
    struct rcheck c = {.seen = calloc(n, 1), .n = n, .ordered = o.flags & EXEC_ORDERED,
                       .ctxs = &ctx, .nctx = 1};
    assert_non_null(c.seen);
    struct mapper m = {.n = n, .c = &c};
    assert_int_equal(exec_map(ex, m_read, &m, m_emit, &m), 0);
    assert_int_equal(c.got, n);
    assert_int_equal(c.bad, 0);
    exec_destroy(ex);
    free(c.seen);
    free(recs);
    free(bytes);
    r_end();
}

static void test_batch_memory_layouts(void **s)
{
    (void)s;
    /* The default: one group, record bytes in it. */
    batch_memory((exec_options_t){.workers = 2}, 100000);
    /* Batches of 4096: 8 to a group (many groups), results past the first
     * buffer; ordered, so that batches wait for each other. */
    batch_memory((exec_options_t){.workers = 2, .batch = 4096, .window = 1u << 17,
                                  .flags = EXEC_ORDERED},
                 150000);
    /* Records up to 8 MiB: the record bytes malloc'd batch by batch. */
    batch_memory((exec_options_t){.workers = 2, .max_record = (size_t)8 << 20}, 50000);
    /* A small window: the groups' small parts not worth a huge page. */
    batch_memory((exec_options_t){.workers = 3, .window = 64, .batch = 16}, 20000);
}

static void test_spread_threads(void **s) { (void)s; spread(EXEC_THREADS); }
static void test_spread_fork(void **s) { (void)s; spread(EXEC_FORK); }

static void test_insight_threads(void **s) { (void)s; insight(EXEC_THREADS); }
static void test_insight_fork(void **s) { (void)s; insight(EXEC_FORK); }

static void test_one_worker_run(void **s) { (void)s; one_worker(false, 0); }
static void test_one_worker_run_ordered(void **s) { (void)s; one_worker(false, EXEC_ORDERED); }
static void test_one_worker_map(void **s) { (void)s; one_worker(true, 0); }

static void test_run_misuse(void **s)
{
    (void)s;
    r_begin();
    struct rctx ctx = {.salt = 3};
    exec_options_t o = {.workers = 2, .max_record = 16};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &r_ops, &ctx, EXEC_THREADS, &o), 0);
    uint64_t *bytes;
    exec_record_t *recs = r_records(100000, &bytes);
    struct rcheck c = {.seen = calloc(100000, 1), .n = 100000, .ctxs = &ctx, .nctx = 1};
    assert_int_equal(exec_run_records(NULL, recs, 1, r_emit, &c), EXEC_EINVAL);
    assert_int_equal(exec_run_records(ex, NULL, 1, r_emit, &c), EXEC_EINVAL);
    assert_int_equal(exec_run_records(ex, recs, 1, NULL, &c), EXEC_EINVAL);
    assert_int_equal(exec_run_records(ex, NULL, 0, r_emit, &c), 0);
    exec_record_t bad[2] = {recs[0], {NULL, 4, 9}};
    assert_int_equal(exec_run_records(ex, bad, 2, r_emit, &c), EXEC_EINVAL);
    char big[17] = {0};
    exec_record_t large[2] = {recs[0], {big, sizeof big, 9}};
    assert_int_equal(exec_run_records(ex, large, 2, r_emit, &c), EXEC_E2BIG);
    assert_int_equal(atomic_load(&R.sh->calls), 0); /* all checked before any ran */
    /* Records in flight from elsewhere: busy. */
    uint64_t tag = 7;
    assert_int_equal(exec_submit(ex, &tag, sizeof tag, tag), 0);
    assert_int_equal(exec_run_records(ex, recs, 10, r_emit, &c), EXEC_EBUSY);
    exec_result_t res;
    assert_int_equal(exec_next(ex, &res, 10000), 0);
    /* A stop: its value comes back, and nothing still reads the records. */
    unsigned calls = 0;
    assert_int_equal(exec_run_records(ex, recs, 100000, stop_at_3, &calls), 77);
    assert_int_equal(calls, 3);
    uint64_t seen_calls = atomic_load(&R.sh->calls);
    assert_int_equal(atomic_load(&R.sh->running), 0);
    tu_sleep_ms(20);
    assert_int_equal(atomic_load(&R.sh->calls), seen_calls);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.in_flight, 0);
    /* After exec_finish: out of order. */
    assert_int_equal(exec_finish(ex), 0);
    assert_int_equal(exec_run_records(ex, recs, 1, r_emit, &c), EXEC_ESTATE);
    exec_destroy(ex);
    free(c.seen);
    free(recs);
    free(bytes);
    r_end();
}

/* Other threads' submit/next while exec_map has the executor: EXEC_EBUSY. */
struct busy_map {
    exec_t *ex;
    uint64_t n, next;
    bool checked;
};

static int busy_read(void *arg, const void **rec, size_t *len, uint64_t *tag)
{
    struct busy_map *b = arg;
    static uint64_t v;
    if (b->next == b->n)
        return 0;
    if (b->next == b->n / 2 && !b->checked) {
        pthread_t th;
        TU_WCHECK(pthread_create(&th, NULL, submit_other, b->ex) == 0);
        pthread_join(th, NULL);
        b->checked = true;
    }
    v = b->next;
    *rec = &v;
    *len = sizeof v;
    *tag = b->next++;
    return 1;
}

static int busy_emit(void *arg, const exec_result_t *res)
{
    (void)arg;
    return res->status;
}

static void test_map_other_threads_busy(void **s)
{
    (void)s;
    r_begin();
    struct rctx ctx = {.salt = 4};
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &r_ops, &ctx, EXEC_THREADS, &o), 0);
    struct busy_map b = {.ex = ex, .n = 20000};
    assert_int_equal(exec_map(ex, busy_read, &b, busy_emit, &b), 0);
    assert_true(b.checked);
    tu_wfail_check();
    exec_destroy(ex);
    r_end();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_threads_unordered),
        cmocka_unit_test(test_run_threads_ordered),
        cmocka_unit_test(test_run_fork_unordered),
        cmocka_unit_test(test_run_fork_ordered),
        cmocka_unit_test(test_run_swaps_under_load),
        cmocka_unit_test(test_map_swaps_under_load),
        cmocka_unit_test(test_map_from_urcu_thread),
        cmocka_unit_test(test_run_from_urcu_thread),
        cmocka_unit_test(test_one_worker_run),
        cmocka_unit_test(test_one_worker_run_ordered),
        cmocka_unit_test(test_one_worker_map),
        cmocka_unit_test(test_caller_init_worker_goes_on_run),
        cmocka_unit_test(test_caller_init_worker_goes_on_map),
        cmocka_unit_test(test_caller_skips_dear_init_run),
        cmocka_unit_test(test_caller_skips_dear_init_map),
        cmocka_unit_test(test_insight_threads),
        cmocka_unit_test(test_insight_fork),
        cmocka_unit_test(test_spread_threads),
        cmocka_unit_test(test_batch_memory_layouts),
        cmocka_unit_test(test_spread_fork),
        cmocka_unit_test(test_run_misuse),
        cmocka_unit_test(test_map_other_threads_busy),
    };
    return tu_run_group_tests(tests, tu_warm_up, NULL);
}
