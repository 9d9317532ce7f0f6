/* EXEC_FORK graceful timeouts: at timeout_ms the record is flagged and its
 * worker gets SIGTERM; grace_ms later its process group gets SIGKILL. The
 * timeline is checked with generous bounds in unordered, ordered and
 * one-at-a-time delivery, and helpers forked by process() never survive. */
#include "forkutil.h"

#include <stdatomic.h>
#include <sys/mman.h>

enum {
    T_OK,
    T_IGNORE,
    T_EARLY,
    T_DEFAULT,
    T_GC_IGNORE,
    T_GC_DEFAULT,
    T_STALL,
    T_SLEEP,
    T_QUICK, /* ignores SIGTERM, returns the moment exec_cancelled() says so */
    T_AFTER, /* default SIGTERM disposition, 20 ms of work, then its tag */
    T_ABORT, /* SIGABRT at once */
};

#define T_MAX 64

/* Written by the workers (a MAP_SHARED page inherited at fork). */
struct t_shared {
    struct {
        int64_t start, soft; /* CLOCK_MONOTONIC ns */
        int32_t gc;          /* a grandchild's pid */
    } rec[T_MAX];
};

struct t_rec {
    uint32_t kind;
    uint32_t tag;
};

static int64_t t_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void t_nap(void)
{
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
}

static int t_process(void *ctx, void *ws, const void *data, size_t len, exec_writer_t *out)
{
    (void)ws;
    struct t_shared *sh = ctx;
    struct t_rec r;
    if (len != sizeof r)
        return 99;
    memcpy(&r, data, sizeof r);
    if (r.tag >= T_MAX)
        return 98;
    sh->rec[r.tag].start = t_now();
    if (r.kind == T_GC_IGNORE || r.kind == T_GC_DEFAULT) {
        pid_t c = fork();
        if (c == 0) {
            for (;;)
                pause();
        }
        sh->rec[r.tag].gc = c;
    }
    switch (r.kind) {
    case T_OK:
        return exec_write(out, &r.tag, sizeof r.tag);
    case T_IGNORE:
    case T_GC_IGNORE:
    case T_EARLY:
        signal(SIGTERM, SIG_IGN);
        for (;;) {
            if (exec_cancelled(out) && !sh->rec[r.tag].soft) {
                sh->rec[r.tag].soft = t_now();
                if (r.kind == T_EARLY)
                    return exec_write(out, "partial", 7);
            }
            t_nap();
        }
    case T_QUICK:
        signal(SIGTERM, SIG_IGN);
        while (!exec_cancelled(out))
            ;
        return exec_write(out, "partial", 7);
    case T_AFTER: {
        signal(SIGTERM, SIG_DFL);
        struct timespec ts = {0, 20000000};
        while (nanosleep(&ts, &ts) != 0)
            ;
        return exec_write(out, &r.tag, sizeof r.tag);
    }
    case T_ABORT:
        abort();
    case T_SLEEP: {
        struct timespec ts = {0, 300000000};
        while (nanosleep(&ts, &ts) != 0)
            ;
        return exec_write(out, &r.tag, sizeof r.tag);
    }
    case T_STALL: {
        /* Done within the grace, on the SIGTERM, never asking the flag.
         * Polled as a pending signal: no handler (sanitizers defer those). */
        sigset_t term, pend;
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        sigprocmask(SIG_BLOCK, &term, NULL);
        for (;;) {
            sigpending(&pend);
            if (sigismember(&pend, SIGTERM))
                break;
            t_nap();
        }
        struct timespec zero = {0, 0};
        sigtimedwait(&term, NULL, &zero);
        sigprocmask(SIG_UNBLOCK, &term, NULL);
        return exec_write(out, &r.tag, sizeof r.tag);
    }
    default:
        signal(SIGTERM, SIG_DFL);
        for (;;)
            pause();
    }
}

static const exec_ops_t t_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_FORK_SAFE,
    .process = t_process,
};

