/* EXEC_FORK start: a worker_init that refuses, crashes or hangs (past
 * start_timeout_ms) makes exec_create fail with EXEC_EINIT and leaves no
 * process, descriptor, mapping or thread; a swap to such a context fails the
 * same way while the old generation keeps serving. */
#include "forkutil.h"

#include <sys/mman.h>

enum { I_REFUSE, I_CRASH, I_HANG, I_FIRST_CRASHES, I_SLOW };

/* ctx: how worker_init misbehaves, and a shared counter of starts. */
struct s_ctx {
    struct fu_ctx fu; /* first: fu_process() reads it */
    int how;
    unsigned *starts;
};

static int s_init(void *ctx, void **ws)
{
    struct s_ctx *c = ctx;
    (void)ws;
    unsigned n = __atomic_fetch_add(c->starts, 1, __ATOMIC_RELAXED);
    switch (c->how) {
    case I_REFUSE:
        return 1;
    case I_CRASH: {
        volatile uintptr_t bad = 16;
        *(volatile int *)bad = 1;
        return 0;
    }
    case I_FIRST_CRASHES:
        if (n == 0) {
            volatile uintptr_t bad = 16;
            *(volatile int *)bad = 1;
        }
        return 0;
    case I_HANG:
        for (;;)
            pause();
    case I_SLOW: {
        struct timespec ts = {0, 50000000};
        while (nanosleep(&ts, &ts) != 0)
            ;
        return 0;
    }
    default:
        return 0;
    }
}

static int s_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static exec_ops_t s_ops(void)
{
    exec_ops_t ops = fu_ops;
    ops.worker_init = s_init;
    ops.ctx_release = NULL;
    return ops;
}

static void s_create_fails(int how)
{
    unsigned *starts =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(starts != MAP_FAILED);
    struct s_ctx ctx = {.how = how, .starts = starts};
    exec_ops_t ops = s_ops();
    int fds = fu_count_fds(), threads = s_threads();
    exec_t *ex = (exec_t *)1;
    exec_options_t o = {.workers = 3, .start_timeout_ms = 300};
    assert_int_equal(exec_create(&ex, &ops, &ctx, EXEC_FORK, &o), EXEC_EINIT);
    assert_null(ex);
    assert_true(*starts >= 1);
    assert_int_equal(fu_count_fds(), fds);
    assert_int_equal(fu_memfd_maps(), 0);
    pid_t kids[16];
    assert_int_equal(fu_descendants(kids, 16), 0);
    assert_int_equal(s_threads(), threads);
    munmap(starts, 4096);
}

static void test_init_refuses(void **state)
{
    (void)state;
    s_create_fails(I_REFUSE);
}

static void test_init_crashes(void **state)
{
    (void)state;
    s_create_fails(I_CRASH);
}

/* One crash among good workers is enough. */
static void test_first_init_crashes(void **state)
{
    (void)state;
    s_create_fails(I_FIRST_CRASHES);
}

static void test_init_hangs(void **state)
{
    (void)state;
    s_create_fails(I_HANG);
}

static void test_start_timeout_default(void **state)
{
    (void)state;
    exec_options_t o = {.workers = 1};
    struct fu_ctx ctx = {0};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &fu_ops, &ctx, EXEC_FORK, &o), 0);
    exec_options_t got;
    assert_int_equal(exec_get_options(ex, &got), 0);
    assert_int_equal(got.start_timeout_ms, 10000);
    exec_destroy(ex);
}

/* A swap whose workers hang in worker_init fails; the old context serves on. */
static void test_swap_init_hangs(void **state)
{
    (void)state;
    unsigned *starts =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(starts != MAP_FAILED);
    struct s_ctx good = {.fu = {.salt = 5}, .how = -1, .starts = starts};
    struct s_ctx bad = {.fu = {.salt = 6}, .how = I_HANG, .starts = starts};
    exec_ops_t ops = s_ops();
    exec_options_t o = {.workers = 2, .start_timeout_ms = 300};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &ops, &good, EXEC_FORK, &o), 0);
    assert_int_equal(exec_swap_context(ex, &bad), EXEC_EINIT);
    struct fu_run r = {.n = 2000, .salt = good.fu.salt};
    assert_int_equal(fu_drive(ex, &r), 0);
    fu_assert_clean(&r);
    assert_int_equal(r.ok, r.n);
    exec_destroy(ex);
    pid_t kids[16];
    assert_int_equal(fu_descendants(kids, 16), 0);
    munmap(starts, 4096);
}

/* Per-worker startup, busy and idle times (kept by the workers, for display). */
static void test_worker_times(void **state)
{
    (void)state;
    unsigned *starts =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(starts != MAP_FAILED);
    struct s_ctx ctx = {.fu = {.salt = 3}, .how = I_SLOW, .starts = starts};
    exec_ops_t ops = s_ops();
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &ops, &ctx, EXEC_FORK, &o), 0);
    struct fu_run r = {.n = 20000, .salt = ctx.fu.salt};
    assert_int_equal(fu_drive(ex, &r), 0);
    fu_assert_clean(&r);
    struct timespec ts = {0, 50000000};
    nanosleep(&ts, NULL); /* idle a while */
    uint64_t busy = 0;
    for (unsigned i = 0; i < 2; i++) {
        exec_worker_stats_t ws;
        assert_int_equal(exec_worker_stats(ex, i, &ws), 0);
        assert_true(ws.startup_ns >= 50000000u); /* worker_init slept 50 ms */
        assert_true(ws.idle_ns >= 10000000u);
        busy += ws.busy_ns;
        print_message("worker %u: pid %d, %" PRIu64 " records, startup %" PRIu64
                      " us, busy %" PRIu64 " us, idle %" PRIu64 " us\n",
                      i, ws.pid, ws.records, ws.startup_ns / 1000, ws.busy_ns / 1000,
                      ws.idle_ns / 1000);
    }
    assert_true(busy > 0);
    exec_destroy(ex);
    munmap(starts, 4096);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_timeout_default),
        cmocka_unit_test(test_init_refuses),
        cmocka_unit_test(test_init_crashes),
        cmocka_unit_test(test_first_init_crashes),
        cmocka_unit_test(test_init_hangs),
        cmocka_unit_test(test_swap_init_hangs),
        cmocka_unit_test(test_worker_times),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
