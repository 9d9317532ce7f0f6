/*
 * A large generated CSV file (5% quoted fields, "" and commas inside quotes,
 * 0.5% of rows with a newline inside quotes, LF and CRLF, no newline at the
 * end): the record source returns every record exactly once, byte-exact; the
 * count equals Python's csv module's; the field splitter agrees with Python
 * field by field; through an executor (threads, and fork when it is built)
 * every record comes back exactly once. Then the same file truncated inside a
 * quoted newline, and with rows over max_record.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "executor_records.h"
#include "suite.h"

#include <fcntl.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROWS 200000u

struct gen {
    char *buf;
    size_t len, cap;
    size_t *off, *rlen; /* each row's content (no line end) */
    size_t n;
};

static struct gen G;
static char path[64], trunc_path[64], big_path[64];

static uint64_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void put(struct gen *g, const char *s, size_t n)
{
    if (g->cap - g->len < n) {
        while (g->cap - g->len < n)
            g->cap = g->cap ? g->cap * 2 : 1 << 20;
        g->buf = realloc(g->buf, g->cap);
        assert_non_null(g->buf);
    }
    memcpy(g->buf + g->len, s, n);
    g->len += n;
}

static void puts_(struct gen *g, const char *s)
{
    put(g, s, strlen(s));
}

static const char *const words[] = {"apple", "cat",  "saw",   "river", "blue", "quick",
                                    "zebra", "owl",  "ipsum", "dog",   "pear", "hammer",
                                    "plum",  "tree", "stone", "wind"};

static void gen_rows(struct gen *g, unsigned rows, unsigned big_every)
{
    uint64_t s = 0x9e3779b97f4a7c15ull;
    g->off = calloc(rows, sizeof *g->off);
    g->rlen = calloc(rows, sizeof *g->rlen);
    assert_non_null(g->off);
    assert_non_null(g->rlen);
    for (unsigned i = 0; i < rows; i++) {
        size_t start = g->len;
        char num[32];
        snprintf(num, sizeof num, "%u", i);
        puts_(g, num);
        bool nl_row = rng(&s) % 200 == 0; /* 0.5% */
        for (int f = 1; f < 8; f++) {
            puts_(g, ",");
            uint64_t r = rng(&s);
            bool quoted = r % 20 == 0 || (nl_row && f == 3); /* 5% */
            if (r % 100 == 1)
                continue; /* an empty field */
            if (quoted)
                puts_(g, "\"");
            unsigned nw = 1 + (unsigned)(r >> 8) % 3;
            for (unsigned w = 0; w < nw; w++) {
                if (w)
                    puts_(g, quoted && (r >> 16) % 3 == 0 ? ", " : " ");
                puts_(g, words[rng(&s) % 16]);
            }
            if (quoted && (r >> 20) % 4 == 0)
                puts_(g, " \"\"said\"\"");
            if (quoted && nl_row && f == 3)
                puts_(g, (r >> 24) % 2 ? "\nnext line" : "\r\nnext, line");
            if (quoted)
                puts_(g, "\"");
        }
        if (big_every && i % big_every == big_every - 1) {
            puts_(g, ",");
            for (int k = 0; k < 40; k++)
                puts_(g, "filler-filler-filler ");
        }
        g->off[i] = start;
        g->rlen[i] = g->len - start;
        if (i + 1 < rows)
            puts_(g, rng(&s) % 10 == 0 ? "\r\n" : "\n");
    }
    g->n = rows;
}

static void write_file(const char *p, const void *data, size_t len)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

/* Runs tests/csv_reference.py; its stdout in out (NUL-terminated). Returns
 * false when python3 is not there. */
static bool python(const char *mode, const char *file, const char *arg, char *out, size_t cap)
{
    char script[4096];
    snprintf(script, sizeof script, "%s", __FILE__);
    char *dir = dirname(script);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "command -v python3 >/dev/null && python3 '%s/csv_reference.py' %s '%s' %s",
             dir, mode, file, arg ? arg : "");
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    return st == 0;
}

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof path, "/tmp/exec-csv-big-%d.csv", (int)getpid());
    snprintf(trunc_path, sizeof trunc_path, "/tmp/exec-csv-trunc-%d.csv", (int)getpid());
    snprintf(big_path, sizeof big_path, "/tmp/exec-csv-e2big-%d.csv", (int)getpid());
    gen_rows(&G, ROWS, 0);
    write_file(path, G.buf, G.len);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    unlink(trunc_path);
    unlink(big_path);
    free(G.buf);
    free(G.off);
    free(G.rlen);
    return 0;
}