static bool t_gone(pid_t pid)
{
    for (int i = 0; i < 500; i++) {
        if (kill(pid, 0) < 0 && errno == ESRCH)
            return true;
        char path[64], buf[256];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = 0;
            char *p = strrchr(buf, ')');
            if (p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'))
                return true; /* dead, waiting for init to reap it */
        }
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    return false;
}

enum { M_UNORDERED, M_ORDERED, M_ONE };

/* lo <= v <= hi, saying which figure was off. */
#define t_between(v, lo, hi)                                                                     \
    do {                                                                                         \
        int64_t v_ = (v);                                                                        \
        if (v_ < (int64_t)(lo) || v_ > (int64_t)(hi))                                            \
            print_error("%s = %" PRId64 " ms, outside [%" PRId64 ", %" PRId64 "] (tag %u)\n", #v, \
                        v_ / 1000000, (int64_t)(lo) / 1000000, (int64_t)(hi) / 1000000, t);     \
        assert_true(v_ >= (int64_t)(lo) && v_ <= (int64_t)(hi));                                 \
    } while (0)

#define T_TIMEOUT 300
#define T_GRACE 700
#define T_SLACK_NS 100000000       /* clock reads on both sides, preemption */
#define T_LATE_NS 5000000000ll     /* a shared, loaded machine */

static void t_run(int mode, const uint32_t *kinds, unsigned n)
{
    struct t_shared *sh =
        mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    exec_options_t o = {.workers = 1,
                        .timeout_ms = T_TIMEOUT,
                        .grace_ms = T_GRACE,
                        .flags = mode == M_ORDERED ? EXEC_ORDERED : 0,
                        .batch = mode == M_ONE ? 1 : 0};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &t_ops, sh, EXEC_FORK, &o), 0);
    exec_options_t got;
    assert_int_equal(exec_get_options(ex, &got), 0);
    assert_int_equal(got.grace_ms, T_GRACE);

    int64_t at[T_MAX] = {0};
    int status[T_MAX], sig[T_MAX];
    unsigned flags[T_MAX];
    bool seen[T_MAX] = {false};
    uint64_t next_seq = 0;
    unsigned done = 0;
    exec_result_t res;
    for (unsigned i = 0; i < n || done < n;) {
        if (i < n) {
            struct t_rec r = {kinds[i], i};
            assert_int_equal(exec_submit(ex, &r, sizeof r, i), 0);
            i++;
            if (mode != M_ONE)
                continue;
        }
        if (i == n && mode != M_ONE && done == 0)
            assert_int_equal(exec_finish(ex), 0);
        assert_int_equal(exec_next(ex, &res, 30000), 0);
        assert_true(res.tag < n);
        assert_false(seen[res.tag]);
        seen[res.tag] = true;
        if (mode == M_ORDERED)
            assert_int_equal(res.seq, next_seq++);
        at[res.tag] = t_now();
        status[res.tag] = res.status;
        sig[res.tag] = res.signal;
        flags[res.tag] = res.flags;
        if (res.status == 0) {
            uint32_t v;
            assert_int_equal(res.len, sizeof v);
            memcpy(&v, res.data, sizeof v);
            assert_int_equal(v, res.tag);
        }
        done++;
    }
    if (mode == M_ONE)
        assert_int_equal(exec_finish(ex), 0);
    assert_int_equal(exec_next(ex, &res, 10000), EXEC_EOF);

    uint64_t killed = 0;
    for (unsigned t = 0; t < n; t++) {
        int64_t start = sh->rec[t].start, soft = sh->rec[t].soft;
        switch (kinds[t]) {
        case T_OK:
            assert_int_equal(status[t], 0);
            break;
        case T_IGNORE:
        case T_GC_IGNORE:
            /* Soft at ~timeout, hard at ~timeout + grace. */
            assert_int_equal(status[t], EXEC_ERECTIMEOUT);
            assert_int_equal(sig[t], SIGKILL);
            assert_int_equal(flags[t], 0);
            assert_true(soft != 0);
            t_between(soft - start, T_TIMEOUT * 1000000ll - T_SLACK_NS,
                      T_TIMEOUT * 1000000ll + T_LATE_NS);
            /* The kill comes grace_ms after the supervisor's soft stop, which
             * the worker may notice late on a loaded machine: the bound
             * below holds from the record's start, not from `soft`. */
            t_between(at[t] - start, (T_TIMEOUT + T_GRACE) * 1000000ll - T_SLACK_NS,
                      (T_TIMEOUT + T_GRACE) * 1000000ll + 2 * T_LATE_NS);
            t_between(at[t] - soft, 0, T_GRACE * 1000000ll + T_LATE_NS);
            killed++;
            break;
        case T_EARLY:
            /* Stopped within the grace: not killed, result dropped. */
            assert_int_equal(status[t], EXEC_ERECTIMEOUT);
            assert_int_equal(flags[t], EXEC_RESULT_EARLY);
            assert_int_equal(sig[t], 0);
            t_between(soft - start, T_TIMEOUT * 1000000ll - T_SLACK_NS,
                      T_TIMEOUT * 1000000ll + T_LATE_NS);
            break;
        case T_STALL:
            assert_int_equal(status[t], EXEC_ERECTIMEOUT);
            assert_int_equal(flags[t], 0);
            assert_int_equal(sig[t], 0);
            break;
        default:
            /* Default SIGTERM disposition: dead at the soft deadline. */
            assert_int_equal(status[t], EXEC_ERECTIMEOUT);
            assert_int_equal(sig[t], SIGTERM);
            t_between(at[t] - start, T_TIMEOUT * 1000000ll - T_SLACK_NS,
                      T_TIMEOUT * 1000000ll + T_LATE_NS);
            killed++;
            break;
        }
        if (kinds[t] == T_GC_IGNORE || kinds[t] == T_GC_DEFAULT) {
            assert_true(sh->rec[t].gc > 0);
            assert_true(t_gone(sh->rec[t].gc));
        }
    }
    exec_worker_stats_t ws;
    assert_int_equal(exec_worker_stats(ex, 0, &ws), 0);
    assert_int_equal(ws.respawns_timeout, killed);
    assert_int_equal(ws.respawns_crash, 0);
    exec_destroy(ex);
    munmap(sh, sizeof *sh);
}

