/*
 * Resource limits: a full descriptor table while a worker is replaced, a low
 * RLIMIT_NOFILE at create, RLIMIT_NPROC reached. Each gives a clear error at
 * once (never a hang or a code that blames something else), loses no record,
 * and leaves nothing behind.
 */
#include "forkutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/resource.h>

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The descriptor table filled up to (soft limit - room) with dups of one fd. */
struct fdfill {
    struct rlimit old;
    int *fds;
    int n, cap;
};

static void fd_fill(struct fdfill *f, int room)
{
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &f->old), 0);
    /* A small table, so that filling it is quick. */
    struct rlimit lim = f->old;
    lim.rlim_cur = (rlim_t)fu_count_fds() + 64;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
    f->cap = (int)lim.rlim_cur;
    f->fds = calloc(lim.rlim_cur, sizeof *f->fds);
    assert_non_null(f->fds);
    f->n = 0;
    int fd;
    while ((fd = fcntl(0, F_DUPFD_CLOEXEC, 0)) >= 0)
        f->fds[f->n++] = fd;
    assert_int_equal(errno, EMFILE);
    for (int k = 0; k < room && f->n > 0; k++)
        close(f->fds[--f->n]);
}

/* Another thread of the host that keeps the table full: whatever descriptor
 * is freed, it takes at once. */
struct filler {
    struct fdfill *f;
    int cap;
    atomic_bool stop;
    pthread_t th;
};

static void *filler_main(void *arg)
{
    struct filler *fl = arg;
    while (!atomic_load(&fl->stop)) {
        int fd;
        while (fl->f->n < fl->cap && (fd = fcntl(0, F_DUPFD_CLOEXEC, 0)) >= 0)
            fl->f->fds[fl->f->n++] = fd;
        usleep(50);
    }
    return NULL;
}

static void filler_start(struct filler *fl, struct fdfill *f)
{
    fl->f = f;
    fl->cap = f->cap;
    atomic_store(&fl->stop, false);
    assert_int_equal(pthread_create(&fl->th, NULL, filler_main, fl), 0);
}

static void filler_stop(struct filler *fl)
{
    atomic_store(&fl->stop, true);
    pthread_join(fl->th, NULL);
}

static void fd_free(struct fdfill *f)
{
    while (f->n > 0)
        close(f->fds[--f->n]);
    free(f->fds);
    f->fds = NULL;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &f->old), 0);
}

/*
 * Workers number themselves at worker_init (a shared counter): the first
 * `first` are the originals, later ones are replacements. A record with
 * action L_NEW_CRASH crashes a replacement and is an ordinary record for an
 * original.
 */
enum { L_NEW_CRASH = 100 };

struct lctx {
    struct fu_ctx fu; /* first: fu_process reads it */
    unsigned *starts; /* MAP_SHARED */
    unsigned first;
};

static unsigned l_ordinal; /* this process's number (each worker has its own copy) */

static int l_init(void *ctx, void **ws)
{
    (void)ws;
    struct lctx *c = ctx;
    l_ordinal = __atomic_add_fetch(c->starts, 1, __ATOMIC_ACQ_REL);
    return 0;
}

static int l_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    struct lctx *c = ctx;
    struct fu_rec r;
    if (len == sizeof r) {
        memcpy(&r, rec, sizeof r);
        if (r.action == L_NEW_CRASH) {
            if (l_ordinal > c->first)
                abort();
            r.action = FU_OK;
            return fu_process(ctx, ws, &r, sizeof r, out);
        }
    }
    return fu_process(ctx, ws, rec, len, out);
}

static const exec_ops_t l_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_FORK_SAFE,
    .process = l_process,
    .worker_init = l_init,
};