static void test_every_record(void **state)
{
    (void)state;
    /* The generator made what the test asked for. */
    size_t quoted_nl = 0;
    for (size_t i = 0; i < G.n; i++)
        quoted_nl += memchr(G.buf + G.off[i], '\n', G.rlen[i]) != NULL;
    assert_true(quoted_nl > ROWS / 400 && quoted_nl < ROWS / 100);

    static const size_t sizes[] = {0, 4096, 100};
    for (size_t k = 0; k < 3; k++) {
        exec_source_options_t o = {.read_size = sizes[k]};
        exec_source_t *s;
        assert_int_equal(exec_source_open(&s, path, &o), 0);
        assert_int_equal(exec_source_size(s), (int64_t)G.len);
        const void *rec;
        size_t len;
        uint64_t n, i = 0;
        int r;
        while ((r = exec_source_next(s, &rec, &len, &n)) == 1) {
            assert_true(i < G.n);
            assert_int_equal(n, i + 1);
            if (len != G.rlen[i] || memcmp(rec, G.buf + G.off[i], len) != 0)
                fail_msg("record %llu differs: '%.*s'", (unsigned long long)n, (int)len,
                         (const char *)rec);
            i++;
        }
        assert_int_equal(r, 0);
        assert_int_equal(i, G.n);
        assert_int_equal(exec_source_offset(s), G.len);
        exec_source_close(s);
    }
}

static void test_python_count(void **state)
{
    (void)state;
    char out[64];
    if (!python("count", path, NULL, out, sizeof out))
        skip();
    assert_int_equal(strtoull(out, NULL, 10), G.n);
}

/* Splits every record and writes it as csv_reference.py does. */
static void test_python_fields(void **state)
{
    (void)state;
    char ref[sizeof path + 16];
    snprintf(ref, sizeof ref, "%s.fields", path);
    char out[64];
    if (!python("fields", path, ref, out, sizeof out))
        skip();
    int fd = open(ref, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    char *want = malloc((size_t)st.st_size + 1);
    assert_non_null(want);
    assert_int_equal(read(fd, want, (size_t)st.st_size), st.st_size);
    close(fd);
    unlink(ref);

    struct gen mine = {0};
    exec_field_t f[16];
    char buf[4096];
    for (size_t i = 0; i < G.n; i++) {
        int n = exec_csv_split(G.buf + G.off[i], G.rlen[i], 0, f, 16, buf, sizeof buf);
        assert_true(n > 0 && n <= 16);
        char num[16];
        snprintf(num, sizeof num, "%d:", n);
        puts_(&mine, num);
        for (int k = 0; k < n; k++) {
            if (k)
                puts_(&mine, "\x1f");
            put(&mine, f[k].data, f[k].len);
        }
        puts_(&mine, "\x1e");
    }
    assert_int_equal(mine.len, (size_t)st.st_size);
    assert_memory_equal(mine.buf, want, mine.len);
    free(mine.buf);
    free(want);
}

/* ------------------------------------------------------------------------- */
/* Through an executor                                                       */
/* ------------------------------------------------------------------------- */

static int echo(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ctx;
    (void)ws;
    return exec_write(out, rec, len);
}

static const exec_ops_t echo_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "echo",
    .process = echo,
};

struct seen {
    const struct gen *g;
    unsigned char *count;
    uint64_t last;
    bool ordered;
    size_t results, too_big;
};

static int check_result(void *arg, const exec_result_t *res)
{
    struct seen *s = arg;
    assert_true(res->tag >= 1 && res->tag <= s->g->n);
    size_t i = res->tag - 1;
    s->count[i]++;
    s->results++;
    if (s->ordered) {
        assert_true(res->tag > s->last);
        s->last = res->tag;
    }
    if (res->status == EXEC_E2BIG) {
        s->too_big++;
        assert_null(res->data);
        assert_int_equal(res->seq, UINT64_MAX);
        return 0;
    }
    assert_int_equal(res->status, 0);
    if (res->len != s->g->rlen[i] || memcmp(res->data, s->g->buf + s->g->off[i], res->len))
        fail_msg("result of record %llu differs", (unsigned long long)res->tag);
    return 0;
}

static void map_once(const char *file, const struct gen *g, exec_backend_t be, unsigned flags,
                     size_t max_record, size_t want_too_big)
{
    if (be == EXEC_FORK && tu_under_valgrind()) {
        print_message("under valgrind (no pidfd_open): the fork run is left out\n");
        return;
    }
    exec_options_t eo = {.workers = 2, .flags = flags, .max_record = max_record};
    exec_t *ex;
    int rc = exec_create(&ex, &echo_ops, NULL, be, &eo);
    if (be == EXEC_FORK && rc == EXEC_ENOTSUP) {
        print_message("EXEC_FORK is not built: the fork run is left out\n");
        return;
    }
    assert_int_equal(rc, 0);
    exec_source_t *src;
    assert_int_equal(exec_source_open(&src, file, NULL), 0);
    struct seen s = {.g = g, .ordered = flags & EXEC_ORDERED};
    s.count = calloc(g->n, 1);
    assert_non_null(s.count);
    exec_map_options_t mo = {.flags = EXEC_MAPS_QUIET};
    exec_map_report_t rep;
    assert_int_equal(exec_map_source(ex, src, check_result, &s, &mo, &rep), 0);
    for (size_t i = 0; i < g->n; i++)
        if (s.count[i] != 1)
            fail_msg("record %zu came back %d times", i + 1, s.count[i]);
    assert_int_equal(s.results, g->n);
    assert_int_equal(s.too_big, want_too_big);
    assert_int_equal(rep.records, g->n);
    assert_int_equal(rep.too_big, want_too_big);
    assert_int_equal(rep.ok + rep.failed, g->n);
    assert_int_equal(rep.failed, want_too_big);
    assert_int_equal(rep.bytes, g->len);
    exec_source_close(src);
    exec_destroy(ex);
    free(s.count);
}

