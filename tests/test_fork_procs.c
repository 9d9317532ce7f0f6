/* EXEC_FORK and the processes around it: recycling, destroy leaving nothing,
 * kill -9 of the host, a multithreaded host, hosts that ignore SIGCHLD, and
 * several executors side by side. */
#include "forkutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/prctl.h>

static uint64_t scale(uint64_t n)
{
    return fu_light() ? n / 10 : n;
}

static uint8_t plan_crashy(uint64_t i, void *arg)
{
    (void)arg;
    if (i % 100 != 37)
        return FU_OK;
    static const uint8_t k[3] = {FU_SEGV, FU_ABORT, FU_EXIT};
    return k[(i / 100) % 3];
}

/* ------------------------------------------------------------------------- */

static void recycle(unsigned flags)
{
    struct fu_ctx ctx = {.salt = 31};
    exec_options_t o = {.workers = 2, .max_records_per_worker = 1000, .flags = flags};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &fu_ops, &ctx, EXEC_FORK, &o), 0);
    const uint64_t n = scale(100000);
    struct fu_run r = {.n = n, .salt = ctx.salt, .ordered = flags & EXEC_ORDERED};
    assert_int_equal(fu_drive(ex, &r), 0);
    fu_assert_clean(&r);
    assert_int_equal(r.ok, n);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    /* Idle workers past their limit are replaced too (a slow machine may not
     * have had a successor ready while records ran). */
    for (int w = 0; w < 500 && st.respawns == 0; w++) {
        usleep(10000);
        assert_int_equal(exec_stats(ex, &st), 0);
    }
    /* A worker leaves at a batch boundary past its limit (>= 1000
     * records) once its successor is ready; records this light run faster
     * than successors start, so lifetimes are often longer. */
    uint64_t most = n / 1000 + 2;
    assert_true(st.respawns >= 1 && st.respawns <= most);
    assert_int_equal(st.crashed, 0);
    /* Per worker: every replacement was a recycle. An idle worker past its
     * limit may still hand over now, so the counts are read around st. */
    uint64_t recycled = 0, records = 0;
    for (unsigned i = 0; i < 2; i++) {
        exec_worker_stats_t ws;
        assert_int_equal(exec_worker_stats(ex, i, &ws), 0);
        assert_int_equal(ws.respawns_crash + ws.respawns_timeout + ws.respawns_cancel, 0);
        recycled += ws.respawns_recycle;
        records += ws.records;
    }
    assert_true(recycled >= st.respawns);
    exec_stats_t st2;
    assert_int_equal(exec_stats(ex, &st2), 0);
    assert_true(recycled <= st2.respawns);
    assert_int_equal(records, n);
    exec_destroy(ex);
}

static void test_recycle(void **state)
{
    (void)state;
    recycle(0);
}

static void test_recycle_ordered(void **state)
{
    (void)state;
    recycle(EXEC_ORDERED);
}

/* ------------------------------------------------------------------------- */

static void test_destroy_leaves_nothing(void **state)
{
    (void)state;
    int fds = fu_count_fds();
    pid_t kids[64];
    assert_int_equal(fu_descendants(kids, 64), 0);
    for (int round = 0; round < 3; round++) {
        struct fu_ctx ctx = {.salt = 1};
        exec_options_t o = {.workers = 2, .timeout_ms = round == 2 ? 1000 : 0};
        exec_t *ex;
        assert_int_equal(exec_create(&ex, &fu_ops, &ctx, EXEC_FORK, &o), 0);
        assert_int_equal(fu_memfd_maps(), 2); /* the region and the records buffer */
        assert_int_equal(fu_descendants(kids, 64), 3); /* zygote + 2 workers */
        /* Leave records in flight, one of them hanging (round 1, 2). */
        for (uint64_t i = 0; i < 5000; i++) {
            struct fu_rec rec = {.value = i};
            if (round > 0 && i == 100)
                rec.action = FU_HANG;
            if (exec_try_submit(ex, &rec, sizeof rec, i) != 0)
                break;
        }
        if (round == 0) {
            exec_result_t res;
            assert_int_equal(exec_next(ex, &res, 10000), 0);
        }
        exec_destroy(ex);
        assert_int_equal(ctx.released, 1);
        assert_int_equal(fu_count_fds(), fds);
        assert_int_equal(fu_memfd_maps(), 0);
        assert_int_equal(fu_descendants(kids, 64), 0); /* no child, no zombie */
    }
}

