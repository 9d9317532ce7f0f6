/*
 * EXEC_FORK workers SIGKILLed from outside at random moments of their loop
 * (processing, writing a result, taking a batch from the ring, sleeping): the
 * stream never hangs, every tag comes back exactly once, and each result is
 * either right or EXEC_ECRASHED naming SIGKILL; with recycling on, kills of
 * successors and of workers handing over change nothing of that.
 */
#include "forkutil.h"

#include <pthread.h>

struct killer {
    exec_t *ex;
    unsigned workers;
    bool others; /* also kill processes that are not a place's worker now */
    volatile int stop;
    unsigned kills, other_kills;
};

/* A worker process that is no place's current one (a successor getting ready
 * or waiting, or a worker that just handed over), or 0. */
static pid_t other_worker(struct killer *k, uint64_t seed)
{
    pid_t kids[64], zyg[8];
    int nz = fu_children_of(getpid(), zyg, 8);
    int n = 0;
    for (int z = 0; z < nz && z < 8 && n < 64; z++) {
        int m = fu_children_of(zyg[z], kids + n, 64 - n);
        n = n + m > 64 ? 64 : n + m;
    }
    pid_t cand[64];
    int nc = 0;
    for (int j = 0; j < n; j++) {
        bool place = false;
        for (unsigned i = 0; i < k->workers; i++) {
            exec_worker_stats_t ws;
            if (exec_worker_stats(k->ex, i, &ws) == 0 && ws.pid == kids[j])
                place = true;
        }
        if (!place)
            cand[nc++] = kids[j];
    }
    return nc ? cand[seed % (unsigned)nc] : 0;
}

static void *kill_loop(void *arg)
{
    struct killer *k = arg;
    uint64_t last[8] = {0};
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    while (!__atomic_load_n(&k->stop, __ATOMIC_ACQUIRE)) {
        seed = fu_mix(seed + 1);
        /* 0.2 to 3 ms apart, so kills land at every point of the loop. */
        struct timespec ts = {0, (long)(200000 + seed % 2800000)};
        nanosleep(&ts, NULL);
        if (k->others && (seed >> 20) % 2 == 0) {
            pid_t p = other_worker(k, seed >> 8);
            if (p > 0 && kill(p, SIGKILL) == 0)
                k->other_kills++;
            continue;
        }
        unsigned i = (unsigned)(seed >> 32) % k->workers;
        exec_worker_stats_t ws;
        if (exec_worker_stats(k->ex, i, &ws) != 0 || ws.pid <= 0)
            continue;
        /* Only a worker that finished records since its last kill: a crash loop
         * (deaths without progress) is another suite's subject. */
        if (ws.records + ws.respawns_crash == last[i])
            continue;
        last[i] = ws.records + ws.respawns_crash + 1;
        if (kill(ws.pid, SIGKILL) == 0)
            k->kills++;
    }
    return NULL;
}

static void run(bool ordered, unsigned recycle)
{
    enum { W = 2 };
    /* Sanitized builds run a quarter: kills still land every few hundred records. */
    const uint64_t N = fu_sanitized() ? 50000 : 200000;
    struct fu_ctx ctx = {.salt = 0x5eed};
    exec_options_t o = {.workers = W, .flags = ordered ? EXEC_ORDERED : 0,
                        .max_records_per_worker = recycle};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &fu_ops, &ctx, EXEC_FORK, &o), 0);
    struct killer k = {.ex = ex, .workers = W, .others = recycle != 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, kill_loop, &k), 0);

    unsigned char *seen = calloc(N, 1);
    assert_non_null(seen);
    uint64_t got = 0, ok = 0, crashed = 0, bad = 0, next_seq = 0;
    char why[160] = "";
    exec_result_t res;
    int rc = 0;
    for (uint64_t i = 0; i <= N && rc == 0;) {
        if (i < N) {
            /* A 4 KiB result each: workers spend their time writing into
             * shared memory, where kills hurt most. */
            struct fu_rec rec = {.action = FU_BIG, .big = 4096, .value = i};
            rc = exec_try_submit(ex, &rec, sizeof rec, i);
            if (rc == 0) {
                i++;
                continue;
            }
            if (rc != EXEC_EAGAIN)
                break;
        } else {
            assert_int_equal(exec_finish(ex), 0);
            i++;
        }
        /* Collect what is ready (at the end: everything). */
        while ((rc = exec_next(ex, &res, i > N ? 20000 : 0)) == 0) {
            got++;
            if (res.tag >= N || seen[res.tag]++) {
                if (!bad++)
                    snprintf(why, sizeof why, "tag %" PRIu64 " twice or out of range", res.tag);
                continue;
            }
            if (ordered && res.seq != next_seq++) {
                if (!bad++)
                    snprintf(why, sizeof why, "seq %" PRIu64 " out of order", res.seq);
            }
            if (res.status == 0) {
                const unsigned char *d = res.data;
                unsigned char want = (unsigned char)(res.tag & 0xff);
                if (res.len != 4096 || d[0] != want || d[2047] != want || d[4095] != want) {
                    if (!bad++)
                        snprintf(why, sizeof why, "tag %" PRIu64 ": %zu wrong bytes", res.tag,
                                 res.len);
                } else {
                    ok++;
                }
            } else if (res.status == EXEC_ECRASHED && res.signal == SIGKILL) {
                crashed++;
            } else if (!bad++) {
                snprintf(why, sizeof why, "tag %" PRIu64 ": %s signal %d", res.tag,
                         exec_err_name(res.status), res.signal);
            }
        }
        if (rc == EXEC_EAGAIN || rc == EXEC_EOF)
            rc = 0;
        if (i > N)
            break;
    }
    __atomic_store_n(&k.stop, 1, __ATOMIC_RELEASE);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(rc, 0);
    print_message("%s%s: %u kills (+%u of other workers), %" PRIu64 " records crashed, %" PRIu64
                  " ok\n",
                  ordered ? "ordered" : "unordered", recycle ? ", recycling" : "", k.kills,
                  k.other_kills, crashed, ok);
    if (bad)
        print_error("%" PRIu64 " bad results; first: %s\n", bad, why);
    assert_int_equal(bad, 0);
    assert_int_equal(got, N);
    assert_int_equal(ok + crashed, N);
    assert_true(crashed <= k.kills); /* a kill between records charges none */
    assert_true(k.kills > 0);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.crashed, crashed);
    exec_destroy(ex);
    pid_t kids[16];
    assert_int_equal(fu_descendants(kids, 16), 0);
    free(seen);
}

static void test_kill_anywhere_unordered(void **s)
{
    (void)s;
    run(false, 0);
}

static void test_kill_anywhere_ordered(void **s)
{
    (void)s;
    run(true, 0);
}

/* Recycling every ~3000 records, kills also landing on successors (while
 * they start, while they wait for the place) and on workers handing over. */
static void test_kill_while_recycling(void **s)
{
    (void)s;
    run(false, 3000);
    run(true, 3000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_anywhere_unordered),
        cmocka_unit_test(test_kill_anywhere_ordered),
        cmocka_unit_test(test_kill_while_recycling),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
