/*
 * The CSV reader, the field splitter and a byte-at-a-time reference of the
 * rules in docs/csv.md (csv_ref.h), run side by side on random and mutated
 * inputs at several read sizes. Seeds are fixed; a failure prints the input
 * (C-escaped), which reproduces it.
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
#include <unistd.h>

#include "csv_ref.h"

#define MAXIN CSV_REF_MAXIN

static void csv_ref_fail(const char *msg)
{
    fail_msg("%s", msg);
    abort(); /* fail_msg() does not return */
}

/* ------------------------------------------------------------------------- */
/* Inputs                                                                    */
/* ------------------------------------------------------------------------- */

static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static struct run_cfg cfg_for(uint64_t *x)
{
    static const unsigned char delims[] = {',', ',', ',', ';', '\t', 0xfe};
    struct run_cfg c = {.delim = delims[rnd(x) % sizeof delims]};
    if (rnd(x) % 4 == 0)
        c.max = 1 + rnd(x) % 12;
    c.skip_empty = rnd(x) % 6 == 0;
    return c;
}

/* The inputs reached every outcome, often enough to mean something. */
static void check_seen(void)
{
    if (seen_records < 1000 || seen_empty < 50 || seen_badquote < 1000 ||
        seen_unterminated < 500 || seen_2big < 500)
        fail_msg("too few of some outcome: %zu records, %zu empty, %zu EXEC_EBADQUOTE, %zu "
                 "EXEC_EUNTERMINATED, %zu EXEC_E2BIG",
                 seen_records, seen_empty, seen_badquote, seen_unterminated, seen_2big);
    print_message("%zu records, %zu empty, %zu EXEC_EBADQUOTE, %zu EXEC_EUNTERMINATED, "
                  "%zu EXEC_E2BIG\n",
                  seen_records, seen_empty, seen_badquote, seen_unterminated, seen_2big);
}

static int diff_fd(void)
{
    int fd = memfd_create("csv-diff", MFD_CLOEXEC);
    assert_true(fd >= 0);
    return fd;
}