/* ------------------------------------------------------------------------- */

static bool pid_gone(pid_t p)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)p);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *q = strrchr(buf, ')');
    return q && (q[2] == 'Z' || q[2] == 'X');
}

/* kill -9 of the host: its zygote and workers are gone within 1 s. */
static void test_host_killed(void **state)
{
    (void)state;
    /* Orphans come to us, so that we can reap them and count them. */
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t host = fork();
    assert_true(host >= 0);
    if (host == 0) {
        close(p[0]);
        struct fu_ctx ctx = {.salt = 3};
        exec_options_t o = {.workers = 2};
        exec_t *ex;
        if (exec_create(&ex, &fu_ops, &ctx, EXEC_FORK, &o) != 0)
            _exit(1);
        /* Keep the workers busy, then report every descendant. */
        for (uint64_t i = 0; i < 3000; i++) {
            struct fu_rec rec = {.value = i};
            if (exec_try_submit(ex, &rec, sizeof rec, i) != 0)
                break;
        }
        pid_t d[16];
        int n = fu_descendants(d, 16);
        if (write(p[1], &n, sizeof n) != sizeof n || write(p[1], d, sizeof d) != sizeof d)
            _exit(1);
        for (;;)
            pause();
    }
    close(p[1]);
    int n = 0;
    pid_t d[16];
    assert_int_equal(read(p[0], &n, sizeof n), sizeof n);
    assert_int_equal(read(p[0], d, sizeof d), sizeof d);
    close(p[0]);
    assert_int_equal(n, 3);
    assert_int_equal(kill(host, SIGKILL), 0);
    assert_int_equal(waitpid(host, NULL, 0), host);
    uint64_t t0 = (uint64_t)time(NULL);
    bool gone = false;
    for (int k = 0; k < 100 && !gone; k++) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        gone = true;
        for (int i = 0; i < n; i++)
            if (!pid_gone(d[i]))
                gone = false;
        if (!gone)
            usleep(10000);
    }
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    assert_true(gone);
    assert_true((uint64_t)time(NULL) - t0 <= 2);
    prctl(PR_SET_CHILD_SUBREAPER, 0);
}

/* ------------------------------------------------------------------------- */
/* A host whose other threads hold a mutex and loop in malloc                */
/* ------------------------------------------------------------------------- */

static pthread_mutex_t host_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int host_stop;

static void *host_thread(void *arg)
{
    (void)arg;
    unsigned x = 1;
    while (!atomic_load(&host_stop)) {
        pthread_mutex_lock(&host_mu);
        for (int i = 0; i < 200; i++) {
            x = x * 1103515245u + 12345u;
            void *m = malloc(16 + x % 4096);
            free(m);
        }
        pthread_mutex_unlock(&host_mu);
    }
    return NULL;
}

static void test_busy_host(void **state)
{
    (void)state;
    pthread_t t[3];
    atomic_store(&host_stop, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, host_thread, NULL), 0);
    struct fu_ctx ctx = {.salt = 9};
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &fu_ops, &ctx, EXEC_FORK, &o), 0);
    struct fu_run r = {.n = scale(30000), .salt = ctx.salt, .plan = plan_crashy};
    assert_int_equal(fu_drive(ex, &r), 0);
    fu_assert_clean(&r);
    assert_int_equal(r.crashed, r.n / 100);
    exec_destroy(ex);
    atomic_store(&host_stop, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
}

