/*
 * exec_swap_context under load: every record sees exactly one context and the
 * generation that goes with it; records submitted after a swap returned see
 * the new context (or a newer one); each old context is released exactly once,
 * only after its last reader and never on a worker; the current one once at
 * destroy.
 */
#include "testutil.h"

#include <sched.h>

#define SWAPS 1000u
#define POISON UINT64_MAX

struct sctx {
    _Atomic uint64_t id; /* its index; POISON once released */
    atomic_long readers;
    atomic_int released;
    atomic_int release_calls;
};

/* State shared by the callbacks (tests run one at a time). */
static struct sctx ctxs[SWAPS + 1];
static pthread_t worker_tids[64];
static atomic_uint nworkers;
static atomic_uint_fast64_t released_total;
static atomic_uint_fast64_t swaps_started; /* swaps asked for so far */
static atomic_uint_fast64_t max_id_seen;
static atomic_uint_fast64_t processed;
static atomic_bool destroying;
static bool sequential; /* one swapper: ctxs[k] goes in with the k-th swap */
/* A swap proves the new context with worker_init on the swapping thread. */
static _Thread_local bool swapping;
static struct sctx *refuse; /* worker_init refuses this context */
static atomic_uint proofs;
static atomic_int fini_calls;

static void reset(void)
{
    for (unsigned i = 0; i <= SWAPS; i++) {
        atomic_store(&ctxs[i].id, i);
        atomic_store(&ctxs[i].readers, 0);
        atomic_store(&ctxs[i].released, 0);
        atomic_store(&ctxs[i].release_calls, 0);
    }
    atomic_store(&nworkers, 0);
    atomic_store(&released_total, 0);
    atomic_store(&swaps_started, 0);
    atomic_store(&max_id_seen, 0);
    atomic_store(&processed, 0);
    atomic_store(&destroying, false);
    atomic_store(&proofs, 0);
    refuse = NULL;
    atomic_store(&fini_calls, 0);
    sequential = true;
}


static int sw_init(void *ctx, void **ws)
{
    *ws = NULL;
    if (swapping) {
        atomic_fetch_add(&proofs, 1);
        return ctx == refuse ? -1 : 0;
    }
    unsigned i = atomic_fetch_add(&nworkers, 1);
    TU_WCHECK(i < 64);
    if (i < 64)
        worker_tids[i] = pthread_self();
    return 0;
}


static void sw_fini(void *ctx, void *ws)
{
    (void)ctx;
    TU_WCHECK(ws == NULL);
    if (swapping)
        atomic_fetch_add(&fini_calls, 1);
}

/* A record: [tag 8][least generation it may see 8]. Its result: [ctx id 8][tag 8]. */
static int sw_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    struct sctx *c = ctx;
    TU_WCHECK(c >= ctxs && c <= &ctxs[SWAPS]);
    atomic_fetch_add(&c->readers, 1);
    TU_WCHECK(!atomic_load(&c->released));
    uint64_t id = atomic_load(&c->id);
    TU_WCHECK(len == 16);
    uint64_t tag = 0, least = 0;
    if (len == 16) {
        memcpy(&tag, rec, 8);
        memcpy(&least, (const char *)rec + 8, 8);
    }
    /* A little work between the two reads. */
    uint64_t h = tu_fnv64(rec, len);
    TU_WCHECK(atomic_load(&c->id) == id);
    TU_WCHECK(!atomic_load(&c->released));
    TU_WCHECK(id != POISON && id >= least);
    uint64_t m = atomic_load(&max_id_seen);
    while (id > m && !atomic_compare_exchange_weak(&max_id_seen, &m, id))
        ;
    atomic_fetch_add(&processed, 1);
    atomic_fetch_sub(&c->readers, 1);
    exec_write(out, &id, 8);
    exec_write(out, &tag, 8);
    return h == 0; /* never: keeps h used */
}

static void sw_release(void *ctx)
{
    struct sctx *c = ctx;
    TU_WCHECK(c >= ctxs && c <= &ctxs[SWAPS]);
    uint64_t idx = (uint64_t)(c - ctxs);
    TU_WCHECK(atomic_load(&c->readers) == 0);
    TU_WCHECK(atomic_fetch_add(&c->release_calls, 1) == 0);
    /* Only a context that was swapped out, or the current one at destroy. */
    TU_WCHECK(idx < atomic_load(&swaps_started) || atomic_load(&destroying) || !sequential);
    /* Never on a worker thread. */
    unsigned n = atomic_load(&nworkers);
    for (unsigned i = 0; i < n && i < 64; i++)
        TU_WCHECK(!pthread_equal(worker_tids[i], pthread_self()));
    atomic_store(&c->id, POISON);
    atomic_store(&c->released, 1);
    atomic_fetch_add(&released_total, 1);
}

