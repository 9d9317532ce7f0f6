/* EXEC_FORK's fork hooks (exec_options_t.fork_hooks): called on the forking
 * thread around every fork, in the right process and order, once per prepare
 * even when the fork fails; the zygote forked on the calling thread outlives
 * a short-lived thread but not the host process; a dead zygote is forked
 * again only by a host call. Every hook writes what it saw into a log in
 * shared memory, which the zygote and the workers inherit. */
#include "forkutil.h"

#include <pthread.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

enum { EV_PREPARE = 1, EV_PARENT, EV_CHILD, EV_INIT };

struct hk_ev {
    int kind;
    int pid, tid; /* where the hook ran */
    int arg;      /* parent: the pid it was given */
    int all_blocked;
    int sigpipe_dfl;
};

#define HK_MAX 512
struct hk_log {
    unsigned n;
    struct hk_ev ev[HK_MAX];
};

static struct hk_log *hk_new(void)
{
    void *p = mmap(NULL, sizeof(struct hk_log), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

static void hk_free(struct hk_log *l) { munmap(l, sizeof *l); }

/* Async-signal-safe: the child hooks run right after fork. */
static void hk_add(struct hk_log *l, int kind, int arg)
{
    unsigned i = __atomic_fetch_add(&l->n, 1, __ATOMIC_ACQ_REL);
    if (i >= HK_MAX)
        return;
    sigset_t cur;
    sigprocmask(SIG_SETMASK, NULL, &cur);
    struct sigaction sa;
    sigaction(SIGPIPE, NULL, &sa);
    l->ev[i] = (struct hk_ev){.kind = kind,
                              .pid = (int)getpid(),
                              .tid = (int)syscall(SYS_gettid),
                              .arg = arg,
                              .all_blocked = sigismember(&cur, SIGTERM) && sigismember(&cur, SIGINT),
                              .sigpipe_dfl = sa.sa_handler == SIG_DFL};
}

static void hk_prepare(void *arg) { hk_add(arg, EV_PREPARE, 0); }
static void hk_parent(void *arg, int pid) { hk_add(arg, EV_PARENT, pid); }
static void hk_child(void *arg) { hk_add(arg, EV_CHILD, 0); }

/* The classifier: forkutil's, plus a worker_init that logs. Its context
 * carries the log. */
struct hk_ctx {
    struct fu_ctx fu; /* first: fu_process reads it */
    struct hk_log *log;
};

static int hk_init(void *ctx, void **ws)
{
    (void)ws;
    hk_add(((struct hk_ctx *)ctx)->log, EV_INIT, 0);
    return 0;
}

static const exec_ops_t hk_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_FORK_SAFE,
    .name = "hooks",
    .process = fu_process,
    .worker_init = hk_init,
};

static exec_options_t hk_opts(struct hk_log *l, unsigned workers)
{
    exec_options_t o = {.workers = workers};
    o.fork_hooks = (exec_fork_hooks_t){hk_prepare, hk_parent, hk_child, l};
    return o;
}

static int hk_count(const struct hk_log *l, int kind, int pid)
{
    int n = 0;
    for (unsigned i = 0; i < l->n && i < HK_MAX; i++)
        if (l->ev[i].kind == kind && (pid == 0 || l->ev[i].pid == pid))
            n++;
    return n;
}

/* The index of the k-th event of kind in pid (-1: none). */
static int hk_find(const struct hk_log *l, int kind, int pid, int k)
{
    for (unsigned i = 0; i < l->n && i < HK_MAX; i++)
        if (l->ev[i].kind == kind && l->ev[i].pid == pid && k-- == 0)
            return (int)i;
    return -1;
}

/* In one process, every prepare is followed by its parent before the next
 * prepare. Returns how many pairs, once the last one is complete (a worker
 * may be admitted before its zygote's parent hook has run). */
static int hk_pairs(const struct hk_log *l, int pid)
{
    for (int tries = 0;; tries++) {
        int open = 0, pairs = 0;
        for (unsigned i = 0; i < l->n && i < HK_MAX; i++) {
            if (l->ev[i].pid != pid)
                continue;
            if (l->ev[i].kind == EV_PREPARE) {
                assert_int_equal(open, 0);
                open = 1;
            } else if (l->ev[i].kind == EV_PARENT) {
                assert_int_equal(open, 1);
                open = 0;
                pairs++;
            }
        }
        if (!open)
            return pairs;
        assert_true(tries < 200);
        usleep(10000);
    }
}

static int hk_tid(void) { return (int)syscall(SYS_gettid); }

/* The zygote a host's parent hook was told about, the k-th one. */
static int hk_zygote(const struct hk_log *l, int k)
{
    int i = hk_find(l, EV_PARENT, (int)getpid(), k);
    assert_true(i >= 0);
    return l->ev[i].arg;
}

/* Threads of this process. */
static int hk_tasks(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    if (d)
        closedir(d);
    return n;
}

static bool hk_alive(pid_t p)
{
    if (kill(p, 0) != 0)
        return false;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)p);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *q = strrchr(buf, ')');
    return q && q[2] != 'Z' && q[2] != 'X';
}