/* A host that ignores SIGCHLD (its children are reaped by the kernel). */
static void test_sigchld_ignored(void **state)
{
    (void)state;
    struct sigaction old, ign = {.sa_handler = SIG_IGN};
    sigaction(SIGCHLD, &ign, &old);
    int fds = fu_count_fds();
    struct fu_ctx ctx = {.salt = 4};
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &fu_ops, &ctx, EXEC_FORK, &o), 0);
    struct fu_run r = {.n = scale(20000), .salt = ctx.salt, .plan = plan_crashy};
    assert_int_equal(fu_drive(ex, &r), 0);
    fu_assert_clean(&r);
    exec_destroy(ex);
    pid_t kids[8];
    assert_int_equal(fu_descendants(kids, 8), 0);
    assert_int_equal(fu_count_fds(), fds);
    sigaction(SIGCHLD, &old, NULL);
}

/* ------------------------------------------------------------------------- */
/* Two fork executors and one threads executor side by side                  */
/* ------------------------------------------------------------------------- */

static int ts_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    const struct fu_ctx *c = ctx;
    struct fu_rec r;
    if (len != sizeof r)
        return 99;
    memcpy(&r, rec, sizeof r);
    uint64_t v = fu_expect(r.value, c->salt);
    return exec_write(out, &v, sizeof v);
}

static const exec_ops_t ts_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .process = ts_process,
};

struct side {
    exec_t *ex;
    struct fu_run r;
    int rc;
};

static void *side_main(void *arg)
{
    struct side *s = arg;
    s->rc = fu_drive(s->ex, &s->r);
    return NULL;
}

static void test_side_by_side(void **state)
{
    (void)state;
    struct fu_ctx c[3] = {{.salt = 100}, {.salt = 200}, {.salt = 300}};
    struct side s[3];
    memset(s, 0, sizeof s);
    exec_options_t o = {.workers = 2};
    assert_int_equal(exec_create(&s[0].ex, &fu_ops, &c[0], EXEC_FORK, &o), 0);
    assert_int_equal(exec_create(&s[1].ex, &ts_ops, &c[1], EXEC_FORK, &o), 0);
    assert_int_equal(exec_create(&s[2].ex, &ts_ops, &c[2], EXEC_THREADS, &o), 0);
    assert_int_equal(exec_backend(s[2].ex), EXEC_THREADS);
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        s[i].r.n = scale(200000);
        s[i].r.salt = c[i].salt;
        s[i].r.plan = i == 0 ? plan_crashy : NULL;
        assert_int_equal(pthread_create(&t[i], NULL, side_main, &s[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(s[i].rc, 0);
        fu_assert_clean(&s[i].r);
    }
    assert_int_equal(s[0].r.crashed, s[0].r.n / 100);
    for (int i = 0; i < 3; i++)
        exec_destroy(s[i].ex);
    pid_t kids[8];
    assert_int_equal(fu_descendants(kids, 8), 0);
    assert_int_equal(fu_memfd_maps(), 0);
}

/* ------------------------------------------------------------------------- */
/* EXEC_CLOSE_FDS                                                            */
/* ------------------------------------------------------------------------- */

struct fdctx {
    int probe; /* a host descriptor the workers should not hold */
    int keep;  /* one in keep_fds */
};

static int fd_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws, (void)rec, (void)len;
    const struct fdctx *c = ctx;
    char r[2] = {fcntl(c->probe, F_GETFD) >= 0 ? 'o' : 'c', fcntl(c->keep, F_GETFD) >= 0 ? 'o' : 'c'};
    return exec_write(out, r, 2);
}

static const exec_ops_t fd_ops = {
    .version = EXEC_OPS_VERSION, .caps = EXEC_CAP_FORK_SAFE, .process = fd_process};

/* Every worker (two, 40 records) answers want, from generation gen. */
static void fd_expect(exec_t *ex, const char *want, uint64_t gen)
{
    for (uint64_t t = 0; t < 40; t++)
        assert_int_equal(exec_submit(ex, "x", 1, t), 0);
    exec_result_t r;
    for (int i = 0; i < 40; i++) {
        assert_int_equal(exec_next(ex, &r, 10000), 0);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.generation, gen);
        assert_int_equal(r.len, 2);
        assert_memory_equal(r.data, want, 2);
    }
}