static const uint32_t t_mix[] = {T_OK, T_IGNORE, T_OK, T_EARLY, T_OK, T_DEFAULT, T_OK, T_STALL, T_OK};
#define T_NMIX (sizeof t_mix / sizeof t_mix[0])

static void test_timeline_unordered(void **state)
{
    (void)state;
    t_run(M_UNORDERED, t_mix, T_NMIX);
}

static void test_timeline_ordered(void **state)
{
    (void)state;
    t_run(M_ORDERED, t_mix, T_NMIX);
}

static void test_timeline_one_at_a_time(void **state)
{
    (void)state;
    t_run(M_ONE, t_mix, T_NMIX);
}

static void test_grandchildren(void **state)
{
    (void)state;
    static const uint32_t k[] = {T_OK, T_GC_IGNORE, T_OK, T_GC_DEFAULT, T_OK};
    t_run(M_UNORDERED, k, sizeof k / sizeof k[0]);
}

static void test_default_grace(void **state)
{
    (void)state;
    exec_options_t o = {.workers = 1, .timeout_ms = 100};
    exec_t *ex;
    struct t_shared *sh =
        mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    assert_int_equal(exec_create(&ex, &t_ops, sh, EXEC_FORK, &o), 0);
    exec_options_t got;
    assert_int_equal(exec_get_options(ex, &got), 0);
    assert_int_equal(got.grace_ms, 1000);
    exec_destroy(ex);
    munmap(sh, sizeof *sh);
}

/*
 * A timeout's SIGTERM lands on the record it was aimed at, never on the next:
 * a record that stops the moment it is flagged is followed at once by one
 * that dies of SIGTERM. That one must run to its result, and nothing is
 * respawned.
 */
