/*
 * Record sources: cut a file or descriptor into records (RFC 4180 CSV, plain
 * lines, length-prefixed binary) without parsing fields.
 *
 * The input is read in large read()s into one buffer; a record is returned as
 * a pointer into that buffer, so the reader copies nothing itself. The CSV
 * scan is quote-aware but only looks for two bytes, '"' and '\n', each with
 * memchr(), and remembers where the next of each lies: a record without quotes
 * costs one memchr() for its newline and a compare for the quote. Fields are
 * split later, in the workers (records/fields.c).
 *
 * Buffer layout: buf[0, end) holds input bytes, buf[0] being input offset
 * `base`. The record in progress starts at `rec` and the scan stands at `p`.
 * When more input is needed the bytes before `rec` are dropped (moved out) and
 * a read appends after `end`. A record longer than max_record is not kept: the
 * scan goes on to find its end, keeping only the byte before `p`.
 */
#include "executor_records.h"
#include "rec_alloc.h"
#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SRC_NONE ((size_t)-1)
#define SRC_DEFAULT_READ ((size_t)1 << 20)
#define SRC_MAX_SIZE ((size_t)64 << 20) /* the largest max_record and read_size */

/* Where the next occurrence of one byte lies: pos is the first at or after
 * every query made since it was found, or SRC_NONE when [.., end) had none. */
struct src_find {
    size_t pos;
    size_t end; /* SRC_NONE: searched up to here */
};

struct exec_source {
    exec_source_options_t o;
    int fd;
    bool own_fd;
    bool eof;   /* read() said end of input */
    bool done;  /* every record was returned */
    int ioerr;  /* sticky */
    int64_t size;

    char *buf;
    size_t cap, end;
    uint64_t base; /* input offset of buf[0] */

    /* The record in progress. */
    size_t rec, p;
    uint64_t rec_off;    /* its input offset */
    bool quoted;         /* CSV: inside a quoted field */
    bool discard;        /* longer than max_record: its bytes are dropped */
    int bad;             /* first malformation found in it, or 0 */
    uint64_t bad_where;
    uint64_t quote_open; /* where the open quoted field began */
    uint64_t skip_left;  /* LEN32: bytes of an oversized record still to skip */
    struct src_find q, nl;

    /* Regions (records/source.h): buf is one that region_get handed out,
     * not ours; bytes dropped from it stay where they are. */
    char *(*region_get)(void *arg, size_t need, size_t *cap);
    void *region_arg;
    bool in_region;
    size_t own_max; /* the source's max_record, while regions lower it */

    uint64_t recno;
    char *hdr;
    size_t hdr_len;
    bool has_hdr;
    exec_source_error_t err;
};

static inline size_t src_find(struct exec_source *s, struct src_find *f, int c, size_t from)
{
    if (f->pos != SRC_NONE && f->pos >= from)
        return f->pos;
    size_t start = from;
    if (f->pos == SRC_NONE && f->end != SRC_NONE && f->end > from)
        start = f->end;
    const char *r = start < s->end ? memchr(s->buf + start, c, s->end - start) : NULL;
    if (r) {
        f->pos = (size_t)(r - s->buf);
        f->end = SRC_NONE;
        return f->pos;
    }
    f->pos = SRC_NONE;
    f->end = s->end;
    return s->end;
}

static void src_find_shift(struct src_find *f, size_t by)
{
    if (f->pos != SRC_NONE)
        f->pos = f->pos >= by ? f->pos - by : SRC_NONE;
    if (f->pos == SRC_NONE)
        f->end = (f->end != SRC_NONE && f->end >= by) ? f->end - by : SRC_NONE;
}

/* Where the bytes still needed begin: the record in progress (of one too
 * long to keep, only the byte before the scan). */
static size_t src_keep(const struct exec_source *s)
{
    size_t keep = s->rec;
    if (s->discard)
        keep = s->p > 0 ? s->p - 1 : 0;
    return keep > s->end ? s->end : keep;
}

