/*
 * EXEC_MPI under mpirun (3 ranks: the host and two worker ranks; see
 * run.sh). Rank 0 runs the cmocka suite; the other ranks serve every
 * session until the suite dismisses them. What is checked: a million
 * records through submit/next, ordered and unordered, each tag exactly once
 * and each result equal to the sequential loop's; a swap by spec mid-stream,
 * each result from exactly one context; a spec that fails to build refused
 * (at create and at swap, on one rank or all) with the old context serving;
 * crashes inside a rank's EXEC_FORK workers reported per record; cancel of
 * what the host still holds; the pollable fd, stats, options and misuse.
 */
#include "mt.h"
#include "exec_internal.h"

#include <poll.h>

#define MILLION 1000000u
#define CHUNK 512u

static exec_t *g_ex; /* destroyed by the teardown if a test stopped early */
static char g_err[512];

static int teardown(void **state)
{
    (void)state;
    exec_destroy(g_ex);
    g_ex = NULL;
    return 0;
}

static exec_t *mk(const char *spec, unsigned flags, exec_options_t *o)
{
    exec_options_t d = {0};
    if (!o)
        o = &d;
    o->plugin = &mt_plugin;
    o->spec = spec;
    o->flags |= flags;
    o->err = g_err;
    o->errlen = sizeof g_err;
    int rc = exec_create(&g_ex, &mt_ops, NULL, EXEC_MPI, o);
    if (rc)
        print_error("exec_create: %s: %s\n", exec_err_name(rc), g_err);
    assert_int_equal(rc, 0);
    return g_ex;
}

/* The sequential loop: mt_process over every record, one after another, in
 * this process; the FNV-1a hash of each result, by tag. */
static uint64_t *seq_hashes(const char *spec, uint64_t n)
{
    void *ctx = NULL;
    char err[128];
    assert_int_equal(mt_build(spec, NULL, &ctx, err, sizeof err), 0);
    uint64_t *h = malloc(n * sizeof *h);
    assert_non_null(h);
    char buf[256];
    struct exec_writer w = {.buf = buf, .cap = sizeof buf, .max = sizeof buf};
    unsigned char rec[TU_REC_MAX];
    for (uint64_t t = 0; t < n; t++) {
        w.len = 0;
        exec__writer_begin(&w);
        size_t len = tu_rec(t, rec);
        assert_int_equal(mt_process(ctx, NULL, rec, len, &w), 0);
        h[t] = tu_fnv64(w.buf + w.start, w.len - w.start);
    }
    mt_free(ctx);
    return h;
}

/* Streams tags [from, to) with try_submit_many and exec_next_many from one
 * thread; check() sees every result. Calls mid(ex) once, after `at` records
 * were submitted (if mid is set). Finishes when finish is set. */
struct stream {
    exec_t *ex;
    uint64_t from, to, at;
    bool finish;
    void (*mid)(struct stream *s);
    void (*check)(struct stream *s, const exec_result_t *r);
    uint64_t submitted, got, seq_mid;
    void *arg;
};

static void run_stream(struct stream *s)
{
    static unsigned char bufs[CHUNK][TU_REC_MAX];
    exec_record_t recs[CHUNK];
    exec_result_t res[256];
    uint64_t next = s->from;
    size_t have = 0, off = 0;
    bool done_mid = !s->mid, finished = false;
    uint64_t want = s->to - s->from;
    while (s->got < want) {
        if (off == have && next < s->to) {
            have = 0;
            off = 0;
            uint64_t lim = s->mid && !done_mid ? s->from + s->at : s->to;
            for (; have < CHUNK && next < lim; have++, next++) {
                size_t len = tu_rec(next, bufs[have]);
                recs[have] = (exec_record_t){bufs[have], len, next};
            }
        }
        if (off < have) {
            size_t acc = 0;
            int rc = exec_try_submit_many(s->ex, recs + off, have - off, &acc);
            off += acc;
            s->submitted += acc;
            assert_true(rc == 0 || rc == EXEC_EAGAIN);
        }
        if (!done_mid && s->submitted == s->at) {
            s->seq_mid = s->submitted;
            s->mid(s);
            done_mid = true;
        }
        if (s->finish && !finished && s->submitted == want) {
            assert_int_equal(exec_finish(s->ex), 0);
            finished = true;
        }
        size_t k = 0;
        int rc = exec_next_many(s->ex, res, 256, &k, off < have || next < s->to ? 0 : 1000);
        if (rc == EXEC_EAGAIN || rc == EXEC_ETIMEDOUT)
            continue;
        assert_int_equal(rc, 0);
        for (size_t i = 0; i < k; i++)
            s->check(s, &res[i]);
        s->got += k;
    }
}

