/*
 * Every public call with bad arguments or in the wrong order answers with its
 * documented code, never a crash; error strings for every code.
 */
#include "executor_records.h"
#include "testutil.h"

#include <fcntl.h>

static exec_t *mk(unsigned workers, unsigned flags)
{
    exec_options_t o = {.workers = workers, .flags = flags};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &tu_rev_ops, NULL, EXEC_THREADS, &o), 0);
    assert_non_null(ex);
    return ex;
}

/* Collects everything until EXEC_EOF; every result must be tu_rev's. Returns the count. */
static uint64_t drain(exec_t *ex)
{
    exec_result_t r;
    uint64_t n = 0;
    int rc;
    while ((rc = exec_next(ex, &r, -1)) == 0) {
        assert_true(tu_rev_ok(&r));
        n++;
    }
    assert_int_equal(rc, EXEC_EOF);
    return n;
}

/* A create that must fail with want, leave *exp NULL and start nothing. */
static void create_fails(const exec_ops_t *ops, exec_backend_t be, const exec_options_t *o, int want)
{
    int threads = tu_threads();
    exec_t *ex = (exec_t *)&ex; /* garbage on purpose: must come back NULL */
    assert_int_equal(exec_create(&ex, ops, NULL, be, o), want);
    assert_null(ex);
    assert_int_equal(tu_threads_settled(threads), threads);
}

static void test_create_bad_args(void **state)
{
    (void)state;
    exec_ops_t ops = tu_rev_ops;
    assert_int_equal(exec_create(NULL, &ops, NULL, EXEC_THREADS, NULL), EXEC_EINVAL);
    create_fails(NULL, EXEC_THREADS, NULL, EXEC_EINVAL);

    ops.process = NULL;
    create_fails(&ops, EXEC_THREADS, NULL, EXEC_EINVAL);
    ops = tu_rev_ops;
    ops.version = 0;
    create_fails(&ops, EXEC_THREADS, NULL, EXEC_EVERSION);
    ops.version = EXEC_OPS_VERSION + 1;
    create_fails(&ops, EXEC_THREADS, NULL, EXEC_EVERSION);
    ops = tu_rev_ops;
    ops.caps |= 0x4u; /* unknown capability */
    create_fails(&ops, EXEC_THREADS, NULL, EXEC_EINVAL);
    ops.caps = 0x80000000u | EXEC_CAP_THREAD_SAFE;
    create_fails(&ops, EXEC_AUTO, NULL, EXEC_EINVAL);

    create_fails(&tu_rev_ops, (exec_backend_t)4, NULL, EXEC_EINVAL);
    create_fails(&tu_rev_ops, (exec_backend_t)-1, NULL, EXEC_EINVAL);
}

static int plug_build(const char *spec, const exec_csv_header_t *h, void **ctx, char *err,
                      size_t errlen)
{
    (void)spec;
    (void)h;
    (void)err;
    (void)errlen;
    *ctx = NULL;
    return 0;
}

static void plug_free(void *ctx) { (void)ctx; }

/*
 * EXEC_MPI is refused for a classifier that cannot be built from a spec, and
 * for a context given directly; these tests do not link libexecutor_mpi, so
 * a well-formed request says EXEC_ENOTSUP. exec_swap_spec() needs a backend
 * that builds from a spec.
 */
static void test_create_mpi_refused(void **state)
{
    (void)state;
    exec_plugin_t pl = {.abi = EXEC_PLUGIN_ABI, .name = "rev", .ops = &tu_rev_ops,
                        .ctx_build = plug_build, .ctx_free = plug_free};
    exec_options_t o = {0};
    create_fails(&tu_rev_ops, EXEC_MPI, NULL, EXEC_ECAPS);
    create_fails(&tu_rev_ops, EXEC_MPI, &o, EXEC_ECAPS);
    o.spec = "x";
    create_fails(&tu_rev_ops, EXEC_MPI, &o, EXEC_ECAPS); /* no plugin */
    o.plugin = &pl;
    o.spec = NULL;
    create_fails(&tu_rev_ops, EXEC_MPI, &o, EXEC_ECAPS); /* no spec */
    o.spec = "x";
    pl.ctx_build = NULL;
    create_fails(&tu_rev_ops, EXEC_MPI, &o, EXEC_ECAPS); /* cannot build */
    pl.ctx_build = plug_build;
    exec_ops_t other = tu_rev_ops;
    create_fails(&other, EXEC_MPI, &o, EXEC_EINVAL); /* not the plugin's ops */
    pl.abi = EXEC_PLUGIN_ABI + 1;
    create_fails(&tu_rev_ops, EXEC_MPI, &o, EXEC_EINVAL);
    pl.abi = EXEC_PLUGIN_ABI;
    o.rank_backend = EXEC_FORK; /* tu_rev_ops is not FORK_SAFE */
    create_fails(&tu_rev_ops, EXEC_MPI, &o, EXEC_ECAPS);
    o.rank_backend = EXEC_THREADS;
    create_fails(&tu_rev_ops, EXEC_MPI, &o, EXEC_ENOTSUP);
    int ctx;
    exec_t *ex = (exec_t *)&ex;
    assert_int_equal(exec_create(&ex, &tu_rev_ops, &ctx, EXEC_MPI, &o), EXEC_EINVAL);
    assert_null(ex);
    /* The MPI fields are checked on every backend. */
    exec_options_t b = {.rank_backend = (exec_backend_t)7};
    create_fails(&tu_rev_ops, EXEC_THREADS, &b, EXEC_EINVAL);
    b.rank_backend = EXEC_AUTO;
    b.rank_workers = 1025;
    create_fails(&tu_rev_ops, EXEC_THREADS, &b, EXEC_EINVAL);
    b.rank_workers = 0;
    b.rank_batches = 4097;
    create_fails(&tu_rev_ops, EXEC_THREADS, &b, EXEC_EINVAL);

    ex = mk(1, 0);
    char err[32] = "junk";
    assert_int_equal(exec_swap_spec(ex, "x", err, sizeof err), EXEC_ENOTSUP);
    assert_string_equal(err, "");
    assert_int_equal(exec_swap_spec(ex, NULL, NULL, 0), EXEC_EINVAL);
    assert_int_equal(exec_swap_spec(NULL, "x", NULL, 0), EXEC_EINVAL);
    exec_destroy(ex);
}