/* Submits tags [from, to), collects everything. */
static void stream(exec_t *ex, uint64_t from, uint64_t to, uint8_t (*plan)(uint64_t),
                   unsigned char *seen, uint64_t *ok, uint64_t *crashed, uint64_t *gave_up,
                   uint64_t salt)
{
    exec_result_t res;
    uint64_t got = 0, want = to - from;
    for (uint64_t i = from; i < to || got < want;) {
        if (i < to) {
            struct fu_rec r = {.action = plan(i), .value = i};
            int rc = exec_try_submit(ex, &r, sizeof r, i);
            if (rc == 0) {
                i++;
                continue;
            }
            assert_int_equal(rc, EXEC_EAGAIN);
        }
        /* A hang here is the defect: a record that never gets a result. */
        int rc = exec_next(ex, &res, 30000);
        if (rc != 0)
            print_error("exec_next: %s after %" PRIu64 " of %" PRIu64 " results\n",
                        exec_err_name(rc), got, want);
        assert_int_equal(rc, 0);
        assert_true(res.tag >= from && res.tag < to);
        assert_int_equal(seen[res.tag]++, 0);
        got++;
        if (plan(res.tag) == FU_SEGV) {
            assert_int_equal(res.status, EXEC_ECRASHED);
            (*crashed)++;
        } else if (plan(res.tag) == L_NEW_CRASH && res.status == EXEC_ECRASHED) {
            (*crashed)++; /* a replacement that got its pidfd after all */
        } else if (res.status == EXEC_EWORKER) {
            (*gave_up)++; /* queued on a place whose replacement could not start */
        } else {
            if (res.status != 0)
                print_error("tag %" PRIu64 ": %s\n", res.tag, exec_err_name(res.status));
            assert_int_equal(res.status, 0);
            uint64_t v;
            assert_int_equal(res.len, sizeof v);
            memcpy(&v, res.data, sizeof v);
            assert_int_equal(v, fu_expect(res.tag, salt));
            (*ok)++;
        }
    }
}

static uint8_t plan_full(uint64_t i)
{
    return i == 50 ? FU_SEGV : i > 50 && i % 7 == 0 ? L_NEW_CRASH : FU_OK;
}

static uint8_t plan_plain(uint64_t i)
{
    (void)i;
    return FU_OK;
}

/*
 * A worker crashes while another thread of the host keeps the descriptor
 * table full: its replacement's pidfd cannot be received (unless it wins the
 * race for a freed descriptor). Every record still gets exactly one result
 * (a replacement the supervisor cannot watch never runs records: a crash on
 * L_NEW_CRASH means it was watched), and once descriptors are free again the
 * executor serves on.
 */
static void test_respawn_with_full_fd_table(void **state)
{
    (void)state;
    unsigned *starts = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(starts != MAP_FAILED);
    struct lctx ctx = {.fu = {.salt = 0x51}, .starts = starts, .first = 2};
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    int fds0 = fu_count_fds();
    assert_int_equal(exec_create(&ex, &l_ops, &ctx, EXEC_FORK, &o), 0);
    const uint64_t n = 1000;
    unsigned char *seen = calloc(n, 1);
    assert_non_null(seen);
    uint64_t ok = 0, crashed = 0, gave_up = 0;
    struct fdfill f;
    fd_fill(&f, 0);
    struct filler fl;
    filler_start(&fl, &f);
    stream(ex, 0, 500, plan_full, seen, &ok, &crashed, &gave_up, ctx.fu.salt);
    filler_stop(&fl);
    fd_free(&f);
    assert_true(crashed >= 1);
    assert_int_equal(ok + gave_up + crashed, 500);
    /* Descriptors are back: the stream goes on. */
    stream(ex, 500, n, plan_plain, seen, &ok, &crashed, &gave_up, ctx.fu.salt);
    assert_int_equal(ok + gave_up + crashed, n);
    assert_int_equal(exec_finish(ex), 0);
    exec_result_t res;
    assert_int_equal(exec_next(ex, &res, 10000), EXEC_EOF);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.delivered, n);
    assert_int_equal(st.crashed, crashed);
    exec_destroy(ex);
    free(seen);
    munmap(starts, 4096);
    assert_int_equal(fu_count_fds(), fds0);
    pid_t kids[8];
    assert_int_equal(fu_descendants(kids, 8), 0);
}