/* The reference itself, on the documented cases. */
static void test_reference(void **state)
{
    (void)state;
    static struct ref r;
    static const struct {
        const char *in;
        int code[3]; /* the items' codes, then 0 */
        size_t where0;
        const char *f0[4]; /* the first item's fields, for a record */
    } cases[] = {
        {"1,\"apple\"\rpear\n2,x\n", {EXEC_EBADQUOTE, 1, 0}, 9, {NULL}},
        {"1,\"a,\"\"b\"\"\"\r\nz", {1, 1, 0}, 0, {"1", "a,\"b\"", NULL}},
        {"a,b\"c\nd", {EXEC_EBADQUOTE, 1, 0}, 3, {NULL}},
        {"\"ab\"c,d\n", {EXEC_EBADQUOTE, 0}, 4, {NULL}},
        {"x,\"open\n", {EXEC_EUNTERMINATED, 0}, 2, {NULL}},
        {"a\rb,\r\n", {1, 0}, 0, {"a\rb", "", NULL}},
        {"\"a\"\r", {1, 0}, 0, {"a", NULL}},
        {"\n\"\"\n", {1, 1, 0}, 0, {NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *in = cases[i].in;
        ref_parse(in, strlen(in), ',', (size_t)64 << 20, false, &r);
        size_t k = 0;
        while (cases[i].code[k])
            k++;
        if (r.n != k)
            fail_msg("%s: %zu items, want %zu", esc(in, strlen(in)), r.n, k);
        for (size_t j = 0; j < k; j++)
            assert_int_equal(r.it[j].code, cases[i].code[j]);
        if (r.it[0].code != 1) {
            assert_int_equal(r.it[0].where, cases[i].where0);
            continue;
        }
        size_t nf = 0;
        while (cases[i].f0[nf])
            nf++;
        assert_int_equal(r.it[0].nf, nf);
        for (size_t f = 0; f < nf; f++) {
            assert_int_equal(r.f[f].len, strlen(cases[i].f0[f]));
            assert_memory_equal(r.text + r.f[f].at, cases[i].f0[f], r.f[f].len);
        }
    }
    /* "" on its own line is one empty field; an empty line has none. */
    ref_parse("\n\"\"\n", 4, ',', 100, false, &r);
    assert_int_equal(r.it[0].nf, 0);
    assert_int_equal(r.it[1].nf, 1);
}

/* Random bytes, mostly the ones CSV cares about. */
static void test_random_bytes(void **state)
{
    (void)state;
    static const char alphabet[] = {'a', 'a', 'b', ',', ',', '"', '"', '"', '\r', '\r',
                                    '\n', '\n', ';', '\t', ' ', '\0', '\xfe'};
    uint64_t x = 0x9e3779b97f4a7c15ull;
    char in[MAXIN];
    int fd = diff_fd();
    seen_records = seen_empty = seen_badquote = seen_unterminated = seen_2big = 0;
    for (int iter = 0; iter < 8000; iter++) {
        size_t n = rnd(&x) % 72;
        for (size_t i = 0; i < n; i++)
            in[i] = alphabet[rnd(&x) % sizeof alphabet];
        struct run_cfg c = cfg_for(&x);
        diff_one(fd, in, n, &c);
    }
    close(fd);
    check_seen();
}

/* Valid CSV written from known fields, then a few bytes inserted or removed. */
static size_t gen_valid(uint64_t *x, unsigned char ud, char *out, size_t cap, char fields[][16],
                        size_t *flen, size_t *nf_per_rec, size_t *nrec)
{
    static const char chars[] = {'a', 'b', 'c', ' ', '"', '\r', '\n', ',', ';', '\t', '\xfe'};
    const char d = (char)ud;
    size_t o = 0, nf = 0;
    *nrec = 1 + rnd(x) % 4;
    bool crlf = rnd(x) % 2;
    for (size_t r = 0; r < *nrec; r++) {
        nf_per_rec[r] = 1 + rnd(x) % 4;
        for (size_t k = 0; k < nf_per_rec[r]; k++, nf++) {
            size_t len = rnd(x) % 6;
            bool quote = rnd(x) % 4 == 0 || (nf_per_rec[r] == 1 && len == 0);
            for (size_t i = 0; i < len; i++) {
                char ch = chars[rnd(x) % sizeof chars];
                fields[nf][i] = ch;
                quote |= ch == d || ch == '"' || ch == '\r' || ch == '\n';
            }
            flen[nf] = len;
            if (k)
                out[o++] = d;
            if (quote)
                out[o++] = '"';
            for (size_t i = 0; i < len; i++) {
                if (fields[nf][i] == '"')
                    out[o++] = '"';
                out[o++] = fields[nf][i];
            }
            if (quote)
                out[o++] = '"';
        }
        if (r + 1 < *nrec || rnd(x) % 2) {
            if (crlf)
                out[o++] = '\r';
            out[o++] = '\n';
        }
    }
    assert_true(o <= cap);
    return o;
}

static void check_valid(int fd, const char *in, size_t n, unsigned char d, char fields[][16],
                        const size_t *flen, const size_t *nf_per_rec, size_t nrec)
{
    exec_source_options_t o = {.delim = d, .read_size = 3};
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    assert_int_equal(ftruncate(fd, 0), 0);
    assert_int_equal(pwrite(fd, in, n, 0), (ssize_t)n);
    exec_source_t *s;
    assert_int_equal(exec_source_open_fd(&s, fd, &o), 0);
    size_t f = 0;
    for (size_t r = 0; r < nrec; r++) {
        const void *rec;
        size_t len;
        int rc = exec_source_next(s, &rec, &len, NULL);
        if (rc != 1)
            fail_msg("valid input %s: record %zu gives %s", esc(in, n), r + 1, exec_err_name(rc));
        exec_field_t got[8];
        char buf[MAXIN];
        int k = exec_csv_split(rec, len, d, got, 8, buf, len);
        if (k != (int)nf_per_rec[r])
            fail_msg("valid input %s: record %zu splits into %d fields, written with %zu",
                     esc(in, n), r + 1, k, nf_per_rec[r]);
        for (int i = 0; i < k; i++, f++)
            if (got[i].len != flen[f] || memcmp(got[i].data, fields[f], flen[f]) != 0)
                fail_msg("valid input %s: record %zu field %d is not the one written",
                         esc(in, n), r + 1, i);
    }
    const void *rec;
    size_t len;
    assert_int_equal(exec_source_next(s, &rec, &len, NULL), 0);
    exec_source_close(s);
}

static void test_mutated(void **state)
{
    (void)state;
    uint64_t x = 0xd1b54a32d192ed03ull;
    char in[MAXIN], fields[32][16];
    size_t flen[32], nfr[8], nrec;
    int fd = diff_fd();
    seen_records = seen_empty = seen_badquote = seen_unterminated = seen_2big = 0;
    for (int iter = 0; iter < 4000; iter++) {
        struct run_cfg c = cfg_for(&x);
        size_t n = gen_valid(&x, c.delim, in, sizeof in - 8, fields, flen, nfr, &nrec);
        /* Unchanged, it reads back as written. */
        check_valid(fd, in, n, c.delim, fields, flen, nfr, nrec);
        diff_one(fd, in, n, &c);
        size_t muts = 1 + rnd(&x) % 3;
        for (size_t m = 0; m < muts; m++) {
            size_t at = n ? rnd(&x) % (n + 1) : 0;
            unsigned op = (unsigned)(rnd(&x) % 6);
            if (op <= 3 && n < sizeof in) {
                static const char ins[] = {'"', '\r', '\n', 0};
                memmove(in + at + 1, in + at, n - at);
                in[at] = op == 3 ? (char)c.delim : ins[op];
                n++;
            } else if (op == 4 && at < n) {
                memmove(in + at, in + at + 1, n - at - 1); /* drop a byte */
                n--;
            } else if (op == 5) {
                /* Drop a quote, the first at or after at. */
                char *q = at < n ? memchr(in + at, '"', n - at) : NULL;
                if (q) {
                    memmove(q, q + 1, (size_t)(in + n - q - 1));
                    n--;
                }
            }
            diff_one(fd, in, n, &c);
        }
    }
    close(fd);
    check_seen();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_mutated),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
