/*
 * The file-to-file map: exec_map_fd() output and its newline rule, too-large
 * records keeping their place in order, stop and skip on malformed records,
 * early stops by the callbacks, bad arguments, and the progress line (quiet
 * when stderr is not a terminal, shown when forced).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "executor_records.h"
#include "suite.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Upper-cases the record; a record "fail" is a user error 7; "nl" ends with a newline. */
static int upper(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ctx;
    (void)ws;
    if (len == 4 && memcmp(rec, "fail", 4) == 0)
        return 7;
    char *p = exec_write_reserve(out, len);
    if (len && !p)
        return 1;
    for (size_t i = 0; i < len; i++) {
        char c = ((const char *)rec)[i];
        p[i] = c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
    }
    if (len == 2 && memcmp(rec, "nl", 2) == 0)
        exec_write(out, "\n", 1);
    return 0;
}

static const exec_ops_t upper_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .process = upper,
};

static int mem_fd(const char *s)
{
    int fd = memfd_create("in", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
    lseek(fd, 0, SEEK_SET);
    return fd;
}

static char *fd_text(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    char *b = calloc(1, (size_t)st.st_size + 1);
    assert_int_equal(pread(fd, b, (size_t)st.st_size, 0), st.st_size);
    return b;
}

static exec_t *mk(unsigned flags, size_t max_record)
{
    exec_t *ex;
    exec_options_t o = {.workers = 2, .flags = flags, .max_record = max_record};
    assert_int_equal(exec_create(&ex, &upper_ops, NULL, EXEC_THREADS, &o), 0);
    return ex;
}

struct failed {
    uint64_t tags[16];
    int status[16];
    size_t n;
};

static int on_failed(void *arg, const exec_result_t *res)
{
    struct failed *f = arg;
    if (f->n < 16) {
        f->tags[f->n] = res->tag;
        f->status[f->n] = res->status;
    }
    f->n++;
    return 0;
}

static void test_map_fd(void **state)
{
    (void)state;
    int in = mem_fd("h\nab\n\"q,\"\"x\"\"\"\nfail\nnl\n\nthis one is too long\nlast");
    exec_source_options_t so = {.flags = EXEC_SOURCE_HEADER};
    exec_source_t *src;
    assert_int_equal(exec_source_open_fd(&src, in, &so), 0);
    int out = memfd_create("out", MFD_CLOEXEC);
    exec_t *ex = mk(EXEC_ORDERED, 10);
    struct failed f = {0};
    exec_map_options_t mo = {.flags = EXEC_MAPS_QUIET, .on_failed = on_failed, .failed_arg = &f};
    exec_map_report_t rep;
    assert_int_equal(exec_map_fd(ex, src, out, &mo, &rep), 0);
    char *text = fd_text(out);
    /* One line per good result; "nl" already ended with one; the empty record
     * gives an empty line. */
    assert_string_equal(text, "AB\n\"Q,\"\"X\"\"\"\nNL\n\nLAST\n");
    free(text);
    assert_int_equal(f.n, 2);
    assert_int_equal(f.tags[0], 4); /* "fail": the header is record 1 */
    assert_int_equal(f.status[0], EXEC_EUSER);
    assert_int_equal(f.tags[1], 7);
    assert_int_equal(f.status[1], EXEC_E2BIG);
    assert_int_equal(rep.records, 7);
    assert_int_equal(rep.ok, 5);
    assert_int_equal(rep.failed, 2);
    assert_int_equal(rep.too_big, 1);
    assert_int_equal(rep.bad, 0);
    exec_destroy(ex);
    exec_source_close(src);
    close(in);
    close(out);
}

struct order {
    uint64_t last;
    size_t n, big;
};

static int check_order(void *arg, const exec_result_t *res)
{
    struct order *o = arg;
    assert_true(res->tag == o->last + 1);
    o->last = res->tag;
    o->n++;
    if (res->status == EXEC_E2BIG) {
        o->big++;
        assert_int_equal(res->seq, UINT64_MAX);
        assert_null(res->data);
    } else {
        assert_int_equal(res->status, 0);
    }
    return 0;
}

/* Too-large records in ordered mode, also at the very start and end, and a
 * stream made only of them. */
static void test_too_big_in_order(void **state)
{
    (void)state;
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    size_t big = 0;
    for (int i = 0; i < 30000; i++) {
        bool b = i == 0 || i == 29999 || i % 101 == 7 || (i >= 5000 && i < 5300);
        big += b;
        len += (size_t)snprintf(buf + len, cap - len, "%s%d\n", b ? "xxxxxxxxxxxxxxxxxxxx" : "", i);
    }
    buf[len] = '\0';
    int in = mem_fd(buf);
    exec_source_t *src;
    assert_int_equal(exec_source_open_fd(&src, in, NULL), 0);
    exec_t *ex = mk(EXEC_ORDERED, 16);
    struct order o = {0};
    exec_map_options_t mo = {.flags = EXEC_MAPS_QUIET};
    exec_map_report_t rep;
    assert_int_equal(exec_map_source(ex, src, check_order, &o, &mo, &rep), 0);
    assert_int_equal(o.n, 30000);
    assert_int_equal(o.big, big);
    assert_int_equal(rep.too_big, big);
    exec_destroy(ex);
    exec_source_close(src);
    close(in);
    free(buf);

    in = mem_fd("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n");
    assert_int_equal(exec_source_open_fd(&src, in, NULL), 0);
    ex = mk(EXEC_ORDERED, 16);
    o = (struct order){0};
    assert_int_equal(exec_map_source(ex, src, check_order, &o, &mo, NULL), 0);
    assert_int_equal(o.n, 2);
    assert_int_equal(o.big, 2);
    exec_destroy(ex);
    exec_source_close(src);
    close(in);
}

struct bad_log {
    uint64_t records[8];
    int codes[8];
    size_t n;
    int stop_at; /* return 99 at this call (1-based), or 0 */
};

static int on_bad(void *arg, const exec_source_error_t *e)
{
    struct bad_log *b = arg;
    b->records[b->n] = e->record;
    b->codes[b->n] = e->code;
    b->n++;
    return b->stop_at && (int)b->n == b->stop_at ? 99 : 0;
}

static int count_emit(void *arg, const exec_result_t *res)
{
    (void)res;
    (*(size_t *)arg)++;
    return 0;
}

static void test_bad_records(void **state)
{
    (void)state;
    /* Many good records before the bad one, so that some are in flight when
     * the map stops: they must still come out. */
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    for (int i = 0; i < 5000; i++)
        len += (size_t)snprintf(buf + len, cap - len, "r%d\n", i);
    len += (size_t)snprintf(buf + len, cap - len, "a\"b\nok\n\"x\"y\nok2\n\"open");
    int in = mem_fd(buf);
    free(buf);

    for (int mode = 0; mode < 3; mode++) {
        lseek(in, 0, SEEK_SET);
        exec_source_t *src;
        assert_int_equal(exec_source_open_fd(&src, in, NULL), 0);
        exec_t *ex = mk(0, 0);
        struct bad_log b = {.stop_at = mode == 2 ? 2 : 0};
        exec_map_options_t mo = {.flags = EXEC_MAPS_QUIET | (mode ? EXEC_MAPS_SKIP_BAD : 0),
                                 .on_bad = on_bad,
                                 .bad_arg = &b};
        size_t n = 0;
        exec_map_report_t rep;
        int rc = exec_map_source(ex, src, count_emit, &n, &mo, &rep);
        if (mode == 0) { /* stop at the first */
            assert_int_equal(rc, EXEC_EBADQUOTE);
            assert_int_equal(n, 5000);
            assert_int_equal(b.n, 1);
        } else if (mode == 1) { /* skip all three */
            assert_int_equal(rc, 0);
            assert_int_equal(n, 5002);
            assert_int_equal(b.n, 3);
            assert_int_equal(b.records[1], 5003);
            assert_int_equal(b.codes[1], EXEC_EBADQUOTE);
            assert_int_equal(b.records[2], 5005);
            assert_int_equal(b.codes[2], EXEC_EUNTERMINATED);
            assert_int_equal(rep.bad, 3);
        } else { /* on_bad stops at the second */
            assert_int_equal(rc, 99);
            assert_int_equal(n, 5001);
            assert_int_equal(b.n, 2);
        }
        assert_int_equal(b.records[0], 5001);
        exec_destroy(ex);
        exec_source_close(src);
    }
    close(in);
}

static int stop_emit(void *arg, const exec_result_t *res)
{
    (void)res;
    return ++*(size_t *)arg == 10 ? 42 : 0;
}

static void test_stops_and_args(void **state)
{
    (void)state;
    int in = mem_fd("1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n");
    exec_source_t *src;
    assert_int_equal(exec_source_open_fd(&src, in, NULL), 0);
    exec_t *ex = mk(EXEC_ORDERED, 0);
    size_t n = 0;
    exec_map_options_t mo = {.flags = EXEC_MAPS_QUIET};
    assert_int_equal(exec_map_source(ex, src, stop_emit, &n, &mo, NULL), 42);
    assert_int_equal(n, 10);
    /* The executor is finished: a second map is refused. */
    assert_int_equal(exec_map_source(ex, src, count_emit, &n, &mo, NULL), EXEC_ESTATE);
    exec_destroy(ex);

    ex = mk(0, 0);
    exec_map_options_t bad = {.flags = 0x100};
    assert_int_equal(exec_map_source(ex, src, count_emit, &n, &bad, NULL), EXEC_EINVAL);
    assert_int_equal(exec_map_source(NULL, src, count_emit, &n, NULL, NULL), EXEC_EINVAL);
    assert_int_equal(exec_map_source(ex, NULL, count_emit, &n, NULL, NULL), EXEC_EINVAL);
    assert_int_equal(exec_map_source(ex, src, NULL, &n, NULL, NULL), EXEC_EINVAL);
    assert_int_equal(exec_map_fd(ex, src, -1, NULL, NULL), EXEC_EINVAL);
    /* A write error ends the map with -errno. */
    exec_source_close(src);
    lseek(in, 0, SEEK_SET);
    assert_int_equal(exec_source_open_fd(&src, in, NULL), 0);
    int rd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* not writable: EBADF */
    assert_int_equal(exec_map_fd(ex, src, rd, &mo, NULL), -EBADF);
    close(rd);
    exec_destroy(ex);
    exec_source_close(src);
    close(in);
}

/* Feeds 3000 records slowly through a pipe, for about 1.5 s. */
static pid_t slow_writer(int *rfd)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        for (int i = 0; i < 30; i++) {
            char lines[2048];
            int n = 0;
            for (int k = 0; k < 100; k++)
                n += snprintf(lines + n, sizeof lines - (size_t)n, "rec %d\n", i * 100 + k);
            if (write(p[1], lines, (size_t)n) != n)
                _exit(1);
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        _exit(0);
    }
    close(p[1]);
    *rfd = p[0];
    return pid;
}

