/*
 * Cancel reaches a record from submit until its result is delivered, however
 * many batches went out after it: a record stuck on one worker while 100,000
 * others stream past on the other, in both orders, on both backends; and
 * (EXEC_FORK) records submitted just before a swap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "executor.h"
#include "suite.h"

enum { R_TINY = 0, R_SLOW = 1 };

/* Shared with forked workers: MAP_SHARED. */
struct shared {
    atomic_uint slow_running;
};

struct rctx {
    struct shared *sh;
    uint64_t salt;
};

struct rrec {
    uint64_t tag;
    uint32_t kind;
    uint32_t pad;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t expect(uint64_t tag, uint64_t salt) { return tag * 3 + 1 + salt; }

static int r_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    struct rctx *c = ctx;
    struct rrec r;
    if (len != sizeof r)
        return 99;
    memcpy(&r, rec, sizeof r);
    if (r.kind == R_SLOW) {
        atomic_fetch_add(&c->sh->slow_running, 1);
        /* Long enough that only a cancel ends it within the test. */
        uint64_t t0 = now_ms();
        while (now_ms() - t0 < 60000 && !exec_cancelled(out))
            sleep_ms(1);
    }
    uint64_t v = expect(r.tag, c->salt);
    return exec_write(out, &v, sizeof v);
}

static const exec_ops_t r_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "reach",
    .process = r_process,
};

static struct shared *shared_new(void)
{
    void *p = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

struct tally {
    unsigned char *seen;
    uint64_t n, got, next_seq, wrong;
    int status0;
    bool ordered;
};

static void tally_one(struct tally *t, const exec_result_t *r, uint64_t salt)
{
    assert_true(r->tag < t->n);
    assert_int_equal(t->seen[r->tag]++, 0);
    if (t->ordered)
        assert_int_equal(r->seq, t->next_seq++);
    t->got++;
    if (r->tag == 0) {
        t->status0 = r->status;
        return;
    }
    uint64_t v;
    if (r->status != 0 || r->len != sizeof v || (memcpy(&v, r->data, sizeof v), v != expect(r->tag, salt)))
        t->wrong++;
}

/*
 * Record 0 runs until cancelled on one worker; records 1..n-1 stream through
 * the other (unordered), or fill the window behind it (ordered). Then cancel
 * record 0: it must be found, and its result must say so.
 */
static void stuck_then_stream(exec_backend_t be, unsigned flags, uint64_t n)
{
    if (tu_fork_left_out(be == EXEC_FORK))
        return;
    struct rctx c = {.sh = shared_new(), .salt = 5};
    exec_options_t o = {.workers = 2, .flags = flags};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &r_ops, &c, be, &o), 0);
    struct tally t = {.seen = calloc(n, 1), .n = n, .ordered = flags & EXEC_ORDERED};
    assert_non_null(t.seen);
    struct rrec rec = {.tag = 0, .kind = R_SLOW};
    assert_int_equal(exec_submit(ex, &rec, sizeof rec, 0), 0);
    uint64_t t0 = now_ms();
    while (atomic_load(&c.sh->slow_running) == 0) {
        assert_true(now_ms() - t0 < 20000);
        sleep_ms(1);
    }
    exec_result_t res;
    uint64_t i;
    for (i = 1; i < n; i++) {
        rec = (struct rrec){.tag = i, .kind = R_TINY};
        int rc;
        while ((rc = exec_try_submit(ex, &rec, sizeof rec, i)) == EXEC_EAGAIN) {
            rc = exec_next(ex, &res, t.ordered ? 0 : 20000);
            if (rc == EXEC_EAGAIN)
                break; /* ordered: everything waits behind record 0 */
            assert_int_equal(rc, 0);
            tally_one(&t, &res, c.salt);
        }
        if (rc == EXEC_EAGAIN)
            break;
        assert_int_equal(rc, 0);
    }
    uint64_t submitted = i;
    assert_int_equal(atomic_load(&c.sh->slow_running), 1);
    assert_int_equal(exec_cancel(ex, 0), 1);
    assert_int_equal(exec_finish(ex), 0);
    int rc;
    while ((rc = exec_next(ex, &res, 20000)) == 0)
        tally_one(&t, &res, c.salt);
    assert_int_equal(rc, EXEC_EOF);
    assert_int_equal(t.got, submitted);
    assert_int_equal(t.wrong, 0);
    assert_int_equal(t.status0, EXEC_ECANCELLED);
    /* It ran once and stopped: a cancel, not the end of its 60 s. */
    assert_true(now_ms() - t0 < 50000);
    exec_destroy(ex);
    free(t.seen);
    munmap(c.sh, sizeof *c.sh);
}

static void test_threads_unordered(void **s) { (void)s; stuck_then_stream(EXEC_THREADS, 0, 100000); }
static void test_threads_ordered(void **s) { (void)s; stuck_then_stream(EXEC_THREADS, EXEC_ORDERED, 100000); }
static void test_fork_unordered(void **s) { (void)s; stuck_then_stream(EXEC_FORK, 0, 100000); }
static void test_fork_ordered(void **s) { (void)s; stuck_then_stream(EXEC_FORK, EXEC_ORDERED, 100000); }