static void test_signal_stays_on_its_record(void **state)
{
    (void)state;
    struct t_shared *sh =
        mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    exec_options_t o = {.workers = 1, .timeout_ms = 200, .grace_ms = 5000};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &t_ops, sh, EXEC_FORK, &o), 0);
    enum { PAIRS = 16 };
    for (unsigned i = 0; i < 2 * PAIRS; i++) {
        struct t_rec r = {i % 2 ? T_AFTER : T_QUICK, i};
        assert_int_equal(exec_submit(ex, &r, sizeof r, i), 0);
    }
    assert_int_equal(exec_finish(ex), 0);
    exec_result_t res;
    unsigned got = 0, after_ok = 0;
    while (exec_next(ex, &res, 30000) == 0) {
        got++;
        if (res.tag % 2 == 0) {
            assert_int_equal(res.status, EXEC_ERECTIMEOUT);
            assert_int_equal(res.flags, EXEC_RESULT_EARLY);
        } else {
            if (res.status != 0)
                print_error("tag %" PRIu64 ": %s (signal %d)\n", res.tag,
                            exec_strerror(res.status), res.signal);
            after_ok += res.status == 0;
        }
    }
    assert_int_equal(got, 2 * PAIRS);
    assert_int_equal(after_ok, PAIRS);
    exec_worker_stats_t ws;
    assert_int_equal(exec_worker_stats(ex, 0, &ws), 0);
    assert_int_equal(ws.respawns_timeout + ws.respawns_crash, 0);
    exec_destroy(ex);
    munmap(sh, sizeof *sh);
}

/*
 * A crash is a crash even right after a soft stop: a record that stops the
 * moment it is flagged is followed by one that aborts, before the supervisor
 * looks at the worker again. The abort reads EXEC_ECRASHED, and its respawn
 * counts as a crash, never as a timeout (the worker was not killed for one).
 * In a stream, and one record at a time (each in the slot the stopped one
 * had just left).
 */
static void test_crash_after_stopped_record(void **state)
{
    (void)state;
    struct t_shared *sh =
        mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    enum { PAIRS = 4 };
    static const int modes[] = {M_UNORDERED, M_ONE};
    for (unsigned m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        const int mode = modes[m];
        memset(sh, 0, sizeof *sh);
        exec_options_t o = {.workers = 1,
                            .timeout_ms = 200,
                            .grace_ms = 5000,
                            .batch = mode == M_ONE ? 1 : 0};
        exec_t *ex;
        assert_int_equal(exec_create(&ex, &t_ops, sh, EXEC_FORK, &o), 0);
        exec_result_t res;
        unsigned got = 0;
        for (unsigned i = 0; i < 2 * PAIRS || got < 2 * PAIRS;) {
            if (i < 2 * PAIRS) {
                struct t_rec r = {i % 2 ? T_ABORT : T_QUICK, i};
                assert_int_equal(exec_submit(ex, &r, sizeof r, i), 0);
                i++;
                if (mode != M_ONE)
                    continue;
            }
            if (i == 2 * PAIRS && got == 0 && mode != M_ONE)
                assert_int_equal(exec_finish(ex), 0);
            assert_int_equal(exec_next(ex, &res, 30000), 0);
            got++;
            if (res.tag % 2 == 0) {
                assert_int_equal(res.status, EXEC_ERECTIMEOUT);
                assert_int_equal(res.flags, EXEC_RESULT_EARLY);
            } else {
                if (res.status != EXEC_ECRASHED)
                    print_error("mode %d, tag %" PRIu64 ": %s (signal %d)\n", mode, res.tag,
                                exec_strerror(res.status), res.signal);
                assert_int_equal(res.status, EXEC_ECRASHED);
                assert_int_equal(res.signal, SIGABRT);
            }
        }
        if (mode == M_ONE)
            assert_int_equal(exec_finish(ex), 0);
        assert_int_equal(exec_next(ex, &res, 10000), EXEC_EOF);
        exec_worker_stats_t ws;
        assert_int_equal(exec_worker_stats(ex, 0, &ws), 0);
        if (ws.respawns_crash != PAIRS || ws.respawns_timeout != 0)
            print_error("mode %d: %" PRIu64 " crash and %" PRIu64 " timeout respawns\n", mode,
                        ws.respawns_crash, ws.respawns_timeout);
        assert_int_equal(ws.respawns_crash, PAIRS);
        assert_int_equal(ws.respawns_timeout, 0);
        exec_stats_t st;
        assert_int_equal(exec_stats(ex, &st), 0);
        assert_int_equal(st.respawns, PAIRS);
        exec_destroy(ex);
    }
    munmap(sh, sizeof *sh);
}

/*
 * The soft stop's flag reaches a record whatever waits ahead of it: slots the
 * worker finished and the consumer has not taken yet stay in its queue, and
 * the record behind them that stops at its flag (SIGTERM ignored) lives on.
 */
