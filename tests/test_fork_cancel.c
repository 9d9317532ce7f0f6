/* EXEC_FORK cancel: a queued record is never run, a running one has its
 * worker replaced; either way exactly one result, EXEC_ECANCELLED. */
#include "forkutil.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_running),
        cmocka_unit_test(test_cancel_queued),
        cmocka_unit_test(test_cancel_all_stream),
    };
    if (getenv("FU_ONLY"))
        cmocka_set_test_filter(getenv("FU_ONLY"));
    return tu_run_group_tests(tests, NULL, NULL);
}