struct million {
    tu_tags_t tags;
    uint64_t *seq;
    bool ordered;
    uint64_t next_seq, bad;
};

static void check_million(struct stream *s, const exec_result_t *r)
{
    struct million *m = s->arg;
    bool good = r->status == 0 && r->tag < MILLION && tu_tags_mark(&m->tags, r->tag) &&
                tu_fnv64(r->data, r->len) == m->seq[r->tag] && mt_ok(r, 11) &&
                r->generation == 0 && r->worker < 2 && r->seq == r->tag;
    if (m->ordered)
        good &= r->seq == m->next_seq++;
    m->bad += !good;
}

static void million(bool ordered)
{
    struct million m = {.seq = seq_hashes("salt=11", MILLION), .ordered = ordered};
    tu_tags_init(&m.tags, MILLION);
    exec_t *ex = mk("salt=11", ordered ? EXEC_ORDERED : 0, NULL);
    struct stream s = {.ex = ex, .to = MILLION, .finish = true, .check = check_million, .arg = &m};
    uint64_t t0 = tu_now_ms();
    run_stream(&s);
    exec_result_t r;
    assert_int_equal(exec_next(ex, &r, -1), EXEC_EOF);
    print_message("%s: %u records in %llu ms\n", ordered ? "ordered" : "unordered", MILLION,
                  (unsigned long long)(tu_now_ms() - t0));
    assert_int_equal(m.bad, 0);
    assert_true(tu_tags_complete(&m.tags));
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.backend, EXEC_MPI);
    assert_int_equal(st.workers, 2);
    assert_int_equal(st.submitted, MILLION);
    assert_int_equal(st.delivered, MILLION);
    assert_int_equal(st.ok, MILLION);
    assert_int_equal(st.in_flight, 0);
    uint64_t per_rank = 0;
    for (unsigned i = 0; i < 2; i++) {
        exec_worker_stats_t ws;
        assert_int_equal(exec_worker_stats(ex, i, &ws), 0);
        assert_true(ws.pid > 0 && ws.pid != getpid());
        assert_true(ws.records > 0);
        assert_int_equal(ws.flags & EXEC_WORKER_GONE, 0);
        per_rank += ws.records;
    }
    assert_int_equal(per_rank, MILLION); /* as the ranks counted them */
    teardown(NULL);
    tu_tags_free(&m.tags);
    free(m.seq);
}

static void test_million_unordered(void **state)
{
    (void)state;
    million(false);
}

static void test_million_ordered(void **state)
{
    (void)state;
    million(true);
}

/* ------------------------------------------------------------------------- */
/* Swaps                                                                     */
/* ------------------------------------------------------------------------- */

struct swaps {
    tu_tags_t tags;
    uint64_t salt_of[4]; /* by generation */
    uint64_t committed_at; /* records submitted when the last swap returned */
    uint64_t min_gen_after;
    uint64_t bad, per_gen[4];
    const char *spec;
    int want_rc;
};

/* Each result ran on exactly one context: its salt is its generation's. */
static void check_swaps(struct stream *s, const exec_result_t *r)
{
    struct swaps *w = s->arg;
    bool good = r->generation < 4 && tu_tags_mark(&w->tags, r->tag) &&
                mt_ok(r, w->salt_of[r->generation]);
    /* Submitted after the swap returned: the new context, for sure. */
    if (r->seq >= w->committed_at)
        good &= r->generation >= w->min_gen_after;
    w->bad += !good;
    if (r->generation < 4)
        w->per_gen[r->generation]++;
}

