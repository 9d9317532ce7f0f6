/* EXEC_FORK hot swap: a new generation of workers per context; every record
 * runs against exactly one context; the old one is released once its
 * generation is gone; a canary worker proves a new context first (its
 * worker_init, then a replay of records that ran well) and a bad one is
 * rolled back while the old generation keeps serving. */
#include "forkutil.h"

static uint64_t scale(uint64_t n)
{
    return fu_light() ? n / 10 : n;
}

struct swapper {
    struct fu_ctx ctx[4];
    uint64_t at[3];  /* swap after submitting record at[k] */
    uint64_t first_after[4]; /* first record submitted after swap k returned */
    unsigned nswaps;
    int swap_rc;
    uint64_t crash_every;
};

static uint64_t salt_of(uint64_t generation, void *arg)
{
    struct swapper *s = arg;
    return generation < 4 ? s->ctx[generation].salt : 0;
}

static void after_submit(exec_t *ex, uint64_t i, void *arg)
{
    struct swapper *s = arg;
    if (s->nswaps < 3 && i == s->at[s->nswaps]) {
        int rc = exec_swap_context(ex, &s->ctx[s->nswaps + 1]);
        if (rc)
            s->swap_rc = rc;
        s->nswaps++;
        s->first_after[s->nswaps] = i + 1;
    }
}

static uint8_t plan(uint64_t i, void *arg)
{
    struct swapper *s = arg;
    return s->crash_every && i % s->crash_every == 5 ? FU_SEGV : FU_OK;
}

static void run_swaps(unsigned flags, uint64_t crash_every)
{
    struct swapper s;
    memset(&s, 0, sizeof s);
    for (int k = 0; k < 4; k++)
        s.ctx[k].salt = 0x1000u * (uint64_t)(k + 1);
    const uint64_t n = scale(300000);
    s.at[0] = n / 5;
    s.at[1] = n / 2;
    s.at[2] = n / 2 + 10; /* back to back */
    s.crash_every = crash_every;
    exec_options_t o = {.workers = 2, .flags = flags};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &fu_ops, &s.ctx[0], EXEC_FORK, &o), 0);
    struct fu_run r = {.n = n,
                       .plan = crash_every ? plan : NULL,
                       .plan_arg = &s,
                       .salt_of = salt_of,
                       .after_submit = after_submit,
                       .ordered = flags & EXEC_ORDERED};
    assert_int_equal(fu_drive(ex, &r), 0);
    assert_int_equal(s.swap_rc, 0);
    assert_int_equal(s.nswaps, 3);
    /* fu_drive checked each FU_OK result against its generation's salt, so a
     * record that saw a mix, or the wrong context, fails there. */
    fu_assert_clean(&r);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.swaps, 3);
    assert_int_equal(st.generation, 3);
    /* Per-worker figures cover every generation: they add up to the
     * executor's counters. */
    uint64_t crash = 0, all = 0, records = 0;
    for (unsigned i = 0; i < 2; i++) {
        exec_worker_stats_t ws;
        assert_int_equal(exec_worker_stats(ex, i, &ws), 0);
        crash += ws.respawns_crash;
        all += ws.respawns_crash + ws.respawns_timeout + ws.respawns_recycle + ws.respawns_cancel;
        records += ws.records;
    }
    assert_int_equal(crash, st.crashed);
    assert_int_equal(all, st.respawns);
    assert_int_equal(records, st.ok + st.crashed);
    /* The drained generations are released without waiting for destroy. */
    for (int k = 0; k < 3; k++) {
        for (int w = 0; w < 500 && !__atomic_load_n(&s.ctx[k].released, __ATOMIC_ACQUIRE); w++)
            usleep(10000);
        assert_int_equal(__atomic_load_n(&s.ctx[k].released, __ATOMIC_ACQUIRE), 1);
    }
    assert_int_equal(s.ctx[3].released, 0);
    exec_destroy(ex);
    for (int k = 0; k < 4; k++)
        assert_int_equal(s.ctx[k].released, 1);
    pid_t kids[8];
    assert_int_equal(fu_descendants(kids, 8), 0);
    assert_int_equal(fu_memfd_maps(), 0);
}

static void test_swaps(void **state)
{
    (void)state;
    run_swaps(0, 0);
}

static void test_swaps_ordered_with_crashes(void **state)
{
    (void)state;
    run_swaps(EXEC_ORDERED, 1000);
}

