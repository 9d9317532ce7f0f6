/*
 * The CSV rules of docs/csv.md as a byte-at-a-time reference, and the
 * differential check of the record source and the field splitter against it:
 *   (a) every record the source returns splits, with exec_csv_split() and
 *       exec_csv_field() for each index, into the reference's fields; every
 *       malformed record it reports fails to split, with the reference's code;
 *   (b) records, their boundaries and each error (code, record number,
 *       offset, where, length, raw bytes) are the reference's;
 *   (c) every read size gives the same records and errors.
 * Shared by tests/test_csv_diff.c and the CSV fuzz target. The includer
 * defines csv_ref_fail(), which must not return, and may set CSV_REF_MAXIN
 * (the longest input, 256 by default).
 */
#ifndef EXEC_CSV_REF_H
#define EXEC_CSV_REF_H

#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "executor_records.h"

#ifndef CSV_REF_MAXIN
#define CSV_REF_MAXIN 256
#endif

/* Reports a disagreement (msg says which input and how); never returns. */
static void csv_ref_fail(const char *msg) __attribute__((noreturn));

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
    struct ref_item it[CSV_REF_MAXIN + 1];
    size_t n;
    struct {
        size_t at, len; /* in text[] */
    } f[2 * CSV_REF_MAXIN + 2];
    size_t nf;
    char text[CSV_REF_MAXIN];
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

static char esc_buf[4 * CSV_REF_MAXIN + 64];

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
        default: csv_ref_fail("the reference gave a code of no outcome");
        }
    }
}

static void fail_at(const char *in, size_t n, const struct run_cfg *c, size_t rs, size_t item,
                    const char *what)
{
    char msg[sizeof esc_buf + 512];
    snprintf(msg, sizeof msg, "input %s (delim %d, max_record %zu%s, read_size %zu): item %zu: %s",
             esc(in, n), c->delim, c->max, c->skip_empty ? ", skip empty" : "", rs, item, what);
    csv_ref_fail(msg);
}

/* (a): a record splits into the reference's fields, whole and one by one. */
static void check_fields(const char *rec, size_t len, const struct ref *r,
                         const struct ref_item *it, const char *in, size_t n,
                         const struct run_cfg *c, size_t rs, size_t item)
{
    exec_field_t f[CSV_REF_MAXIN + 1];
    char buf[CSV_REF_MAXIN + 1];
    char msg[160];
    int nf = exec_csv_split(rec, len, c->delim, f, CSV_REF_MAXIN + 1, buf, len);
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
    char buf[CSV_REF_MAXIN + 1];
    exec_field_t f[CSV_REF_MAXIN + 1];
    char msg[128];
    int rc = exec_csv_split(data, len, c->delim, f, CSV_REF_MAXIN + 1, buf, len);
    if (rc != it->split_code) {
        snprintf(msg, sizeof msg, "malformed record: exec_csv_split() gives %s, want %s",
                 exec_err_name(rc), exec_err_name(it->split_code));
        fail_at(in, n, c, rs, item, msg);
    }
    exec_field_t one;
    rc = exec_csv_field(data, len, c->delim, CSV_REF_MAXIN + 1, &one, buf, len);
    if (rc != it->split_code) {
        snprintf(msg, sizeof msg, "malformed record: exec_csv_field() gives %s, want %s",
                 exec_err_name(rc), exec_err_name(it->split_code));
        fail_at(in, n, c, rs, item, msg);
    }
}

/* Reads in[0, n) at every read size and checks (a), (b) and (c). An includer may
 * use the reference alone. */
__attribute__((unused))
static void diff_one(int fd, const char *in, size_t n, const struct run_cfg *c)
{
    static struct ref r;
    static struct obs first[CSV_REF_MAXIN + 2];
    size_t nfirst = 0;
    ref_parse(in, n, (char)c->delim, c->max ? c->max : ((size_t)64 << 20), c->skip_empty, &r);
    count(&r);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, in, n, 0) != (ssize_t)n)
        csv_ref_fail("cannot write the input");
    for (size_t k = 0; k < NSIZES; k++) {
        size_t rs = read_sizes[k];
        int p[2] = {-1, -1};
        int from = fd;
        if (k + 1 == NSIZES) {
            /* The input fits in the pipe: written whole, then read. */
            if (pipe2(p, O_CLOEXEC) != 0 || write(p[1], in, n) != (ssize_t)n)
                csv_ref_fail("cannot write the input to a pipe");
            close(p[1]);
            from = p[0];
        } else {
            if (lseek(fd, 0, SEEK_SET) != 0)
                csv_ref_fail("cannot seek the input");
        }
        exec_source_options_t o = {.delim = c->delim, .max_record = c->max, .read_size = rs,
                                   .flags = c->skip_empty ? EXEC_SOURCE_SKIP_EMPTY : 0};
        exec_source_t *s;
        if (exec_source_open_fd(&s, from, &o) != 0)
            csv_ref_fail("exec_source_open_fd() failed");
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

#endif /* EXEC_CSV_REF_H */