/*
 * exec_create(EXEC_FORK) with only a few descriptors free: it either works,
 * or fails at once with the system's reason (-EMFILE), never with
 * EXEC_EINIT after start_timeout_ms, and leaves nothing behind.
 */
static void test_create_low_nofile(void **state)
{
    (void)state;
    struct fu_ctx ctx = {.salt = 3};
    exec_options_t o = {.workers = 2, .start_timeout_ms = 30000};
    int fds0 = fu_count_fds();
    unsigned worked = 0, failed = 0;
    for (int room = 0; room <= 14; room++) {
        struct fdfill f;
        fd_fill(&f, room);
        exec_t *ex = NULL;
        uint64_t t0 = now_ms();
        int rc = exec_create(&ex, &fu_ops, &ctx, EXEC_FORK, &o);
        uint64_t took = now_ms() - t0;
        if (rc == 0) {
            /* With room enough it must really work. */
            struct fu_run r = {.n = 1000, .salt = ctx.salt};
            assert_int_equal(fu_drive(ex, &r), 0);
            fu_assert_clean(&r);
            exec_destroy(ex);
            worked++;
        } else {
            if (rc != -EMFILE)
                print_error("room %d: %s (%s) after %" PRIu64 " ms\n", room, exec_err_name(rc),
                            exec_strerror(rc), took);
            assert_int_equal(rc, -EMFILE);
            assert_null(ex);
            failed++;
        }
        assert_true(took < 10000);
        fd_free(&f);
        assert_int_equal(fu_count_fds(), fds0);
        pid_t kids[8];
        assert_int_equal(fu_descendants(kids, 8), 0);
    }
    assert_true(failed > 0);
    assert_true(worked > 0);
}

/*
 * RLIMIT_NPROC reached (in a child running as an unprivileged user, where
 * the limit applies): both backends say so with EXEC_ELIMIT, whose text
 * names the cause.
 */