/* ------------------------------------------------------------------------- */

/* Where and in what order each hook runs, at create and when a crashed
 * worker is replaced. */
static void test_where_and_order(void **state)
{
    (void)state;
    struct hk_log *l = hk_new();
    struct hk_ctx ctx = {.fu = {.salt = 5}, .log = l};
    exec_options_t o = hk_opts(l, 2);
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigaction(SIGPIPE, &ign, &old); /* the zygote resets it before the child hook */
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &hk_ops, &ctx, EXEC_FORK, &o), 0);
    sigaction(SIGPIPE, &old, NULL);
    const int me = (int)getpid();

    /* The host: one prepare and one parent, on this thread, in that order. */
    assert_int_equal(hk_count(l, EV_PREPARE, me), 1);
    assert_int_equal(hk_count(l, EV_PARENT, me), 1);
    assert_int_equal(hk_pairs(l, me), 1);
    int ip = hk_find(l, EV_PREPARE, me, 0), ipa = hk_find(l, EV_PARENT, me, 0);
    assert_int_equal(l->ev[ip].tid, hk_tid());
    assert_int_equal(l->ev[ipa].tid, hk_tid());
    const int z = l->ev[ipa].arg;
    assert_true(z > 0 && z != me);

    /* The zygote: its child hook, every signal blocked, SIGPIPE at SIG_DFL;
     * then one prepare/parent pair per worker it forked. */
    assert_int_equal(hk_count(l, EV_CHILD, z), 1);
    int ic = hk_find(l, EV_CHILD, z, 0);
    assert_true(l->ev[ic].all_blocked);
    assert_true(l->ev[ic].sigpipe_dfl);
    assert_int_equal(hk_pairs(l, z), 2);
    assert_int_equal(hk_count(l, EV_INIT, z), 0);

    /* Each worker: a child hook (signals still blocked), then worker_init;
     * the zygote's parent hook named it. */
    for (int k = 0; k < 2; k++) {
        int w = l->ev[hk_find(l, EV_PARENT, z, k)].arg;
        assert_true(w > 0 && w != z && w != me);
        int c = hk_find(l, EV_CHILD, w, 0), in = hk_find(l, EV_INIT, w, 0);
        assert_true(c >= 0 && in >= 0);
        assert_true(c < in);
        assert_true(l->ev[c].all_blocked);
        assert_int_equal(hk_count(l, EV_CHILD, w), 1);
    }
    exec_worker_stats_t ws;
    for (unsigned i = 0; i < 2; i++) {
        assert_int_equal(exec_worker_stats(ex, i, &ws), 0);
        assert_int_equal(hk_count(l, EV_INIT, ws.pid), 1);
    }

    /* A record that crashes its worker: the replacement's fork is hooked
     * too, in the zygote; the host forks nothing. */
    struct fu_rec bad = {.action = FU_SEGV};
    exec_result_t res;
    assert_int_equal(exec_submit(ex, &bad, sizeof bad, 1), 0);
    assert_int_equal(exec_next(ex, &res, 10000), 0);
    assert_int_equal(res.status, EXEC_ECRASHED);
    struct fu_run r = {.n = 2000, .salt = ctx.fu.salt};
    assert_int_equal(fu_drive(ex, &r), 0);
    fu_assert_clean(&r);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_true(st.respawns >= 1);
    /* The replacement may be forked after the stream (a back-off). */
    for (int k = 0; k < 300 && hk_count(l, EV_INIT, 0) < 3; k++)
        usleep(10000);
    assert_int_equal(hk_pairs(l, z), 2 + (int)st.respawns);
    assert_int_equal(hk_count(l, EV_CHILD, 0), 1 + 2 + (int)st.respawns);
    assert_int_equal(hk_pairs(l, me), 1);
    exec_destroy(ex);
    hk_free(l);
}