static const exec_ops_t sw_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE,
    .name = "swap",
    .process = sw_process,
    .worker_init = sw_init,
    .worker_fini = sw_fini,
    .ctx_release = sw_release,
};

/* A small window by default: a new context reaches the workers soon after a swap. */
static exec_t *mk(unsigned workers, unsigned flags)
{
    reset();
    exec_options_t o = {.workers = workers, .flags = flags, .window = 256, .batch = 16};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &sw_ops, &ctxs[0], EXEC_THREADS, &o), 0);
    return ex;
}

/* Swaps to ctxs[k]. */
static int swap_to(exec_t *ex, unsigned k)
{
    atomic_fetch_add(&swaps_started, 1);
    swapping = true;
    int rc = exec_swap_context(ex, &ctxs[k]);
    swapping = false;
    return rc;
}

static void destroy(exec_t *ex)
{
    atomic_store(&destroying, true);
    exec_destroy(ex);
}

/* ------------------------------------------------------------------------- */

struct load {
    exec_t *ex;
    atomic_bool stop;
    atomic_uint_fast64_t swaps_done; /* swaps that returned */
    uint64_t submitted;
};

static void *producer(void *arg)
{
    struct load *l = arg;
    while (!atomic_load(&l->stop)) {
        uint64_t rec[2] = {l->submitted, atomic_load(&l->swaps_done)};
        TU_WCHECK(exec_submit(l->ex, rec, sizeof rec, l->submitted) == 0);
        l->submitted++;
    }
    /* A last few, all after the final swap. */
    for (int i = 0; i < 1000; i++) {
        uint64_t rec[2] = {l->submitted, atomic_load(&l->swaps_done)};
        TU_WCHECK(exec_submit(l->ex, rec, sizeof rec, l->submitted) == 0);
        l->submitted++;
    }
    TU_WCHECK(exec_finish(l->ex) == 0);
    return NULL;
}

/* Swaps SWAPS times, each time waiting until some record ran on the new
 * context, so that every generation carries records. */
static bool wait_seen(uint64_t k)
{
    uint64_t end = tu_now_ms() + 30000;
    while (atomic_load(&max_id_seen) < k || atomic_load(&processed) == 0) {
        if (tu_now_ms() > end)
            return false;
        sched_yield();
    }
    return true;
}

static void *swapper(void *arg)
{
    struct load *l = arg;
    TU_WCHECK(wait_seen(0)); /* generation 0 carries records too */
    for (unsigned k = 1; k <= SWAPS; k++) {
        TU_WCHECK(swap_to(l->ex, k) == 0);
        atomic_store(&l->swaps_done, k);
        TU_WCHECK(wait_seen(k));
    }
    atomic_store(&l->stop, true);
    return NULL;
}

static void swaps_under_load(unsigned workers, unsigned flags)
{
    exec_t *ex = mk(workers, flags);
    struct load l = {.ex = ex};
    pthread_t pt, st;
    assert_int_equal(pthread_create(&pt, NULL, producer, &l), 0);
    assert_int_equal(pthread_create(&st, NULL, swapper, &l), 0);

    static uint64_t per_gen[SWAPS + 1];
    memset(per_gen, 0, sizeof per_gen);
    exec_result_t r;
    uint64_t got = 0;
    int rc;
    while ((rc = exec_next(ex, &r, -1)) == 0) {
        uint64_t id = 0, tag = UINT64_MAX;
        assert_int_equal(r.status, 0);
        assert_int_equal(r.len, 16);
        memcpy(&id, r.data, 8);
        memcpy(&tag, (const char *)r.data + 8, 8);
        assert_int_equal(tag, r.tag);
        assert_int_equal(r.seq, r.tag);
        if (flags & EXEC_ORDERED)
            assert_int_equal(r.seq, got);
        assert_int_equal(r.generation, id); /* ctxs[k] is generation k */
        assert_true(id <= SWAPS);
        per_gen[id]++;
        got++;
    }
    assert_int_equal(rc, EXEC_EOF);
    assert_int_equal(pthread_join(pt, NULL), 0);
    assert_int_equal(pthread_join(st, NULL), 0);
    tu_wfail_check();
    assert_int_equal(got, l.submitted);
    print_message("%u swaps over %" PRIu64 " records\n", SWAPS, got);
    for (unsigned k = 0; k <= SWAPS; k++) {
        if (per_gen[k] == 0)
            print_error("no result of generation %u (of %u); %" PRIu64 " results\n", k, SWAPS, got);
        assert_true(per_gen[k] > 0);
    }

    exec_stats_t s;
    assert_int_equal(exec_stats(ex, &s), 0);
    assert_int_equal(s.swaps, SWAPS);
    assert_int_equal(s.generation, SWAPS);
    assert_int_equal(s.ok, got);

    /* Every old context is released while the executor lives on (not only at
     * destroy), exactly once; the current one is not. */
    assert_true(tu_wait_u64(&released_total, SWAPS, 30000));
    for (unsigned k = 0; k < SWAPS; k++)
        assert_int_equal(atomic_load(&ctxs[k].release_calls), 1);
    assert_int_equal(atomic_load(&ctxs[SWAPS].release_calls), 0);
    destroy(ex);
    assert_int_equal(atomic_load(&ctxs[SWAPS].release_calls), 1);
    assert_int_equal(atomic_load(&released_total), SWAPS + 1);
    tu_wfail_check();
}

