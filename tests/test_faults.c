/*
 * Allocation failures, one at a time along a path (as SQLite's fault
 * injection walks them): the Nth allocation fails, for every N from 1 until
 * the path makes fewer than N; each time the call gives its documented code,
 * every accepted record still gets exactly one result, the executor stays
 * usable or destroys cleanly, and nothing leaks (LeakSanitizer checks that
 * at exit). Needs a library built with EXEC_FAULTS (the asan preset); in
 * other builds every test is skipped.
 */
#include "executor_records.h"
#include "testutil.h"
#include "forkutil.h"

#include <fcntl.h>

/* core/faults.c, in EXEC_FAULTS builds only. */
int64_t exec_test_fail_alloc(int64_t nth, int every) __attribute__((weak));

static void need_faults(void)
{
    if (!exec_test_fail_alloc)
        skip();
}

/* One walk's state: the scenario arms the faults (n, every) around the part
 * under test, and keeps how many allocations that part made. */
struct fa {
    int64_t n;
    int every;
    int64_t counted;
    exec_backend_t be;
    unsigned flags;
    int fds, threads;
    unsigned ok, oom;
};

static void arm(struct fa *a) { exec_test_fail_alloc(a->n, a->every); }
static void disarm(struct fa *a) { a->counted = exec_test_fail_alloc(0, 0); }

/* Runs fn for n = 1, 2, ... until the armed part makes fewer than n
 * allocations: every one of them failed once. Returns how many there were. */
static int64_t walk(void (*fn)(struct fa *a), struct fa *a, int every)
{
    for (a->n = 1;; a->n++) {
        a->every = every;
        fn(a);
        if (a->counted < a->n)
            return a->counted;
        assert_true(a->n < 100000); /* a path that never ends is a bug of its own */
    }
}

/* Walks fn on each backend (and order, with orders), saying how many
 * allocations each path made; fn's counts of ok and oom come back summed. */
static struct fa walk_all(void (*fn)(struct fa *a), const char *what, bool orders)
{
    struct fa sum = {0};
    for (int k = 0; k < (orders ? 4 : 2); k++) {
        struct fa a = {.be = k & 1 ? EXEC_FORK : EXEC_THREADS,
                       .flags = k & 2 ? EXEC_ORDERED : 0,
                       .fds = fu_count_fds(),
                       .threads = tu_threads()};
        int64_t n = walk(fn, &a, 0);
        print_message("%s %s%s: %" PRId64 " allocations, each failed once\n",
                      exec_backend_name(a.be), what, a.flags ? " (ordered)" : "", n);
        sum.ok += a.ok;
        sum.oom += a.oom;
    }
    return sum;
}

static bool is_oom(int rc) { return rc == EXEC_ENOMEM; }

/* fu_process's answer without its shared scratch: safe in threads too. */
static int fa_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    struct fu_rec r;
    if (len != sizeof r)
        return 99;
    memcpy(&r, rec, sizeof r);
    uint64_t v = fu_expect(r.value, ((struct fu_ctx *)ctx)->salt);
    return exec_write(out, &v, sizeof v);
}

static const exec_ops_t any_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "faults",
    .process = fa_process,
    .ctx_release = fu_release,
};

static void nothing_left(const struct fa *a)
{
    assert_int_equal(tu_threads_settled(a->threads), a->threads);
    assert_int_equal(fu_count_fds(), a->fds);
    pid_t kids[8];
    assert_int_equal(fu_descendants(kids, 8), 0);
    assert_int_equal(fu_memfd_maps(), 0);
}

/* ------------------------------------------------------------------------- */
/* exec_create                                                               */
/* ------------------------------------------------------------------------- */