static void test_create_bad_options(void **state)
{
    (void)state;
    exec_options_t o;
#define BAD(field, value)                                                                          \
    do {                                                                                           \
        memset(&o, 0, sizeof o);                                                                   \
        o.field = value;                                                                           \
        create_fails(&tu_rev_ops, EXEC_THREADS, &o, EXEC_EINVAL);                                  \
    } while (0)
    BAD(flags, 0x8u);
    BAD(result_delay_us, 1000001);
    BAD(result_delay_us, UINT32_MAX);
    BAD(n_keep_fds, 1); /* with keep_fds NULL */
    BAD(flags, EXEC_ORDERED | 0x100u);
    BAD(workers, 1025);
    BAD(workers, UINT32_MAX);
    BAD(window, (1u << 24) + 1);
    BAD(window, UINT32_MAX);
    BAD(batch, 4097);
    BAD(max_record, ((size_t)64 << 20) + 1);
    BAD(max_record, SIZE_MAX);
    BAD(max_result, ((size_t)64 << 20) + 1);
    BAD(max_result, SIZE_MAX);
#undef BAD
}

/* The largest values in range are accepted. */
static void test_create_option_limits(void **state)
{
    (void)state;
    exec_options_t o = {.workers = 2,
                        .window = 1u << 24,
                        .batch = 4096,
                        .max_record = (size_t)64 << 20,
                        .max_result = (size_t)64 << 20,
                        .result_delay_us = 1000000,
                        .flags = EXEC_ORDERED};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &tu_rev_ops, NULL, EXEC_THREADS, &o), 0);
    exec_options_t got;
    assert_int_equal(exec_get_options(ex, &got), 0);
    assert_int_equal(got.workers, 2);
    assert_int_equal(got.window, 1u << 24);
    assert_int_equal(got.batch, 4096);
    assert_int_equal(got.max_record, (size_t)64 << 20);
    assert_int_equal(got.max_result, (size_t)64 << 20);
    assert_int_equal(got.flags, EXEC_ORDERED);
    assert_int_equal(got.result_delay_us, 1000000);
    unsigned char rec[TU_REC_MAX];
    for (uint64_t t = 0; t < 3; t++) /* each batch may hold max_record bytes */
        assert_int_equal(exec_try_submit(ex, rec, tu_rec(t, rec), t), 0);
    assert_int_equal(exec_finish(ex), 0);
    assert_int_equal(drain(ex), 3);
    exec_destroy(ex);
}

static void test_defaults(void **state)
{
    (void)state;
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &tu_rev_ops, NULL, EXEC_AUTO, NULL), 0);
    assert_int_equal(exec_backend(ex), EXEC_THREADS);
    exec_options_t o;
    memset(&o, 0xff, sizeof o);
    assert_int_equal(exec_get_options(ex, &o), 0);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(o.workers, cpus > 1024 ? 1024 : cpus);
    assert_int_equal(o.window, 4096u * o.workers > (1u << 24) ? 1u << 24 : 4096u * o.workers);
    assert_int_equal(o.batch, 128);
    assert_int_equal(o.flags, 0);
    assert_int_equal(o.max_record, 64 << 10);
    assert_int_equal(o.max_result, 64 << 10);
    assert_int_equal(o.timeout_ms, 0);
    assert_int_equal(o.max_records_per_worker, 0);
    assert_int_equal(o.result_delay_us, 1000);
    assert_null(o.keep_fds);
    assert_int_equal(o.n_keep_fds, 0);
    assert_int_equal(exec_get_options(NULL, &o), EXEC_EINVAL);
    assert_int_equal(exec_get_options(ex, NULL), EXEC_EINVAL);

    /* An all-zero options struct is the same as NULL. */
    exec_t *ex2 = NULL;
    exec_options_t z = {0}, o2;
    assert_int_equal(exec_create(&ex2, &tu_rev_ops, NULL, EXEC_THREADS, &z), 0);
    assert_int_equal(exec_get_options(ex2, &o2), 0);
    assert_memory_equal(&o, &o2, sizeof o);
    exec_destroy(ex2);
    exec_destroy(ex);
}

