/*
 * The HTTP side, on libevent's evhttp: routes, the body of POST /classify cut
 * into records, replies (one result, or a document streamed line by line in
 * input order with chunked encoding), the mapping of a record's outcome to a
 * status code, and the book-keeping of client connections (a connection that
 * closes while its request is in flight; replies still being written when
 * the server drains).
 */
#include "serve.h"

#include <event2/http_struct.h> /* the request's HTTP version */
#include <event2/listener.h>
#include <errno.h>
#include <event2/keyvalq_struct.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------- */
/* Replies                                                                   */
/* ------------------------------------------------------------------------- */

static const char *content_type(const struct serve *s)
{
    return s->o.format == SF_CSV ? "text/csv; charset=utf-8" : "text/plain; charset=utf-8";
}

static void add_common_headers(struct serve *s, struct evhttp_request *http, int code)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(http);
    if (code == 503) {
        char v[16];
        snprintf(v, sizeof v, "%u", s->o.retry_after_s);
        evhttp_add_header(h, "Retry-After", v);
    }
    if (s->draining)
        evhttp_add_header(h, "Connection", "close");
}

/* The reply is handed to evhttp: from here on evhttp owns r->http. */
static void finished(struct serve *s, struct req *r, int code, size_t bytes)
{
    r->code = code;
    r->bytes = bytes;
    struct conn *c = r->conn;
    if (c) {
        c->cur = NULL;
        c->writing = true;
        s->writing++;
        evhttp_request_set_on_complete_cb(r->http, conn_reply_written, c);
    }
    metrics_request(s, code, serve_now_ns() - r->t0);
    access_log_line(s, r, r->nrec);
}

/* A whole reply at once: text/plain (errors, pages). */
static void reply_buf(struct serve *s, struct req *r, int code, const char *type,
                      struct evbuffer *body)
{
    struct evhttp_request *http = r->http;
    evhttp_add_header(evhttp_request_get_output_headers(http), "Content-Type", type);
    add_common_headers(s, http, code);
    size_t n = body ? evbuffer_get_length(body) : 0;
    finished(s, r, code, n);
    r->http = NULL;
    evhttp_send_reply(http, code, NULL, body);
}

void http_reply_text(struct serve *s, struct req *r, int code, const char *fmt, ...)
{
    struct evbuffer *b = evbuffer_new();
    if (b) {
        va_list ap;
        va_start(ap, fmt);
        evbuffer_add_vprintf(b, fmt, ap);
        va_end(ap);
    }
    reply_buf(s, r, code, "text/plain; charset=utf-8", b);
    if (b)
        evbuffer_free(b);
    req_settle(s, r);
}

/* What went wrong with a record, after its error name: one line, no newline. */
static void error_text(struct serve *s, struct evbuffer *b, int status, int user_code, int sig,
                       int exit_status, size_t len)
{
    evbuffer_add_printf(b, "%s: %s", exec_err_name(status), exec_strerror(status));
    switch (status) {
    case EXEC_EUSER: evbuffer_add_printf(b, " (code %d)", user_code); break;
    case EXEC_ECRASHED:
        if (sig)
            evbuffer_add_printf(b, " (killed by signal %d, %s)", sig, signal_name(sig));
        else
            evbuffer_add_printf(b, " (exited with status %d)", exit_status);
        break;
    case EXEC_ERECTIMEOUT:
        evbuffer_add_printf(b, " (ran past %u ms)", s->o.timeout_ms);
        break;
    case EXEC_E2BIG:
        evbuffer_add_printf(b, " (%zu bytes; --max-record is %zu)", len, s->o.max_record);
        break;
    case EXEC_ERESULT2BIG:
        evbuffer_add_printf(b, " (--max-result is %zu bytes)", s->o.max_result);
        break;
    default: break;
    }
}

/* A single record's result: its bytes (200), or its error (4xx/5xx). */
void http_reply_result(struct serve *s, struct req *r, const exec_result_t *res)
{
    struct evhttp_request *http = r->http;
    struct evbuffer *b = evhttp_request_get_output_buffer(http);
    struct evkeyvalq *h = evhttp_request_get_output_headers(http);
    char gen[24];
    snprintf(gen, sizeof gen, "%llu", (unsigned long long)res->generation);
    evhttp_add_header(h, "X-Context-Generation", gen);
    int code = status_of(res->status);
    if (res->status == 0) {
        evbuffer_add(b, res->data, res->len);
        if (res->len == 0 || ((const char *)res->data)[res->len - 1] != '\n')
            evbuffer_add(b, "\n", 1);
        evhttp_add_header(h, "Content-Type", content_type(s));
    } else {
        error_text(s, b, res->status, res->user_code, res->signal, res->exit_status, 0);
        evbuffer_add(b, "\n", 1);
        evhttp_add_header(h, "Content-Type", "text/plain; charset=utf-8");
    }
    add_common_headers(s, http, code);
    finished(s, r, code, evbuffer_get_length(b));
    r->http = NULL;
    evhttp_send_reply(http, code, NULL, NULL);
}