static void test_flag_behind_unreaped_slots(void **state)
{
    (void)state;
    struct t_shared *sh =
        mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    exec_options_t o = {.workers = 1, .timeout_ms = 200, .grace_ms = 600, .batch = 1};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &t_ops, sh, EXEC_FORK, &o), 0);
    static const uint32_t k[] = {T_OK, T_OK, T_QUICK, T_OK};
    const unsigned n = sizeof k / sizeof k[0];
    for (unsigned i = 0; i < n; i++) {
        struct t_rec r = {k[i], i};
        assert_int_equal(exec_submit(ex, &r, sizeof r, i), 0);
    }
    assert_int_equal(exec_finish(ex), 0);
    /* Nothing taken until the stop (and the kill, were it missed) is over. */
    struct timespec ts = {1, 200000000};
    nanosleep(&ts, NULL);
    exec_result_t res;
    unsigned got = 0;
    while (exec_next(ex, &res, 30000) == 0) {
        got++;
        if (k[res.tag] != T_QUICK) {
            assert_int_equal(res.status, 0);
            continue;
        }
        if (res.flags != EXEC_RESULT_EARLY)
            print_error("%s, signal %d, flags %u\n", exec_strerror(res.status), res.signal,
                        res.flags);
        assert_int_equal(res.status, EXEC_ERECTIMEOUT);
        assert_int_equal(res.flags, EXEC_RESULT_EARLY);
        assert_int_equal(res.signal, 0);
    }
    assert_int_equal(got, n);
    exec_worker_stats_t ws;
    assert_int_equal(exec_worker_stats(ex, 0, &ws), 0);
    assert_int_equal(ws.respawns_timeout + ws.respawns_crash, 0);
    exec_destroy(ex);
    munmap(sh, sizeof *sh);
}

/* One-byte records, any number of them: quick, crashing, or running past
 * timeout_ms and dying of the SIGTERM, ignoring it, or stopping at the flag. */
enum { C_OK, C_TERM, C_KILL, C_ABORT, C_QUICK, C_KINDS, C_RACE = C_KINDS };

static int c_process(void *ctx, void *ws, const void *data, size_t len, exec_writer_t *out)
{
    (void)ctx, (void)ws;
    if (len != 1)
        return 99;
    switch (*(const uint8_t *)data) {
    case C_OK: { /* long enough for a successor to start meanwhile */
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
        return exec_write(out, "k", 1);
    }
    case C_TERM: /* as a classifier that looks at its flag now and then */
        signal(SIGTERM, SIG_DFL);
        while (!exec_cancelled(out))
            t_nap();
        return 4;
    case C_KILL:
        signal(SIGTERM, SIG_IGN);
        for (;;)
            t_nap();
    case C_ABORT:
        abort();
    case C_RACE: /* returns the moment it is flagged, the SIGTERM on its way */
        signal(SIGTERM, SIG_DFL);
        while (!exec_cancelled(out))
            ;
        return exec_write(out, "r", 1);
    default:
        signal(SIGTERM, SIG_IGN);
        while (!exec_cancelled(out))
            ;
        return exec_write(out, "p", 1);
    }
}

static const exec_ops_t c_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_FORK_SAFE,
    .process = c_process,
};

/* A worker that takes a while to die: *(size_t *)ctx bytes of its own. */
static int c_init_big(void *ctx, void **ws)
{
    size_t n = *(const size_t *)ctx;
    *ws = malloc(n);
    if (!*ws)
        return 1;
    memset(*ws, 1, n);
    return 0;
}

static void c_fini_big(void *ctx, void *ws)
{
    (void)ctx;
    free(ws);
}

static const exec_ops_t c_ops_big = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_FORK_SAFE,
    .process = c_process,
    .worker_init = c_init_big,
    .worker_fini = c_fini_big,
};

struct c_run {
    exec_t *ex;
    uint8_t *kind;
    unsigned n;
    /* The consumer's. */
    unsigned got, dup, wrong;
    uint64_t killed, crashed; /* results of timeout kills, of crashes */
    /* The swapper's. */
    int ctx[2];
    atomic_bool stop;
    unsigned swaps, swap_err;
};