static void create_destroy(struct fa *a)
{
    struct fu_ctx ctx = {.salt = 1};
    exec_options_t o = {.workers = 2, .flags = a->flags};
    exec_t *ex = NULL;
    arm(a);
    int rc = exec_create(&ex, &any_ops, &ctx, a->be, &o);
    disarm(a);
    if (rc == 0) {
        a->ok++;
        exec_destroy(ex);
        assert_int_equal(ctx.released, 1);
    } else {
        if (!is_oom(rc))
            print_error("exec_create: %s\n", exec_err_name(rc));
        assert_true(is_oom(rc));
        assert_null(ex);
        assert_int_equal(ctx.released, 0);
        a->oom++;
    }
    nothing_left(a);
}

static void test_create(void **s)
{
    (void)s;
    need_faults();
    struct fa sum = walk_all(create_destroy, "create", true);
    assert_true(sum.oom > 0);
    assert_true(sum.ok >= 4);
}

/* ------------------------------------------------------------------------- */
/* A stream: submit, next, finish                                            */
/* ------------------------------------------------------------------------- */

enum { SN = 600 };

/* Takes one result: exactly once, for an accepted record, right or ENOMEM. */
static void take(const exec_result_t *res, unsigned char *seen, const bool *accepted)
{
    assert_true(res->tag < SN && accepted[res->tag]);
    assert_int_equal(seen[res->tag]++, 0);
    if (res->status == 0) {
        uint64_t v;
        assert_int_equal(res->len, sizeof v);
        memcpy(&v, res->data, sizeof v);
        assert_int_equal(v, fu_expect(res->tag, 2));
    } else {
        assert_int_equal(res->status, EXEC_ENOMEM);
    }
}

static void stream(struct fa *a)
{
    struct fu_ctx ctx = {.salt = 2};
    exec_options_t o = {.workers = 2, .flags = a->flags, .batch = 16};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &any_ops, &ctx, a->be, &o), 0);
    unsigned char seen[SN] = {0};
    bool accepted[SN] = {false};
    exec_result_t res;
    int rc;
    arm(a);
    for (uint64_t i = 0; i < SN; i++) {
        struct fu_rec r = {.action = FU_OK, .value = i};
        for (;;) {
            rc = exec_try_submit(ex, &r, sizeof r, i);
            if (rc == 0) {
                accepted[i] = true;
                break;
            }
            if (is_oom(rc)) {
                a->oom++;
                break; /* this one is refused; the stream goes on */
            }
            assert_int_equal(rc, EXEC_EAGAIN);
            rc = exec_next(ex, &res, 20000);
            if (rc == 0)
                take(&res, seen, accepted);
            else
                assert_true(is_oom(rc));
        }
    }
    assert_int_equal(exec_finish(ex), 0);
    while ((rc = exec_next(ex, &res, 20000)) != EXEC_EOF) {
        if (rc == 0)
            take(&res, seen, accepted);
        else
            assert_true(is_oom(rc));
    }
    disarm(a);
    for (unsigned i = 0; i < SN; i++)
        assert_int_equal(seen[i], accepted[i] ? 1 : 0);
    exec_destroy(ex);
    assert_int_equal(ctx.released, 1);
    nothing_left(a);
}

static void test_stream(void **s)
{
    (void)s;
    need_faults();
    walk_all(stream, "stream", true);
}

/* ------------------------------------------------------------------------- */
/* Swap                                                                      */
/* ------------------------------------------------------------------------- */

static void swap(struct fa *a)
{
    struct fu_ctx c0 = {.salt = 3}, c1 = {.salt = 4};
    exec_options_t o = {.workers = 2};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &any_ops, &c0, a->be, &o), 0);
    arm(a);
    int rc = exec_swap_context(ex, &c1);
    disarm(a);
    if (rc)
        assert_true(is_oom(rc));
    /* Either way the executor serves, on the context the swap says. */
    struct fu_rec r = {.action = FU_OK, .value = 9};
    assert_int_equal(exec_submit(ex, &r, sizeof r, 9), 0);
    exec_result_t res;
    assert_int_equal(exec_next(ex, &res, 20000), 0);
    assert_int_equal(res.status, 0);
    uint64_t v;
    memcpy(&v, res.data, sizeof v);
    assert_int_equal(v, fu_expect(9, rc ? c0.salt : c1.salt));
    assert_int_equal(res.generation, rc ? 0 : 1);
    exec_destroy(ex);
    assert_int_equal(c0.released, 1);
    assert_int_equal(c1.released, rc ? 0 : 1);
    nothing_left(a);
}