static void swap_now(struct stream *s)
{
    struct swaps *w = s->arg;
    char err[256] = "x";
    int rc = exec_swap_spec(s->ex, w->spec, err, sizeof err);
    if (rc != w->want_rc)
        print_error("exec_swap_spec(%s): %s: %s\n", w->spec, exec_err_name(rc), err);
    assert_int_equal(rc, w->want_rc);
    if (rc == 0) {
        assert_string_equal(err, "");
        w->committed_at = s->from + s->submitted; /* tags and seqs run from 0 */
        w->min_gen_after++;
    } else {
        assert_non_null(strstr(err, "rank "));
        assert_non_null(strstr(err, "asked to fail"));
    }
}

static void test_swap_mid_stream(void **state)
{
    (void)state;
    const uint64_t n = 200000;
    struct swaps w = {.salt_of = {1, 2, 3}, .committed_at = UINT64_MAX};
    tu_tags_init(&w.tags, 3 * n);
    exec_t *ex = mk("salt=1", 0, NULL);
    /* Two swaps, each with records of the old context still in flight. */
    w.spec = "salt=2";
    struct stream s = {.ex = ex, .to = n, .at = n / 2, .mid = swap_now, .check = check_swaps,
                       .arg = &w};
    run_stream(&s);
    w.spec = "salt=3";
    struct stream s2 = {.ex = ex, .from = n, .to = 3 * n, .at = n / 3, .mid = swap_now,
                        .check = check_swaps, .arg = &w};
    w.committed_at = UINT64_MAX;
    run_stream(&s2);
    assert_int_equal(w.bad, 0);
    assert_true(tu_tags_complete(&w.tags));
    print_message("by generation: %llu %llu %llu\n", (unsigned long long)w.per_gen[0],
                  (unsigned long long)w.per_gen[1], (unsigned long long)w.per_gen[2]);
    assert_true(w.per_gen[0] >= n / 2 && w.per_gen[1] > 0 && w.per_gen[2] >= 2 * n - n / 3);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.swaps, 2);
    assert_int_equal(st.generation, 2);
    assert_int_equal(st.ok, 3 * n);
    teardown(NULL);
    tu_tags_free(&w.tags);
}

/* A spec one rank (or every rank) cannot build: refused, the old context
 * keeps serving, and a good one later goes through. */
static void test_swap_refused(void **state)
{
    (void)state;
    const uint64_t n = 60000;
    struct swaps w = {.salt_of = {1, 4}, .committed_at = UINT64_MAX};
    tu_tags_init(&w.tags, 3 * n);
    exec_t *ex = mk("salt=1", 0, NULL);
    w.spec = "salt=9,fail=2";
    w.want_rc = EXEC_EINIT;
    struct stream s = {.ex = ex, .to = n, .at = n / 2, .mid = swap_now, .check = check_swaps,
                       .arg = &w};
    run_stream(&s);
    w.spec = "salt=9,fail";
    struct stream s2 = {.ex = ex, .from = n, .to = 2 * n, .at = n / 2, .mid = swap_now,
                        .check = check_swaps, .arg = &w};
    run_stream(&s2);
    assert_int_equal(w.per_gen[0], 2 * n); /* all on the first context */
    w.spec = "salt=4";
    w.want_rc = 0;
    struct stream s3 = {.ex = ex, .from = 2 * n, .to = 3 * n, .at = n / 2, .mid = swap_now,
                        .check = check_swaps, .arg = &w};
    run_stream(&s3);
    assert_int_equal(w.bad, 0);
    assert_true(tu_tags_complete(&w.tags));
    assert_true(w.per_gen[1] >= n / 2);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.swaps, 1);
    assert_int_equal(st.generation, 1);
    /* Misuse of the swap calls. */
    int ctx;
    assert_int_equal(exec_swap_context(ex, &ctx), EXEC_ENOTSUP);
    assert_int_equal(exec_swap_spec(ex, NULL, NULL, 0), EXEC_EINVAL);
    teardown(NULL);
    tu_tags_free(&w.tags);
}

/* ------------------------------------------------------------------------- */
/* Create                                                                    */
/* ------------------------------------------------------------------------- */