/* Records submitted after swap returned run on the new context. */
static void test_swap_boundary(void **state)
{
    (void)state;
    struct fu_ctx a = {.salt = 11}, b = {.salt = 22};
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &fu_ops, &a, EXEC_FORK, &o), 0);
    exec_result_t res;
    for (uint64_t round = 0; round < 20; round++) {
        struct fu_rec r = {.value = round};
        assert_int_equal(exec_submit(ex, &r, sizeof r, round), 0);
        assert_int_equal(exec_swap_context(ex, round % 2 ? &a : &b), 0);
        r.value = round + 1000;
        assert_int_equal(exec_submit(ex, &r, sizeof r, round + 1000), 0);
        for (int k = 0; k < 2; k++) {
            assert_int_equal(exec_next(ex, &res, 10000), 0);
            uint64_t v;
            memcpy(&v, res.data, sizeof v);
            if (res.tag >= 1000) {
                /* After the swap: generation round + 1. */
                assert_int_equal(res.generation, round + 1);
                assert_int_equal(v, fu_expect(res.tag, round % 2 ? a.salt : b.salt));
            } else {
                assert_int_equal(res.generation, round);
                assert_int_equal(v, fu_expect(res.tag, round % 2 ? b.salt : a.salt));
            }
        }
    }
    exec_destroy(ex);
    assert_int_equal(a.released + b.released, 21);
}

/* A new context whose workers refuse to start: the swap fails, the old
 * generation keeps serving. */
static int init_refuses_salt(void *ctx, void **ws)
{
    (void)ws;
    return ((struct fu_ctx *)ctx)->salt == 666;
}

static void test_swap_rollback(void **state)
{
    (void)state;
    exec_ops_t ops = fu_ops;
    ops.worker_init = init_refuses_salt;
    struct fu_ctx a = {.salt = 5}, bad = {.salt = 666};
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &ops, &a, EXEC_FORK, &o), 0);
    assert_int_equal(exec_swap_context(ex, &bad), EXEC_EINIT);
    assert_int_equal(bad.released, 0);
    struct fu_run r = {.n = 10000, .salt = a.salt};
    assert_int_equal(fu_drive(ex, &r), 0);
    fu_assert_clean(&r);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.generation, 0);
    exec_destroy(ex);
    assert_int_equal(a.released, 1);
    assert_int_equal(bad.released, 0);
    pid_t kids[8];
    assert_int_equal(fu_descendants(kids, 8), 0);
}

/* ------------------------------------------------------------------------- */
/* Canary                                                                    */
/* ------------------------------------------------------------------------- */

enum { CTX_CRASHES = 666, CTX_HANGS = 777, CTX_GARBAGE = 888 };

/* A context that starts fine (worker_init) but is broken on records. */
static int canary_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    struct fu_ctx *c = ctx;
    struct fu_rec r;
    memcpy(&r, rec, sizeof r);
    if (c->salt == CTX_CRASHES)
        r.action = FU_SEGV;
    else if (c->salt == CTX_HANGS)
        r.action = FU_HANG;
    else if (c->salt == CTX_GARBAGE)
        r.action = FU_GARBAGE;
    return fu_process(ctx, ws, &r, len, out);
}

struct canary_swap {
    struct fu_ctx *bad;
    uint64_t at;
    int rc;
    bool done;
};

static void canary_after_submit(exec_t *ex, uint64_t i, void *arg)
{
    struct canary_swap *cs = arg;
    if (!cs->done && i == cs->at) {
        cs->rc = exec_swap_context(ex, cs->bad);
        cs->done = true;
    }
}

/* Mid-stream swaps to contexts that crash, hang or write garbage on every
 * record: each canary fails on its replay, the swap returns why, the old
 * context serves every record (all generation 0, each tag once). */
