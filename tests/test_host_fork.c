/*
 * A host that forks while its executor has records in flight, on EXEC_THREADS
 * and EXEC_FORK. The child's copy of the executor is not its own: every call
 * on it returns EXEC_ESTATE (exec_next() must not take one of the parent's
 * results), and exec_destroy() there returns at once, having freed only the
 * child's memory and closed only its copies of the descriptors (the child
 * exits through exit(), so LeakSanitizer looks at it in the asan build). The
 * parent meanwhile gets each of its results exactly once, right, with no
 * worker error and no respawn.
 */
#include "forkutil.h"
#include "testutil.h"

#include <poll.h>
#include <sys/mman.h>

/* A thread-safe and fork-safe classifier: each record takes ~20 us, so that
 * many are in flight when the host forks. */
static int hf_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    const struct fu_ctx *c = ctx;
    struct fu_rec r;
    if (len != sizeof r)
        return 99;
    memcpy(&r, rec, sizeof r);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do
        clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000000 + (b.tv_nsec - a.tv_nsec) < 20000);
    uint64_t v = fu_expect(r.value, c->salt);
    return exec_write(out, &v, sizeof v);
}

static const exec_ops_t hf_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "hostfork",
    .process = hf_process,
};

static int hf_emit(void *arg, const exec_result_t *res)
{
    (void)arg;
    (void)res;
    return 0;
}

static int hf_emit_many(void *arg, const exec_result_t *res, size_t n)
{
    (void)arg;
    (void)res;
    (void)n;
    return 0;
}

static int hf_read(void *arg, const void **rec, size_t *len, uint64_t *tag)
{
    (void)arg;
    (void)rec;
    (void)len;
    (void)tag;
    return EXEC_EOF;
}

/* In the child: every call is refused, destroy is prompt and closes our copies
 * of the executor's descriptors. The exit status says what failed (bits). */
static int hf_child(exec_t *ex)
{
    int fail = 0;
    struct fu_rec r = {.value = 1};
    exec_record_t one = {&r, sizeof r, 1};
    size_t acc = 99, got = 99;
    exec_result_t res;
    exec_stats_t st;
    exec_worker_stats_t ws;
    exec_options_t o;
    char err[64];
#define HF_REFUSED(bit, call)                                                                      \
    do {                                                                                           \
        if ((call) != EXEC_ESTATE)                                                                 \
            fail |= 1 << (bit);                                                                    \
    } while (0)
    HF_REFUSED(0, exec_next(ex, &res, 0));
    HF_REFUSED(0, exec_next(ex, &res, 100));
    HF_REFUSED(0, exec_next_many(ex, &res, 1, &got, 0));
    HF_REFUSED(1, exec_submit(ex, &r, sizeof r, 1));
    HF_REFUSED(1, exec_try_submit(ex, &r, sizeof r, 1));
    HF_REFUSED(1, exec_submit_many(ex, &one, 1, &acc));
    HF_REFUSED(1, exec_try_submit_many(ex, &one, 1, &acc));
    HF_REFUSED(2, exec_finish(ex));
    HF_REFUSED(2, exec_release(ex));
    HF_REFUSED(3, exec_cancel(ex, 5));
    HF_REFUSED(3, exec_cancel_all(ex));
    HF_REFUSED(4, exec_stats(ex, &st));
    HF_REFUSED(4, exec_worker_stats(ex, 0, &ws));
    HF_REFUSED(4, exec_get_options(ex, &o));
    HF_REFUSED(4, exec_fd(ex));
    HF_REFUSED(5, exec_swap_context(ex, ex));
    HF_REFUSED(5, exec_swap_spec(ex, "x", err, sizeof err));
    HF_REFUSED(6, exec_map(ex, hf_read, NULL, hf_emit, NULL));
    HF_REFUSED(6, exec_run_records(ex, &one, 1, hf_emit_many, NULL));
    if (acc != 0 || got != 0)
        fail |= 1 << 7;
    if (tu_tsan())
        return fail; /* (see host_fork: no free() here under TSan) */
    int fds = fu_count_fds();
    uint64_t t0 = tu_now_ms();
    exec_destroy(ex);
    if (tu_now_ms() - t0 > 1000)
        fail |= 1 << 8; /* it waited for something that is not here */
    if (fu_count_fds() >= fds)
        fail |= 1 << 9; /* its copies of the descriptors stay open */
    return fail;
}