static int create_rc(const char *spec, exec_options_t *o)
{
    exec_options_t d = {0};
    if (!o)
        o = &d;
    o->plugin = o->plugin ? o->plugin : &mt_plugin;
    o->spec = spec;
    o->err = g_err;
    o->errlen = sizeof g_err;
    g_err[0] = 'x';
    exec_t *ex = (exec_t *)&ex;
    int rc = exec_create(&ex, o->plugin->ops, NULL, EXEC_MPI, o);
    if (rc)
        assert_null(ex);
    else
        exec_destroy(ex);
    return rc;
}

static void test_create_refused(void **state)
{
    (void)state;
    assert_int_equal(create_rc("salt=1,fail=1", NULL), EXEC_EINIT);
    assert_non_null(strstr(g_err, "rank 1"));
    assert_non_null(strstr(g_err, "asked to fail on rank 1"));
    assert_int_equal(create_rc("salt=1,fail", NULL), EXEC_EINIT);
    assert_non_null(strstr(g_err, "asked to fail"));
    assert_int_equal(create_rc("bogus", NULL), EXEC_EINIT);
    assert_non_null(strstr(g_err, "unknown spec item 'bogus'"));
    /* The header crosses to the ranks: a column the spec needs is found
     * there, quoted names included. */
    exec_csv_header_t *h;
    const char row[] = "id,\"te,\"\"xt\",text";
    assert_int_equal(exec_csv_header_create(&h, row, sizeof row - 1, ','), 0);
    exec_options_t o = {.header = h};
    assert_int_equal(create_rc("needcol=text,ncols=3", &o), 0);
    o = (exec_options_t){.header = h};
    assert_int_equal(create_rc("needcol=nope", &o), EXEC_EINIT);
    assert_non_null(strstr(g_err, "no column 'nope'"));
    assert_int_equal(create_rc("needcol=text", NULL), EXEC_EINIT);
    exec_csv_header_free(h);
    /* Another plugin than the ranks serve. */
    exec_plugin_t other = mt_plugin;
    other.name = "other";
    o = (exec_options_t){.plugin = &other};
    assert_int_equal(create_rc("salt=1", &o), EXEC_EINIT);
    assert_non_null(strstr(g_err, "serves plugin 'mt', rank 0 runs 'other'"));
    /* Refused before any rank is asked. */
    o = (exec_options_t){.workers = 3}; /* two worker ranks */
    assert_int_equal(create_rc("salt=1", &o), EXEC_EINVAL);
    o = (exec_options_t){.rank_backend = EXEC_MPI};
    assert_int_equal(create_rc("salt=1", &o), EXEC_EINVAL);
    int ctx;
    exec_options_t c = {.plugin = &mt_plugin, .spec = "salt=1"};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &mt_ops, &ctx, EXEC_MPI, &c), EXEC_EINVAL);
    c.plugin = NULL;
    assert_int_equal(exec_create(&ex, &mt_ops, NULL, EXEC_MPI, &c), EXEC_ECAPS);
    char err[64];
    assert_int_equal(exec_mpi_serve(&mt_plugin, err, sizeof err), EXEC_EINVAL); /* rank 0 */
    assert_non_null(strstr(err, "rank 0"));
    assert_int_equal(exec_mpi_serve(NULL, NULL, 0), EXEC_EINVAL);
    /* After all that, the ranks serve again. */
    assert_int_equal(create_rc("salt=1", NULL), 0);
    assert_string_equal(g_err, "");
}

/* ------------------------------------------------------------------------- */
/* Faults inside a rank, cancel                                              */
/* ------------------------------------------------------------------------- */

struct crashes {
    tu_tags_t tags;
    uint64_t every, bad, crashed;
};

static void check_crashes(struct stream *s, const exec_result_t *r)
{
    struct crashes *c = s->arg;
    bool good = tu_tags_mark(&c->tags, r->tag);
    if (r->tag % c->every == 0) {
        good &= r->status == EXEC_ECRASHED && r->signal == SIGSEGV && r->data == NULL;
        c->crashed++;
    } else {
        good &= mt_ok(r, 5);
    }
    c->bad += !good;
}