/* A swap from another thread forks the new zygote on that thread. */
struct swap_arg {
    exec_t *ex;
    void *ctx;
    int tid, rc;
};

static void *swap_main(void *arg)
{
    struct swap_arg *a = arg;
    a->tid = hk_tid();
    a->rc = exec_swap_context(a->ex, a->ctx);
    return NULL;
}

static void test_swap_on_its_thread(void **state)
{
    (void)state;
    struct hk_log *l = hk_new();
    struct hk_ctx c0 = {.fu = {.salt = 11}, .log = l}, c1 = {.fu = {.salt = 12}, .log = l};
    exec_options_t o = hk_opts(l, 2);
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &hk_ops, &c0, EXEC_FORK, &o), 0);
    struct fu_run r0 = {.n = 500, .salt = 11};
    assert_int_equal(fu_drive(ex, &r0), 0); /* records for the canary to replay */
    fu_assert_clean(&r0);
    exec_destroy(ex);

    l->n = 0;
    assert_int_equal(exec_create(&ex, &hk_ops, &c0, EXEC_FORK, &o), 0);
    struct fu_rec rec = {.value = 1};
    exec_result_t res;
    for (int i = 0; i < 50; i++) {
        assert_int_equal(exec_submit(ex, &rec, sizeof rec, 1), 0);
        assert_int_equal(exec_next(ex, &res, 10000), 0);
    }
    struct swap_arg a = {.ex = ex, .ctx = &c1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, swap_main, &a), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(a.rc, 0);
    const int me = (int)getpid();
    assert_int_equal(hk_pairs(l, me), 2);
    int p1 = hk_find(l, EV_PREPARE, me, 1), q1 = hk_find(l, EV_PARENT, me, 1);
    assert_int_equal(l->ev[p1].tid, a.tid);
    assert_int_equal(l->ev[q1].tid, a.tid);
    int z0 = hk_zygote(l, 0), z1 = hk_zygote(l, 1);
    assert_true(z1 > 0 && z1 != z0);
    assert_int_equal(hk_count(l, EV_CHILD, z1), 1);
    assert_int_equal(hk_pairs(l, z1), 2); /* the canary, then the other worker */
    struct fu_run r = {.n = 1000, .salt = 12};
    assert_int_equal(fu_drive(ex, &r), 0);
    fu_assert_clean(&r);
    exec_destroy(ex);
    hk_free(l);
}

/* A zygote forked by a thread that then ends lives on, with its workers. */
struct create_arg {
    exec_t *ex;
    void *ctx;
    exec_options_t o;
    int rc;
};

static void *create_main(void *arg)
{
    struct create_arg *a = arg;
    a->rc = exec_create(&a->ex, &hk_ops, a->ctx, EXEC_FORK, &a->o);
    return NULL;
}

