/*
 * CSV fields, split inside process() (so in parallel, on the workers), and
 * header rows that map column names to indexes once, before workers start.
 *
 * Fields point into the record whenever they can: only a quoted field holding
 * "" is copied (into the caller's buffer) to turn "" into ". Nothing here
 * allocates except exec_csv_header_create(), and nothing keeps state.
 */
#include "executor_records.h"
#include "rec_alloc.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A delimiter the record sources accept too: a byte, not a quote or a line end. */
static bool fld_delim_ok(int delim)
{
    return delim >= 0 && delim <= 255 && delim != '"' && delim != '\n' && delim != '\r';
}

/*
 * Reads the field at *pp (up to e). On return *pp stands on the delimiter that
 * ends it, or at e. Quoted fields with "" are unquoted into buf[*used..buflen)
 * when copy is set (else their bytes are left out: the caller skips them).
 */
static int fld_next(const char **pp, const char *e, char delim, exec_field_t *f, char *buf,
                    size_t *used, size_t buflen, bool copy)
{
    const char *p = *pp;
    if (p < e && *p == '"') {
        const char *s = p + 1;
        const char *q = memchr(s, '"', (size_t)(e - s));
        if (!q)
            return EXEC_EUNTERMINATED;
        if (q + 1 < e && q[1] == '"') {
            /* "" inside: copy the pieces between them. */
            char *out = buf ? buf + *used : NULL;
            size_t n = 0;
            for (;;) {
                size_t piece = (size_t)(q - s) + (q + 1 < e && q[1] == '"');
                if (copy) {
                    if (!buf || buflen - *used - n < piece)
                        return EXEC_ENOBUFS;
                    memcpy(out + n, s, piece);
                }
                n += piece;
                if (!(q + 1 < e && q[1] == '"'))
                    break;
                s = q + 2;
                q = memchr(s, '"', (size_t)(e - s));
                if (!q)
                    return EXEC_EUNTERMINATED;
            }
            f->data = copy ? out : NULL;
            f->len = copy ? n : 0;
            if (copy)
                *used += n;
        } else {
            f->data = s;
            f->len = (size_t)(q - s);
        }
        p = q + 1;
        if (p < e && *p != delim)
            return EXEC_EBADQUOTE;
    } else {
        const char *s = p;
        while (p < e && *p != delim) {
            if (*p == '"')
                return EXEC_EBADQUOTE;
            p++;
        }
        f->data = s;
        f->len = (size_t)(p - s);
    }
    *pp = p;
    return 0;
}

int exec_csv_split(const void *rec, size_t len, int delim, exec_field_t *fields, size_t max,
                   char *buf, size_t buflen)
{
    if ((!rec && len) || (!fields && max) || !fld_delim_ok(delim))
        return EXEC_EINVAL;
    if (len == 0)
        return 0; /* an empty line has no fields, as csv.reader says */
    const char d = delim ? (char)delim : ',';
    const char *p = rec, *e = p + len;
    size_t n = 0, used = 0;
    for (;;) {
        exec_field_t f;
        int rc = fld_next(&p, e, d, &f, buf, &used, buflen, n < max);
        if (rc)
            return rc;
        if (n < max)
            fields[n] = f;
        n++;
        if (p == e)
            break;
        p++; /* the delimiter; a field follows, maybe empty */
        if (p == e) {
            if (n < max) {
                fields[n].data = e;
                fields[n].len = 0;
            }
            n++;
            break;
        }
    }
    return (int)n;
}

int exec_csv_field(const void *rec, size_t len, int delim, size_t index, exec_field_t *out,
                   char *buf, size_t buflen)
{
    if ((!rec && len) || !out || !fld_delim_ok(delim))
        return EXEC_EINVAL;
    if (len == 0)
        return EXEC_ENOENT;
    const char d = delim ? (char)delim : ',';
    const char *p = rec, *e = p + len;
    size_t used = 0;
    for (size_t i = 0;; i++) {
        int rc = fld_next(&p, e, d, out, buf, &used, buflen, i == index);
        if (rc)
            return rc;
        if (i == index)
            return 0;
        if (p == e)
            return EXEC_ENOENT;
        p++;
        if (p == e) {
            if (i + 1 != index)
                return EXEC_ENOENT;
            out->data = e;
            out->len = 0;
            return 0;
        }
    }
}

/* ------------------------------------------------------------------------- */
/* Header rows                                                               */
/* ------------------------------------------------------------------------- */

struct exec_csv_header {
    size_t n;
    int delim;
    char **names; /* n NUL-terminated names, stored after the array */
};

int exec_csv_header_create(exec_csv_header_t **hp, const void *rec, size_t len, int delim)
{
    if (!hp)
        return EXEC_EINVAL;
    *hp = NULL;
    if ((!rec && len) || !fld_delim_ok(delim))
        return EXEC_EINVAL;
    int c = exec_csv_split(rec, len, delim, NULL, 0, NULL, 0); /* counts only */
    if (c < 0)
        return c;
    size_t cnt = (size_t)c;
    char *tmp = rec_malloc(len + 1);
    if (!tmp)
        return EXEC_ENOMEM;
    exec_field_t *f = rec_calloc(cnt ? cnt : 1, sizeof *f);
    if (!f) {
        free(tmp);
        return EXEC_ENOMEM;
    }
    exec_csv_split(rec, len, delim, f, cnt, tmp, len);
    size_t bytes = 0;
    for (size_t i = 0; i < cnt; i++)
        bytes += f[i].len + 1;
    exec_csv_header_t *h = rec_malloc(sizeof *h + cnt * sizeof(char *) + bytes);
    if (!h) {
        free(f);
        free(tmp);
        return EXEC_ENOMEM;
    }
    h->n = cnt;
    h->delim = delim ? delim : ',';
    h->names = (char **)(h + 1);
    char *s = (char *)(h->names + cnt);
    for (size_t i = 0; i < cnt; i++) {
        h->names[i] = s;
        if (f[i].len)
            memcpy(s, f[i].data, f[i].len);
        s[f[i].len] = '\0';
        s += f[i].len + 1;
    }
    free(f);
    free(tmp);
    *hp = h;
    return 0;
}

size_t exec_csv_header_count(const exec_csv_header_t *h)
{
    return h ? h->n : 0;
}

const char *exec_csv_header_name(const exec_csv_header_t *h, size_t i)
{
    return h && i < h->n ? h->names[i] : NULL;
}

int exec_csv_header_delim(const exec_csv_header_t *h)
{
    return h ? h->delim : EXEC_EINVAL;
}

int exec_csv_header_index(const exec_csv_header_t *h, const char *name)
{
    if (!h || !name)
        return EXEC_EINVAL;
    for (size_t i = 0; i < h->n && i <= (size_t)INT32_MAX; i++)
        if (strcmp(h->names[i], name) == 0)
            return (int)i;
    return EXEC_ENOENT;
}

int exec_csv_get(const exec_csv_header_t *h, const void *rec, size_t len, const char *name,
                 exec_field_t *out, char *buf, size_t buflen)
{
    int i = exec_csv_header_index(h, name);
    if (i < 0)
        return i;
    return exec_csv_field(rec, len, h->delim, (size_t)i, out, buf, buflen);
}

void exec_csv_header_free(exec_csv_header_t *h)
{
    free(h);
}