/* A record that crashes a worker process of a rank's EXEC_FORK executor is
 * that record's result; the rank and the stream go on. */
static void test_crash_in_rank(void **state)
{
    (void)state;
    const uint64_t n = 20000;
    struct crashes c = {.every = 997};
    tu_tags_init(&c.tags, n);
    exec_options_t o = {.rank_backend = EXEC_FORK, .rank_workers = 2};
    exec_t *ex = mk("salt=5,crash=997", 0, &o);
    struct stream s = {.ex = ex, .to = n, .finish = true, .check = check_crashes, .arg = &c};
    run_stream(&s);
    assert_int_equal(c.bad, 0);
    assert_true(tu_tags_complete(&c.tags));
    assert_int_equal(c.crashed, (n + c.every - 1) / c.every);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.crashed, c.crashed);
    assert_int_equal(st.ok, n - c.crashed);
    assert_true(st.respawns >= 1); /* the ranks replaced their crashed workers */
    teardown(NULL);
    tu_tags_free(&c.tags);
}

/* Cancel reaches records the host still holds: with one batch in flight per
 * rank and slow records, the last ones submitted are still here. */
static void test_cancel_queued(void **state)
{
    (void)state;
    exec_options_t o = {.rank_workers = 1, .rank_batches = 1, .batch = 4};
    exec_t *ex = mk("salt=1,sleep=3000", 0, &o);
    unsigned char rec[TU_REC_MAX];
    const uint64_t n = 64;
    for (uint64_t t = 0; t < n; t++)
        assert_int_equal(exec_submit(ex, rec, tu_rec(t, rec), t), 0);
    assert_int_equal(exec_cancel(ex, n - 1), 1);
    assert_int_equal(exec_cancel(ex, n - 2), 1);
    assert_int_equal(exec_cancel(ex, 12345), EXEC_ENOENT);
    assert_int_equal(exec_finish(ex), 0);
    tu_tags_t tags;
    tu_tags_init(&tags, n);
    exec_result_t r;
    int rc;
    uint64_t cancelled = 0, bad = 0;
    while ((rc = exec_next(ex, &r, -1)) == 0) {
        bad += !tu_tags_mark(&tags, r.tag);
        if (r.tag >= n - 2) {
            bad += r.status != EXEC_ECANCELLED;
            cancelled++;
        } else {
            bad += !mt_ok(&r, 1);
        }
    }
    assert_int_equal(rc, EXEC_EOF);
    assert_int_equal(bad, 0);
    assert_int_equal(cancelled, 2);
    assert_true(tu_tags_complete(&tags));
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.cancelled, 2);
    teardown(NULL);
    tu_tags_free(&tags);
}

/* ------------------------------------------------------------------------- */
/* The rest of the contract                                                  */
/* ------------------------------------------------------------------------- */

/* exec_fd() polls readable for results; options and figures read back. */
static void test_fd_stats_options(void **state)
{
    (void)state;
    exec_t *ex = mk("salt=3", 0, NULL);
    int fd = exec_fd(ex);
    assert_true(fd >= 0);
    exec_result_t r;
    assert_int_equal(exec_next(ex, &r, 0), EXEC_EAGAIN); /* arms the fd */
    unsigned char rec[TU_REC_MAX];
    for (uint64_t t = 0; t < 100; t++)
        assert_int_equal(exec_submit(ex, rec, tu_rec(t, rec), t), 0);
    assert_int_equal(exec_finish(ex), 0);
    uint64_t got = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 10000), 1);
        int rc;
        while ((rc = exec_next(ex, &r, 0)) == 0) {
            assert_true(mt_ok(&r, 3));
            got++;
        }
        if (rc == EXEC_EOF)
            break;
        assert_int_equal(rc, EXEC_EAGAIN);
    }
    assert_int_equal(got, 100);
    exec_options_t o;
    assert_int_equal(exec_get_options(ex, &o), 0);
    assert_int_equal(o.workers, 2);
    assert_int_equal(o.window, 2 * 16384);
    assert_int_equal(o.rank_timeout_ms, 10000);
    assert_ptr_equal(o.plugin, &mt_plugin);
    exec_worker_stats_t ws;
    assert_int_equal(exec_worker_stats(ex, 1, &ws), 0);
    assert_true(ws.pid > 0);
    assert_int_equal(exec_worker_stats(ex, 2, &ws), EXEC_EINVAL);
    assert_string_equal(exec_backend_name(exec_backend(ex)), "mpi");
    teardown(NULL);
}