/* After the host closes its write end, does its read end see EOF? Only if
 * no worker holds a copy. */
static bool fd_eof(int rd)
{
    char c;
    return read(rd, &c, 1) == 0;
}

static void test_close_fds(void **state)
{
    (void)state;
    for (int closing = 0; closing < 2; closing++) {
        int p[2], k[2], p2[2];
        assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
        assert_int_equal(pipe2(k, O_CLOEXEC), 0);
        struct fdctx c = {.probe = p[1], .keep = k[0]};
        int keep[1] = {k[0]};
        exec_options_t o = {.workers = 2,
                            .flags = closing ? EXEC_CLOSE_FDS : 0,
                            .keep_fds = keep,
                            .n_keep_fds = 1};
        exec_t *ex;
        assert_int_equal(exec_create(&ex, &fd_ops, &c, EXEC_FORK, &o), 0);
        keep[0] = -7; /* the executor has its own copy */
        exec_options_t got;
        assert_int_equal(exec_get_options(ex, &got), 0);
        assert_int_equal(got.n_keep_fds, 1);
        assert_int_equal(got.keep_fds[0], k[0]);
        fd_expect(ex, closing ? "co" : "oo", 0);
        close(p[1]);
        assert_int_equal(fd_eof(p[0]), closing);

        /* A swap forks a new zygote from the host as it is then. */
        assert_int_equal(pipe2(p2, O_CLOEXEC | O_NONBLOCK), 0);
        struct fdctx c2 = {.probe = p2[1], .keep = k[0]};
        assert_int_equal(exec_swap_context(ex, &c2), 0);
        fd_expect(ex, closing ? "co" : "oo", 1);
        close(p2[1]);
        assert_int_equal(fd_eof(p2[0]), closing);

        assert_int_equal(exec_finish(ex), 0);
        exec_result_t r;
        assert_int_equal(exec_next(ex, &r, 10000), EXEC_EOF);
        exec_destroy(ex);
        /* Gone with the workers either way. */
        assert_true(fd_eof(p[0]));
        assert_true(fd_eof(p2[0]));
        close(p[0]), close(p2[0]), close(k[0]), close(k[1]);
    }

    /* The list is checked. */
    exec_t *ex = (exec_t *)&ex;
    int bad[1] = {-1};
    exec_options_t o = {.workers = 1, .flags = EXEC_CLOSE_FDS, .n_keep_fds = 1};
    assert_int_equal(exec_create(&ex, &fd_ops, NULL, EXEC_FORK, &o), EXEC_EINVAL);
    assert_null(ex);
    o.keep_fds = bad;
    assert_int_equal(exec_create(&ex, &fd_ops, NULL, EXEC_FORK, &o), EXEC_EINVAL);
    o.n_keep_fds = 1025;
    assert_int_equal(exec_create(&ex, &fd_ops, NULL, EXEC_FORK, &o), EXEC_EINVAL);
    o.flags = 0x80;
    o.n_keep_fds = 0;
    assert_int_equal(exec_create(&ex, &fd_ops, NULL, EXEC_FORK, &o), EXEC_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recycle),
        cmocka_unit_test(test_recycle_ordered),
        cmocka_unit_test(test_destroy_leaves_nothing),
        cmocka_unit_test(test_host_killed),
        cmocka_unit_test(test_busy_host),
        cmocka_unit_test(test_sigchld_ignored),
        cmocka_unit_test(test_side_by_side),
        cmocka_unit_test(test_close_fds),
    };
    if (getenv("FU_ONLY"))
        cmocka_set_test_filter(getenv("FU_ONLY"));
    return tu_run_group_tests(tests, NULL, NULL);
}