/* Appends record idx's line to r->out. */
static void doc_append(struct serve *s, struct req *r, uint32_t idx, int status, int user_code,
                       int sig, int exit_status, const void *data, size_t len)
{
    if (!r->out && !(r->out = evbuffer_new()))
        return;
    if (status == 0) {
        evbuffer_add(r->out, data, len);
        if (len == 0 || ((const char *)data)[len - 1] != '\n')
            evbuffer_add(r->out, "\n", 1);
        return;
    }
    evbuffer_add_printf(r->out, "!error %d record %u ", status_of(status), idx + 1);
    error_text(s, r->out, status, user_code, sig, exit_status, len);
    evbuffer_add(r->out, "\n", 1);
}

/*
 * Record idx of a document has its result. In its turn it becomes a line at
 * once (with the held results that follow it); out of turn it is held (the
 * ring has room: a document runs at most hold_cap records ahead).
 */
void http_doc_line(struct serve *s, struct req *r, uint32_t idx, int status, int user_code,
                   int sig, int exit_status, const void *data, size_t len)
{
    if (idx != r->next_emit) {
        if (!r->held && !(r->held = calloc(s->hold_cap, sizeof *r->held)))
            return;
        struct held *h = &r->held[idx % s->hold_cap];
        h->have = true;
        h->status = status;
        h->user_code = user_code;
        h->sig = sig;
        h->exit_status = exit_status;
        h->len = len;
        h->data = NULL;
        if (data && len && (h->data = malloc(len)))
            memcpy(h->data, data, len);
        return;
    }
    doc_append(s, r, idx, status, user_code, sig, exit_status, data, len);
    r->next_emit++;
    while (r->held && r->next_emit < r->nrec) {
        struct held *h = &r->held[r->next_emit % s->hold_cap];
        if (!h->have)
            break;
        doc_append(s, r, r->next_emit, h->status, h->user_code, h->sig, h->exit_status, h->data,
                   h->len);
        free(h->data);
        h->data = NULL;
        h->have = false;
        r->next_emit++;
    }
    if (!r->dirty) {
        r->dirty = true;
        r->next_dirty = s->dirty;
        s->dirty = r;
        pump_kick(s); /* the drain at the end of this pass sends it */
    }
}

/*
 * Sends a document's ready lines; ends the reply after its last record.
 * HTTP/1.0 has no chunked encoding, and evhttp frames a streamed reply to a
 * 1.0 keep-alive client with "Content-Length: 0": such a client gets the
 * whole document at once, when its last record is done.
 */
void http_doc_flush(struct serve *s, struct req *r)
{
    struct evhttp_request *http = r->http;
    if (!http)
        return;
    if (http->major == 1 && http->minor == 0) {
        if (r->next_emit < r->nrec)
            return;
        struct evkeyvalq *h = evhttp_request_get_output_headers(http);
        char n[16];
        snprintf(n, sizeof n, "%u", r->nrec);
        evhttp_add_header(h, "X-Records", n);
        reply_buf(s, r, 200, content_type(s), r->out);
        return;
    }
    if (!r->started) {
        r->started = true;
        struct evkeyvalq *h = evhttp_request_get_output_headers(http);
        char n[16];
        snprintf(n, sizeof n, "%u", r->nrec);
        evhttp_add_header(h, "X-Records", n);
        evhttp_add_header(h, "Content-Type", content_type(s));
        add_common_headers(s, http, 200);
        evhttp_send_reply_start(http, 200, NULL);
    }
    if (r->out && evbuffer_get_length(r->out)) {
        r->bytes += evbuffer_get_length(r->out);
        evhttp_send_reply_chunk(http, r->out);
    }
    if (r->next_emit == r->nrec) {
        finished(s, r, 200, r->bytes);
        r->http = NULL;
        evhttp_send_reply_end(http);
    }
}

/* ------------------------------------------------------------------------- */
/* Bodies                                                                    */
/* ------------------------------------------------------------------------- */

/* The end of the record that starts at p: its LF, or e. CSV looks at quotes
 * (an LF inside quotes belongs to the record); *open says one never closed. */
static const char *record_end(const char *p, const char *e, bool csv, bool *open)
{
    if (!csv) {
        const char *q = memchr(p, '\n', (size_t)(e - p));
        return q ? q : e;
    }
    for (;;) {
        const char *lf = memchr(p, '\n', (size_t)(e - p));
        const char *lim = lf ? lf : e;
        const char *quote = memchr(p, '"', (size_t)(lim - p));
        if (!quote)
            return lim;
        const char *close = memchr(quote + 1, '"', (size_t)(e - quote - 1));
        if (!close) {
            *open = true;
            return e;
        }
        p = close + 1;
    }
}