static void test_swaps_under_load_unordered(void **s) { (void)s; swaps_under_load(3, 0); }
static void test_swaps_under_load_ordered(void **s) { (void)s; swaps_under_load(2, EXEC_ORDERED); }

/* ------------------------------------------------------------------------- */

static void submit_rec(exec_t *ex, uint64_t tag, uint64_t least)
{
    uint64_t rec[2] = {tag, least};
    assert_int_equal(exec_submit(ex, rec, sizeof rec, tag), 0);
}

/* No load: records after a swap see the new context; the old one is released. */
static void test_swap_idle(void **s)
{
    (void)s;
    exec_t *ex = mk(2, 0);
    submit_rec(ex, 0, 0);
    exec_result_t r;
    assert_int_equal(exec_next(ex, &r, -1), 0);
    assert_int_equal(r.generation, 0);
    assert_int_equal(swap_to(ex, 1), 0);
    for (uint64_t t = 1; t <= 10; t++)
        submit_rec(ex, t, 1);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(exec_next(ex, &r, -1), 0);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.generation, 1);
    }
    assert_true(tu_wait_u64(&released_total, 1, 30000));
    assert_int_equal(atomic_load(&ctxs[0].release_calls), 1);
    /* A swap after finish is still fine. */
    assert_int_equal(exec_finish(ex), 0);
    assert_int_equal(swap_to(ex, 2), 0);
    assert_int_equal(exec_next(ex, &r, -1), EXEC_EOF);
    assert_true(tu_wait_u64(&released_total, 2, 30000));
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.swaps, 2);
    assert_int_equal(st.generation, 2);
    destroy(ex);
    assert_int_equal(atomic_load(&released_total), 3);
    for (unsigned k = 0; k <= 2; k++)
        assert_int_equal(atomic_load(&ctxs[k].release_calls), 1);
    assert_int_equal(atomic_load(&ctxs[3].release_calls), 0);
    tu_wfail_check();
}

/* Destroy right after many swaps: those not yet released are released by
 * destroy, each exactly once. */
static void test_destroy_after_swaps(void **s)
{
    (void)s;
    for (int round = 0; round < 5; round++) {
        exec_t *ex = mk(2, 0);
        for (uint64_t t = 0; t < 200; t++) /* within the window: none collected */
            submit_rec(ex, t, 0);
        for (unsigned k = 1; k <= 200; k++)
            assert_int_equal(swap_to(ex, k), 0);
        destroy(ex);
        assert_int_equal(atomic_load(&released_total), 201);
        for (unsigned k = 0; k <= 200; k++)
            assert_int_equal(atomic_load(&ctxs[k].release_calls), 1);
        tu_wfail_check();
    }
}

/* Two threads swap at once: swaps are serialized, each generation belongs to
 * one context, every context is released once. */
struct dual {
    exec_t *ex;
    unsigned first;
};

static void *dual_swapper(void *arg)
{
    struct dual *d = arg;
    for (unsigned k = d->first; k < d->first + 200; k++) {
        TU_WCHECK(swap_to(d->ex, k) == 0);
        if (k % 16 == 0)
            sched_yield();
    }
    return NULL;
}

/* One context per generation, one generation per context. */
static void check_gen(const exec_result_t *r, uint64_t *gen_of)
{
    uint64_t id;
    assert_int_equal(r->status, 0);
    assert_int_equal(r->len, 16);
    memcpy(&id, r->data, 8);
    assert_true(id <= 400);
    if (gen_of[id] == UINT64_MAX)
        gen_of[id] = r->generation;
    assert_int_equal(gen_of[id], r->generation);
}

