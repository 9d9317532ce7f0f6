/*
 * The pollable descriptor and exec_next's timeouts: exec_fd() polls readable
 * once results (or the end of stream) are ready after exec_next returned
 * EXEC_EAGAIN; timeout 0 says EXEC_EAGAIN, a positive one EXEC_ETIMEDOUT,
 * -1 waits for ever.
 */
#include "testutil.h"

#include <poll.h>
#include <sys/epoll.h>

#define LONG_WAIT 30000 /* ms: a liveness bound, never a timing claim */

static exec_t *mk(unsigned workers, unsigned flags)
{
    exec_options_t o = {.workers = workers, .flags = flags};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &tu_rev_ops, NULL, EXEC_THREADS, &o), 0);
    return ex;
}

static bool readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, ms);
    return r == 1 && (p.revents & POLLIN);
}

/* The event-loop pattern: drain with timeout 0 until EXEC_EAGAIN, then poll. */
static void event_loop(unsigned workers, unsigned flags, bool use_epoll)
{
    exec_t *ex = mk(workers, flags);
    int fd = exec_fd(ex);
    assert_true(fd >= 0);
    int ep = -1;
    if (use_epoll) {
        ep = epoll_create1(EPOLL_CLOEXEC);
        assert_true(ep >= 0);
        struct epoll_event ev = {.events = EPOLLIN};
        assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
    }
    const uint64_t rounds = 400;
    uint64_t tag = 0, total = 0;
    uint64_t want = 0;
    for (uint64_t round = 0; round < rounds; round++)
        want += 1 + round % 8;
    tu_tags_t tags;
    tu_tags_init(&tags, want);
    unsigned char rec[TU_REC_MAX];
    exec_result_t r;
    for (uint64_t round = 0; round < rounds; round++) {
        uint64_t k = 1 + round % 8, got = 0;
        for (uint64_t i = 0; i < k; i++, tag++)
            assert_int_equal(exec_try_submit(ex, rec, tu_rec(tag, rec), tag), 0);
        total += k;
        if (round == rounds - 1)
            assert_int_equal(exec_finish(ex), 0);
        for (;;) {
            int rc = exec_next(ex, &r, 0);
            if (rc == 0) {
                assert_true(tu_rev_ok(&r));
                assert_true(tu_tags_mark(&tags, r.tag));
                if (flags & EXEC_ORDERED)
                    assert_int_equal(r.seq, atomic_load(&tags.count) - 1);
                got++;
                continue;
            }
            if (rc == EXEC_EOF) {
                assert_int_equal(round, rounds - 1);
                break;
            }
            assert_int_equal(rc, EXEC_EAGAIN);
            if (got == k && round != rounds - 1)
                break; /* this round is done; poll only when waiting for more */
            if (use_epoll) {
                struct epoll_event ev;
                assert_int_equal(epoll_wait(ep, &ev, 1, LONG_WAIT), 1);
            } else {
                assert_true(readable(fd, LONG_WAIT));
            }
        }
    }
    assert_true(tu_tags_complete(&tags));
    assert_int_equal(atomic_load(&tags.count), total);
    tu_tags_free(&tags);
    if (ep >= 0)
        close(ep);
    exec_destroy(ex);
}

static void test_poll_unordered(void **s) { (void)s; event_loop(2, 0, false); }
static void test_poll_ordered(void **s) { (void)s; event_loop(3, EXEC_ORDERED, false); }
static void test_epoll(void **s) { (void)s; event_loop(2, 0, true); }
static void test_poll_one_worker(void **s) { (void)s; event_loop(1, EXEC_ORDERED, false); }

/* ------------------------------------------------------------------------- */

static void test_timeouts(void **s)
{
    (void)s;
    exec_t *ex = mk(2, 0);
    exec_result_t r[4];
    size_t got;
    assert_int_equal(exec_next(ex, r, 0), EXEC_EAGAIN);
    assert_int_equal(exec_next_many(ex, r, 4, &got, 0), EXEC_EAGAIN);
    assert_int_equal(got, 0);
    /* A positive timeout waits at least that long, then says so. */
    uint64_t t0 = tu_now_ms();
    assert_int_equal(exec_next(ex, r, 30), EXEC_ETIMEDOUT);
    assert_true(tu_now_ms() - t0 >= 29);
    t0 = tu_now_ms();
    assert_int_equal(exec_next_many(ex, r, 4, &got, 20), EXEC_ETIMEDOUT);
    assert_true(tu_now_ms() - t0 >= 19);
    assert_int_equal(got, 0);
    assert_int_equal(exec_next(ex, r, 1), EXEC_ETIMEDOUT);

    /* A record arrives: a long timeout returns it. */
    unsigned char rec[TU_REC_MAX];
    assert_int_equal(exec_submit(ex, rec, tu_rec(5, rec), 5), 0);
    assert_int_equal(exec_next(ex, r, LONG_WAIT), 0);
    assert_true(tu_rev_ok(&r[0]));
    assert_int_equal(exec_next(ex, r, 0), EXEC_EAGAIN);

    /* Finished with records outstanding: EXEC_EAGAIN, not EXEC_EOF, until they
     * are all delivered. */
    for (uint64_t t = 0; t < 200; t++)
        assert_int_equal(exec_submit(ex, rec, tu_rec(t, rec), t), 0);
    assert_int_equal(exec_finish(ex), 0);
    uint64_t n = 0;
    for (;;) {
        int rc = exec_next(ex, r, 0);
        if (rc == EXEC_EOF)
            break;
        if (rc == EXEC_EAGAIN) {
            assert_true(n < 200);
            assert_true(readable(exec_fd(ex), LONG_WAIT));
            continue;
        }
        assert_int_equal(rc, 0);
        assert_true(tu_rev_ok(&r[0]));
        n++;
    }
    assert_int_equal(n, 200);
    assert_int_equal(exec_next(ex, r, 0), EXEC_EOF);
    assert_int_equal(exec_next(ex, r, 10), EXEC_EOF);
    exec_destroy(ex);
}