static void test_swap(void **s)
{
    (void)s;
    need_faults();
    walk_all(swap, "swap", false);
}

/* ------------------------------------------------------------------------- */
/* exec_run_records and exec_map                                             */
/* ------------------------------------------------------------------------- */

struct rr {
    unsigned char seen[SN];
    bool accepted[SN];
};

static int rr_emit(void *arg, const exec_result_t *res, size_t n)
{
    struct rr *r = arg;
    for (size_t i = 0; i < n; i++)
        take(&res[i], r->seen, r->accepted);
    return 0;
}

static void run_records(struct fa *a)
{
    struct fu_ctx ctx = {.salt = 2};
    exec_options_t o = {.workers = 2, .batch = 16};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &any_ops, &ctx, a->be, &o), 0);
    static struct fu_rec recs[SN];
    static exec_record_t x[SN];
    struct rr r;
    memset(&r, 0, sizeof r);
    for (unsigned i = 0; i < SN; i++) {
        recs[i] = (struct fu_rec){.action = FU_OK, .value = i};
        x[i] = (exec_record_t){&recs[i], sizeof recs[i], i};
        r.accepted[i] = true;
    }
    arm(a);
    int rc = exec_run_records(ex, x, SN, rr_emit, &r);
    disarm(a);
    if (rc)
        assert_true(is_oom(rc));
    /* What ran has one result; nothing is left in flight. */
    unsigned got = 0;
    for (unsigned i = 0; i < SN; i++)
        got += r.seen[i];
    if (rc == 0)
        assert_int_equal(got, SN);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.delivered, got);
    exec_destroy(ex);
    nothing_left(a);
}

static void test_run_records(void **s)
{
    (void)s;
    need_faults();
    walk_all(run_records, "run_records", false);
}

/* ------------------------------------------------------------------------- */
/* The CSV source                                                            */
/* ------------------------------------------------------------------------- */

static void csv_source(struct fa *a)
{
    char path[] = "/tmp/exec-faults-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "id,text\n1,\"apple, pear\"\n2,\"a \"\"dog\"\"\"\n3,hammer\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    exec_source_options_t so = {.flags = EXEC_SOURCE_HEADER, .read_size = 7};
    exec_source_t *src = NULL;
    arm(a);
    int rc = exec_source_open(&src, path, &so);
    unsigned n = 0;
    if (rc == 0) {
        const void *rec;
        size_t len;
        int r;
        while ((r = exec_source_next(src, &rec, &len, NULL)) == 1)
            n++;
        if (r)
            assert_true(is_oom(r));
        else
            assert_int_equal(n, 3);
        exec_csv_header_t *h = NULL;
        const void *hrec;
        size_t hlen;
        assert_int_equal(exec_source_header(src, &hrec, &hlen), 0);
        r = exec_csv_header_create(&h, hrec, hlen, ',');
        if (r == 0) {
            assert_int_equal(exec_csv_header_index(h, "text"), 1);
            exec_csv_header_free(h);
        } else {
            assert_true(is_oom(r));
        }
        exec_source_close(src);
    } else {
        assert_true(is_oom(rc));
        assert_null(src);
    }
    disarm(a);
    unlink(path);
    assert_int_equal(fu_count_fds(), a->fds);
}

static void test_csv_source(void **s)
{
    (void)s;
    need_faults();
    struct fa a = {.fds = fu_count_fds(), .threads = tu_threads()};
    int64_t n = walk(csv_source, &a, 0);
    print_message("csv source: %" PRId64 " allocations, each failed once\n", n);
    /* And every allocation failing from the first on. */
    a.every = 1;
    a.n = 1;
    csv_source(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_swap),
        cmocka_unit_test(test_run_records),
        cmocka_unit_test(test_csv_source),
    };
    return tu_run_group_tests(tests, tu_warm_up, NULL);
}