static void test_backend_choice(void **state)
{
    (void)state;
    exec_ops_t ops = tu_rev_ops;

    ops.caps = 0;
    create_fails(&ops, EXEC_THREADS, NULL, EXEC_ECAPS);
    create_fails(&ops, EXEC_AUTO, NULL, EXEC_ECAPS);
    create_fails(&ops, EXEC_FORK, NULL, EXEC_ECAPS);
    ops.caps = EXEC_CAP_FORK_SAFE; /* no silent downgrade to threads */
    create_fails(&ops, EXEC_THREADS, NULL, EXEC_ECAPS);
    ops.caps = EXEC_CAP_THREAD_SAFE;
    create_fails(&ops, EXEC_FORK, NULL, EXEC_ECAPS);

    exec_options_t o = {.workers = 2};
    ops.caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE;
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &ops, NULL, EXEC_AUTO, &o), 0);
    assert_int_equal(exec_backend(ex), EXEC_THREADS); /* THREAD_SAFE wins */
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.backend, EXEC_THREADS);
    assert_int_equal(st.workers, 2);
    exec_destroy(ex);
    ex = NULL;
    assert_int_equal(exec_create(&ex, &ops, NULL, EXEC_THREADS, &o), 0);
    assert_int_equal(exec_backend(ex), EXEC_THREADS);
    exec_destroy(ex);

    assert_int_equal(exec_backend(NULL), EXEC_AUTO);
    assert_string_equal(exec_backend_name(EXEC_AUTO), "auto");
    assert_string_equal(exec_backend_name(EXEC_THREADS), "threads");
    assert_string_equal(exec_backend_name(EXEC_FORK), "fork");
    assert_string_equal(exec_backend_name(EXEC_MPI), "mpi");
    assert_string_equal(exec_backend_name((exec_backend_t)42), "unknown");
    assert_string_equal(exec_backend_name((exec_backend_t)-1), "unknown");
}

/*
 * EXEC_FORK, explicitly or through AUTO with FORK_SAFE only: either the build
 * says EXEC_ENOTSUP cleanly, or the executor really runs on fork and its
 * results are right. Both branches check what they claim.
 */
static void fork_case(exec_backend_t want)
{
    if (tu_under_valgrind()) {
        print_message("under valgrind (no pidfd_open): the EXEC_FORK case is left out\n");
        return;
    }
    exec_ops_t ops = tu_rev_ops;
    ops.caps = EXEC_CAP_FORK_SAFE;
    exec_options_t o = {.workers = 2};
    int threads = tu_threads(), fds = tu_fds(), children = tu_children();
    exec_t *ex = (exec_t *)&ex;
    int rc = exec_create(&ex, &ops, NULL, want, &o);
    if (rc == EXEC_ENOTSUP) {
        print_message("%s with FORK_SAFE only: EXEC_ENOTSUP in this build\n",
                      exec_backend_name(want));
        assert_null(ex);
        assert_int_equal(tu_threads_settled(threads), threads);
        assert_int_equal(tu_fds(), fds);
        return;
    }
    assert_int_equal(rc, 0);
    assert_non_null(ex);
    assert_int_equal(exec_backend(ex), EXEC_FORK);
    unsigned char rec[TU_REC_MAX];
    tu_tags_t tags;
    tu_tags_init(&tags, 1000);
    exec_result_t r;
    for (uint64_t t = 0; t < 1000; t++) {
        while ((rc = exec_try_submit(ex, rec, tu_rec(t, rec), t)) == EXEC_EAGAIN) {
            assert_int_equal(exec_next(ex, &r, -1), 0);
            assert_true(tu_rev_ok(&r));
            assert_true(tu_tags_mark(&tags, r.tag));
        }
        assert_int_equal(rc, 0);
    }
    assert_int_equal(exec_finish(ex), 0);
    while ((rc = exec_next(ex, &r, -1)) == 0) {
        assert_true(tu_rev_ok(&r));
        assert_true(tu_tags_mark(&tags, r.tag));
    }
    assert_int_equal(rc, EXEC_EOF);
    assert_true(tu_tags_complete(&tags));
    tu_tags_free(&tags);
    exec_destroy(ex);
    /* Nothing left behind: no descriptor, thread or child process. */
    assert_int_equal(tu_fds(), fds);
    assert_int_equal(tu_threads_settled(threads), threads);
    assert_int_equal(tu_children(), children);
}

static void test_fork_backend(void **state)
{
    (void)state;
    fork_case(EXEC_FORK);
    fork_case(EXEC_AUTO);
}