static void test_nproc_limit(void **state)
{
    (void)state;
    if (getuid() != 0)
        skip(); /* needs to become another user for the limit to apply */
    struct passwd *pw = getpwnam("nobody");
    uid_t uid = pw ? pw->pw_uid : 65534;
    gid_t gid = pw ? pw->pw_gid : 65534;
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int out[2] = {1, 1};
        close(pipefd[0]);
        if (setgid(gid) == 0 && setuid(uid) == 0) {
            struct rlimit one = {1, 1};
            if (setrlimit(RLIMIT_NPROC, &one) == 0) {
                static struct fu_ctx ctx;
                static const exec_ops_t both = {.version = EXEC_OPS_VERSION,
                                                .caps = EXEC_CAP_THREAD_SAFE |
                                                        EXEC_CAP_FORK_SAFE,
                                                .process = fu_process};
                exec_options_t o = {.workers = 2};
                exec_t *ex = NULL;
                out[0] = exec_create(&ex, &both, &ctx, EXEC_THREADS, &o);
                out[1] = exec_create(&ex, &both, &ctx, EXEC_FORK, &o);
            }
        }
        ssize_t w = write(pipefd[1], out, sizeof out);
        _exit(w == (ssize_t)sizeof out ? 0 : 1);
    }
    close(pipefd[1]);
    int got[2] = {0, 0};
    assert_int_equal(read(pipefd[0], got, sizeof got), (ssize_t)sizeof got);
    close(pipefd[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (got[0] == 1)
        skip(); /* could not become that user, or set the limit */
    assert_int_equal(got[0], EXEC_ELIMIT);
    assert_int_equal(got[1], EXEC_ELIMIT);
    assert_non_null(strstr(exec_strerror(EXEC_ELIMIT), "limit"));
    assert_string_equal(exec_err_name(EXEC_ELIMIT), "EXEC_ELIMIT");
}

/*
 * A swap while the descriptor table is full: it fails with the system's
 * reason and the old context serves on; with descriptors back, it works.
 */
static uint64_t salt_of_gen[2];

static void stream_gen(exec_t *ex, uint64_t from, uint64_t n, uint64_t want_gen)
{
    exec_result_t res;
    uint64_t got = 0;
    for (uint64_t i = from; i < from + n || got < n;) {
        if (i < from + n) {
            struct fu_rec r = {.action = FU_OK, .value = i};
            int rc = exec_try_submit(ex, &r, sizeof r, i);
            if (rc == 0) {
                i++;
                continue;
            }
            assert_int_equal(rc, EXEC_EAGAIN);
        }
        assert_int_equal(exec_next(ex, &res, 30000), 0);
        assert_int_equal(res.status, 0);
        assert_int_equal(res.generation, want_gen);
        uint64_t v;
        memcpy(&v, res.data, sizeof v);
        assert_int_equal(v, fu_expect(res.tag, salt_of_gen[want_gen]));
        got++;
    }
}

static void test_swap_with_full_fd_table(void **state)
{
    (void)state;
    struct fu_ctx c0 = {.salt = 0x70}, c1 = {.salt = 0x71};
    salt_of_gen[0] = c0.salt;
    salt_of_gen[1] = c1.salt;
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    int fds0 = fu_count_fds();
    assert_int_equal(exec_create(&ex, &fu_ops, &c0, EXEC_FORK, &o), 0);
    stream_gen(ex, 0, 300, 0);
    struct fdfill f;
    fd_fill(&f, 0);
    int rc = exec_swap_context(ex, &c1);
    stream_gen(ex, 300, 300, 0); /* the old context serves on */
    fd_free(&f);
    assert_int_equal(rc, -EMFILE);
    assert_int_equal(c1.released, 0);
    assert_int_equal(exec_swap_context(ex, &c1), 0);
    stream_gen(ex, 600, 300, 1);
    exec_destroy(ex);
    assert_int_equal(c0.released, 1);
    assert_int_equal(c1.released, 1);
    assert_int_equal(fu_count_fds(), fds0);
}

/* Runs fn in a child that became `nobody` (the limits below apply to it);
 * fn writes its findings to the pipe. Skips when that cannot be done. */
static void as_nobody(void (*fn)(int out), void *found, size_t len)
{
    if (getuid() != 0)
        skip();
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pipefd[0]);
        struct passwd *pw = getpwnam("nobody");
        if (setgid(pw ? pw->pw_gid : 65534) != 0 || setuid(pw ? pw->pw_uid : 65534) != 0)
            _exit(3);
        fn(pipefd[1]);
        _exit(0);
    }
    close(pipefd[1]);
    ssize_t n = read(pipefd[0], found, len);
    close(pipefd[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 3)
        skip();
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(n, (ssize_t)len);
}

/* What the child saw, mid-stream under RLIMIT_NPROC. */
struct nproc_mid {
    int swap_rc;
    uint64_t ok, crashed, gave_up, lost, dup;
};

static uint8_t plan_crash_50(uint64_t i) { return i == 50 ? FU_SEGV : FU_OK; }

