/*
 * The CSV reader, the field splitter and a byte-at-a-time reference of the
 * rules in docs/csv.md, run side by side on random and mutated inputs at
 * several read sizes:
 *   (a) every record the source returns splits, with exec_csv_split() and
 *       exec_csv_field() for each index, into the reference's fields; every
 *       malformed record it reports fails to split, with the reference's code;
 *   (b) records, their boundaries and each error (code, record number,
 *       offset, where, length, raw bytes) are the reference's;
 *   (c) every read size gives the same records and errors.
 * Seeds are fixed; a failure prints the input (C-escaped), which reproduces it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "executor.h"
#include "suite.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAXIN 256

/* ------------------------------------------------------------------------- */
/* The reference                                                             */
/* ------------------------------------------------------------------------- */

/* One thing the source should give: a record (code 1) or an error. */
struct ref_item {
    int code;
    uint64_t recno;
    size_t off, len, where;
    size_t next;     /* input offset after the record and its line end */
    int split_code;  /* malformed records: what the splitter must return */
    size_t f0, nf;   /* records: fields ref.f[f0 .. f0 + nf) */
};

struct ref {
    struct ref_item it[MAXIN + 1];
    size_t n;
    struct {
        size_t at, len; /* in text[] */
    } f[2 * MAXIN + 2];
    size_t nf;
    char text[MAXIN];
    size_t tlen;
};

/*
 * Reads in[0, n) one byte at a time. A record ends at LF, at CRLF, or at a CR
 * that is the last byte, outside quotes; elsewhere a CR is data. A field is
 * quoted when its first byte is a quote; inside, "" is a quote and anything
 * else is data up to the closing quote, which a delimiter or a line end must
 * follow. A quote anywhere else in a field is stray and opens nothing.
 */
static void ref_parse(const char *in, size_t n, char d, size_t max, bool skip_empty,
                      struct ref *r)
{
    enum { START, UNQ, QUO, QEND } st;
    memset(r, 0, sizeof *r);
    uint64_t recno = 0;
    size_t i = 0;
    while (i < n) {
        size_t start = i, cend = n, next = n, qopen = 0, where = 0;
        size_t f0 = r->nf, fat = r->tlen;
        int bad = 0;
        bool eol = false;
        st = START;
        recno++;
        for (; i < n && !eol; i++) {
            char c = in[i];
            bool eol_cr = c == '\r' && (i + 1 == n || in[i + 1] == '\n');
            if (st == QUO) {
                if (c == '"')
                    st = QEND;
                else
                    r->text[r->tlen++] = c;
                continue;
            }
            if (st == QEND && c == '"') {
                r->text[r->tlen++] = '"';
                st = QUO;
                continue;
            }
            if (c == d) {
                r->f[r->nf].at = fat;
                r->f[r->nf++].len = r->tlen - fat;
                fat = r->tlen;
                st = START;
                continue;
            }
            if (c == '\n' || eol_cr) {
                cend = i;
                next = c == '\n' || i + 1 == n ? i + 1 : i + 2;
                eol = true;
                continue;
            }
            if (st == START && c == '"') {
                st = QUO;
                qopen = i;
                continue;
            }
            /* Data in an unquoted field: after a closing quote it is text;
             * a quote here is stray. */
            if (!bad && (st == QEND || c == '"')) {
                bad = EXEC_EBADQUOTE;
                where = i;
            }
            st = UNQ;
            r->text[r->tlen++] = c;
        }
        i = next;
        struct ref_item *it = &r->it[r->n];
        memset(it, 0, sizeof *it);
        it->recno = recno;
        it->off = start;
        it->next = next;
        if (!eol && st == QUO) {
            /* The input ends inside quotes: the record runs to the end. */
            it->len = n - start;
            it->code = it->len > max ? EXEC_E2BIG : EXEC_EUNTERMINATED;
            it->where = it->len > max ? n : qopen;
            it->split_code = bad ? bad : EXEC_EUNTERMINATED;
            r->n++;
            break;
        }
        it->len = cend - start;
        if (it->len > max) {
            it->code = EXEC_E2BIG;
            it->where = start + it->len;
        } else if (bad) {
            it->code = bad;
            it->where = where;
            it->split_code = bad;
        } else {
            it->code = 1;
            if (it->len > 0) {
                /* The last field; an empty line has none, as csv.reader says. */
                r->f[r->nf].at = fat;
                r->f[r->nf++].len = r->tlen - fat;
            }
            it->f0 = f0;
            it->nf = r->nf - f0;
            if (it->len == 0 && skip_empty)
                continue;
        }
        r->n++;
    }
}

/* ------------------------------------------------------------------------- */
/* Running the source                                                        */
/* ------------------------------------------------------------------------- */

static char esc_buf[4 * MAXIN + 64];

static const char *esc(const char *s, size_t n)
{
    char *o = esc_buf;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            o += sprintf(o, "\\n");
        else if (c == '\r')
            o += sprintf(o, "\\r");
        else if (c == '\t')
            o += sprintf(o, "\\t");
        else if (c == '"' || c == '\\')
            o += sprintf(o, "\\%c", c);
        else if (c < 32 || c > 126)
            o += sprintf(o, "\\%03o", c);
        else
            *o++ = (char)c;
    }
    *o++ = '"';
    *o = '\0';
    return esc_buf;
}