static void test_submit_bad_args(void **state)
{
    (void)state;
    exec_options_t o = {.workers = 2, .max_record = 100};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &tu_rev_ops, NULL, EXEC_THREADS, &o), 0);
    char big[101] = {0};

    assert_int_equal(exec_submit(NULL, big, 1, 0), EXEC_EINVAL);
    assert_int_equal(exec_try_submit(NULL, big, 1, 0), EXEC_EINVAL);
    assert_int_equal(exec_submit(ex, NULL, 1, 0), EXEC_EINVAL);
    assert_int_equal(exec_try_submit(ex, NULL, 1, 0), EXEC_EINVAL);
    assert_int_equal(exec_submit(ex, big, 101, 0), EXEC_E2BIG);
    assert_int_equal(exec_try_submit(ex, big, 101, 0), EXEC_E2BIG);
    assert_int_equal(exec_submit(ex, big, SIZE_MAX, 0), EXEC_E2BIG);
    assert_int_equal(exec_submit(ex, NULL, SIZE_MAX, 0), EXEC_EINVAL);

    /* Refused records were not counted. */
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.submitted, 0);

    /* An empty record (even with NULL bytes) and one of exactly max_record are fine. */
    assert_int_equal(exec_submit(ex, NULL, 0, 1), 0);
    assert_int_equal(exec_submit(ex, big, 0, 2), 0);
    assert_int_equal(exec_submit(ex, big, 100, 3), 0);
    assert_int_equal(exec_try_submit(ex, big, 100, 4), 0);
    assert_int_equal(exec_finish(ex), 0);

    assert_int_equal(exec_submit(ex, big, 1, 5), EXEC_ESTATE);
    assert_int_equal(exec_try_submit(ex, big, 1, 5), EXEC_ESTATE);
    assert_int_equal(exec_finish(ex), EXEC_ESTATE);
    assert_int_equal(exec_finish(NULL), EXEC_EINVAL);

    exec_result_t r;
    uint64_t seen = 0;
    int rc;
    while ((rc = exec_next(ex, &r, -1)) == 0) {
        assert_int_equal(r.status, 0);
        assert_int_equal(r.len, (r.tag <= 2 ? 0 : 100) + 8);
        seen |= 1u << r.tag;
    }
    assert_int_equal(rc, EXEC_EOF);
    assert_int_equal(seen, 0x1e);
    /* Next after the end keeps saying so, whatever the timeout. */
    assert_int_equal(exec_next(ex, &r, -1), EXEC_EOF);
    assert_int_equal(exec_next(ex, &r, 0), EXEC_EOF);
    assert_int_equal(exec_next(ex, &r, 10), EXEC_EOF);
    size_t got = 99;
    assert_int_equal(exec_next_many(ex, &r, 1, &got, 0), EXEC_EOF);
    assert_int_equal(got, 0);
    exec_destroy(ex);
}

static void test_submit_many_bad_args(void **state)
{
    (void)state;
    exec_options_t o = {.workers = 2, .max_record = 100};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &tu_rev_ops, NULL, EXEC_THREADS, &o), 0);
    unsigned char bufs[8][TU_REC_MAX];
    exec_record_t recs[8];
    for (int i = 0; i < 8; i++)
        recs[i] = (exec_record_t){bufs[i], tu_rec((uint64_t)i, bufs[i]), (uint64_t)i};
    size_t acc = 77;

    assert_int_equal(exec_submit_many(NULL, recs, 1, &acc), EXEC_EINVAL);
    assert_int_equal(acc, 0);
    assert_int_equal(exec_try_submit_many(NULL, recs, 1, &acc), EXEC_EINVAL);
    assert_int_equal(exec_submit_many(ex, recs, 1, NULL), EXEC_EINVAL);
    assert_int_equal(exec_try_submit_many(ex, recs, 1, NULL), EXEC_EINVAL);
    acc = 77;
    assert_int_equal(exec_submit_many(ex, NULL, 1, &acc), EXEC_EINVAL);
    assert_int_equal(acc, 0);
    acc = 77;
    assert_int_equal(exec_submit_many(ex, recs, 0, &acc), 0);
    assert_int_equal(acc, 0);
    assert_int_equal(exec_submit_many(ex, NULL, 0, &acc), 0);
    assert_int_equal(acc, 0);

    /* A bad record in the middle: the ones before it are taken, it is refused. */
    exec_record_t bad = recs[2];
    recs[2].data = NULL;
    assert_int_equal(exec_submit_many(ex, recs, 4, &acc), EXEC_EINVAL);
    assert_int_equal(acc, 2);
    recs[2] = bad;
    unsigned char huge[101] = {0};
    exec_record_t over = {huge, 101, 99};
    exec_record_t mix[3] = {recs[2], over, recs[3]};
    assert_int_equal(exec_try_submit_many(ex, mix, 3, &acc), EXEC_E2BIG);
    assert_int_equal(acc, 1);
    mix[0] = recs[3];
    mix[1] = recs[4];
    mix[2] = over;
    assert_int_equal(exec_submit_many(ex, mix, 3, &acc), EXEC_E2BIG);
    assert_int_equal(acc, 2);
    assert_int_equal(exec_try_submit_many(ex, &recs[5], 3, &acc), 0);
    assert_int_equal(acc, 3);

    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.submitted, 8);
    assert_int_equal(exec_finish(ex), 0);
    acc = 77;
    assert_int_equal(exec_submit_many(ex, recs, 2, &acc), EXEC_ESTATE);
    assert_int_equal(acc, 0);
    assert_int_equal(exec_try_submit_many(ex, recs, 2, &acc), EXEC_ESTATE);
    assert_int_equal(acc, 0);

    tu_tags_t tags;
    tu_tags_init(&tags, 8);
    exec_result_t r;
    int rc;
    while ((rc = exec_next(ex, &r, -1)) == 0) {
        assert_true(tu_rev_ok(&r));
        assert_true(tu_tags_mark(&tags, r.tag));
    }
    assert_int_equal(rc, EXEC_EOF);
    assert_true(tu_tags_complete(&tags));
    tu_tags_free(&tags);
    exec_destroy(ex);
}