static void nproc_mid(int out)
{
    struct nproc_mid m = {0};
    static struct fu_ctx c0 = {.salt = 0x80}, c1 = {.salt = 0x81};
    exec_options_t o = {.workers = 2};
    exec_t *ex = NULL;
    if (exec_create(&ex, &fu_ops, &c0, EXEC_FORK, &o) != 0)
        _exit(4);
    /* No more processes for this user, for us and for the zygote. */
    struct rlimit one = {1, 1};
    pid_t kids[8];
    int nk = fu_children_of(getpid(), kids, 8);
    for (int k = 0; k < nk && k < 8; k++)
        prlimit(kids[k], RLIMIT_NPROC, &one, NULL);
    setrlimit(RLIMIT_NPROC, &one);
    m.swap_rc = exec_swap_context(ex, &c1);
    /* A worker crashes and cannot be replaced: no record is lost. */
    enum { N = 400 };
    unsigned char seen[N] = {0};
    exec_result_t res;
    uint64_t got = 0;
    for (uint64_t i = 0; i < N || got < N;) {
        if (i < N) {
            struct fu_rec r = {.action = plan_crash_50(i), .value = i};
            int rc = exec_try_submit(ex, &r, sizeof r, i);
            if (rc == 0) {
                i++;
                continue;
            }
        }
        if (exec_next(ex, &res, 30000) != 0)
            break;
        got++;
        if (res.tag >= N || seen[res.tag]++) {
            m.dup++;
            continue;
        }
        if (res.status == 0)
            m.ok++;
        else if (res.status == EXEC_ECRASHED)
            m.crashed++;
        else if (res.status == EXEC_EWORKER)
            m.gave_up++;
    }
    for (unsigned i = 0; i < N; i++)
        m.lost += !seen[i];
    exec_destroy(ex);
    ssize_t w = write(out, &m, sizeof m);
    (void)w;
}

static void test_nproc_mid_stream(void **state)
{
    (void)state;
    struct nproc_mid m;
    as_nobody(nproc_mid, &m, sizeof m);
    assert_int_equal(m.swap_rc, EXEC_ELIMIT);
    assert_int_equal(m.lost, 0);
    assert_int_equal(m.dup, 0);
    assert_int_equal(m.crashed, 1);
    assert_true(m.ok > 0);
    assert_int_equal(m.ok + m.crashed + m.gave_up, 400);
}

/* Address space too small for a region or a thread's stack (RLIMIT_AS). */
struct as_low {
    int fork_rc, threads_rc;
};

static void as_low(int out)
{
    struct as_low a;
    static struct fu_ctx ctx;
    static const exec_ops_t both = {.version = EXEC_OPS_VERSION,
                                    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
                                    .process = fu_process};
    unsigned long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%lu", &pages) != 1)
        _exit(5);
    fclose(f);
    struct rlimit lim = {(rlim_t)pages * 4096 + (8u << 20), (rlim_t)pages * 4096 + (8u << 20)};
    setrlimit(RLIMIT_AS, &lim);
    exec_options_t o = {.workers = 2};
    exec_t *ex = NULL;
    a.fork_rc = exec_create(&ex, &both, &ctx, EXEC_FORK, &o);
    if (a.fork_rc == 0)
        exec_destroy(ex);
    a.threads_rc = exec_create(&ex, &both, &ctx, EXEC_THREADS, &o);
    if (a.threads_rc == 0)
        exec_destroy(ex);
    ssize_t w = write(out, &a, sizeof a);
    (void)w;
}

static void test_address_space_low(void **state)
{
    (void)state;
    if (fu_sanitized())
        skip(); /* the sanitizers reserve far more address space than this allows */
    struct as_low a;
    as_nobody(as_low, &a, sizeof a);
    /* The region does not fit: out of memory. A thread's stack does not fit:
     * pthread_create's EAGAIN, which names no more than a limit. */
    assert_int_equal(a.fork_rc, EXEC_ENOMEM);
    assert_true(a.threads_rc == EXEC_ELIMIT || a.threads_rc == EXEC_ENOMEM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_respawn_with_full_fd_table),
        cmocka_unit_test(test_create_low_nofile),
        cmocka_unit_test(test_nproc_limit),
        cmocka_unit_test(test_swap_with_full_fd_table),
        cmocka_unit_test(test_nproc_mid_stream),
        cmocka_unit_test(test_address_space_low),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