struct later {
    exec_t *ex;
    unsigned ms;
    bool finish; /* finish instead of submitting */
};

static void *act_later(void *arg)
{
    struct later *l = arg;
    tu_sleep_ms(l->ms);
    if (l->finish) {
        TU_WCHECK(exec_finish(l->ex) == 0);
    } else {
        unsigned char rec[TU_REC_MAX];
        TU_WCHECK(exec_submit(l->ex, rec, tu_rec(77, rec), 77) == 0);
    }
    return NULL;
}

/* exec_next(-1) waits until another thread's record is done. */
static void test_wait_forever(void **s)
{
    (void)s;
    exec_t *ex = mk(2, 0);
    struct later l = {ex, 30, false};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, act_later, &l), 0);
    exec_result_t r;
    assert_int_equal(exec_next(ex, &r, -1), 0);
    assert_int_equal(r.tag, 77);
    assert_true(tu_rev_ok(&r));
    assert_int_equal(pthread_join(th, NULL), 0);

    /* exec_finish from another thread wakes a consumer waiting for ever. */
    l.finish = true;
    assert_int_equal(pthread_create(&th, NULL, act_later, &l), 0);
    assert_int_equal(exec_next(ex, &r, -1), EXEC_EOF);
    assert_int_equal(pthread_join(th, NULL), 0);
    tu_wfail_check();
    exec_destroy(ex);
}

/* The end of stream makes the descriptor readable too. */
static void test_poll_end_of_stream(void **s)
{
    (void)s;
    exec_t *ex = mk(2, 0);
    exec_result_t r;
    assert_int_equal(exec_next(ex, &r, 0), EXEC_EAGAIN);
    struct later l = {ex, 20, true};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, act_later, &l), 0);
    assert_true(readable(exec_fd(ex), LONG_WAIT));
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(exec_next(ex, &r, 0), EXEC_EOF);
    tu_wfail_check();
    exec_destroy(ex);
}

/*
 * Once everything is collected and exec_next(ex, &r, 0) said EXEC_EAGAIN, the
 * descriptor must not stay readable: an event loop polling it would spin.
 */
static void test_poll_quiet_when_idle(void **s)
{
    (void)s;
    exec_t *ex = mk(2, 0);
    int fd = exec_fd(ex);
    exec_result_t r;
    assert_int_equal(exec_next(ex, &r, 0), EXEC_EAGAIN);
    assert_false(readable(fd, 0)); /* a fresh executor is quiet */
    unsigned char rec[TU_REC_MAX];
    for (int round = 0; round < 20; round++) {
        uint64_t got = 0;
        for (uint64_t t = 0; t < 100; t++)
            assert_int_equal(exec_try_submit(ex, rec, tu_rec(t, rec), t), 0);
        while (got < 100) {
            int rc = exec_next(ex, &r, 0);
            if (rc == EXEC_EAGAIN) {
                assert_true(readable(fd, LONG_WAIT));
                continue;
            }
            assert_int_equal(rc, 0);
            assert_true(tu_rev_ok(&r));
            got++;
        }
        /* Nothing is in flight. Give a late wake-up time to land, let the
         * loop see EXEC_EAGAIN once more, and the descriptor is quiet. */
        tu_sleep_ms(5);
        assert_int_equal(exec_next(ex, &r, 0), EXEC_EAGAIN);
        if (readable(fd, 0)) {
            print_error("round %d: exec_fd() still readable with nothing to deliver\n", round);
            fail();
        }
    }
    exec_destroy(ex);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_poll_unordered),
        cmocka_unit_test(test_poll_ordered),
        cmocka_unit_test(test_epoll),
        cmocka_unit_test(test_poll_one_worker),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_wait_forever),
        cmocka_unit_test(test_poll_end_of_stream),
        cmocka_unit_test(test_poll_quiet_when_idle),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