/* The bytes from keep on move to the start of to (which may be buf). */
static void src_move(struct exec_source *s, char *to, size_t keep)
{
    if (keep == 0 && to == s->buf)
        return;
    if (s->end > keep)
        memmove(to, s->buf + keep, s->end - keep);
    s->buf = to;
    s->end -= keep;
    s->base += keep;
    s->rec = s->rec >= keep ? s->rec - keep : 0;
    s->p -= keep;
    src_find_shift(&s->q, keep);
    src_find_shift(&s->nl, keep);
}

/* Regions: reads into what is left of the current one, or moves what is
 * still needed to a new one; EXEC_EAGAIN (not sticky) when none is free. */
static int src_fill_region(struct exec_source *s, size_t want, size_t *room)
{
    size_t keep = src_keep(s);
    const size_t least = want < 8192 ? want : 8192; /* worth a read */
    if (!s->in_region || s->cap - s->end < least) {
        size_t cap = 0;
        char *to = s->region_get(s->region_arg, s->end - keep + least + 1, &cap);
        if (!to)
            return EXEC_EAGAIN;
        char *own = s->in_region ? NULL : s->buf;
        src_move(s, to, keep);
        free(own);
        s->cap = cap - 1; /* one spare byte, as for our own buffer */
        s->in_region = true;
    }
    *room = s->cap - s->end;
    return 0;
}

int exec__source_regions(exec_source_t *s, char *(*get)(void *arg, size_t need, size_t *cap),
                         void *arg, size_t max_record)
{
    if (!s || !get || s->in_region || max_record == 0)
        return EXEC_EINVAL;
    s->region_get = get;
    s->region_arg = arg;
    s->own_max = s->o.max_record;
    if (max_record < s->o.max_record)
        s->o.max_record = max_record;
    return 0;
}

int exec__source_own(exec_source_t *s)
{
    if (!s)
        return EXEC_EINVAL;
    if (s->region_get) {
        s->region_get = NULL;
        s->o.max_record = s->own_max;
    }
    if (!s->in_region)
        return 0;
    /* What is still to be read moves to a buffer of our own. */
    size_t keep = src_keep(s), n = s->end - keep;
    size_t cap = n > s->o.read_size ? n : s->o.read_size;
    char *own = rec_malloc(cap + 1);
    if (!own)
        return s->ioerr = EXEC_ENOMEM;
    src_move(s, own, keep);
    s->cap = cap;
    s->in_region = false;
    return 0;
}

/*
 * Drops the bytes no longer needed and reads more: 0, or -errno (sticky),
 * or with regions EXEC_EAGAIN (call again later). Sets eof when read()
 * returns 0.
 */
static int src_fill(struct exec_source *s)
{
    /* Room for one read; a small regular file needs no more than its size
     * (+1 to see the end). */
    size_t want = s->o.read_size;
    if (s->size >= 0 && (uint64_t)s->size - (s->base + s->end) < want)
        want = (size_t)((uint64_t)s->size - (s->base + s->end)) + 1;
    size_t room;
    if (s->region_get) {
        int rc = src_fill_region(s, want, &room);
        if (rc)
            return rc;
        if (room > want)
            room = want;
        goto read;
    }
    src_move(s, s->buf, src_keep(s));
    if (s->cap - s->end < want) {
        size_t ncap = s->cap ? s->cap * 2 : want;
        while (ncap - s->end < want && ncap <= SIZE_MAX / 4)
            ncap *= 2;
        if (ncap - s->end < want || ncap > SIZE_MAX / 2)
            return s->ioerr = EXEC_ENOMEM;
        /* One spare byte past the data keeps lookahead reads in bounds. */
        char *nb = rec_realloc(s->buf, ncap + 1);
        if (!nb)
            return s->ioerr = EXEC_ENOMEM;
        s->buf = nb;
        s->cap = ncap;
    }
    room = s->cap - s->end;
    if (room > s->o.read_size)
        room = s->o.read_size;
read:
    for (;;) {
        ssize_t n = read(s->fd, s->buf + s->end, room);
        if (n > 0) {
            s->end += (size_t)n;
            return 0;
        }
        if (n == 0) {
            s->eof = true;
            return 0;
        }
        if (errno != EINTR)
            return s->ioerr = -errno;
    }
}