/*
 * Cuts the body into records. One record, without the header row: a single
 * classification (r->doc false). A body that starts with the header row, or
 * holds several records: a document. 0, or an HTTP status with r answered.
 */
static int split(struct serve *s, struct req *r, const char *b, size_t n)
{
    const bool csv = s->o.format == SF_CSV;
    const char *p = b, *e = b + n;
    uint32_t cap = 0;
    bool first = true, open = false;
    while (p < e) {
        const char *end = record_end(p, e, csv, &open);
        if (open) {
            http_reply_text(s, r, 400, "%s: %s (the record at byte %zu)\n",
                            exec_err_name(EXEC_EUNTERMINATED), exec_strerror(EXEC_EUNTERMINATED),
                            (size_t)(p - b));
            return 400;
        }
        size_t len = (size_t)(end - p);
        if (len && p[len - 1] == '\r')
            len--;
        if (first && s->header_row && len == s->header_len &&
            memcmp(p, s->header_row, len) == 0) {
            r->doc = true; /* a document, as a file would be: the header row first */
        } else {
            if (r->nrec == cap) {
                cap = cap ? 2 * cap : 1;
                struct span *ns = realloc(r->recs, cap * sizeof *ns);
                if (!ns) {
                    http_reply_text(s, r, 500, "out of memory\n");
                    return 500;
                }
                r->recs = ns;
            }
            r->recs[r->nrec].off = (uint32_t)(p - b);
            r->recs[r->nrec].len = (uint32_t)len;
            r->nrec++;
        }
        first = false;
        p = end < e ? end + 1 : e;
    }
    if (r->nrec > 1)
        r->doc = true;
    if (r->nrec == 0 && !r->doc) {
        http_reply_text(s, r, 400,
                        "empty body: POST one record, or a document of records%s\n",
                        s->header_row ? " under the header row" : "");
        return 400;
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Routes                                                                    */
/* ------------------------------------------------------------------------- */

static void classify(struct serve *s, struct req *r)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->http);
    size_t n = evbuffer_get_length(in);
    r->body = n ? (const char *)evbuffer_pullup(in, -1) : "";
    if (n && !r->body) {
        http_reply_text(s, r, 500, "out of memory\n");
        return;
    }
    if (split(s, r, r->body, n) != 0)
        return;
    if (s->fatal) {
        http_reply_text(s, r, 503, "%s: %s\n", exec_err_name(EXEC_EFATAL),
                        exec_strerror(EXEC_EFATAL));
        return;
    }
    if (r->doc && r->nrec == 0) {
        r->next_emit = 0;
        if (!r->dirty) {
            r->dirty = true;
            r->next_dirty = s->dirty;
            s->dirty = r;
        }
        pump_kick(s);
        return;
    }
    int rc = pump_request(s, r);
    if (rc == EXEC_EAGAIN) {
        metrics_record(s, O_REJECTED);
        http_reply_text(s, r, 503, "%s: the window of %u records is full; retry later\n",
                        exec_err_name(EXEC_EAGAIN), s->o.window);
        return;
    }
    if (rc && !r->doc) {
        if (rc == EXEC_E2BIG)
            metrics_record(s, O_TOO_BIG);
        struct evbuffer *b = evbuffer_new();
        if (b) {
            error_text(s, b, rc, 0, 0, 0, r->recs[0].len);
            evbuffer_add(b, "\n", 1);
        }
        reply_buf(s, r, status_of(rc), "text/plain; charset=utf-8", b);
        if (b)
            evbuffer_free(b);
        req_settle(s, r);
        return;
    }
    if (rc) {
        pump_fail_all(s, rc);
        return;
    }
    req_settle(s, r);
}

static void health(struct serve *s, struct req *r)
{
    if (s->fatal)
        http_reply_text(s, r, 503, "fatal: %s: %s\n", exec_err_name(EXEC_EFATAL),
                        exec_strerror(EXEC_EFATAL));
    else if (s->draining)
        http_reply_text(s, r, 503, "draining: shutting down\n");
    else
        http_reply_text(s, r, 200, "ok: backend %s, generation %llu, %llu records in flight\n",
                        s->inl ? "inline" : exec_backend_name(exec_backend(s->ex)),
                        (unsigned long long)s->generation,
                        (unsigned long long)s->records_in_flight);
}

static void metrics(struct serve *s, struct req *r)
{
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        http_reply_text(s, r, 500, "out of memory\n");
        return;
    }
    metrics_page(s, b);
    reply_buf(s, r, 200, "text/plain; version=0.0.4; charset=utf-8", b);
    evbuffer_free(b);
    req_settle(s, r);
}