static void test_next_bad_args(void **state)
{
    (void)state;
    exec_t *ex = mk(2, 0);
    exec_result_t r[4];
    size_t got = 5;
    assert_int_equal(exec_next(NULL, r, 0), EXEC_EINVAL);
    assert_int_equal(exec_next(ex, NULL, 0), EXEC_EINVAL);
    assert_int_equal(exec_next(ex, r, -2), EXEC_EINVAL);
    assert_int_equal(exec_next(ex, r, -1000), EXEC_EINVAL);
    assert_int_equal(exec_next_many(NULL, r, 4, &got, 0), EXEC_EINVAL);
    assert_int_equal(got, 0);
    got = 5;
    assert_int_equal(exec_next_many(ex, NULL, 4, &got, 0), EXEC_EINVAL);
    assert_int_equal(got, 0);
    assert_int_equal(exec_next_many(ex, r, 0, &got, 0), EXEC_EINVAL);
    assert_int_equal(exec_next_many(ex, r, 4, NULL, 0), EXEC_EINVAL);
    assert_int_equal(exec_next_many(ex, r, 4, &got, -2), EXEC_EINVAL);

    /* Nothing submitted, not finished: nothing to give yet. */
    assert_int_equal(exec_next(ex, r, 0), EXEC_EAGAIN);
    assert_int_equal(exec_next(ex, r, 1), EXEC_ETIMEDOUT);
    assert_int_equal(exec_next_many(ex, r, 4, &got, 0), EXEC_EAGAIN);
    assert_int_equal(got, 0);
    /* Finished with nothing submitted: straight to the end. */
    assert_int_equal(exec_finish(ex), 0);
    assert_int_equal(exec_next(ex, r, -1), EXEC_EOF);
    assert_int_equal(exec_next_many(ex, r, 4, &got, -1), EXEC_EOF);

    assert_int_equal(exec_fd(NULL), EXEC_EINVAL);
    int fd = exec_fd(ex);
    assert_true(fd >= 0);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    assert_int_equal(exec_fd(ex), fd);
    exec_destroy(ex);
}

static void test_misc_bad_args(void **state)
{
    (void)state;
    exec_stats_t st;
    assert_int_equal(exec_stats(NULL, &st), EXEC_EINVAL);
    assert_int_equal(exec_swap_context(NULL, NULL), EXEC_EINVAL);
    exec_t *ex = mk(1, 0);
    assert_int_equal(exec_stats(ex, NULL), EXEC_EINVAL);
    memset(&st, 0xff, sizeof st);
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.submitted, 0);
    assert_int_equal(st.delivered, 0);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.swaps, 0);
    assert_int_equal(st.generation, 0);
    assert_int_equal(st.respawns, 0);
    exec_destroy(ex);

    /* The writer functions refuse a NULL writer without crashing. */
    assert_int_equal(exec_write(NULL, "x", 1), EXEC_EINVAL);
    assert_int_equal(exec_writef(NULL, "%d", 1), EXEC_EINVAL);
    assert_null(exec_write_reserve(NULL, 1));
    exec_write_reset(NULL);
    assert_int_equal(exec_write_len(NULL), 0);
}

/* ------------------------------------------------------------------------- */
/* exec_map misuse                                                           */
/* ------------------------------------------------------------------------- */

struct reader {
    uint64_t next, n;
    int fail_at_rc; /* returned instead of record `n` when non-zero */
    size_t big_at;  /* a record of this tag is max_record + 1 long */
    unsigned char buf[200];
};

static int read_cb(void *arg, const void **rec, size_t *len, uint64_t *tag)
{
    struct reader *rd = arg;
    if (rd->next == rd->n)
        return rd->fail_at_rc;
    *tag = rd->next;
    if (rd->next == rd->big_at) {
        *rec = rd->buf;
        *len = sizeof rd->buf;
    } else {
        *len = tu_rec(rd->next, rd->buf);
        *rec = rd->buf;
    }
    rd->next++;
    return 1;
}

struct emitter {
    uint64_t n, stop_at;
    int bad;
    tu_tags_t tags;
};

static int emit_cb(void *arg, const exec_result_t *res)
{
    struct emitter *em = arg;
    if (!tu_rev_ok(res) || !tu_tags_mark(&em->tags, res->tag))
        em->bad++;
    return ++em->n == em->stop_at ? 42 : 0;
}