static void src_bad(struct exec_source *s, int code, uint64_t where)
{
    if (!s->bad) {
        s->bad = code;
        s->bad_where = where;
    }
}

/*
 * CSV: advances the scan. 1 when the record ends (its content ends at *cend,
 * the scan stands after its newline), 0 when more input is needed. At end of
 * input the caller handles what is left.
 */
static int src_scan_csv(struct exec_source *s, size_t *cend)
{
    const char *buf = s->buf;
    const char delim = (char)s->o.delim;
    size_t p = s->p;
    for (;;) {
        if (!s->quoted) {
            size_t nl = src_find(s, &s->nl, '\n', p);
            size_t q = src_find(s, &s->q, '"', p);
            if (q < nl) {
                /* A quote may only open a field. */
                if ((s->discard || q != s->rec) && buf[q - 1] != delim) {
                    src_bad(s, EXEC_EBADQUOTE, s->base + q);
                    p = q + 1;
                    continue;
                }
                s->quoted = true;
                s->quote_open = s->base + q;
                p = q + 1;
                continue;
            }
            if (nl < s->end) {
                s->p = nl + 1;
                *cend = nl;
                return 1;
            }
            s->p = s->end;
            return 0;
        }
        size_t q = src_find(s, &s->q, '"', p);
        if (q >= s->end) {
            s->p = s->end;
            return 0;
        }
        if (q + 1 == s->end) {
            if (!s->eof) {
                s->p = q; /* the byte after the quote decides */
                return 0;
            }
            s->quoted = false; /* a closing quote at end of input */
            s->p = s->end;
            return 0;
        }
        char c = buf[q + 1];
        if (c == '"') {
            p = q + 2; /* "" inside quotes */
            continue;
        }
        if (c == '\r' && q + 2 == s->end && !s->eof) {
            s->p = q; /* CRLF or a lone CR: the byte after the CR decides */
            return 0;
        }
        s->quoted = false;
        p = q + 1;
        /* A closing quote ends its field: a delimiter, a line end (LF, CRLF, or
         * a CR ending the input) must follow. A lone CR is data, so text. */
        if (c != delim && c != '\n' &&
            !(c == '\r' && (q + 2 == s->end || buf[q + 2] == '\n')))
            src_bad(s, EXEC_EBADQUOTE, s->base + q + 1);
    }
}

/* LINES: as src_scan_csv() without quotes. */
static int src_scan_lines(struct exec_source *s, size_t *cend)
{
    size_t nl = src_find(s, &s->nl, '\n', s->p);
    if (nl < s->end) {
        s->p = nl + 1;
        *cend = nl;
        return 1;
    }
    s->p = s->end;
    return 0;
}

/* Records the error of record s->recno, which began at input offset off. */
static void src_error(struct exec_source *s, int code, uint64_t off, uint64_t where,
                      uint64_t length, const void *data)
{
    s->err.code = code;
    s->err.record = s->recno;
    s->err.offset = off;
    s->err.where = where;
    s->err.length = length;
    s->err.data = data;
}