static char *run_with_stderr_captured(unsigned flags)
{
    char path[] = "/tmp/exec-csv-stderr-XXXXXX";
    int efd = mkstemp(path);
    assert_true(efd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(efd, 2);
    int in;
    pid_t pid = slow_writer(&in);
    exec_source_t *src;
    exec_source_options_t so = {.format = EXEC_SOURCE_LINES};
    assert_int_equal(exec_source_open_fd(&src, in, &so), 0);
    exec_t *ex = mk(0, 0);
    size_t n = 0;
    exec_map_options_t mo = {.flags = flags};
    int rc = exec_map_source(ex, src, count_emit, &n, &mo, NULL);
    dup2(saved, 2);
    close(saved);
    assert_int_equal(rc, 0);
    assert_int_equal(n, 3000);
    exec_destroy(ex);
    exec_source_close(src);
    close(in);
    int st;
    waitpid(pid, &st, 0);
    char *text = fd_text(efd);
    close(efd);
    return text;
}

static void test_progress(void **state)
{
    (void)state;
    /* stderr is a file here: no progress line unless forced. */
    char *t = run_with_stderr_captured(0);
    assert_string_equal(t, "");
    free(t);
    t = run_with_stderr_captured(EXEC_MAPS_PROGRESS);
    assert_non_null(strstr(t, " records"));
    assert_non_null(strstr(t, "MB/s"));
    assert_int_equal(t[strlen(t) - 1], '\n');
    free(t);
    t = run_with_stderr_captured(EXEC_MAPS_PROGRESS | EXEC_MAPS_QUIET);
    assert_string_equal(t, "");
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_fd),      cmocka_unit_test(test_too_big_in_order),
        cmocka_unit_test(test_bad_records), cmocka_unit_test(test_stops_and_args),
        cmocka_unit_test(test_progress),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