static void test_map_bad_args(void **state)
{
    (void)state;
    struct reader rd = {.n = 10, .big_at = UINT64_MAX};
    struct emitter em = {0};
    tu_tags_init(&em.tags, 1000);
    exec_t *ex = mk(2, 0);
    assert_int_equal(exec_map(NULL, read_cb, &rd, emit_cb, &em), EXEC_EINVAL);
    assert_int_equal(exec_map(ex, NULL, &rd, emit_cb, &em), EXEC_EINVAL);
    assert_int_equal(exec_map(ex, read_cb, &rd, NULL, &em), EXEC_EINVAL);
    /* Records already submitted: busy. */
    unsigned char rec[TU_REC_MAX];
    assert_int_equal(exec_submit(ex, rec, tu_rec(500, rec), 500), 0);
    assert_int_equal(exec_map(ex, read_cb, &rd, emit_cb, &em), EXEC_EBUSY);
    assert_int_equal(rd.next, 0);
    assert_int_equal(exec_finish(ex), 0);
    assert_int_equal(exec_map(ex, read_cb, &rd, emit_cb, &em), EXEC_ESTATE);
    assert_int_equal(drain(ex), 1);
    exec_destroy(ex);

    /* A clean map finishes the executor: a second map is out of order. */
    ex = mk(2, 0);
    assert_int_equal(exec_map(ex, read_cb, &rd, emit_cb, &em), 0);
    assert_int_equal(em.n, 10);
    assert_int_equal(em.bad, 0);
    assert_int_equal(exec_map(ex, read_cb, &rd, emit_cb, &em), EXEC_ESTATE);
    assert_int_equal(exec_submit(ex, rec, 8, 0), EXEC_ESTATE);
    exec_result_t r;
    assert_int_equal(exec_next(ex, &r, 0), EXEC_EOF);
    exec_destroy(ex);

    /* read_cb fails after 300 records: map drains those and returns its error. */
    ex = mk(2, 0);
    tu_tags_free(&em.tags);
    memset(&em, 0, sizeof em);
    tu_tags_init(&em.tags, 300);
    rd = (struct reader){.n = 300, .fail_at_rc = -77, .big_at = UINT64_MAX};
    assert_int_equal(exec_map(ex, read_cb, &rd, emit_cb, &em), -77);
    assert_int_equal(em.bad, 0);
    assert_true(tu_tags_complete(&em.tags));
    assert_int_equal(exec_next(ex, &r, 0), EXEC_EOF);
    exec_destroy(ex);

    /* An oversized record from read_cb: EXEC_E2BIG, the ones before it delivered. */
    exec_options_t o = {.workers = 2, .max_record = sizeof rd.buf - 1};
    ex = NULL;
    assert_int_equal(exec_create(&ex, &tu_rev_ops, NULL, EXEC_THREADS, &o), 0);
    tu_tags_free(&em.tags);
    memset(&em, 0, sizeof em);
    tu_tags_init(&em.tags, 50);
    rd = (struct reader){.n = 1000, .big_at = 50};
    assert_int_equal(exec_map(ex, read_cb, &rd, emit_cb, &em), EXEC_E2BIG);
    assert_int_equal(em.bad, 0);
    assert_true(tu_tags_complete(&em.tags));
    exec_destroy(ex);

    /* emit_cb stops early: map returns its value at once. */
    ex = mk(2, 0);
    tu_tags_free(&em.tags);
    memset(&em, 0, sizeof em);
    tu_tags_init(&em.tags, 100000);
    em.stop_at = 1000;
    rd = (struct reader){.n = 100000, .big_at = UINT64_MAX};
    assert_int_equal(exec_map(ex, read_cb, &rd, emit_cb, &em), 42);
    assert_int_equal(em.n, 1000);
    assert_int_equal(em.bad, 0);
    /* The executor is finished; what was submitted but not emitted is still
     * delivered, exactly once, by exec_next. (A record read while the window
     * was full may not have been submitted: stopping abandons it.) */
    assert_int_equal(exec_submit(ex, rec, 8, 0), EXEC_ESTATE);
    int rc;
    while ((rc = exec_next(ex, &r, -1)) == 0) {
        assert_true(tu_rev_ok(&r));
        assert_true(tu_tags_mark(&em.tags, r.tag));
    }
    assert_int_equal(rc, EXEC_EOF);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(atomic_load(&em.tags.count), st.submitted);
    assert_int_equal(st.delivered, st.submitted);
    assert_true(st.submitted == rd.next || st.submitted + 1 == rd.next);
    assert_int_equal(atomic_load(&em.tags.bad), 0);
    exec_destroy(ex);

    /* Stopped early again, and destroyed with records in flight. */
    ex = mk(2, 0);
    em.n = 0;
    em.stop_at = 10;
    rd = (struct reader){.n = 100000, .big_at = UINT64_MAX};
    assert_int_equal(exec_map(ex, read_cb, &rd, emit_cb, &em), 42);
    exec_destroy(ex);
    tu_tags_free(&em.tags);
}

/* ------------------------------------------------------------------------- */
/* Calls on the executor from inside exec_map's own callbacks                */
/* ------------------------------------------------------------------------- */

struct reentry {
    exec_t *ex;
    uint64_t n, read, emitted;
    int in_read[8], in_emit[8];
    unsigned char buf[TU_REC_MAX];
};

/* Every call that would deadlock or free what map is using, from read_cb. */
static void reenter(exec_t *ex, int *rc)
{
    exec_result_t r;
    size_t got = 0, acc = 0;
    unsigned char rec[8] = {0};
    exec_record_t one = {rec, sizeof rec, 1};
    exec_stats_t st;
    rc[0] = exec_next(ex, &r, 0);
    rc[1] = exec_next_many(ex, &r, 1, &got, 0);
    rc[2] = exec_try_submit(ex, rec, sizeof rec, 1);
    rc[3] = exec_submit_many(ex, &one, 1, &acc);
    rc[4] = exec_finish(ex);
    rc[5] = exec_swap_context(ex, NULL);
    rc[6] = exec_map(ex, NULL, NULL, NULL, NULL) == EXEC_EINVAL ? EXEC_ESTATE : 0;
    rc[7] = exec_stats(ex, &st);
    exec_destroy(ex); /* refused: map goes on */
}