static void test_short_lived_thread(void **state)
{
    (void)state;
    struct hk_log *l = hk_new();
    struct hk_ctx ctx = {.fu = {.salt = 21}, .log = l};
    struct create_arg a = {.ctx = &ctx, .o = hk_opts(l, 2)};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, create_main, &a), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(a.rc, 0);
    usleep(200000); /* a death signal tied to the thread would have come */
    int z = hk_zygote(l, 0);
    assert_true(hk_alive(z));
    struct fu_run r = {.n = 3000, .salt = 21};
    assert_int_equal(fu_drive(a.ex, &r), 0);
    fu_assert_clean(&r);
    assert_int_equal(r.ok, 3000);
    exec_stats_t st;
    assert_int_equal(exec_stats(a.ex, &st), 0);
    assert_int_equal(st.respawns, 0);
    assert_int_equal(hk_pairs(l, (int)getpid()), 1); /* never forked again */
    assert_true(hk_alive(z));
    exec_destroy(a.ex);
    hk_free(l);
}

/*
 * The host process dies (kill -9) after a short-lived thread made its
 * executor, while a child of the host keeps the zygote's channel open (it
 * inherited it): the zygote and its workers are gone within 2 s anyway.
 */
static void test_host_dies(void **state)
{
    (void)state;
    struct hk_log *l = hk_new();
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t host = fork();
    assert_true(host >= 0);
    if (host == 0) {
        close(p[0]);
        static struct hk_ctx ctx;
        ctx = (struct hk_ctx){.fu = {.salt = 31}, .log = l};
        static struct create_arg a;
        a = (struct create_arg){.ctx = &ctx, .o = hk_opts(l, 2)};
        pthread_t t;
        if (pthread_create(&t, NULL, create_main, &a) != 0 || pthread_join(t, NULL) != 0 || a.rc)
            _exit(1);
        /* A child of the host's own, holding a copy of every descriptor. */
        pid_t keeper = fork();
        if (keeper == 0) {
            for (;;)
                pause();
        }
        pid_t out[3] = {keeper, 0, 0};
        for (unsigned i = 0; i < 2; i++) {
            exec_worker_stats_t ws;
            if (exec_worker_stats(a.ex, i, &ws) != 0)
                _exit(1);
            out[1 + i] = ws.pid;
        }
        if (write(p[1], out, sizeof out) != (ssize_t)sizeof out)
            _exit(1);
        for (;;)
            pause();
    }
    close(p[1]);
    pid_t got[3];
    assert_int_equal(read(p[0], got, sizeof got), (ssize_t)sizeof got);
    close(p[0]);
    /* Checked after the host is killed: a failed check leaves nothing. */
    int z = -1;
    for (int k = 0; k < 100 && (z = hk_find(l, EV_PARENT, host, 0)) < 0; k++)
        usleep(10000);
    z = z >= 0 ? l->ev[z].arg : -1;
    usleep(200000);
    const bool lived = z > 0 && hk_alive(z) && hk_alive(got[1]) && hk_alive(got[2]);
    assert_int_equal(kill(host, SIGKILL), 0);
    assert_int_equal(waitpid(host, NULL, 0), host);
    bool gone = false;
    for (int k = 0; k < 200 && !gone; k++) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        gone = !hk_alive(z) && !hk_alive(got[1]) && !hk_alive(got[2]);
        if (!gone)
            usleep(10000);
    }
    const bool kept = hk_alive(got[0]); /* the keeper: the channel stayed open */
    kill(got[0], SIGKILL);
    for (int k = 0; k < 100 && hk_alive(got[0]); k++) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        usleep(10000);
    }
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    assert_true(lived);
    assert_true(kept);
    assert_true(gone);
    hk_free(l);
}

/* A zygote killed while the host makes no call is not replaced; the
 * host's next call forks it again, on its own thread, and no record is
 * lost. */
static void test_refork_on_host_call(void **state)
{
    (void)state;
    struct hk_log *l = hk_new();
    struct hk_ctx ctx = {.fu = {.salt = 41}, .log = l};
    exec_options_t o = hk_opts(l, 2);
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &hk_ops, &ctx, EXEC_FORK, &o), 0);
    const int me = (int)getpid();
    int z = hk_zygote(l, 0);
    assert_int_equal(kill(z, SIGKILL), 0);
    usleep(300000);
    assert_int_equal(hk_pairs(l, me), 1); /* nobody forked meanwhile */
    assert_int_equal(fu_children_of(me, (pid_t[4]){0}, 4), 0);
    struct fu_run r = {.n = 2000, .salt = 41};
    assert_int_equal(fu_drive(ex, &r), 0);
    fu_assert_clean(&r);
    assert_int_equal(r.ok, 2000);
    assert_int_equal(hk_pairs(l, me), 2);
    int p1 = hk_find(l, EV_PREPARE, me, 1);
    assert_int_equal(l->ev[p1].tid, hk_tid());
    int z1 = hk_zygote(l, 1);
    assert_true(z1 > 0 && z1 != z && hk_alive(z1));
    exec_destroy(ex);
    hk_free(l);
}

