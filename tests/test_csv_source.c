/*
 * Record sources: hand-written CSV edge cases, malformed input, records over
 * max_record, plain lines and length-prefixed records. Every case runs with
 * several read sizes (down to 1 byte), so that records, quotes, "" and CRLF
 * fall across buffer refills, and once through a pipe. Every CSV record the
 * source returns must also split with exec_csv_split().
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
#include <sys/wait.h>
#include <unistd.h>

/* One thing exec_source_next() gives: a record (code 1) or an error. */
struct want {
    int code;
    const char *data; /* record bytes, or NULL */
    uint64_t recno;
    uint64_t offset; /* errors: record offset */
    uint64_t where;  /* errors: offending byte */
};

#define REC(s, n) {1, s, n, 0, 0}
#define ERR(c, n, off, wh) {c, NULL, n, off, wh}
#define END {0, NULL, 0, 0, 0}

static int mem_fd(const void *data, size_t len)
{
    int fd = memfd_create("csv", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

static void check_source(exec_source_t *s, const exec_source_options_t *o,
                         const struct want *w, const char *what)
{
    for (size_t i = 0;; i++) {
        const void *rec = NULL;
        size_t len = 0;
        uint64_t n = 0;
        int r = exec_source_next(s, &rec, &len, &n);
        if (r != w[i].code)
            fail_msg("%s: item %zu: got %d (%s), want %d", what, i, r, exec_err_name(r),
                     w[i].code);
        if (r == 0)
            break;
        if (r == 1) {
            size_t wl = strlen(w[i].data);
            if (len != wl || memcmp(rec, w[i].data, wl) != 0)
                fail_msg("%s: item %zu: got record '%.*s', want '%s'", what, i, (int)len,
                         (const char *)rec, w[i].data);
            assert_int_equal(n, w[i].recno);
            /* What the reader accepts, the splitter accepts. */
            int nf = o->format == EXEC_SOURCE_CSV
                         ? exec_csv_split(rec, len, o->delim, NULL, 0, NULL, 0)
                         : 0;
            if (nf < 0)
                fail_msg("%s: item %zu: record '%.*s' does not split: %s", what, i, (int)len,
                         (const char *)rec, exec_err_name(nf));
        } else {
            const exec_source_error_t *e = exec_source_error(s);
            assert_int_equal(e->code, r);
            if (e->record != w[i].recno || e->offset != w[i].offset || e->where != w[i].where)
                fail_msg("%s: item %zu: error %s at record %llu offset %llu where %llu, want "
                         "%llu %llu %llu",
                         what, i, exec_err_name(r), (unsigned long long)e->record,
                         (unsigned long long)e->offset, (unsigned long long)e->where,
                         (unsigned long long)w[i].recno, (unsigned long long)w[i].offset,
                         (unsigned long long)w[i].where);
            assert_int_equal(n, w[i].recno);
        }
    }
    /* The end stays the end. */
    const void *rec;
    size_t len;
    assert_int_equal(exec_source_next(s, &rec, &len, NULL), 0);
}

/* Runs one input through every read size and through a pipe. */
static void run_case(const char *input, size_t ilen, const exec_source_options_t *base,
                     const struct want *w, const char *what)
{
    static const size_t sizes[] = {1, 2, 3, 7, 16, 17, 23, 61, 64, 0};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        exec_source_options_t o = base ? *base : (exec_source_options_t){0};
        o.read_size = sizes[k];
        int fd = mem_fd(input, ilen);
        exec_source_t *s;
        assert_int_equal(exec_source_open_fd(&s, fd, &o), 0);
        check_source(s, &o, w, what);
        exec_source_close(s);
        close(fd);
    }
    /* A pipe: reads come in small, uneven pieces. */
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        for (size_t i = 0; i < ilen; i += 7) {
            size_t n = ilen - i < 7 ? ilen - i : 7;
            if (write(p[1], input + i, n) != (ssize_t)n)
                _exit(1);
        }
        _exit(0);
    }
    close(p[1]);
    exec_source_options_t o = base ? *base : (exec_source_options_t){0};
    o.read_size = 16;
    exec_source_t *s;
    assert_int_equal(exec_source_open_fd(&s, p[0], &o), 0);
    check_source(s, &o, w, what);
    exec_source_close(s);
    close(p[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
}

#define CASE(input, opts, ...)                                                           \
    do {                                                                                 \
        static const struct want w_[] = {__VA_ARGS__};                                   \
        run_case(input, sizeof(input) - 1, opts, w_, #input);                            \
    } while (0)

static void test_rfc4180(void **state)
{
    (void)state;
    CASE("a,b,c\n1,2,3\n", NULL, REC("a,b,c", 1), REC("1,2,3", 2), END);
    CASE("a\nb", NULL, REC("a", 1), REC("b", 2), END); /* last record without newline */
    CASE("a,b\r\nc,d\r\n", NULL, REC("a,b", 1), REC("c,d", 2), END);
    CASE("a,b\r\nc,d", NULL, REC("a,b", 1), REC("c,d", 2), END);
    CASE("a\r", NULL, REC("a", 1), END);
    CASE("\"x,y\",\"1\n2\"\nz\n", NULL, REC("\"x,y\",\"1\n2\"", 1), REC("z", 2), END);
    CASE("\"a\"\"b\",c\n\"\"\"\"\n", NULL, REC("\"a\"\"b\",c", 1), REC("\"\"\"\"", 2), END);
    CASE("\"a\r\nb\"\r\nc\r\n", NULL, REC("\"a\r\nb\"", 1), REC("c", 2), END);
    CASE("\"\n\n\n\"\n", NULL, REC("\"\n\n\n\"", 1), END);
    CASE("a\n\nb\n", NULL, REC("a", 1), REC("", 2), REC("b", 3), END);
    CASE("\n", NULL, REC("", 1), END);
    CASE("\"abc\"", NULL, REC("\"abc\"", 1), END); /* closing quote is the last byte */
    CASE("\"\"", NULL, REC("\"\"", 1), END);
    CASE(",,\n,\n", NULL, REC(",,", 1), REC(",", 2), END);
    CASE("1,\"a\"\"\"\"\",\"\"\n2,\"x\"\"\n\"\"y\"\n", NULL, REC("1,\"a\"\"\"\"\",\"\"", 1),
         REC("2,\"x\"\"\n\"\"y\"", 2), END);
    CASE("", NULL, END);
}

static void test_options(void **state)
{
    (void)state;
    exec_source_options_t skip = {.flags = EXEC_SOURCE_SKIP_EMPTY};
    CASE("a\n\n\r\nb\n\n", &skip, REC("a", 1), REC("b", 4), END);
    exec_source_options_t semi = {.delim = ';'};
    CASE("\"a;b\";c\nd;\"e\"\n", &semi, REC("\"a;b\";c", 1), REC("d;\"e\"", 2), END);
    /* With ';' a quote after ',' is a stray quote. */
    CASE("a,\"b\"\n", &semi, ERR(EXEC_EBADQUOTE, 1, 0, 2), END);
    exec_source_options_t lines = {.format = EXEC_SOURCE_LINES};
    CASE("a\"b\n\"c\nd\r\n", &lines, REC("a\"b", 1), REC("\"c", 2), REC("d", 3), END);
}

static void test_header(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *hdr; /* NULL: none */
        size_t nrec;
    } cases[] = {
        {"id,text\n1,a\n2,b\n", "id,text", 2},
        {"id,text\n", "id,text", 0},
        {"id,text", "id,text", 0},
        {"\"i\"\"d\",\"te\nxt\"\r\n1,a\r\n", "\"i\"\"d\",\"te\nxt\"", 1},
        {"", NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int fd = mem_fd(cases[i].in, strlen(cases[i].in));
        exec_source_options_t o = {.flags = EXEC_SOURCE_HEADER, .read_size = 16};
        exec_source_t *s;
        assert_int_equal(exec_source_open_fd(&s, fd, &o), 0);
        const void *h;
        size_t hl;
        if (cases[i].hdr) {
            assert_int_equal(exec_source_header(s, &h, &hl), 0);
            assert_int_equal(hl, strlen(cases[i].hdr));
            assert_memory_equal(h, cases[i].hdr, hl);
        } else {
            assert_int_equal(exec_source_header(s, &h, &hl), EXEC_ENOENT);
        }
        size_t n = 0;
        const void *rec;
        size_t len;
        uint64_t recno;
        while (exec_source_next(s, &rec, &len, &recno) == 1) {
            n++;
            assert_int_equal(recno, n + 1); /* the header is record 1 */
        }
        assert_int_equal(n, cases[i].nrec);
        exec_source_close(s);
        close(fd);
    }
    /* A malformed header fails the open with its code. */
    int fd = mem_fd("a,\"b\n", 5);
    exec_source_options_t o = {.flags = EXEC_SOURCE_HEADER};
    exec_source_t *s = (exec_source_t *)&o;
    assert_int_equal(exec_source_open_fd(&s, fd, &o), EXEC_EUNTERMINATED);
    assert_null(s);
    close(fd);
}

static void test_malformed(void **state)
{
    (void)state;
    /* Unterminated quote at end of input: named by record and offset, every
     * record before it returned. */
    CASE("a\n\"b,c\nd\n", NULL, REC("a", 1), ERR(EXEC_EUNTERMINATED, 2, 2, 2), END);
    CASE("x,\"", NULL, ERR(EXEC_EUNTERMINATED, 1, 0, 2), END);
    CASE("1\n2\n3,\"a\"\"", NULL, REC("1", 1), REC("2", 2), ERR(EXEC_EUNTERMINATED, 3, 4, 6),
         END);
    /* A stray quote in an unquoted field: the record is reported, the next call
     * goes on after it (the caller's choice: skip). */
    CASE("a\nb\"c,d\ne\n", NULL, REC("a", 1), ERR(EXEC_EBADQUOTE, 2, 2, 3), REC("e", 3), END);
    CASE("ab\"\n", NULL, ERR(EXEC_EBADQUOTE, 1, 0, 2), END);
    /* Text after a closing quote. */
    CASE("\"ab\"c,d\nx\n", NULL, ERR(EXEC_EBADQUOTE, 1, 0, 4), REC("x", 2), END);
    CASE("1,\"a\" ,2\r\n3\r\n", NULL, ERR(EXEC_EBADQUOTE, 1, 0, 5), REC("3", 2), END);
    /* Both in one record: the first is named. */
    CASE("a\"b,\"c\"d\nz", NULL, ERR(EXEC_EBADQUOTE, 1, 0, 1), REC("z", 2), END);
    /* A stray quote that opens nothing does not swallow the next lines. */
    CASE("a b\"\nc\nd\n", NULL, ERR(EXEC_EBADQUOTE, 1, 0, 3), REC("c", 2), REC("d", 3), END);
}

/* A lone CR is data, so after a closing quote it is text: the record is
 * malformed for the reader as it is for the splitter. Only CRLF, or a CR that
 * is the input's last byte, ends a record there. */
static void test_cr_after_quote(void **state)
{
    (void)state;
    CASE("1,\"apple\"\rpear\n2,x\n", NULL, ERR(EXEC_EBADQUOTE, 1, 0, 9), REC("2,x", 2), END);
    CASE("1,\"apple\"\rpear", NULL, ERR(EXEC_EBADQUOTE, 1, 0, 9), END);
    CASE("a\n\"b\"\r,c\nd\n", NULL, REC("a", 1), ERR(EXEC_EBADQUOTE, 2, 2, 5), REC("d", 3),
         END);
    CASE("\"a\"\r\r\n\"b\"\n", NULL, ERR(EXEC_EBADQUOTE, 1, 0, 3), REC("\"b\"", 2), END);
    CASE("x,\"a\"\"\"\r\"\n", NULL, ERR(EXEC_EBADQUOTE, 1, 0, 7), END);
    /* CRLF, or a CR ending the input, after a closing quote ends the record. */
    CASE("\"a\"\r\n\"b\"\r", NULL, REC("\"a\"", 1), REC("\"b\"", 2), END);
    CASE("1,\"apple\"\r\n2,\"pear\"\r\n", NULL, REC("1,\"apple\"", 1), REC("2,\"pear\"", 2),
         END);
    /* Inside quotes a CR is data, before a quote or not. */
    CASE("\"a\r\"\r\n\"\rb\"\n", NULL, REC("\"a\r\"", 1), REC("\"\rb\"", 2), END);
    /* Over max_record the size is what is reported. */
    exec_source_options_t o = {.max_record = 10};
    CASE("\"0123456789\"\rx\nok\n", &o, ERR(EXEC_E2BIG, 1, 0, 14), REC("ok", 2), END);
}

static void test_too_big(void **state)
{
    (void)state;
    exec_source_options_t o = {.max_record = 10};
    /* Over max_record: EXEC_E2BIG with the record's number and length, and the
     * stream goes on; the record is not held in memory. */
    CASE("short\n0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghij\nok\n", &o,
         REC("short", 1), ERR(EXEC_E2BIG, 2, 6, 62), REC("ok", 3), END);
    CASE("0123456789\n01234567890\n", &o, REC("0123456789", 1), ERR(EXEC_E2BIG, 2, 11, 22),
         END);
    CASE("0123456789\r\n", &o, REC("0123456789", 1), END);
    /* A long quoted field with newlines and "" across many refills. */
    CASE("\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n\"\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"\"\n"
         "ccccccccccccccccccccc\",x\nnext\n",
         &o, ERR(EXEC_E2BIG, 1, 0, 102), REC("next", 2), END);
    /* A stray quote deep inside a dropped record still needs the byte before it. */
    CASE("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx,\"q,\"\nend", &o,
         ERR(EXEC_E2BIG, 1, 0, 66), REC("end", 2), END);
    CASE("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx,\"a\nb\"\nend", &o, ERR(EXEC_E2BIG, 1, 0, 46), REC("end", 2), END);
    CASE("yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy", &o, ERR(EXEC_E2BIG, 1, 0, 45), END);
    CASE("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz,\"open", &o,
         ERR(EXEC_E2BIG, 1, 0, 49), END);
}

static void test_len32(void **state)
{
    (void)state;
    static const char le[] = "\x03\0\0\0abc\0\0\0\0\x02\0\0\0\n\"";
    static const struct want wle[] = {REC("abc", 1), REC("", 2), REC("\n\"", 3), END};
    exec_source_options_t o = {.format = EXEC_SOURCE_LEN32LE};
    run_case(le, sizeof le - 1, &o, wle, "len32le");
    static const char be[] = "\0\0\0\x03xyz\0\0\0\x05" "ab";
    static const struct want wbe[] = {REC("xyz", 1), ERR(EXEC_ETRUNCATED, 2, 7, 13), END};
    o.format = EXEC_SOURCE_LEN32BE;
    run_case(be, sizeof be - 1, &o, wbe, "len32be truncated");
    static const char big[] = "\x14\0\0\0" "0123456789abcdefghij" "\x01\0\0\0z" "\x02\0";
    static const struct want wbig[] = {ERR(EXEC_E2BIG, 1, 0, 24), REC("z", 2),
                                       ERR(EXEC_ETRUNCATED, 3, 29, 31), END};
    o.format = EXEC_SOURCE_LEN32LE;
    o.max_record = 8;
    run_case(big, sizeof big - 1, &o, wbig, "len32le too big");
}

static void test_args(void **state)
{
    (void)state;
    exec_source_t *s = (exec_source_t *)state;
    assert_int_equal(exec_source_open(NULL, "x", NULL), EXEC_EINVAL);
    assert_int_equal(exec_source_open(&s, NULL, NULL), EXEC_EINVAL);
    assert_null(s);
    assert_int_equal(exec_source_open(&s, "/nonexistent/file.csv", NULL), -ENOENT);
    assert_int_equal(exec_source_open_fd(&s, -1, NULL), EXEC_EINVAL);
    exec_source_options_t o = {.format = 9};
    assert_int_equal(exec_source_open_fd(&s, 0, &o), EXEC_EINVAL);
    o = (exec_source_options_t){.flags = 0x100};
    assert_int_equal(exec_source_open_fd(&s, 0, &o), EXEC_EINVAL);
    o = (exec_source_options_t){.delim = '"'};
    assert_int_equal(exec_source_open_fd(&s, 0, &o), EXEC_EINVAL);
    o = (exec_source_options_t){.max_record = ((size_t)64 << 20) + 1};
    assert_int_equal(exec_source_open_fd(&s, 0, &o), EXEC_EINVAL);
    const void *rec;
    size_t len;
    assert_int_equal(exec_source_next(NULL, &rec, &len, NULL), EXEC_EINVAL);
    assert_null(exec_source_error(NULL));
    assert_int_equal(exec_source_header(NULL, &rec, &len), EXEC_EINVAL);
    exec_source_close(NULL);
    /* A directory: the read fails, and keeps failing. */
    int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(exec_source_open_fd(&s, fd, NULL), 0);
    assert_int_equal(exec_source_next(s, &rec, &len, NULL), -EISDIR);
    assert_int_equal(exec_source_error(s)->code, -EISDIR);
    assert_int_equal(exec_source_next(s, &rec, &len, NULL), -EISDIR);
    exec_source_close(s);
    close(fd);
    assert_string_equal(exec_err_name(EXEC_EBADQUOTE), "EXEC_EBADQUOTE");
    assert_string_equal(exec_err_name(EXEC_EUNTERMINATED), "EXEC_EUNTERMINATED");
    assert_string_equal(exec_err_name(EXEC_ETRUNCATED), "EXEC_ETRUNCATED");
    assert_string_not_equal(exec_strerror(EXEC_EBADQUOTE), "unknown error");
}

/* The source stands on its own descriptor position and size. */
static void test_offset_size(void **state)
{
    (void)state;
    int fd = mem_fd("skip\na\nbb\n", 10);
    assert_int_equal(lseek(fd, 5, SEEK_SET), 5);
    exec_source_t *s;
    assert_int_equal(exec_source_open_fd(&s, fd, NULL), 0);
    assert_int_equal(exec_source_size(s), 5);
    const void *rec;
    size_t len;
    assert_int_equal(exec_source_next(s, &rec, &len, NULL), 1);
    assert_int_equal(len, 1);
    assert_int_equal(exec_source_offset(s), 2);
    assert_int_equal(exec_source_next(s, &rec, &len, NULL), 1);
    assert_int_equal(exec_source_next(s, &rec, &len, NULL), 0);
    assert_int_equal(exec_source_offset(s), 5);
    exec_source_close(s);
    close(fd);
}

/* read_size bounds each read(): the descriptor's position tells how much was
 * read to find the first record's end. */
static void test_read_size(void **state)
{
    (void)state;
    static const size_t sizes[] = {1, 2, 3, 7, 0};
    static const off_t want[] = {2, 2, 3, 7, 9}; /* default: the whole (small) file */
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int fd = mem_fd("a\nbb\nccc\n", 9);
        exec_source_options_t o = {.read_size = sizes[k]};
        exec_source_t *s;
        assert_int_equal(exec_source_open_fd(&s, fd, &o), 0);
        const void *rec;
        size_t len;
        assert_int_equal(exec_source_next(s, &rec, &len, NULL), 1);
        assert_int_equal(len, 1);
        assert_int_equal(lseek(fd, 0, SEEK_CUR), want[k]);
        assert_int_equal(exec_source_next(s, &rec, &len, NULL), 1);
        assert_memory_equal(rec, "bb", 2);
        exec_source_close(s);
        close(fd);
    }
}

/* ------------------------------------------------------------------------- */
/* Random inputs against a byte-at-a-time reading of the documented rules.    */
/* ------------------------------------------------------------------------- */

struct ref_item {
    int code;
    size_t off, len, where;
};

static size_t ref_scan(const char *in, size_t n, size_t max, struct ref_item *out)
{
    size_t k = 0, i = 0;
    while (i < n) {
        size_t start = i, where = 0, qopen = 0;
        bool quoted = false, ended = false;
        int bad = 0;
        for (; i < n; i++) {
            char c = in[i];
            if (!quoted) {
                if (c == '\n') {
                    ended = true;
                    break;
                }
                if (c == '"') {
                    if (i == start || in[i - 1] == ',') {
                        quoted = true;
                        qopen = i;
                    } else if (!bad) {
                        bad = EXEC_EBADQUOTE;
                        where = i;
                    }
                }
            } else if (c == '"') {
                if (i + 1 < n && in[i + 1] == '"') {
                    i++;
                    continue;
                }
                quoted = false;
                bool crlf = i + 1 < n && in[i + 1] == '\r' && (i + 2 == n || in[i + 2] == '\n');
                if (i + 1 < n && in[i + 1] != ',' && in[i + 1] != '\n' && !crlf && !bad) {
                    bad = EXEC_EBADQUOTE;
                    where = i + 1;
                }
            }
        }
        struct ref_item *it = &out[k++];
        it->off = start;
        if (quoted) {
            it->len = n - start;
            it->code = it->len > max ? EXEC_E2BIG : EXEC_EUNTERMINATED;
            it->where = it->len > max ? n : qopen;
            break;
        }
        size_t cend = i;
        if (cend > start && in[cend - 1] == '\r')
            cend--;
        it->len = cend - start;
        if (it->len > max) {
            it->code = EXEC_E2BIG;
            it->where = start + it->len;
        } else if (bad) {
            it->code = bad;
            it->where = where;
        } else {
            it->code = 1;
        }
        i = ended ? i + 1 : n;
    }
    return k;
}

static void test_random(void **state)
{
    (void)state;
    static const char alphabet[] = "aaab,,\"\"\"\n\n\r";
    uint64_t x = 0x2545f4914f6cdd1dull;
    char in[96];
    struct ref_item want[96];
    static const size_t sizes[] = {16, 17, 0};
    int fd = memfd_create("fuzz", MFD_CLOEXEC);
    assert_true(fd >= 0);
    for (int iter = 0; iter < 10000; iter++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t n = x % sizeof in;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            in[i] = alphabet[x % (sizeof alphabet - 1)];
        }
        size_t max = iter % 2 ? 8 : ((size_t)64 << 20);
        size_t nw = ref_scan(in, n, max, want);
        for (size_t k = 0; k < 3; k++) {
            exec_source_options_t o = {.read_size = sizes[k], .max_record = max};
            assert_int_equal(ftruncate(fd, 0), 0);
            assert_int_equal(pwrite(fd, in, n, 0), (ssize_t)n);
            assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
            exec_source_t *s;
            assert_int_equal(exec_source_open_fd(&s, fd, &o), 0);
            for (size_t j = 0; j <= nw; j++) {
                const void *rec;
                size_t len;
                uint64_t recno;
                int r = exec_source_next(s, &rec, &len, &recno);
                int wc = j < nw ? want[j].code : 0;
                if (r != wc)
                    fail_msg("input '%.*s' (read %zu, max %zu): item %zu: %s, want %s",
                             (int)n, in, sizes[k], max, j, exec_err_name(r), exec_err_name(wc));
                if (r == 0)
                    break;
                assert_int_equal(recno, j + 1);
                if (r == 1) {
                    assert_int_equal(len, want[j].len);
                    assert_memory_equal(rec, in + want[j].off, len);
                } else {
                    const exec_source_error_t *e = exec_source_error(s);
                    if (e->offset != want[j].off || e->where != want[j].where ||
                        e->length != want[j].len)
                        fail_msg("input '%.*s' (read %zu, max %zu): item %zu: %s at %llu "
                                 "where %llu length %llu, want %zu %zu %zu",
                                 (int)n, in, sizes[k], max, j, exec_err_name(r),
                                 (unsigned long long)e->offset, (unsigned long long)e->where,
                                 (unsigned long long)e->length, want[j].off, want[j].where,
                                 want[j].len);
                }
            }
            exec_source_close(s);
        }
    }
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4180),   cmocka_unit_test(test_options),
        cmocka_unit_test(test_header),    cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_too_big),   cmocka_unit_test(test_len32),
        cmocka_unit_test(test_args),      cmocka_unit_test(test_offset_size),
        cmocka_unit_test(test_random),    cmocka_unit_test(test_cr_after_quote),
        cmocka_unit_test(test_read_size),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
