/* EXEC_FORK hot swap: a new generation of workers per context; every record
 * runs against exactly one context; the old one is released once its
 * generation is gone. */
#include "forkutil.h"

static uint64_t scale(uint64_t n)
{
    return fu_sanitized() ? n / 10 : n;
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_swaps),
        cmocka_unit_test(test_swaps_ordered_with_crashes),
        cmocka_unit_test(test_swap_boundary),
        cmocka_unit_test(test_swap_rollback),
    };
    if (getenv("FU_ONLY"))
        cmocka_set_test_filter(getenv("FU_ONLY"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