/* cancel_all reaches the stuck record too. */
static void test_cancel_all_reaches(void **s)
{
    (void)s;
    for (int k = 0; k < 2; k++) {
        if (tu_fork_left_out(k))
            continue;
        exec_backend_t be = k ? EXEC_FORK : EXEC_THREADS;
        struct rctx c = {.sh = shared_new(), .salt = 9};
        exec_options_t o = {.workers = 2};
        exec_t *ex;
        assert_int_equal(exec_create(&ex, &r_ops, &c, be, &o), 0);
        struct rrec rec = {.tag = 0, .kind = R_SLOW};
        assert_int_equal(exec_submit(ex, &rec, sizeof rec, 0), 0);
        while (atomic_load(&c.sh->slow_running) == 0)
            sleep_ms(1);
        const uint64_t n = 50000;
        unsigned char *seen = calloc(n, 1);
        assert_non_null(seen);
        exec_result_t res;
        uint64_t got = 0, cancelled = 0;
        for (uint64_t i = 1; i < n; i++) {
            rec = (struct rrec){.tag = i, .kind = R_TINY};
            while (exec_try_submit(ex, &rec, sizeof rec, i) == EXEC_EAGAIN) {
                assert_int_equal(exec_next(ex, &res, 20000), 0);
                assert_int_not_equal(res.tag, 0);
                assert_int_equal(seen[res.tag]++, 0);
                got++;
            }
        }
        int m = exec_cancel_all(ex);
        assert_true(m >= 1);
        assert_int_equal(exec_finish(ex), 0);
        int rc, status0 = 1;
        while ((rc = exec_next(ex, &res, 20000)) == 0) {
            assert_true(res.tag < n);
            assert_int_equal(seen[res.tag]++, 0);
            got++;
            if (res.status == EXEC_ECANCELLED)
                cancelled++;
            else
                assert_int_equal(res.status, 0);
            if (res.tag == 0)
                status0 = res.status;
        }
        assert_int_equal(rc, EXEC_EOF);
        assert_int_equal(got, n);
        assert_int_equal(status0, EXEC_ECANCELLED);
        /* Records a worker finishes while the call runs may keep their results
         * (the header says so): a few, never more than were counted. */
        if (!(cancelled <= (uint64_t)m && cancelled + 256 >= (uint64_t)m))
            print_error("%s: cancel_all counted %d, %" PRIu64 " results say cancelled\n",
                        exec_backend_name(be), m, cancelled);
        assert_true(cancelled <= (uint64_t)m && cancelled + 256 >= (uint64_t)m);
        exec_destroy(ex);
        free(seen);
        munmap(c.sh, sizeof *c.sh);
    }
}

/*
 * EXEC_FORK, one worker: record 0 runs, records 1-3 wait in the open batch;
 * a swap sends them to the old generation. Each of them is still cancellable.
 */
static void test_fork_cancel_after_swap(void **s)
{
    (void)s;
    if (tu_fork_left_out(true))
        return;
    struct rctx c = {.sh = shared_new(), .salt = 1};
    struct rctx c2 = {.sh = c.sh, .salt = 2};
    exec_options_t o = {.workers = 1};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &r_ops, &c, EXEC_FORK, &o), 0);
    struct rrec rec = {.tag = 0, .kind = R_SLOW};
    assert_int_equal(exec_submit(ex, &rec, sizeof rec, 0), 0);
    while (atomic_load(&c.sh->slow_running) == 0)
        sleep_ms(1);
    for (uint64_t i = 1; i <= 3; i++) {
        rec = (struct rrec){.tag = i, .kind = R_TINY};
        assert_int_equal(exec_submit(ex, &rec, sizeof rec, i), 0);
    }
    assert_int_equal(exec_swap_context(ex, &c2), 0);
    assert_int_equal(exec_cancel(ex, 3), 1);
    assert_int_equal(exec_cancel(ex, 0), 1);
    rec = (struct rrec){.tag = 4, .kind = R_TINY};
    assert_int_equal(exec_submit(ex, &rec, sizeof rec, 4), 0);
    assert_int_equal(exec_finish(ex), 0);
    int status[5] = {1, 1, 1, 1, 1};
    uint64_t gen[5] = {0};
    exec_result_t res;
    int rc;
    unsigned got = 0;
    while ((rc = exec_next(ex, &res, 20000)) == 0) {
        assert_true(res.tag < 5);
        assert_int_equal(status[res.tag], 1);
        status[res.tag] = res.status;
        gen[res.tag] = res.generation;
        if (res.status == 0) {
            uint64_t v;
            assert_int_equal(res.len, sizeof v);
            memcpy(&v, res.data, sizeof v);
            assert_int_equal(v, expect(res.tag, res.generation ? c2.salt : c.salt));
        }
        got++;
    }
    assert_int_equal(rc, EXEC_EOF);
    assert_int_equal(got, 5);
    assert_int_equal(status[0], EXEC_ECANCELLED);
    assert_int_equal(status[1], 0);
    assert_int_equal(status[2], 0);
    assert_int_equal(status[3], EXEC_ECANCELLED);
    assert_int_equal(status[4], 0);
    assert_int_equal(gen[1], 0);
    assert_int_equal(gen[4], 1);
    exec_destroy(ex);
    munmap(c.sh, sizeof *c.sh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_unordered),
        cmocka_unit_test(test_threads_ordered),
        cmocka_unit_test(test_fork_unordered),
        cmocka_unit_test(test_fork_ordered),
        cmocka_unit_test(test_cancel_all_reaches),
        cmocka_unit_test(test_fork_cancel_after_swap),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