/*
 * A fork that fails still gets its parent hook, with -errno: the zygote's
 * (in the host) and a worker's (in the zygote). RLIMIT_NPROC applies to an
 * unprivileged user only: a child becomes nobody.
 */
static void test_fork_fails(void **state)
{
    (void)state;
    if (getuid() != 0)
        skip(); /* needs to become another user for the limit to apply */
    struct passwd *pw = getpwnam("nobody");
    uid_t uid = pw ? pw->pw_uid : 65534;
    gid_t gid = pw ? pw->pw_gid : 65534;
    /* Room for the host's threads (a sanitizer may have one) and the
     * supervisor, not for the zygote. Then room for it, not for a worker. */
    for (rlim_t room = 1; room <= 2; room++) {
        struct hk_log *l = hk_new();
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            int rc = 1;
            if (setgid(gid) == 0 && setuid(uid) == 0) {
                rlim_t lim = (rlim_t)hk_tasks() + room;
                struct rlimit rl = {lim, lim};
                if (setrlimit(RLIMIT_NPROC, &rl) == 0) {
                    static struct hk_ctx ctx;
                    ctx.log = l;
                    exec_options_t o = hk_opts(l, 1);
                    exec_t *ex = NULL;
                    rc = exec_create(&ex, &hk_ops, &ctx, EXEC_FORK, &o) == EXEC_ELIMIT ? 0 : 2;
                }
            }
            _exit(rc);
        }
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
        assert_int_equal(hk_pairs(l, pid), 1);
        int z = l->ev[hk_find(l, EV_PARENT, pid, 0)].arg;
        if (room == 1) {
            assert_int_equal(z, -EAGAIN);
            assert_int_equal(hk_count(l, EV_CHILD, 0), 0);
        } else {
            assert_true(z > 0);
            assert_int_equal(hk_count(l, EV_CHILD, z), 1);
            assert_int_equal(hk_pairs(l, z), 1);
            assert_int_equal(l->ev[hk_find(l, EV_PARENT, z, 0)].arg, -EAGAIN);
            assert_int_equal(hk_count(l, EV_CHILD, 0), 1); /* no worker ran */
        }
        hk_free(l);
    }
}

/* EXEC_THREADS has no fork: the hooks are never called. */
static void test_threads_ignore_them(void **state)
{
    (void)state;
    struct hk_log *l = hk_new();
    static const exec_ops_t ts = {.version = EXEC_OPS_VERSION,
                                  .caps = EXEC_CAP_THREAD_SAFE,
                                  .process = fu_process};
    struct fu_ctx ctx = {.salt = 51};
    exec_options_t o = hk_opts(l, 1); /* one worker: fu_process is not thread-safe */
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &ts, &ctx, EXEC_THREADS, &o), 0);
    struct fu_run r = {.n = 100, .salt = 51};
    assert_int_equal(fu_drive(ex, &r), 0);
    fu_assert_clean(&r);
    exec_destroy(ex);
    assert_int_equal(l->n, 0);
    hk_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_where_and_order),
        cmocka_unit_test(test_swap_on_its_thread),
        cmocka_unit_test(test_short_lived_thread),
        cmocka_unit_test(test_host_dies),
        cmocka_unit_test(test_refork_on_host_call),
        cmocka_unit_test(test_fork_fails),
        cmocka_unit_test(test_threads_ignore_them),
    };
    if (getenv("FU_ONLY"))
        cmocka_set_test_filter(getenv("FU_ONLY"));
    return tu_run_group_tests(tests, NULL, NULL);
}