static void reload(struct serve *s, struct req *r)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->http);
    size_t n = evbuffer_get_length(in);
    const char *spec = n ? (const char *)evbuffer_pullup(in, -1) : NULL;
    while (n && (spec[n - 1] == '\n' || spec[n - 1] == '\r'))
        n--;
    if (n && memchr(spec, '\0', n)) {
        http_reply_text(s, r, 400, "bad spec: it holds a NUL byte\n");
        return;
    }
    reload_request(s, n ? spec : NULL, n, r);
}

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "?";
    }
}

static void not_allowed(struct serve *s, struct req *r, const char *allow)
{
    evhttp_add_header(evhttp_request_get_output_headers(r->http), "Allow", allow);
    http_reply_text(s, r, 405, "method not allowed: use %s\n", allow);
}

static void on_request(struct evhttp_request *http, void *arg)
{
    struct serve *s = arg;
    struct req *r = req_new(s, http);
    if (!r) {
        evhttp_send_error(http, 500, "out of memory");
        return;
    }
    struct evhttp_connection *evcon = evhttp_request_get_connection(http);
    r->conn = conn_of(s, evcon);
    if (!r->conn) {
        http_reply_text(s, r, 500, "out of memory\n");
        return;
    }
    r->conn->cur = r;
    enum evhttp_cmd_type m = evhttp_request_get_command(http);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(http);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path)
        path = "";
    if (s->log) {
        char *peer = NULL;
        ev_uint16_t port = 0;
        evhttp_connection_get_peer(evcon, &peer, &port);
        snprintf(r->line, sizeof r->line, "%s:%u \"%s %.100s\"", peer ? peer : "-", port,
                 method_name(m), evhttp_request_get_uri(http));
    }
    bool get = m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD;
    if (s->draining) {
        http_reply_text(s, r, 503, "shutting down\n");
    } else if (strcmp(path, "/classify") == 0) {
        if (m == EVHTTP_REQ_POST)
            classify(s, r);
        else
            not_allowed(s, r, "POST");
    } else if (strcmp(path, "/metrics") == 0) {
        if (get)
            metrics(s, r);
        else
            not_allowed(s, r, "GET, HEAD");
    } else if (strcmp(path, "/healthz") == 0) {
        if (get)
            health(s, r);
        else
            not_allowed(s, r, "GET, HEAD");
    } else if (s->o.admin && strcmp(path, "/admin/reload") == 0) {
        if (m == EVHTTP_REQ_POST)
            reload(s, r);
        else
            not_allowed(s, r, "POST");
    } else {
        http_reply_text(s, r, 404, "not found: %s (try POST /classify, GET /metrics, GET /healthz%s)\n",
                        path, s->o.admin ? ", POST /admin/reload" : "");
    }
}

/* Out of descriptors, accept() fails while the connection waits in the
 * backlog: the listener rests 100 ms rather than spin (as nginx does). The
 * listener is evhttp's, and so is its callbacks' argument. */
static struct serve *listening;

static void on_accept_rested(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct serve *s = arg;
    if (s->bound)
        evconnlistener_enable(evhttp_bound_socket_get_listener(s->bound));
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    (void)arg;
    struct serve *s = listening;
    int err = EVUTIL_SOCKET_ERROR();
    if (s->accept_errors++ % 100 == 0)
        serve_log("accept: %s%s (%llu times so far); new connections wait", strerror(err),
                  err == EMFILE || err == ENFILE ? ": too many open descriptors" : "",
                  (unsigned long long)s->accept_errors);
    evconnlistener_disable(l);
    struct timeval tv = {0, 100000};
    event_base_once(s->base, -1, EV_TIMEOUT, on_accept_rested, s, &tv);
}

int http_start(struct serve *s, int listen_fd)
{
    s->http = evhttp_new(s->base);
    if (!s->http)
        return -1;
    evhttp_set_gencb(s->http, on_request, s);
    /* Every method reaches on_request, which answers 405 itself. */
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_max_body_size(s->http, (ev_ssize_t)s->o.max_body);
    evhttp_set_max_headers_size(s->http, 64 * 1024);
    evhttp_set_timeout(s->http, (int)s->o.idle_timeout_s);
    /* A body over --max-body is read to its end before the 413 goes out, so
     * that the client sees the reply rather than a reset. */
    evhttp_set_flags(s->http, EVHTTP_SERVER_LINGERING_CLOSE);
    s->bound = evhttp_accept_socket_with_handle(s->http, listen_fd);
    if (!s->bound)
        return -1;
    listening = s;
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(s->bound), on_accept_error);
    return 0;
}