/* The next record of a text format (CSV or LINES): see exec_source_next(). */
static int src_next_text(struct exec_source *s, const void **rec, size_t *len)
{
    const bool csv = s->o.format == EXEC_SOURCE_CSV;
    for (;;) {
        size_t cend;
        int r = csv ? src_scan_csv(s, &cend) : src_scan_lines(s, &cend);
        bool last = false;
        if (r == 0) {
            if (!s->eof) {
                if (!s->discard && s->end - s->rec > s->o.max_record + 1)
                    s->discard = true;
                int rc = src_fill(s);
                if (rc)
                    return rc;
                continue;
            }
            /* End of input: what is left is the last record. */
            if (s->quoted) {
                s->recno++;
                uint64_t length = s->base + s->end - s->rec_off;
                bool big = s->discard || length > s->o.max_record;
                src_error(s, big ? EXEC_E2BIG : EXEC_EUNTERMINATED, s->rec_off,
                          big ? s->base + s->end : s->quote_open, length,
                          big ? NULL : s->buf + s->rec);
                s->done = true;
                s->rec = s->p = s->end;
                return s->err.code;
            }
            if (s->rec == s->end && !s->discard) {
                s->done = true;
                return 0;
            }
            cend = s->end;
            last = true;
        }
        size_t start = s->rec;
        s->recno++;
        /* In a dropped record the byte before cend is still kept. */
        if (cend > start && s->buf[cend - 1] == '\r')
            cend--;
        uint64_t length = s->base + cend - s->rec_off;
        uint64_t off = s->rec_off;
        int bad = s->bad;
        uint64_t where = s->bad_where;
        bool big = s->discard || length > s->o.max_record;
        s->rec = s->p;
        s->rec_off = s->base + s->p;
        s->discard = false;
        s->bad = 0;
        if (last)
            s->done = true;
        if (big) {
            src_error(s, EXEC_E2BIG, off, off + length, length, NULL);
            return EXEC_E2BIG;
        }
        if (bad) {
            src_error(s, bad, off, where, length, s->buf + start);
            return bad;
        }
        if (length == 0 && (s->o.flags & EXEC_SOURCE_SKIP_EMPTY)) {
            if (last)
                return 0;
            continue;
        }
        *rec = s->buf + start;
        *len = (size_t)length;
        return 1;
    }
}

