/*
 * HTTP/1.1 request framing, checked on the raw bytes before evhttp reads
 * them. evhttp is lenient where leniency lets a request be read two ways
 * (two Content-Length fields: the first wins; "+7"; bare LF line ends; folded
 * lines; a NUL that ends a value early), so every connection's bytes go
 * through this parser first: conn.c runs it from a callback on the socket's
 * input buffer, which libevent calls as bytes arrive, before evhttp's read
 * callback looks at them. Each line is checked when its LF arrives (evhttp
 * reads only whole lines), and a body is followed by its length; what is
 * refused never reaches evhttp (conn.c drops it from the buffer and answers
 * with a reply of its own, then closes the connection).
 *
 * Decisions, after RFC 9112 (and RFC 9110 for field values):
 *   - lines end with CRLF; a bare LF or bare CR is refused (2.2 allows a
 *     bare LF, but a peer that reads it otherwise is a smuggling vector);
 *   - an empty line before the request line is refused (2.2: SHOULD ignore;
 *     evhttp does not, and bytes cannot be taken out of its buffer);
 *   - request line: token SP target SP HTTP/1.x, nothing else; other major
 *     versions 505; a method evhttp does not know 501;
 *   - a field line starting with whitespace (obs-fold, or whitespace after
 *     the request line) 400 (5.2: reject or replace; we reject); whitespace
 *     before the colon 400 (5.1: MUST);
 *   - field values: NUL, CR, LF and every other control byte but HTAB 400
 *     (RFC 9110 5.5: MUST reject or replace NUL/CR/LF; the rest we reject);
 *   - Content-Length: digits only, one field, one value; anything else 400
 *     (a list of equal values may be folded by RFC 9110 8.6; we refuse it),
 *     over --max-body 413 at once, from the header;
 *   - Transfer-Encoding: exactly "chunked", once; other codings 501; with a
 *     Content-Length, or in an HTTP/1.0 request, 400 (6.1, 6.3);
 *   - HTTP/1.1 without Host, or with two, 400 (3.2);
 *   - HEAD and TRACE with a body 400 (evhttp reads none for them: the body
 *     would be read as the next request);
 *   - chunk sizes: hex digits only (at most 15), CRLF after each chunk's
 *     data, trailer fields checked as header fields; a bad one 400, a body
 *     that grows past --max-body 413; chunk extensions 400 (7.1.1 says
 *     ignore them, but evhttp refuses them, and cannot be given the chunk
 *     without them);
 *   - a line over 8 KiB 431 (the request line: 414), a header section or
 *     trailer over 64 KiB 431.
 *
 * Offsets are absolute (bytes since the connection began); the buffer's first
 * byte is at `base`, which grows as evhttp reads. Each byte is examined once
 * (LF is searched from where the last search stopped).
 */
#include "serve.h"

#include <string.h>
#include <strings.h>

#define LINE_MAX_B (8u << 10)
#define HEAD_MAX_B (64u << 10)
#define CHUNK_LINE_MAX_B 4096u

