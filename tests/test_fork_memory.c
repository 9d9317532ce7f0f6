/* EXEC_FORK memory: a 200 MB context stays shared between the workers. */
#include "forkutil.h"

#define CTX_BYTES ((size_t)200 << 20)
#define PAGE 4096u

struct big {
    unsigned char *mem;
    size_t size;
};

/* Reads one byte of every page the record names: the workers map the whole
 * context, so every page is counted in their PSS. */
static int big_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    const struct big *b = ctx;
    uint64_t k;
    if (len != sizeof k)
        return 1;
    memcpy(&k, rec, sizeof k);
    uint64_t sum = 0;
    size_t pages = b->size / PAGE;
    for (size_t p = (size_t)k % 64; p < pages; p += 64)
        sum += b->mem[p * PAGE + (k % PAGE)];
    return exec_write(out, &sum, sizeof sum);
}

static const exec_ops_t big_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_FORK_SAFE,
    .process = big_process,
};

/* Pss of a process in kB, from /proc/PID/smaps_rollup; -1 if unreadable. */
static long pss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Pss: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}


static void test_pss(void **state)
{
    (void)state;
    /* TSan writes shadow memory for every read, in every process: the pages
     * it dirties are its own, not the context's. */
    if (tu_tsan()) {
        skip();
        return;
    }
    struct big b = {.size = CTX_BYTES};
    b.mem = malloc(b.size);
    assert_non_null(b.mem);
    for (size_t i = 0; i < b.size; i++)
        b.mem[i] = (unsigned char)(i * 2654435761u >> 24);
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &big_ops, &b, EXEC_FORK, &o), 0);
    const uint64_t n = 256;
    exec_result_t res;
    for (uint64_t k = 0; k < n; k++)
        assert_int_equal(exec_submit(ex, &k, sizeof k, k), 0);
    assert_int_equal(exec_finish(ex), 0);
    uint64_t got = 0;
    while (exec_next(ex, &res, 30000) == 0) {
        assert_int_equal(res.status, 0);
        got++;
    }
    assert_int_equal(got, n);

    /* The workers are the zygote's children. */
    pid_t kids[8], workers[8];
    int nk = fu_children_of(getpid(), kids, 8);
    assert_int_equal(nk, 1);
    int nw = fu_children_of(kids[0], workers, 8);
    assert_int_equal(nw, 2);
    long total = 0;
    for (int i = 0; i < nw; i++) {
        long kb = pss_kb(workers[i]);
        assert_true(kb > 0);
        total += kb;
    }
    long limit = (long)(CTX_BYTES / 1024) * 11 / 10 + 16 * 1024;
    print_message("workers' PSS: %ld kB in all (limit %ld kB, context %zu kB)\n", total, limit,
                  CTX_BYTES / 1024);
    assert_true(total < limit);
    /* exec_worker_stats() reads the same figures. */
    long via_stats = 0;
    for (unsigned i = 0; i < 2; i++) {
        exec_worker_stats_t ws;
        assert_int_equal(exec_worker_stats(ex, i, &ws), 0);
        assert_true(ws.pid > 0);
        assert_true(ws.pss_kb > 0);
        assert_true(ws.private_dirty_kb < 16 * 1024);
        via_stats += (long)ws.pss_kb;
    }
    assert_true(via_stats < limit);
    exec_destroy(ex);
    free(b.mem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pss),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
