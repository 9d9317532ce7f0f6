/*
 * The body of POST /classify cut into records, without holding the loop: a
 * body is copied out of evhttp's buffer and scanned a slice at a time, one
 * slice per loop turn (pump.c's step queue), so that other connections are
 * served between slices whatever the body holds.
 *
 * The scan is one linear pass, quote-aware for CSV as the library's sources
 * are (records/csv.c): it looks for two bytes, '"' and '\n', each with
 * memchr(), and remembers where the next of each lies, so no byte is looked
 * at twice; a quote toggles "inside quotes" (so "" inside quotes is two
 * toggles), and outside quotes an LF ends the record (a CR before it is
 * dropped). The cap on records (--max-records) is checked as they are found.
 */
#include "serve.h"

#include <stdlib.h>
#include <string.h>

#define COPY_SLICE (1u << 20) /* bytes copied out of evhttp's buffer per turn */
#define SCAN_BYTES (1u << 20) /* bytes scanned per turn, at most */
#define SCAN_EVENTS 16384u    /* records and quotes per turn, at most */

void body_free(struct req *r)
{
    if (r->body_owned)
        free((void *)r->body);
    r->body = NULL;
    r->body_owned = false;
}

/*
 * Starts cutting r's body: 0 (it goes on in body_step()), or an HTTP status
 * with r answered.
 */
int body_start(struct serve *s, struct req *r)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->http);
    size_t n = evbuffer_get_length(in);
    struct scan *sc = &r->sc;
    memset(sc, 0, sizeof *sc);
    sc->n = n;
    sc->first = true;
    if (n == 0) {
        r->body = "";
    } else if ((size_t)evbuffer_get_contiguous_space(in) == n) {
        r->body = (const char *)evbuffer_pullup(in, -1); /* one chain already: no copy */
        sc->have = n;
    } else {
        char *b = malloc(n);
        if (!b) {
            http_reply_text(s, r, 500, "out of memory\n");
            return 500;
        }
        r->body = b;
        r->body_owned = true;
    }
    r->scanning = true;
    return 0;
}

/* The next ch at or after from, below end: end when none. *at and *lim
 * remember the last search: *at < *lim is a find, else none below *lim. */
static size_t next_of(const char *b, size_t from, size_t end, int ch, size_t *at, size_t *lim)
{
    if (*at < *lim && *at >= from)
        return *at;
    size_t start = from;
    if (*at >= *lim && *lim > from)
        start = *lim; /* none in [from, *lim) */
    const char *p = start < end ? memchr(b + start, ch, end - start) : NULL;
    *at = p ? (size_t)(p - b) : end;
    *lim = end;
    return *at;
}

/* Record [off, end) (its LF not included). false with r answered. */
static bool add_record(struct serve *s, struct req *r, size_t off, size_t end)
{
    struct scan *sc = &r->sc;
    size_t len = end - off;
    if (len && r->body[off + len - 1] == '\r')
        len--;
    if (sc->first && s->header_row && len == s->header_len &&
        memcmp(r->body + off, s->header_row, len) == 0) {
        sc->first = false;
        r->doc = true; /* a document, as a file would be: the header row first */
        return true;
    }
    sc->first = false;
    if (r->nrec >= s->o.max_records) {
        metrics_refused(s, R_TOO_MANY_RECORDS);
        http_reply_text(s, r, 413, "%s: more than %u records in one request (--max-records)\n",
                        exec_err_name(EXEC_E2BIG), s->o.max_records);
        return false;
    }
    if (r->nrec == sc->cap) {
        uint32_t cap = sc->cap ? 2 * sc->cap : 16;
        if (cap > s->o.max_records)
            cap = s->o.max_records;
        struct span *ns = realloc(r->recs, (size_t)cap * sizeof *ns);
        if (!ns) {
            http_reply_text(s, r, 500, "out of memory\n");
            return false;
        }
        r->recs = ns;
        sc->cap = cap;
    }
    r->recs[r->nrec].off = (uint32_t)off;
    r->recs[r->nrec].len = (uint32_t)len;
    r->nrec++;
    return true;
}

/*
 * One slice of the work: copies and scans a part of the body. True when the
 * body is done (r->scanning false: r is answered, or http_body_ready() took
 * it); false when there is more for the next turn.
 */
bool body_step(struct serve *s, struct req *r)
{
    struct scan *sc = &r->sc;
    if (!r->conn) {
        r->scanning = false; /* its client left */
        return true;
    }
    if (sc->have < sc->n) {
        struct evbuffer *in = evhttp_request_get_input_buffer(r->http);
        size_t k = sc->n - sc->have < COPY_SLICE ? sc->n - sc->have : COPY_SLICE;
        if (evbuffer_remove(in, (char *)r->body + sc->have, k) != (int)k) {
            r->scanning = false;
            http_reply_text(s, r, 500, "cannot read the body\n");
            return true;
        }
        sc->have += k;
    }
    const bool csv = s->o.format == SF_CSV;
    const char *b = r->body;
    size_t end = sc->have;
    if (end - sc->pos > SCAN_BYTES)
        end = sc->pos + SCAN_BYTES;
    unsigned events = 0;
    while (sc->pos < end && events < SCAN_EVENTS) {
        if (csv && sc->quoted) {
            size_t q = next_of(b, sc->pos, end, '"', &sc->nq, &sc->nq_lim);
            if (q == end) {
                sc->pos = end;
                break;
            }
            sc->quoted = false;
            sc->pos = q + 1;
            events++;
            continue;
        }
        size_t lf = next_of(b, sc->pos, end, '\n', &sc->nl, &sc->nl_lim);
        size_t q = csv ? next_of(b, sc->pos, lf, '"', &sc->nq, &sc->nq_lim) : lf;
        if (q < lf) {
            sc->quoted = true;
            sc->pos = q + 1;
            events++;
            continue;
        }
        if (lf == end) {
            sc->pos = end;
            break;
        }
        if (!add_record(s, r, sc->rec, lf)) {
            r->scanning = false;
            return true;
        }
        sc->pos = sc->rec = lf + 1;
        events++;
    }
    if (sc->pos < sc->n)
        return false; /* more next turn */
    r->scanning = false;
    if (sc->quoted) {
        http_reply_text(s, r, 400, "%s: %s (the record at byte %zu)\n",
                        exec_err_name(EXEC_EUNTERMINATED), exec_strerror(EXEC_EUNTERMINATED),
                        sc->rec);
        return true;
    }
    if (sc->rec < sc->n && !add_record(s, r, sc->rec, sc->n))
        return true;
    http_body_ready(s, r);
    return true;
}