static void test_map_threads(void **state)
{
    (void)state;
    map_once(path, &G, EXEC_THREADS, 0, 0, 0);
    map_once(path, &G, EXEC_THREADS, EXEC_ORDERED, 0, 0);
}

static void test_map_fork(void **state)
{
    (void)state;
    map_once(path, &G, EXEC_FORK, 0, 0, 0);
    map_once(path, &G, EXEC_FORK, EXEC_ORDERED, 0, 0);
}

/* Rows over the executor's max_record: one EXEC_E2BIG result each, in place. */
static void test_map_too_big(void **state)
{
    (void)state;
    struct gen g = {0};
    gen_rows(&g, 20000, 997);
    write_file(big_path, g.buf, g.len);
    size_t big = 0;
    for (size_t i = 0; i < g.n; i++)
        big += g.rlen[i] > 512;
    assert_int_equal(big, 20000 / 997);
    map_once(big_path, &g, EXEC_THREADS, 0, 512, big);
    map_once(big_path, &g, EXEC_THREADS, EXEC_ORDERED, 512, big);
    map_once(big_path, &g, EXEC_FORK, EXEC_ORDERED, 512, big);
    free(g.buf);
    free(g.off);
    free(g.rlen);
}

/* The file cut inside a quoted newline: every record before the cut comes
 * back, then EXEC_EUNTERMINATED naming the cut record. */
static void test_truncated(void **state)
{
    (void)state;
    size_t cut_row = SIZE_MAX;
    for (size_t i = G.n / 2; i < G.n; i++) {
        const char *nl = memchr(G.buf + G.off[i], '\n', G.rlen[i]);
        if (nl) {
            cut_row = i;
            write_file(trunc_path, G.buf, (size_t)(nl - G.buf) + 1);
            break;
        }
    }
    assert_true(cut_row != SIZE_MAX);
    exec_source_t *s;
    assert_int_equal(exec_source_open(&s, trunc_path, NULL), 0);
    const void *rec;
    size_t len, i = 0;
    int r;
    while ((r = exec_source_next(s, &rec, &len, NULL)) == 1) {
        assert_int_equal(len, G.rlen[i]);
        assert_memory_equal(rec, G.buf + G.off[i], len);
        i++;
    }
    assert_int_equal(r, EXEC_EUNTERMINATED);
    assert_int_equal(i, cut_row);
    const exec_source_error_t *e = exec_source_error(s);
    assert_int_equal(e->record, cut_row + 1);
    assert_int_equal(e->offset, G.off[cut_row]);
    assert_true(e->where > e->offset && G.buf[e->where] == '"');
    assert_int_equal(exec_source_next(s, &rec, &len, NULL), 0);
    exec_source_close(s);

    /* Through the map: stop (default) and skip both deliver what came before. */
    for (int skip_bad = 0; skip_bad < 2; skip_bad++) {
        exec_options_t eo = {.workers = 2, .flags = EXEC_ORDERED};
        exec_t *ex;
        assert_int_equal(exec_create(&ex, &echo_ops, NULL, EXEC_THREADS, &eo), 0);
        assert_int_equal(exec_source_open(&s, trunc_path, NULL), 0);
        struct gen part = G;
        part.n = cut_row;
        struct seen sn = {.g = &part, .ordered = true};
        sn.count = calloc(G.n, 1);
        exec_map_options_t mo = {.flags = EXEC_MAPS_QUIET | (skip_bad ? EXEC_MAPS_SKIP_BAD : 0)};
        exec_map_report_t rep;
        r = exec_map_source(ex, s, check_result, &sn, &mo, &rep);
        assert_int_equal(r, skip_bad ? 0 : EXEC_EUNTERMINATED);
        assert_int_equal(sn.results, cut_row);
        assert_int_equal(rep.bad, 1);
        assert_int_equal(rep.records, cut_row + 1);
        free(sn.count);
        exec_source_close(s);
        exec_destroy(ex);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_record), cmocka_unit_test(test_python_count),
        cmocka_unit_test(test_python_fields), cmocka_unit_test(test_map_threads),
        cmocka_unit_test(test_map_fork),      cmocka_unit_test(test_map_too_big),
        cmocka_unit_test(test_truncated),
    };
    return tu_run_group_tests(tests, setup, teardown);
}