static void *c_consume(void *arg)
{
    struct c_run *c = arg;
    uint8_t *seen = calloc(c->n, 1);
    exec_result_t res;
    int rc;
    while (seen && (rc = exec_next(c->ex, &res, 60000)) == 0) {
        if (res.tag >= c->n || seen[res.tag]++) {
            c->dup++;
            continue;
        }
        c->got++;
        int st = res.status, sig = res.signal;
        bool early = res.flags & EXEC_RESULT_EARLY;
        c->killed += st == EXEC_ERECTIMEOUT && sig != 0;
        c->crashed += st == EXEC_ECRASHED;
        bool right;
        switch (c->kind[res.tag]) {
        case C_OK: right = st == 0; break;
        case C_ABORT: right = st == EXEC_ECRASHED && sig == SIGABRT; break;
        case C_KILL: right = st == EXEC_ERECTIMEOUT && sig == SIGKILL; break;
        case C_TERM: right = st == EXEC_ERECTIMEOUT && (sig == SIGTERM || (!sig && early)); break;
        /* Killed only where it was not scheduled within the grace. */
        default: right = st == EXEC_ERECTIMEOUT && (sig == SIGKILL || (!sig && early)); break;
        }
        if (!right) {
            print_error("record %" PRIu64 " (kind %u): %s, signal %d, flags %u\n", res.tag,
                        c->kind[res.tag], exec_strerror(st), sig, res.flags);
            c->wrong++;
        }
    }
    free(seen);
    return NULL;
}

static void *c_swap(void *arg)
{
    struct c_run *c = arg;
    for (unsigned i = 0; !atomic_load(&c->stop); i++) {
        struct timespec ts = {0, 30000000};
        nanosleep(&ts, NULL);
        int rc = exec_swap_context(c->ex, &c->ctx[i % 2]);
        if (rc == 0)
            c->swaps++;
        else if (rc != EXEC_EBUSY)
            c->swap_err++;
    }
    return NULL;
}

/*
 * Respawns by cause under churn: two workers, the records above among many
 * quick ones, with recycling and, in the second round, swaps from another
 * thread. Each record's result says what ended its worker, if anything:
 * every worker killed by a timeout's stop counts once in respawns_timeout,
 * every crash once in respawns_crash, and exec_stats().respawns is their sum
 * with the recycles.
 */
static void test_respawn_causes_under_churn(void **state)
{
    (void)state;
    const unsigned n = fu_light() ? 600 : 1500;
    for (int round = 0; round < 2; round++) {
        const bool swaps = round == 1;
        struct c_run c = {.n = n, .kind = malloc(n)};
        assert_non_null(c.kind);
        uint64_t x = 0x9e3779b97f4a7c15ull + (uint64_t)round;
        for (unsigned i = 0; i < n; i++) {
            x = fu_mix(x + i);
            /* 1 in 25 (1 in 50 in the first round, to leave room for recycles). */
            c.kind[i] = x % (swaps ? 25 : 50) ? C_OK : (uint8_t)(1 + (x >> 32) % (C_KINDS - 1));
        }
        exec_options_t o = {.workers = 2,
                            .timeout_ms = 20,
                            .grace_ms = 20,
                            .batch = 4,
                            .max_records_per_worker = swaps ? 20 : 10};
        assert_int_equal(exec_create(&c.ex, &c_ops, &c.ctx[0], EXEC_FORK, &o), 0);
        pthread_t ct, st;
        assert_int_equal(pthread_create(&ct, NULL, c_consume, &c), 0);
        if (swaps)
            assert_int_equal(pthread_create(&st, NULL, c_swap, &c), 0);
        for (unsigned i = 0; i < n; i++)
            assert_int_equal(exec_submit(c.ex, &c.kind[i], 1, i), 0);
        assert_int_equal(exec_finish(c.ex), 0);
        assert_int_equal(pthread_join(ct, NULL), 0);
        atomic_store(&c.stop, true);
        if (swaps)
            assert_int_equal(pthread_join(st, NULL), 0);

        /* A recycle the last records set off may still be under way after
         * EXEC_EOF (only deaths by a record are settled by then): the two
         * reads below are taken again until no respawn falls between them. */
        uint64_t timeout, crash, recycle, cancel;
        exec_stats_t es;
        for (int tries = 0;; tries++) {
            timeout = crash = recycle = cancel = 0;
            for (unsigned w = 0; w < o.workers; w++) {
                exec_worker_stats_t ws;
                assert_int_equal(exec_worker_stats(c.ex, w, &ws), 0);
                timeout += ws.respawns_timeout;
                crash += ws.respawns_crash;
                recycle += ws.respawns_recycle;
                cancel += ws.respawns_cancel;
            }
            assert_int_equal(exec_stats(c.ex, &es), 0);
            if (es.respawns == timeout + crash + recycle + cancel || tries == 200)
                break;
            struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL);
        }
        if (timeout != c.killed || crash != c.crashed ||
            es.respawns != timeout + crash + recycle + cancel)
            print_error("round %d: respawns %" PRIu64 " timeout, %" PRIu64 " crash, %" PRIu64
                        " recycle, %" PRIu64 " cancel, %" PRIu64 " in all; results: %" PRIu64
                        " killed by a timeout, %" PRIu64 " crashed; %u swaps\n",
                        round, timeout, crash, recycle, cancel, es.respawns, c.killed,
                        c.crashed, c.swaps);
        assert_int_equal(c.got, n);
        assert_int_equal(c.dup, 0);
        assert_int_equal(c.wrong, 0);
        assert_int_equal(c.swap_err, 0);
        assert_int_equal(timeout, c.killed);
        assert_int_equal(crash, c.crashed);
        assert_int_equal(cancel, 0);
        assert_int_equal(es.respawns, timeout + crash + recycle);
        exec_destroy(c.ex);
        free(c.kind);
    }
}