static void host_fork(exec_backend_t backend)
{
    if (tu_fork_left_out(backend == EXEC_FORK))
        return;
    struct fu_ctx ctx = {.salt = 0x4f4b};
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &hf_ops, &ctx, backend, &o), 0);
    const uint64_t n = fu_sanitized() || tu_under_valgrind() ? 1000 : 5000;
    exec_result_t res;
    /* A first round of the same size, run to its end: the executor's memory
     * (batches, result buffers) is all there before the fork. A thread of the
     * parent inside malloc() at the fork would leave the sanitizers'
     * allocator locked in the child (gcc 12's ASan has no fork handler for
     * it, glibc's malloc has one), and LeakSanitizer would wait for ever. */
    /* This thread is the only consumer: where there is no room (the window,
     * or the backend's batches, of which early small ones may take half), it
     * collects a result before it submits more. A blocking submit here could
     * wait for ever. */
    struct fu_rec warm = {.value = 0};
    exec_record_t *recs = calloc(n, sizeof *recs);
    for (uint64_t i = 0; i < n; i++)
        recs[i] = (exec_record_t){&warm, sizeof warm, i};
    uint64_t warm_got = 0;
    for (size_t sent = 0, acc = 0; sent < n; sent += acc) {
        int r = exec_try_submit_many(ex, recs + sent, n - sent, &acc);
        if (r == EXEC_EAGAIN) {
            assert_int_equal(exec_next(ex, &res, 10000), 0);
            warm_got++;
        } else {
            assert_int_equal(r, 0);
        }
    }
    for (; warm_got < n; warm_got++)
        assert_int_equal(exec_next(ex, &res, 10000), 0);
    free(recs);
    unsigned char *seen = calloc(n, 1);
    uint64_t got = 0;
    for (uint64_t i = 0; i < n; i++) {
        struct fu_rec r = {.value = i};
        int sr;
        while ((sr = exec_try_submit(ex, &r, sizeof r, i)) == EXEC_EAGAIN) {
            assert_int_equal(exec_next(ex, &res, 10000), 0);
            assert_true(res.tag < n);
            assert_int_equal(res.status, 0);
            assert_int_equal(seen[res.tag]++, 0);
            got++;
        }
        assert_int_equal(sr, 0);
    }
    assert_int_equal(exec_finish(ex), 0);
    /* A few results first: the host forks in the middle of the stream. */
    while (got < 50) {
        assert_int_equal(exec_next(ex, &res, 10000), 0);
        assert_int_equal(seen[res.tag]++, 0);
        got++;
    }
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* exit(), not _exit(): LeakSanitizer looks at what the child holds
         * then, the executor's memory included. (It also warns that it
         * could not suspend the parent's threads: they are not here.) */
        /* Under TSan the child neither frees nor exits through atexit: gcc
         * 12's TSan allocator has no fork handler, so a lock one of the
         * parent's threads held at the fork stays held here, and the first
         * free() reaching it waits for ever (glibc's malloc has handlers). */
        if (tu_tsan())
            _exit(hf_child(ex));
        free(seen);
        exit(hf_child(ex));
    }

    int rc;
    while ((rc = exec_next(ex, &res, 10000)) == 0) {
        assert_true(res.tag < n);
        assert_int_equal(seen[res.tag]++, 0);
        assert_int_equal(res.status, 0);
        uint64_t v;
        assert_int_equal(res.len, sizeof v);
        memcpy(&v, res.data, sizeof v);
        assert_int_equal(v, fu_expect(res.tag, ctx.salt));
        got++;
    }
    assert_int_equal(rc, EXEC_EOF);
    assert_int_equal(got, n);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.ok, 2 * n);
    assert_int_equal(st.worker_errors, 0);
    assert_int_equal(st.respawns, 0);

    /* The child ended by itself, promptly, every check held. */
    int status = 0;
    pid_t w = 0;
    for (int t = 0; t < 2000 && (w = waitpid(pid, &status, WNOHANG)) == 0; t++)
        tu_sleep_ms(10);
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("the child did not end within 20 s");
    }
    assert_int_equal(w, pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        print_error("child: %s %d (bits: 0 next, 1 submit, 2 finish/release, 3 cancel, "
                    "4 stats/options/fd, 5 swap, 6 map, 7 counts, 8 slow destroy, 9 fds)\n",
                    WIFEXITED(status) ? "exit status" : "signal",
                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    free(seen);
    exec_destroy(ex);
}

static void test_host_fork_threads(void **state)
{
    (void)state;
    host_fork(EXEC_THREADS);
}

static void test_host_fork_fork(void **state)
{
    (void)state;
    host_fork(EXEC_FORK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_fork_threads),
        cmocka_unit_test(test_host_fork_fork),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