static bool tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A field value byte: HTAB, SP, visible ASCII, obs-text. */
static bool vchar(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int refuse(struct frame *f, int code, const char *why)
{
    f->why = why;
    f->st = FR_REFUSED;
    return code;
}

static const char *const methods[] = {"GET",     "POST",    "HEAD",  "PUT",  "DELETE",
                                      "OPTIONS", "TRACE",   "CONNECT", "PATCH"};

/* The request line (len bytes, without its CRLF). 0 or a status. */
static int request_line(struct frame *f, const char *l, size_t len)
{
    size_t i = 0;
    while (i < len && tchar((unsigned char)l[i]))
        i++;
    size_t mlen = i;
    if (mlen == 0 || i >= len || l[i] != ' ')
        return refuse(f, 400, "malformed request line");
    size_t t0 = ++i;
    while (i < len && l[i] > 0x20 && l[i] < 0x7f)
        i++;
    if (i == t0 || i >= len || l[i] != ' ')
        return refuse(f, 400, "malformed request line");
    i++;
    if (len - i != 8 || memcmp(l + i, "HTTP/", 5) != 0 || l[i + 5] < '0' || l[i + 5] > '9' ||
        l[i + 6] != '.' || l[i + 7] < '0' || l[i + 7] > '9')
        return refuse(f, 400, "malformed request line");
    if (l[i + 5] != '1')
        return refuse(f, 505, "only HTTP/1.0 and HTTP/1.1 are served");
    f->http10 = l[i + 7] == '0';
    bool known = false;
    for (size_t k = 0; k < sizeof methods / sizeof methods[0] && !known; k++)
        known = strlen(methods[k]) == mlen && memcmp(methods[k], l, mlen) == 0;
    if (!known)
        return refuse(f, 501, "method not implemented");
    f->no_body = (mlen == 4 && memcmp(l, "HEAD", 4) == 0) ||
                 (mlen == 5 && memcmp(l, "TRACE", 5) == 0);
    return 0;
}

static bool name_is(const char *l, size_t n, const char *name)
{
    return strlen(name) == n && strncasecmp(l, name, n) == 0;
}

/* A field line (without its CRLF), of the header section or (trailer) the
 * trailer section. 0 or a status. */
static int field_line(struct frame *f, const char *l, size_t len, bool trailer, uint64_t max_body)
{
    if (l[0] == ' ' || l[0] == '\t')
        return refuse(f, 400, "obsolete line folding (a field line starting with whitespace)");
    size_t i = 0;
    while (i < len && tchar((unsigned char)l[i]))
        i++;
    if (i == len || l[i] != ':')
        return refuse(f, 400, i < len && (l[i] == ' ' || l[i] == '\t')
                                   ? "whitespace between a field name and its colon"
                                   : "malformed field line");
    if (i == 0)
        return refuse(f, 400, "malformed field line");
    size_t nlen = i++;
    for (size_t k = i; k < len; k++)
        if (!vchar((unsigned char)l[k]))
            return refuse(f, 400, "a control character in a field value");
    while (i < len && (l[i] == ' ' || l[i] == '\t'))
        i++;
    size_t e = len;
    while (e > i && (l[e - 1] == ' ' || l[e - 1] == '\t'))
        e--;
    const char *v = l + i;
    size_t vlen = e - i;
    if (trailer)
        return 0;
    if (name_is(l, nlen, "content-length")) {
        if (f->has_cl)
            return refuse(f, 400, "more than one Content-Length");
        f->has_cl = true;
        if (vlen == 0)
            return refuse(f, 400, "Content-Length is not a number");
        uint64_t n = 0;
        for (size_t k = 0; k < vlen; k++) {
            if (v[k] < '0' || v[k] > '9')
                return refuse(f, 400, "Content-Length is not a number");
            if (n <= max_body)
                n = n * 10 + (uint64_t)(v[k] - '0');
        }
        f->cl = n;
    } else if (name_is(l, nlen, "transfer-encoding")) {
        if (f->chunked)
            return refuse(f, 400, "more than one Transfer-Encoding");
        if (vlen != 7 || strncasecmp(v, "chunked", 7) != 0)
            return refuse(f, 501, "a transfer coding other than chunked");
        f->chunked = true;
    } else if (name_is(l, nlen, "host")) {
        if (f->has_host)
            return refuse(f, 400, "more than one Host");
        f->has_host = true;
    }
    return 0;
}

/* The header section is complete: how the body is framed. 0 or a status. */
static int header_done(struct frame *f, uint64_t max_body)
{
    if (!f->http10 && !f->has_host)
        return refuse(f, 400, "an HTTP/1.1 request without Host");
    if (f->chunked && f->http10)
        return refuse(f, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (f->chunked && f->has_cl)
        return refuse(f, 400, "both Transfer-Encoding and Content-Length");
    if (f->no_body && (f->chunked || f->cl))
        return refuse(f, 400, "a HEAD or TRACE request with a body");
    if (f->has_cl && f->cl > max_body)
        return refuse(f, 413, "the body is larger than --max-body");
    return 0;
}

#define TOO_LONG (-1)

/*
 * The next whole line from f->line on: 1 with its length (without CRLF) in
 * *len and its bytes in buf; 0 when its LF has not come; TOO_LONG; or a
 * refusal's status (a bare LF or CR).
 */
static int next_line(struct frame *f, struct evbuffer *b, uint64_t base, char *buf, size_t cap,
                     size_t *len)
{
    uint64_t end = base + evbuffer_get_length(b);
    if (f->scan < f->line)
        f->scan = f->line;
    if (f->scan < end) {
        struct evbuffer_ptr p;
        if (evbuffer_ptr_set(b, &p, (size_t)(f->scan - base), EVBUFFER_PTR_SET) != 0)
            return refuse(f, 500, "lost track of the input");
        struct evbuffer_ptr lf = evbuffer_search(b, "\n", 1, &p);
        if (lf.pos >= 0) {
            uint64_t at = base + (uint64_t)lf.pos;
            size_t n = (size_t)(at - f->line); /* before the LF, its CR included */
            f->scan = at + 1;
            if (n + 1 > cap)
                return TOO_LONG;
            struct evbuffer_ptr from;
            evbuffer_ptr_set(b, &from, (size_t)(f->line - base), EVBUFFER_PTR_SET);
            if (evbuffer_copyout_from(b, &from, buf, n + 1) != (ev_ssize_t)(n + 1))
                return refuse(f, 500, "lost track of the input");
            if (n == 0 || buf[n - 1] != '\r')
                return refuse(f, 400, "a line ending in a bare LF");
            if (memchr(buf, '\r', n - 1))
                return refuse(f, 400, "a bare CR");
            *len = n - 1;
            return 1;
        }
        f->scan = end;
    }
    if (end - f->line + 1 > cap)
        return TOO_LONG;
    return 0;
}

/* A chunk-size line: 1*HEXDIG, nothing after. 0 or a status. */
static int chunk_size(struct frame *f, const char *l, size_t len, uint64_t *size)
{
    size_t i = 0;
    uint64_t n = 0;
    while (i < len && ((l[i] >= '0' && l[i] <= '9') || ((l[i] | 0x20) >= 'a' && (l[i] | 0x20) <= 'f'))) {
        if (i == 15)
            return refuse(f, 400, "a chunk size with more than 15 digits");
        n = n * 16 + (uint64_t)(l[i] <= '9' ? l[i] - '0' : (l[i] | 0x20) - 'a' + 10);
        i++;
    }
    if (i == 0)
        return refuse(f, 400, "a bad chunk size");
    if (i < len)
        return refuse(f, 400, l[i] == ';' || l[i] == ' ' || l[i] == '\t'
                                  ? "chunk extensions are not supported"
                                  : "a bad chunk size");
    *size = n;
    return 0;
}

static void request_done(struct frame *f, unsigned *ev)
{
    f->st = FR_IDLE;
    f->done++;
    *ev |= FE_DONE;
}

int frame_feed(struct frame *f, struct evbuffer *b, uint64_t base, uint64_t max_body,
               unsigned *ev)
{
    uint64_t end = base + evbuffer_get_length(b);
    char buf[LINE_MAX_B + 2];
    for (;;) {
        switch (f->st) {
        case FR_IDLE:
            if (f->pos >= end)
                return 0;
            f->st = FR_HEAD;
            f->req = f->line = f->scan = f->pos;
            f->http10 = f->no_body = f->has_cl = f->has_host = f->chunked = f->got_line = false;
            f->cl = f->body = 0;
            *ev |= FE_HEAD;
            /* fall through */
        case FR_HEAD:
        case FR_TRAILER: {
            const bool trailer = f->st == FR_TRAILER;
            size_t len;
            int rc = next_line(f, b, base, buf, sizeof buf, &len);
            if (rc == TOO_LONG) {
                if (!trailer && !f->got_line)
                    return refuse(f, 414, "the request line is too long");
                return refuse(f, 431, "a header line is too long");
            }
            if (rc > 1)
                return rc;
            if (rc == 0) {
                if (end - f->req > HEAD_MAX_B)
                    return refuse(f, 431, "the header section is too large");
                return 0;
            }
            uint64_t after = f->scan; /* the byte after this line's LF */
            if (after - f->req > HEAD_MAX_B)
                return refuse(f, 431, "the header section is too large");
            f->line = f->pos = after;
            if (len == 0 && trailer) {
                request_done(f, ev);
                break;
            }
            if (len == 0 && !f->got_line)
                return refuse(f, 400, "an empty line before the request line");
            if (len == 0) {
                if ((rc = header_done(f, max_body)) != 0)
                    return rc;
                if (f->chunked) {
                    f->st = FR_CHUNK_SIZE;
                    *ev |= FE_BODY;
                } else if (f->cl) {
                    f->st = FR_BODY;
                    f->left = f->cl;
                    *ev |= FE_BODY;
                } else {
                    request_done(f, ev);
                }
                break;
            }
            rc = !trailer && !f->got_line ? request_line(f, buf, len)
                                           : field_line(f, buf, len, trailer, max_body);
            if (rc)
                return rc;
            f->got_line = true;
            break;
        }
        case FR_BODY:
        case FR_CHUNK_DATA: {
            uint64_t n = end - f->pos < f->left ? end - f->pos : f->left;
            f->pos += n;
            f->left -= n;
            if (f->left)
                return 0;
            if (f->st == FR_BODY)
                request_done(f, ev);
            else
                f->st = FR_CHUNK_END;
            break;
        }
        case FR_CHUNK_END: {
            if (end - f->pos < 2)
                return 0;
            char crlf[2];
            struct evbuffer_ptr from;
            evbuffer_ptr_set(b, &from, (size_t)(f->pos - base), EVBUFFER_PTR_SET);
            if (evbuffer_copyout_from(b, &from, crlf, 2) != 2)
                return refuse(f, 500, "lost track of the input");
            if (crlf[0] != '\r' || crlf[1] != '\n')
                return refuse(f, 400, "chunk data not followed by CRLF");
            f->pos += 2;
            f->line = f->scan = f->pos;
            f->st = FR_CHUNK_SIZE;
            break;
        }
        case FR_CHUNK_SIZE: {
            size_t len;
            int rc = next_line(f, b, base, buf, CHUNK_LINE_MAX_B + 2, &len);
            if (rc == TOO_LONG)
                return refuse(f, 400, "a chunk size line is too long");
            if (rc != 1)
                return rc;
            uint64_t size;
            if ((rc = chunk_size(f, buf, len, &size)) != 0)
                return rc;
            f->line = f->pos = f->scan;
            if (size == 0) {
                f->st = FR_TRAILER;
                f->req = f->pos; /* the trailer's size counts from here */
                break;
            }
            f->body += size;
            if (f->body > max_body)
                return refuse(f, 413, "the body is larger than --max-body");
            f->left = size;
            f->st = FR_CHUNK_DATA;
            break;
        }
        case FR_REFUSED:
        default:
            return 0;
        }
    }
}

bool frame_in_body(const struct frame *f)
{
    return f->st == FR_BODY || f->st == FR_CHUNK_SIZE || f->st == FR_CHUNK_DATA ||
           f->st == FR_CHUNK_END || f->st == FR_TRAILER;
}