/*
 * A record that returns the moment it is flagged may leave before the soft
 * stop's SIGTERM lands, and its worker then dies of it between records. The
 * supervisor, looking again before the death shows (it looks every few ms
 * with a short timeout, and a process with much memory of its own takes a
 * while to die), sees the record left and lets the stop go; the death is
 * still the timeout's: it counts in respawns_timeout, never as a crash, and
 * the record reads EXEC_ERECTIMEOUT.
 */
static void test_death_as_it_left_its_record(void **state)
{
    (void)state;
    size_t big = (fu_light() ? 64u : 256u) << 20;
    exec_options_t o = {.workers = 1, .timeout_ms = 4, .grace_ms = 1000, .batch = 1};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &c_ops_big, &big, EXEC_FORK, &o), 0);
    enum { N = 40 };
    const uint8_t k = C_RACE;
    exec_result_t res;
    unsigned got = 0, killed = 0, wrong = 0;
    for (unsigned i = 0; i < N; i++) {
        assert_int_equal(exec_submit(ex, &k, 1, i), 0);
        assert_int_equal(exec_next(ex, &res, 60000), 0);
        got++;
        if (res.status == EXEC_ERECTIMEOUT && res.signal == SIGTERM) {
            killed++;
        } else if (res.status != EXEC_ERECTIMEOUT || res.signal ||
                   res.flags != EXEC_RESULT_EARLY) {
            print_error("record %" PRIu64 ": %s, signal %d, flags %u\n", res.tag,
                        exec_strerror(res.status), res.signal, res.flags);
            wrong++;
        }
    }
    assert_int_equal(exec_finish(ex), 0);
    assert_int_equal(exec_next(ex, &res, 10000), EXEC_EOF);
    assert_int_equal(got, N);
    exec_worker_stats_t ws;
    assert_int_equal(exec_worker_stats(ex, 0, &ws), 0);
    if (wrong || ws.respawns_timeout != killed || ws.respawns_crash)
        print_error("%u killed, %" PRIu64 " timeout and %" PRIu64 " crash respawns\n", killed,
                    ws.respawns_timeout, ws.respawns_crash);
    assert_int_equal(wrong, 0);
    assert_int_equal(ws.respawns_timeout, killed);
    assert_int_equal(ws.respawns_crash, 0);
    exec_destroy(ex);
}