/* The next length-prefixed record: see exec_source_next(). */
static int src_next_len32(struct exec_source *s, const void **rec, size_t *len)
{
    for (;;) {
        if (s->skip_left) {
            /* Dropping an oversized record's bytes. */
            size_t have = s->end - s->rec;
            size_t n = have < s->skip_left ? have : (size_t)s->skip_left;
            s->rec += n;
            s->skip_left -= n;
            if (s->skip_left == 0) {
                s->rec_off = s->base + s->rec;
                return EXEC_E2BIG; /* s->err was filled when it began */
            }
            if (s->eof) {
                s->done = true;
                src_error(s, EXEC_ETRUNCATED, s->rec_off, s->base + s->end, s->err.length, NULL);
                return EXEC_ETRUNCATED;
            }
            s->p = s->rec;
            int rc = src_fill(s);
            if (rc)
                return rc;
            continue;
        }
        size_t have = s->end - s->rec;
        if (have >= 4) {
            const unsigned char *h = (const unsigned char *)s->buf + s->rec;
            uint32_t n = s->o.format == EXEC_SOURCE_LEN32LE
                             ? (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 |
                                   (uint32_t)h[3] << 24
                             : (uint32_t)h[3] | (uint32_t)h[2] << 8 | (uint32_t)h[1] << 16 |
                                   (uint32_t)h[0] << 24;
            if (n > s->o.max_record) {
                s->recno++;
                s->rec_off = s->base + s->rec;
                src_error(s, EXEC_E2BIG, s->rec_off, s->rec_off + 4 + n, n, NULL);
                s->rec += 4;
                s->skip_left = n;
                continue;
            }
            if (have - 4 >= n) {
                s->recno++;
                *rec = s->buf + s->rec + 4;
                *len = n;
                s->rec += 4 + (size_t)n;
                s->p = s->rec;
                s->rec_off = s->base + s->rec;
                return 1;
            }
        }
        if (s->eof) {
            s->done = true;
            if (have == 0)
                return 0;
            s->recno++;
            src_error(s, EXEC_ETRUNCATED, s->rec_off, s->base + s->end, have, s->buf + s->rec);
            s->rec = s->p = s->end;
            return EXEC_ETRUNCATED;
        }
        s->p = s->rec;
        int rc = src_fill(s);
        if (rc)
            return rc;
    }
}

int exec_source_next(exec_source_t *s, const void **rec, size_t *len, uint64_t *recno)
{
    if (!s || !rec || !len)
        return EXEC_EINVAL;
    if (s->ioerr)
        return s->ioerr;
    if (s->done)
        return 0;
    int r = s->o.format == EXEC_SOURCE_LEN32LE || s->o.format == EXEC_SOURCE_LEN32BE
                ? src_next_len32(s, rec, len)
                : src_next_text(s, rec, len);
    if (r < 0 && r == s->ioerr) {
        s->err.code = r;
        s->err.record = s->recno + 1;
        s->err.offset = s->rec_off;
        s->err.where = s->base + s->end;
        s->err.length = 0;
        s->err.data = NULL;
    }
    if (recno)
        *recno = r == 1 ? s->recno : (r < 0 ? s->err.record : 0);
    return r;
}

const exec_source_error_t *exec_source_error(const exec_source_t *s)
{
    return s ? &s->err : NULL;
}

int exec_source_header(const exec_source_t *s, const void **rec, size_t *len)
{
    if (!s || !rec || !len)
        return EXEC_EINVAL;
    if (!s->has_hdr)
        return EXEC_ENOENT;
    *rec = s->hdr;
    *len = s->hdr_len;
    return 0;
}

uint64_t exec_source_offset(const exec_source_t *s)
{
    return s ? s->base + s->rec : 0;
}

int64_t exec_source_size(const exec_source_t *s)
{
    return s ? s->size : -1;
}

void exec_source_close(exec_source_t *s)
{
    if (!s)
        return;
    if (s->own_fd)
        close(s->fd);
    if (!s->in_region)
        free(s->buf);
    free(s->hdr);
    free(s);
}

static int src_open(exec_source_t **sp, int fd, bool own, const exec_source_options_t *opts)
{
    exec_source_options_t o;
    if (opts)
        o = *opts;
    else
        memset(&o, 0, sizeof o);
    if (o.format > EXEC_SOURCE_LEN32BE ||
        (o.flags & ~(EXEC_SOURCE_HEADER | EXEC_SOURCE_SKIP_EMPTY)) ||
        o.max_record > SRC_MAX_SIZE || o.read_size > SRC_MAX_SIZE || o.delim < 0 ||
        o.delim > 255 || o.delim == '"' || o.delim == '\n' || o.delim == '\r')
        return EXEC_EINVAL;
    if (o.delim == 0)
        o.delim = ',';
    if (o.max_record == 0)
        o.max_record = SRC_MAX_SIZE;
    if (o.read_size == 0)
        o.read_size = SRC_DEFAULT_READ;

    exec_source_t *s = rec_calloc(1, sizeof *s);
    if (!s)
        return EXEC_ENOMEM;
    s->o = o;
    s->fd = fd;
    s->own_fd = own;
    s->q.pos = s->nl.pos = SRC_NONE;
    s->q.end = s->nl.end = SRC_NONE;
    s->size = -1;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        off_t at = lseek(fd, 0, SEEK_CUR);
        s->size = st.st_size - (at > 0 ? at : 0);
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    if (o.flags & EXEC_SOURCE_HEADER) {
        const void *rec = NULL;
        size_t len = 0;
        int r = exec_source_next(s, &rec, &len, NULL);
        if (r < 0) {
            s->own_fd = false; /* the caller's open() result is closed by the caller */
            exec_source_close(s);
            return r;
        }
        if (r == 1) {
            s->hdr = rec_malloc(len + 1);
            if (!s->hdr) {
                s->own_fd = false;
                exec_source_close(s);
                return EXEC_ENOMEM;
            }
            if (len)
                memcpy(s->hdr, rec, len);
            s->hdr[len] = '\0';
            s->hdr_len = len;
            s->has_hdr = true;
        }
    }
    *sp = s;
    return 0;
}

int exec_source_open_fd(exec_source_t **sp, int fd, const exec_source_options_t *opts)
{
    if (!sp)
        return EXEC_EINVAL;
    *sp = NULL;
    if (fd < 0)
        return EXEC_EINVAL;
    return src_open(sp, fd, false, opts);
}

int exec_source_open(exec_source_t **sp, const char *path, const exec_source_options_t *opts)
{
    if (!sp)
        return EXEC_EINVAL;
    *sp = NULL;
    if (!path)
        return EXEC_EINVAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = src_open(sp, fd, true, opts);
    if (rc)
        close(fd);
    return rc;
}
