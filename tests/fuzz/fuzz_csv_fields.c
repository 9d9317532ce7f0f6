/*
 * Fuzz target: field access on any bytes. exec_csv_split() (whole, with fewer
 * slots, counting only, with a short buffer), exec_csv_field() for each index
 * and past the last, and a header built from the record (names, index, get)
 * must tell one story; a record without a line end outside quotes splits as
 * the byte-at-a-time reference of csv_ref.h says. Any delimiter is tried,
 * invalid ones included (EXEC_EINVAL, everywhere alike).
 *
 * Input: a byte choosing the delimiter, a byte choosing the buffer and slot
 * counts, then the record.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CSV_REF_MAXIN 512
#include "csv_ref.h"

#define MAXF (CSV_REF_MAXIN + 1)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void csv_ref_fail(const char *msg)
{
    fprintf(stderr, "fuzz_csv_fields: %s\n", msg);
    abort();
}

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_csv_fields: line %d: %s (delim %d, %zu bytes)\n", __LINE__, #c, \
                    delim, len);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool same(const exec_field_t *a, const char *d, size_t n)
{
    return a->len == n && (n == 0 || memcmp(a->data, d, n) == 0);
}

/* A record with "" inside quotes needs a buffer; others need none. */
static bool has_pair(const char *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++)
        if (p[i] == '"' && p[i + 1] == '"')
            return true;
    return false;
}

static void check_header(const char *rec, size_t len, int delim, const exec_field_t *f, int nf)
{
    exec_csv_header_t *h = NULL;
    int rc = exec_csv_header_create(&h, rec, len, delim);
    CHECK(rc == 0);
    CHECK(exec_csv_header_count(h) == (size_t)nf);
    CHECK(exec_csv_header_delim(h) == (delim ? delim : ','));
    CHECK(exec_csv_header_name(h, (size_t)nf) == NULL);
    static char buf[CSV_REF_MAXIN];
    for (int i = 0; i < nf && i < MAXF; i++) {
        const char *name = exec_csv_header_name(h, (size_t)i);
        CHECK(name != NULL);
        /* The field's bytes, up to a NUL in them (names are C strings). */
        const char *nul = memchr(f[i].data, '\0', f[i].len);
        size_t want = nul ? (size_t)(nul - f[i].data) : f[i].len;
        CHECK(strlen(name) == want && memcmp(name, f[i].data, want) == 0);
        int first = exec_csv_header_index(h, name);
        CHECK(first >= 0 && first <= i);
        CHECK(strcmp(exec_csv_header_name(h, (size_t)first), name) == 0);
        for (int j = 0; j < first; j++)
            CHECK(strcmp(exec_csv_header_name(h, (size_t)j), name) != 0);
        exec_field_t g;
        CHECK(exec_csv_get(h, rec, len, name, &g, buf, len) == 0);
        CHECK(same(&g, f[first].data, f[first].len));
    }
    /* A name no column has (the first name with a byte added). */
    char other[CSV_REF_MAXIN + 2] = "";
    if (nf > 0)
        snprintf(other, sizeof other, "%s\x01", exec_csv_header_name(h, 0));
    bool taken = false;
    for (int i = 0; i < nf; i++)
        taken |= strcmp(exec_csv_header_name(h, (size_t)i), other) == 0;
    int at = exec_csv_header_index(h, other);
    CHECK(taken ? at >= 0 : at == EXEC_ENOENT);
    exec_field_t g;
    CHECK(exec_csv_get(h, rec, len, NULL, &g, buf, len) == EXEC_EINVAL);
    exec_csv_header_free(h);
}

/* A record the reference reads as one whole record (or one malformed one):
 * the splitter must agree with it. */
static void check_reference(const char *rec, size_t len, int delim, int nf, const exec_field_t *f)
{
    static struct ref r;
    ref_parse(rec, len, (char)(delim ? delim : ','), len + 1, false, &r);
    if (r.n != 1 || r.it[0].off != 0 || r.it[0].len != len || r.it[0].next != len)
        return; /* a line end outside quotes: not one record */
    const struct ref_item *it = &r.it[0];
    if (it->code == 1) {
        CHECK(nf == (int)it->nf);
        for (size_t k = 0; k < it->nf && k < MAXF; k++)
            CHECK(same(&f[k], r.text + r.f[it->f0 + k].at, r.f[it->f0 + k].len));
    } else {
        CHECK(nf == it->split_code);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int delims[] = {',', ';', '\t', 0, 0xfe, '"', '\n', '\r', -1, 256, 'x', ' '};
    if (size < 2)
        return 0;
    int delim = delims[data[0] % (sizeof delims / sizeof delims[0])];
    uint8_t sizes = data[1];
    const char *rec = (const char *)data + 2;
    size_t len = size - 2;
    if (len > CSV_REF_MAXIN)
        len = CSV_REF_MAXIN;
    static exec_field_t f[MAXF], g[MAXF];
    static char buf[CSV_REF_MAXIN], small[CSV_REF_MAXIN];
    bool valid = delim >= 0 && delim <= 255 && delim != '"' && delim != '\n' && delim != '\r';

    int nf = exec_csv_split(rec, len, delim, f, MAXF, buf, len);
    exec_field_t one;
    exec_csv_header_t *h = NULL;
    if (!valid) {
        CHECK(nf == EXEC_EINVAL);
        CHECK(exec_csv_field(rec, len, delim, 0, &one, buf, len) == EXEC_EINVAL);
        CHECK(exec_csv_header_create(&h, rec, len, delim) == EXEC_EINVAL && h == NULL);
        return 0;
    }
    CHECK(nf >= 0 || nf == EXEC_EBADQUOTE || nf == EXEC_EUNTERMINATED);
    CHECK(nf <= (int)len + 1);
    /* Counting only needs no slots and no buffer. */
    CHECK(exec_csv_split(rec, len, delim, NULL, 0, NULL, 0) == nf);
    /* Scanning past the end gives the whole record's verdict. */
    int past = exec_csv_field(rec, len, delim, (size_t)(nf >= 0 ? nf : MAXF), &one, buf, len);
    CHECK(past == (nf >= 0 ? EXEC_ENOENT : nf));
    check_reference(rec, len, delim, nf, f);
    if (nf < 0) {
        CHECK(exec_csv_header_create(&h, rec, len, delim) == nf && h == NULL);
        return 0;
    }
    for (int k = 0; k < nf; k++) {
        CHECK(exec_csv_field(rec, len, delim, (size_t)k, &one, small, len) == 0);
        CHECK(same(&one, f[k].data, f[k].len));
    }
    /* Fewer slots: the count is still the whole, the slots filled alike. */
    size_t m = (size_t)(sizes & 7);
    if (m < (size_t)nf) {
        CHECK(exec_csv_split(rec, len, delim, g, m, small, len) == nf);
        for (size_t k = 0; k < m; k++)
            CHECK(same(&g[k], f[k].data, f[k].len));
    }
    /* A short buffer: the same fields, or EXEC_ENOBUFS, which only a record
     * with "" inside quotes may need. */
    size_t blen = len ? (size_t)(sizes >> 3) % len : 0;
    int rc = exec_csv_split(rec, len, delim, g, MAXF, small, blen);
    CHECK(rc == nf || (rc == EXEC_ENOBUFS && has_pair(rec, len)));
    if (rc == nf)
        for (int k = 0; k < nf; k++)
            CHECK(same(&g[k], f[k].data, f[k].len));
    if (!has_pair(rec, len))
        CHECK(exec_csv_split(rec, len, delim, g, MAXF, NULL, 0) == nf);
    check_header(rec, len, delim, f, nf);
    return 0;
}