static void test_canary_rolls_back(void **state)
{
    (void)state;
    static const struct {
        uint64_t salt;
        int rc;
    } cases[] = {{CTX_CRASHES, EXEC_ECRASHED},
                 {CTX_HANGS, EXEC_ERECTIMEOUT},
                 {CTX_GARBAGE, EXEC_EWORKER}};
    for (unsigned c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        exec_ops_t ops = fu_ops;
        ops.process = canary_process;
        struct fu_ctx a = {.salt = 5}, bad = {.salt = cases[c].salt};
        /* A small window: results come back (and can be replayed) before the swap. */
        exec_options_t o = {.workers = 2, .window = 1024, .timeout_ms = 300, .grace_ms = 100};
        exec_t *ex;
        assert_int_equal(exec_create(&ex, &ops, &a, EXEC_FORK, &o), 0);
        const uint64_t n = scale(100000);
        struct canary_swap cs = {.bad = &bad, .at = n / 2};
        struct fu_run r = {.n = n, .salt = a.salt, .after_submit = canary_after_submit,
                           .plan_arg = &cs};
        assert_int_equal(fu_drive(ex, &r), 0);
        fu_assert_clean(&r); /* every result from a (fu_drive checks the salt) */
        assert_int_equal(r.ok, n);
        assert_true(cs.done);
        if (cs.rc != cases[c].rc)
            print_error("context %" PRIu64 ": swap gave %s\n", bad.salt, exec_err_name(cs.rc));
        assert_int_equal(cs.rc, cases[c].rc);
        exec_stats_t st;
        assert_int_equal(exec_stats(ex, &st), 0);
        assert_int_equal(st.generation, 0);
        assert_int_equal(st.swaps, 0);
        assert_int_equal(st.crashed, 0); /* the canary's replays are not records */
        uint64_t records = 0;
        for (unsigned i = 0; i < 2; i++) {
            exec_worker_stats_t ws;
            assert_int_equal(exec_worker_stats(ex, i, &ws), 0);
            records += ws.records;
        }
        assert_int_equal(records, n);
        /* It can be tried again, and a good context still goes in. */
        assert_int_equal(exec_swap_context(ex, &bad), cases[c].rc);
        struct fu_ctx b = {.salt = 6};
        assert_int_equal(exec_swap_context(ex, &b), 0);
        exec_destroy(ex);
        assert_int_equal(bad.released, 0);
        assert_int_equal(a.released, 1);
        assert_int_equal(b.released, 1);
        pid_t kids[8];
        assert_int_equal(fu_descendants(kids, 8), 0);
    }
}

/* The replay is of records that ran well: a stream with poison records (that
 * crash any context) still swaps. Replayed records yield no extra result. */
static void test_canary_skips_failed_records(void **state)
{
    (void)state;
    struct swapper s;
    memset(&s, 0, sizeof s);
    for (int k = 0; k < 4; k++)
        s.ctx[k].salt = 0x2000u * (uint64_t)(k + 1);
    s.crash_every = 2; /* every other record crashes its worker */
    const uint64_t n = scale(20000);
    s.at[0] = n / 4;
    s.at[1] = n / 2;
    s.at[2] = 3 * n / 4;
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &fu_ops, &s.ctx[0], EXEC_FORK, &o), 0);
    struct fu_run r = {.n = n, .plan = plan, .plan_arg = &s, .salt_of = salt_of,
                       .after_submit = after_submit};
    assert_int_equal(fu_drive(ex, &r), 0);
    fu_assert_clean(&r);
    assert_int_equal(s.swap_rc, 0);
    assert_int_equal(s.nswaps, 3);
    assert_int_equal(r.ok + r.crashed, n);
    exec_destroy(ex);
}

/* EXEC_NO_REPLAY: the canary proves worker_init only, so a context that
 * fails on records goes in, and its records report the crash themselves. */
static void test_canary_no_replay(void **state)
{
    (void)state;
    exec_ops_t ops = fu_ops;
    ops.process = canary_process;
    struct fu_ctx a = {.salt = 5}, bad = {.salt = CTX_CRASHES};
    exec_options_t o = {.workers = 2, .flags = EXEC_NO_REPLAY};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &ops, &a, EXEC_FORK, &o), 0);
    exec_result_t res;
    for (uint64_t i = 100; i < 200; i++) {
        struct fu_rec rec = {.value = i};
        assert_int_equal(exec_submit(ex, &rec, sizeof rec, i), 0);
        assert_int_equal(exec_next(ex, &res, 20000), 0);
        assert_int_equal(res.status, 0);
    }
    assert_int_equal(exec_swap_context(ex, &bad), 0);
    for (uint64_t i = 0; i < 4; i++) {
        struct fu_rec rec = {.value = i};
        assert_int_equal(exec_submit(ex, &rec, sizeof rec, i), 0);
        assert_int_equal(exec_next(ex, &res, 20000), 0);
        assert_int_equal(res.tag, i);
        assert_int_equal(res.status, EXEC_ECRASHED);
        assert_int_equal(res.generation, 1);
    }
    exec_destroy(ex);
    assert_int_equal(a.released, 1);
    assert_int_equal(bad.released, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_swaps),
        cmocka_unit_test(test_swaps_ordered_with_crashes),
        cmocka_unit_test(test_swap_boundary),
        cmocka_unit_test(test_swap_rollback),
        cmocka_unit_test(test_canary_rolls_back),
        cmocka_unit_test(test_canary_skips_failed_records),
        cmocka_unit_test(test_canary_no_replay),
    };
    if (getenv("FU_ONLY"))
        cmocka_set_test_filter(getenv("FU_ONLY"));
    return tu_run_group_tests(tests, NULL, NULL);
}