/* What one read of the input gave, item by item. */
struct obs {
    int code;
    uint64_t recno, offset, where, length, next;
};

static bool obs_equal(const struct obs *a, const struct obs *b)
{
    return a->code == b->code && a->recno == b->recno && a->offset == b->offset &&
           a->where == b->where && a->length == b->length && a->next == b->next;
}

struct run_cfg {
    unsigned char delim; /* passed as an int, as a byte 0..255 */
    size_t max;
    bool skip_empty;
};

/* The last one is read from a pipe, where the size is not known. */
static const size_t read_sizes[] = {1, 2, 3, 7, 64, 0, 2};
#define NSIZES (sizeof read_sizes / sizeof read_sizes[0])

/* How many of each outcome the runs saw: 1 (a record), 0 (an empty record),
 * and each error. */
static size_t seen_records, seen_empty, seen_badquote, seen_unterminated, seen_2big;

static void count(const struct ref *r)
{
    for (size_t j = 0; j < r->n; j++) {
        switch (r->it[j].code) {
        case 1: *(r->it[j].len ? &seen_records : &seen_empty) += 1; break;
        case EXEC_EBADQUOTE: seen_badquote++; break;
        case EXEC_EUNTERMINATED: seen_unterminated++; break;
        case EXEC_E2BIG: seen_2big++; break;
        default: fail_msg("the reference gave code %d", r->it[j].code);
        }
    }
}

static void fail_at(const char *in, size_t n, const struct run_cfg *c, size_t rs, size_t item,
                    const char *what)
{
    fail_msg("input %s (delim %d, max_record %zu%s, read_size %zu): item %zu: %s",
             esc(in, n), c->delim, c->max,
             c->skip_empty ? ", skip empty" : "", rs, item, what);
}

/* (a): a record splits into the reference's fields, whole and one by one. */
static void check_fields(const char *rec, size_t len, const struct ref *r,
                         const struct ref_item *it, const char *in, size_t n,
                         const struct run_cfg *c, size_t rs, size_t item)
{
    exec_field_t f[MAXIN + 1];
    char buf[MAXIN + 1];
    char msg[160];
    int nf = exec_csv_split(rec, len, c->delim, f, MAXIN + 1, buf, len);
    if (nf < 0 || (size_t)nf != it->nf) {
        snprintf(msg, sizeof msg, "exec_csv_split() gives %d (%s), the reference %zu fields", nf,
                 nf < 0 ? exec_err_name(nf) : "fields", it->nf);
        fail_at(in, n, c, rs, item, msg);
    }
    for (size_t k = 0; k < it->nf; k++) {
        const char *want = r->text + r->f[it->f0 + k].at;
        size_t wl = r->f[it->f0 + k].len;
        if (f[k].len != wl || (wl && memcmp(f[k].data, want, wl) != 0)) {
            snprintf(msg, sizeof msg, "split field %zu is %.*s, the reference's %.*s", k,
                     (int)f[k].len, f[k].data, (int)wl, want);
            fail_at(in, n, c, rs, item, msg);
        }
        exec_field_t one;
        int rc = exec_csv_field(rec, len, c->delim, k, &one, buf, len);
        if (rc != 0 || one.len != wl || (wl && memcmp(one.data, want, wl) != 0)) {
            snprintf(msg, sizeof msg, "exec_csv_field(%zu) gives %s '%.*s', the reference '%.*s'",
                     k, exec_err_name(rc), rc ? 0 : (int)one.len, rc ? "" : one.data, (int)wl,
                     want);
            fail_at(in, n, c, rs, item, msg);
        }
    }
    exec_field_t one;
    int rc = exec_csv_field(rec, len, c->delim, it->nf, &one, buf, len);
    if (rc != EXEC_ENOENT) {
        snprintf(msg, sizeof msg, "exec_csv_field(%zu) past the last field gives %s", it->nf,
                 exec_err_name(rc));
        fail_at(in, n, c, rs, item, msg);
    }
    /* Fewer slots than fields: the count is still the whole. */
    if (it->nf > 1) {
        size_t half = it->nf / 2;
        rc = exec_csv_split(rec, len, c->delim, f, half, buf, len);
        if (rc != (int)it->nf)
            fail_at(in, n, c, rs, item, "exec_csv_split() with fewer slots miscounts");
    }
}

/* (a) for malformed records: their bytes never split. */
static void check_bad_split(const void *data, size_t len, const struct ref_item *it,
                            const char *in, size_t n, const struct run_cfg *c, size_t rs,
                            size_t item)
{
    char buf[MAXIN + 1];
    exec_field_t f[MAXIN + 1];
    char msg[128];
    int rc = exec_csv_split(data, len, c->delim, f, MAXIN + 1, buf, len);
    if (rc != it->split_code) {
        snprintf(msg, sizeof msg, "malformed record: exec_csv_split() gives %s, want %s",
                 exec_err_name(rc), exec_err_name(it->split_code));
        fail_at(in, n, c, rs, item, msg);
    }
    exec_field_t one;
    rc = exec_csv_field(data, len, c->delim, MAXIN + 1, &one, buf, len);
    if (rc != it->split_code) {
        snprintf(msg, sizeof msg, "malformed record: exec_csv_field() gives %s, want %s",
                 exec_err_name(rc), exec_err_name(it->split_code));
        fail_at(in, n, c, rs, item, msg);
    }
}