static int reentry_read(void *arg, const void **rec, size_t *len, uint64_t *tag)
{
    struct reentry *e = arg;
    if (e->read == e->n)
        return 0;
    if (e->read == e->n / 2)
        reenter(e->ex, e->in_read);
    *tag = e->read++;
    *len = tu_rec(*tag, e->buf);
    *rec = e->buf;
    return 1;
}

static int reentry_emit(void *arg, const exec_result_t *res)
{
    struct reentry *e = arg;
    if (!tu_rev_ok(res))
        return 1;
    if (e->emitted++ == e->n / 3)
        reenter(e->ex, e->in_emit);
    return 0;
}

static void test_calls_inside_map_callbacks(void **state)
{
    (void)state;
    for (int k = 0; k < 2; k++) {
        if (tu_fork_left_out(k))
            continue;
        exec_options_t o = {.workers = 2};
        exec_t *ex = NULL;
        static const exec_ops_t ops = {.version = EXEC_OPS_VERSION,
                                       .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
                                       .process = tu_rev_process};
        assert_int_equal(exec_create(&ex, &ops, NULL, k ? EXEC_FORK : EXEC_THREADS, &o), 0);
        struct reentry e = {.ex = ex, .n = 20000};
        assert_int_equal(exec_map(ex, reentry_read, &e, reentry_emit, &e), 0);
        assert_int_equal(e.emitted, e.n);
        for (int i = 0; i < 8; i++) {
            assert_int_equal(e.in_read[i], EXEC_ESTATE);
            assert_int_equal(e.in_emit[i], EXEC_ESTATE);
        }
        exec_result_t r;
        assert_int_equal(exec_next(ex, &r, 0), EXEC_EOF);
        exec_destroy(ex);
    }
}

/* ------------------------------------------------------------------------- */
/* A writer the host owns                                                    */
/* ------------------------------------------------------------------------- */

static int w_echo(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ctx, (void)ws;
    if (len && ((const char *)rec)[0] == '!')
        return 7;
    if (len && ((const char *)rec)[0] == '*') {
        /* Past max_result: the writer refuses, the result is dropped whole. */
        static const char big[64];
        exec_write(out, "partial", 7);
        exec_write(out, big, sizeof big);
        return 0;
    }
    return exec_write(out, rec, len);
}

static void test_host_writer(void **state)
{
    (void)state;
    exec_ops_t ops = {.version = EXEC_OPS_VERSION, .process = w_echo};
    assert_null(exec_writer_new(0));
    assert_null(exec_writer_new((size_t)1 << 40));
    exec_writer_t *w = exec_writer_new(32);
    assert_non_null(w);
    size_t off = 99, n = 99;
    int uc = 99;
    assert_int_equal(exec_writer_run(NULL, &ops, NULL, NULL, "a", 1, &off, &n, &uc), EXEC_EINVAL);
    assert_int_equal(off, 0);
    assert_int_equal(n, 0);
    assert_int_equal(uc, 0);
    assert_int_equal(exec_writer_run(w, NULL, NULL, NULL, "a", 1, &off, &n, NULL), EXEC_EINVAL);
    assert_int_equal(exec_writer_run(w, &ops, NULL, NULL, NULL, 1, &off, &n, NULL), EXEC_EINVAL);
    assert_int_equal(exec_writer_run(w, &ops, NULL, NULL, "a", 1, NULL, &n, NULL), EXEC_EINVAL);

    /* Results pile up one after another until cleared; each keeps its place. */
    char want[3000];
    size_t offs[300];
    for (unsigned i = 0; i < 300; i++) {
        char rec[16];
        int len = snprintf(rec, sizeof rec, "r%u", i);
        assert_int_equal(exec_writer_run(w, &ops, NULL, NULL, rec, (size_t)len, &off, &n, &uc), 0);
        assert_int_equal(n, (size_t)len);
        assert_int_equal(uc, 0);
        offs[i] = off;
    }
    for (unsigned i = 0; i < 300; i++) {
        int len = snprintf(want, sizeof want, "r%u", i);
        assert_memory_equal((const char *)exec_writer_data(w) + offs[i], want, (size_t)len);
    }
    exec_writer_clear(w);
    assert_int_equal(exec_writer_run(w, &ops, NULL, NULL, "x", 1, &off, &n, NULL), 0);
    assert_int_equal(off, 0);
    assert_int_equal(n, 1);

    /* The statuses a worker's result would carry. */
    assert_int_equal(exec_writer_run(w, &ops, NULL, NULL, "!", 1, &off, &n, &uc), EXEC_EUSER);
    assert_int_equal(uc, 7);
    assert_int_equal(exec_writer_run(w, &ops, NULL, NULL, "!", 1, &off, &n, NULL), EXEC_EUSER);
    assert_int_equal(exec_writer_run(w, &ops, NULL, NULL, "*", 1, &off, &n, &uc), EXEC_ERESULT2BIG);
    assert_int_equal(n, 0);
    /* An empty record and an empty result are fine. */
    assert_int_equal(exec_writer_run(w, &ops, NULL, NULL, NULL, 0, &off, &n, &uc), 0);
    assert_int_equal(n, 0);
    /* The writer is still good after an overflow. */
    assert_int_equal(exec_writer_run(w, &ops, NULL, NULL, "after", 5, &off, &n, NULL), 0);
    assert_memory_equal((const char *)exec_writer_data(w) + off, "after", 5);
    exec_writer_free(w);
    exec_writer_free(NULL);
    exec_writer_clear(NULL);
    assert_null(exec_writer_data(NULL));
}