/* Slow-record reports, gathered from the executor's thread. */
struct t_slow {
    pthread_mutex_t lock;
    unsigned n;
    exec_slow_t s[T_MAX];
    int64_t at[T_MAX];
};

static void t_on_slow(void *arg, const exec_slow_t *s)
{
    struct t_slow *ts = arg;
    pthread_mutex_lock(&ts->lock);
    if (ts->n < T_MAX) {
        ts->s[ts->n] = *s;
        ts->at[ts->n++] = t_now();
    }
    pthread_mutex_unlock(&ts->lock);
}

static void test_slow_report(void **state)
{
    (void)state;
    struct t_shared *sh =
        mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    struct t_slow ts = {.lock = PTHREAD_MUTEX_INITIALIZER};
    /* Reported once each: the sleeper (no timeout reached), and the hung
     * record before its SIGTERM; fast records never. With slow_ms above
     * timeout_ms (second round) the hung record is still reported first. */
    for (int round = 0; round < 2; round++) {
        memset(sh, 0, sizeof *sh);
        ts.n = 0;
        exec_options_t o = {.workers = 1,
                            .timeout_ms = round == 0 ? 1000 : 400,
                            .grace_ms = 200,
                            .slow_ms = round == 0 ? 100 : 5000,
                            .on_slow = t_on_slow,
                            .slow_arg = &ts};
        exec_t *ex;
        assert_int_equal(exec_create(&ex, &t_ops, sh, EXEC_FORK, &o), 0);
        static const uint32_t k[] = {T_OK, T_SLEEP, T_OK, T_IGNORE, T_OK};
        const unsigned n = sizeof k / sizeof k[0];
        for (unsigned i = 0; i < n; i++) {
            struct t_rec r = {k[i], i};
            assert_int_equal(exec_submit(ex, &r, sizeof r, 1000 + i), 0);
        }
        assert_int_equal(exec_finish(ex), 0);
        exec_result_t res;
        unsigned got = 0;
        while (exec_next(ex, &res, 30000) == 0) {
            got++;
            int want = k[res.tag - 1000] == T_IGNORE ? EXEC_ERECTIMEOUT : 0;
            assert_int_equal(res.status, want);
        }
        assert_int_equal(got, n);
        exec_destroy(ex);
        pthread_mutex_lock(&ts.lock);
        unsigned want_n = round == 0 ? 2 : 1;
        if (ts.n != want_n)
            print_error("round %d: %u reports\n", round, ts.n);
        assert_int_equal(ts.n, want_n);
        for (unsigned j = 0; j < ts.n; j++) {
            const exec_slow_t *s = &ts.s[j];
            assert_true(s->tag >= 1000 && s->tag < 1000 + n);
            unsigned t = (unsigned)(s->tag - 1000);
            assert_int_equal(s->seq, t);
            assert_int_equal(s->worker, 0);
            assert_true(s->pid > 0 && s->pid != getpid());
            if (round == 0) {
                assert_true(s->elapsed_ms >= 100);
                assert_int_equal(k[t], j == 0 ? T_SLEEP : T_IGNORE);
            } else {
                assert_int_equal(k[t], T_IGNORE);
            }
            if (k[t] == T_IGNORE) {
                /* Told before the soft stop. */
                assert_true(sh->rec[t].soft != 0);
                assert_true(ts.at[j] <= sh->rec[t].soft);
            }
        }
        pthread_mutex_unlock(&ts.lock);
    }
    munmap(sh, sizeof *sh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_grace),
        cmocka_unit_test(test_timeline_unordered),
        cmocka_unit_test(test_timeline_ordered),
        cmocka_unit_test(test_timeline_one_at_a_time),
        cmocka_unit_test(test_grandchildren),
        cmocka_unit_test(test_slow_report),
        cmocka_unit_test(test_signal_stays_on_its_record),
        cmocka_unit_test(test_crash_after_stopped_record),
        cmocka_unit_test(test_flag_behind_unreaped_slots),
        cmocka_unit_test(test_respawn_causes_under_churn),
        cmocka_unit_test(test_death_as_it_left_its_record),
    };
    if (getenv("FU_ONLY"))
        cmocka_set_test_filter(getenv("FU_ONLY"));
    return tu_run_group_tests(tests, NULL, NULL);
}