/* Reads in[0, n) at every read size and checks (a), (b) and (c). */
static void diff_one(int fd, const char *in, size_t n, const struct run_cfg *c)
{
    static struct ref r;
    static struct obs first[MAXIN + 2];
    size_t nfirst = 0;
    ref_parse(in, n, (char)c->delim, c->max ? c->max : ((size_t)64 << 20), c->skip_empty, &r);
    count(&r);
    assert_int_equal(ftruncate(fd, 0), 0);
    assert_int_equal(pwrite(fd, in, n, 0), (ssize_t)n);
    for (size_t k = 0; k < NSIZES; k++) {
        size_t rs = read_sizes[k];
        int p[2] = {-1, -1};
        int from = fd;
        if (k + 1 == NSIZES) {
            /* The input fits in the pipe: written whole, then read. */
            assert_int_equal(pipe2(p, O_CLOEXEC), 0);
            assert_int_equal(write(p[1], in, n), (ssize_t)n);
            close(p[1]);
            from = p[0];
        } else {
            assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
        }
        exec_source_options_t o = {.delim = c->delim, .max_record = c->max, .read_size = rs,
                                   .flags = c->skip_empty ? EXEC_SOURCE_SKIP_EMPTY : 0};
        exec_source_t *s;
        assert_int_equal(exec_source_open_fd(&s, from, &o), 0);
        char msg[200];
        size_t j = 0;
        for (;; j++) {
            const void *rec = NULL;
            size_t len = 0;
            uint64_t recno = 0;
            int rc = exec_source_next(s, &rec, &len, &recno);
            const struct ref_item *it = j < r.n ? &r.it[j] : NULL;
            int want = it ? it->code : 0;
            if (rc != want) {
                snprintf(msg, sizeof msg, "the source gives %s, the reference %s",
                         rc == 1 ? "a record" : exec_err_name(rc),
                         want == 1 ? "a record" : exec_err_name(want));
                fail_at(in, n, c, rs, j, msg);
            }
            if (rc == 0)
                break;
            struct obs ob = {.code = rc, .recno = recno, .next = exec_source_offset(s)};
            if (rc == 1) {
                ob.length = len;
                if (recno != it->recno || len != it->len || memcmp(rec, in + it->off, len) != 0 ||
                    ob.next != it->next) {
                    snprintf(msg, sizeof msg,
                             "record %llu %s, next at %llu; the reference: record %llu at "
                             "[%zu, +%zu), next at %zu",
                             (unsigned long long)recno, esc(rec, len),
                             (unsigned long long)ob.next, (unsigned long long)it->recno,
                             it->off, it->len, it->next);
                    fail_at(in, n, c, rs, j, msg);
                }
                check_fields(rec, len, &r, it, in, n, c, rs, j);
            } else {
                const exec_source_error_t *e = exec_source_error(s);
                ob.offset = e->offset;
                ob.where = e->where;
                ob.length = e->length;
                if (e->code != rc || e->record != it->recno || recno != it->recno ||
                    e->offset != it->off || e->where != it->where || e->length != it->len ||
                    ob.next != it->next) {
                    snprintf(msg, sizeof msg,
                             "%s: record %llu offset %llu where %llu length %llu, next at "
                             "%llu; the reference: %llu %zu %zu %zu, next at %zu",
                             exec_err_name(rc), (unsigned long long)e->record,
                             (unsigned long long)e->offset, (unsigned long long)e->where,
                             (unsigned long long)e->length, (unsigned long long)ob.next,
                             (unsigned long long)it->recno, it->off, it->where, it->len,
                             it->next);
                    fail_at(in, n, c, rs, j, msg);
                }
                if (rc == EXEC_E2BIG) {
                    if (e->data != NULL)
                        fail_at(in, n, c, rs, j, "EXEC_E2BIG with raw bytes");
                } else {
                    if (!e->data || memcmp(e->data, in + it->off, it->len) != 0)
                        fail_at(in, n, c, rs, j, "the raw bytes are not the record's");
                    check_bad_split(e->data, (size_t)e->length, it, in, n, c, rs, j);
                }
            }
            /* (c): the same as the first read size gave. */
            if (k == 0) {
                first[nfirst++] = ob;
            } else if (j >= nfirst || !obs_equal(&first[j], &ob)) {
                fail_at(in, n, c, rs, j, "differs from read_size 1");
            }
        }
        if (k > 0 && j != nfirst)
            fail_at(in, n, c, rs, j, "a different number of items than read_size 1");
        exec_source_close(s);
        if (p[0] >= 0)
            close(p[0]);
    }
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