static int emit_many(void *arg, const exec_result_t *res, size_t n)
{
    uint64_t *bad = arg;
    for (size_t i = 0; i < n; i++)
        bad[0] += !mt_ok(&res[i], 8) || res[i].worker != 0;
    bad[1] += n;
    return 0;
}

/* workers = 1: rank 1 alone serves (rank 2 sits the session out), here
 * through exec_run_records(). */
static void test_one_rank_run_records(void **state)
{
    (void)state;
    const size_t n = 50000;
    unsigned char(*bufs)[TU_REC_MAX] = malloc(n * TU_REC_MAX);
    exec_record_t *recs = malloc(n * sizeof *recs);
    assert_non_null(bufs);
    assert_non_null(recs);
    for (size_t i = 0; i < n; i++)
        recs[i] = (exec_record_t){bufs[i], tu_rec(i, bufs[i]), i};
    exec_options_t o = {.workers = 1};
    exec_t *ex = mk("salt=8", EXEC_ORDERED, &o);
    uint64_t bad[2] = {0, 0};
    assert_int_equal(exec_run_records(ex, recs, n, emit_many, bad), 0);
    assert_int_equal(bad[0], 0);
    assert_int_equal(bad[1], n);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.workers, 1);
    teardown(NULL);
    free(bufs);
    free(recs);
}

static int group_setup(void **state)
{
    (void)state;
    /* A first session, so that what MPI opens for good on first use (its
     * connections between ranks) is there before the leak checks count. */
    exec_t *ex = mk("salt=1", 0, NULL);
    unsigned char rec[TU_REC_MAX];
    exec_result_t r;
    assert_int_equal(exec_submit(ex, rec, tu_rec(1, rec), 1), 0);
    assert_int_equal(exec_next(ex, &r, -1), 0);
    teardown(NULL);
    return 0;
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    int rank, size;
    if (exec_mpi_check(&rank, &size) != 0 || size != 3) {
        fprintf(stderr, "test_mpi: run under mpirun -np 3 with MPI_THREAD_MULTIPLE\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (rank != 0) {
        /* Serve every session; a refusal of this rank's build is a test's
         * doing, anything else is a failure. */
        char err[256];
        int rc, failed = 0;
        while ((rc = exec_mpi_serve(&mt_plugin, err, sizeof err)) != EXEC_EOF) {
            if (rc && rc != EXEC_EINIT) {
                fprintf(stderr, "test_mpi: rank %d: exec_mpi_serve: %s: %s\n", rank,
                        exec_err_name(rc), err);
                failed = 1;
            }
        }
        if (exec_mpi_barrier(-1) != 0) /* every rank alive: it completes */
            failed = 1;
        MPI_Finalize();
        return failed;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_million_unordered, teardown),
        cmocka_unit_test_teardown(test_million_ordered, teardown),
        cmocka_unit_test_teardown(test_swap_mid_stream, teardown),
        cmocka_unit_test_teardown(test_swap_refused, teardown),
        cmocka_unit_test_teardown(test_create_refused, teardown),
        cmocka_unit_test_teardown(test_crash_in_rank, teardown),
        cmocka_unit_test_teardown(test_cancel_queued, teardown),
        cmocka_unit_test_teardown(test_fd_stats_options, teardown),
        cmocka_unit_test_teardown(test_one_rank_run_records, teardown),
    };
    int rc = tu_run_group_tests(tests, group_setup, NULL);
    if (exec_mpi_dismiss() != 0)
        rc = 1;
    int b = exec_mpi_barrier(30000); /* every rank is there: 0 */
    if (b != 0) {
        fprintf(stderr, "test_mpi: exec_mpi_barrier: %s\n", exec_err_name(b));
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Finalize();
    return rc ? 1 : 0;
}