static void test_concurrent_swappers(void **s)
{
    (void)s;
    exec_t *ex = mk(2, 0);
    sequential = false;
    struct dual d1 = {ex, 1}, d2 = {ex, 201};
    pthread_t t1, t2;
    assert_int_equal(pthread_create(&t1, NULL, dual_swapper, &d1), 0);
    assert_int_equal(pthread_create(&t2, NULL, dual_swapper, &d2), 0);
    static uint64_t gen_of[SWAPS + 1];
    memset(gen_of, 0xff, sizeof gen_of);
    exec_result_t r;
    for (uint64_t tag = 0; tag < 8000; tag++) {
        uint64_t rec[2] = {tag, 0};
        int rc;
        while ((rc = exec_try_submit(ex, rec, sizeof rec, tag)) == EXEC_EAGAIN) {
            assert_int_equal(exec_next(ex, &r, -1), 0);
            check_gen(&r, gen_of);
        }
        assert_int_equal(rc, 0);
    }
    assert_int_equal(pthread_join(t1, NULL), 0);
    assert_int_equal(pthread_join(t2, NULL), 0);
    assert_int_equal(exec_finish(ex), 0);
    int rc;
    while ((rc = exec_next(ex, &r, -1)) == 0)
        check_gen(&r, gen_of);
    assert_int_equal(rc, EXEC_EOF);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.swaps, 400);
    assert_int_equal(st.generation, 400);
    destroy(ex);
    assert_int_equal(atomic_load(&released_total), 401);
    for (unsigned k = 0; k <= 400; k++)
        assert_int_equal(atomic_load(&ctxs[k].release_calls), 1);
    tu_wfail_check();
}

/* Without ctx_release, swapping still works and nothing is called. */
static void test_swap_without_release(void **s)
{
    (void)s;
    reset();
    exec_ops_t ops = sw_ops;
    ops.ctx_release = NULL;
    exec_options_t o = {.workers = 2};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &ops, &ctxs[0], EXEC_THREADS, &o), 0);
    for (unsigned k = 1; k <= 50; k++) {
        assert_int_equal(swap_to(ex, k), 0);
        submit_rec(ex, k, k);
    }
    assert_int_equal(exec_finish(ex), 0);
    exec_result_t r;
    int rc, n = 0;
    while ((rc = exec_next(ex, &r, -1)) == 0) {
        assert_int_equal(r.status, 0);
        n++;
    }
    assert_int_equal(rc, EXEC_EOF);
    assert_int_equal(n, 50);
    exec_destroy(ex);
    assert_int_equal(atomic_load(&released_total), 0);
    tu_wfail_check();
}

/* A context whose worker_init refuses is refused by the swap (EXEC_EINIT): the
 * old one keeps serving, the refused one is not released, a later swap works. */
static void test_swap_refused_by_worker_init(void **s)
{
    (void)s;
    exec_t *ex = mk(2, 0);
    refuse = &ctxs[1];
    atomic_fetch_add(&swaps_started, 1);
    swapping = true;
    assert_int_equal(exec_swap_context(ex, &ctxs[1]), EXEC_EINIT);
    swapping = false;
    assert_int_equal(atomic_load(&proofs), 1);
    assert_int_equal(atomic_load(&fini_calls), 0); /* a refused init has no state to undo */
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.swaps, 0);
    assert_int_equal(st.generation, 0);
    submit_rec(ex, 1, 0);
    exec_result_t r;
    assert_int_equal(exec_next(ex, &r, -1), 0);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.generation, 0);
    uint64_t id;
    memcpy(&id, r.data, 8);
    assert_int_equal(id, 0); /* the old context served it */
    assert_int_equal(atomic_load(&ctxs[1].release_calls), 0);
    /* The next context is proved, accepted, and its proof state undone. */
    assert_int_equal(swap_to(ex, 2), 0);
    assert_int_equal(atomic_load(&proofs), 2);
    assert_int_equal(atomic_load(&fini_calls), 1);
    submit_rec(ex, 2, 2);
    assert_int_equal(exec_next(ex, &r, -1), 0);
    assert_int_equal(r.generation, 1);
    memcpy(&id, r.data, 8);
    assert_int_equal(id, 2);
    destroy(ex);
    assert_int_equal(atomic_load(&ctxs[1].release_calls), 0);
    assert_int_equal(atomic_load(&ctxs[0].release_calls), 1);
    assert_int_equal(atomic_load(&ctxs[2].release_calls), 1);
    tu_wfail_check();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_swaps_under_load_unordered),
        cmocka_unit_test(test_swaps_under_load_ordered),
        cmocka_unit_test(test_swap_idle),
        cmocka_unit_test(test_destroy_after_swaps),
        cmocka_unit_test(test_concurrent_swappers),
        cmocka_unit_test(test_swap_without_release),
        cmocka_unit_test(test_swap_refused_by_worker_init),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