/* ------------------------------------------------------------------------- */
/* Error strings                                                             */
/* ------------------------------------------------------------------------- */

static void test_strerror(void **state)
{
    (void)state;
    static const struct {
        int code;
        const char *name;
    } codes[] = {
        {EXEC_EINVAL, "EXEC_EINVAL"},
        {EXEC_ENOMEM, "EXEC_ENOMEM"},
        {EXEC_EAGAIN, "EXEC_EAGAIN"},
        {EXEC_ETIMEDOUT, "EXEC_ETIMEDOUT"},
        {EXEC_E2BIG, "EXEC_E2BIG"},
        {EXEC_ENOTSUP, "EXEC_ENOTSUP"},
        {EXEC_EBUSY, "EXEC_EBUSY"},
        {EXEC_EOF, "EXEC_EOF"},
        {EXEC_ESTATE, "EXEC_ESTATE"},
        {EXEC_ECAPS, "EXEC_ECAPS"},
        {EXEC_EVERSION, "EXEC_EVERSION"},
        {EXEC_EUSER, "EXEC_EUSER"},
        {EXEC_ECRASHED, "EXEC_ECRASHED"},
        {EXEC_ERECTIMEOUT, "EXEC_ERECTIMEOUT"},
        {EXEC_ERESULT2BIG, "EXEC_ERESULT2BIG"},
        {EXEC_ECANCELLED, "EXEC_ECANCELLED"},
        {EXEC_EINIT, "EXEC_EINIT"},
        {EXEC_EWORKER, "EXEC_EWORKER"},
        {EXEC_EFATAL, "EXEC_EFATAL"},
        {EXEC_ELIMIT, "EXEC_ELIMIT"},
        {EXEC_ELOST, "EXEC_ELOST"},
        /* The record sources' codes. */
        {EXEC_ENOENT, "EXEC_ENOENT"},
        {EXEC_ENOBUFS, "EXEC_ENOBUFS"},
        {EXEC_EUNTERMINATED, "EXEC_EUNTERMINATED"},
        {EXEC_EBADQUOTE, "EXEC_EBADQUOTE"},
        {EXEC_ETRUNCATED, "EXEC_ETRUNCATED"},
    };
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        const char *text = exec_strerror(codes[i].code);
        assert_non_null(text);
        assert_true(strlen(text) > 3);
        assert_string_equal(exec_err_name(codes[i].code), codes[i].name);
        /* Codes are distinct, and so are their texts. */
        for (size_t j = 0; j < i; j++) {
            assert_int_not_equal(codes[i].code, codes[j].code);
            assert_string_not_equal(text, exec_strerror(codes[j].code));
        }
        assert_true(codes[i].code < 0);
    }
    /* The library's own codes sit above errno's range (glibc's go to 133). */
    for (size_t i = 7; i < 21; i++)
        assert_in_range(-codes[i].code, 4082, 4095);
    for (size_t i = 23; i < n; i++)
        assert_in_range(-codes[i].code, 4000, 4095);

    /* Success, system errors and unknown codes still get a text and a name. */
    assert_non_null(exec_strerror(0));
    assert_non_null(exec_err_name(0));
    assert_string_equal(exec_strerror(-EMFILE), strerror(EMFILE));
    assert_non_null(exec_err_name(-EMFILE));
    int odd[] = {1, 12345, -4096, -4050, -5000, -100000, INT32_MIN, INT32_MAX, -3999};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        assert_non_null(exec_strerror(odd[i]));
        assert_true(strlen(exec_strerror(odd[i])) > 0);
        assert_non_null(exec_err_name(odd[i]));
        assert_true(strlen(exec_err_name(odd[i])) > 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_bad_args),
        cmocka_unit_test(test_create_mpi_refused),
        cmocka_unit_test(test_create_bad_options),
        cmocka_unit_test(test_create_option_limits),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_backend_choice),
        cmocka_unit_test(test_fork_backend),
        cmocka_unit_test(test_submit_bad_args),
        cmocka_unit_test(test_submit_many_bad_args),
        cmocka_unit_test(test_next_bad_args),
        cmocka_unit_test(test_misc_bad_args),
        cmocka_unit_test(test_map_bad_args),
        cmocka_unit_test(test_calls_inside_map_callbacks),
        cmocka_unit_test(test_host_writer),
        cmocka_unit_test(test_strerror),
    };
    return tu_run_group_tests(tests, tu_warm_up, NULL);
}
