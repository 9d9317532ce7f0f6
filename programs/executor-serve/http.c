/*
 * The HTTP side, on libevent's evhttp: routes (the public listener's and the
 * admin listener's), replies (one result, or a document streamed line by
 * line in input order with chunked encoding), and the mapping of a record's
 * outcome to a status code. Bodies are cut into records by body.c; the
 * connections themselves (limits, deadlines, framing) are conn.c's.
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
        if (data && len && (h->data = malloc(len))) {
            memcpy(h->data, data, len);
            r->held_bytes += len;
        }
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
        if (h->data)
            r->held_bytes -= h->len;
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
 * 1.0 keep-alive client with "Content-Length: 0": such a client's keep-alive
 * is dropped, and its document streams to the end of the connection.
 */
void http_doc_flush(struct serve *s, struct req *r)
{
    struct evhttp_request *http = r->http;
    if (!http)
        return;
    if (!r->started) {
        r->started = true;
        struct evkeyvalq *h = evhttp_request_get_output_headers(http);
        if (http->major == 1 && http->minor == 0) {
            evhttp_remove_header(evhttp_request_get_input_headers(http), "Connection");
            evhttp_add_header(h, "Connection", "close");
        }
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
/* Routes                                                                    */
/* ------------------------------------------------------------------------- */

static void classify(struct serve *s, struct req *r)
{
    if (s->fatal) {
        http_reply_text(s, r, 503, "%s: %s\n", exec_err_name(EXEC_EFATAL),
                        exec_strerror(EXEC_EFATAL));
        return;
    }
    if (body_start(s, r) != 0)
        return;
    pump_step(s, r); /* cut into records from the next loop turn on */
}

/* r's body is cut into records: they go in. */
void http_body_ready(struct serve *s, struct req *r)
{
    if (r->nrec > 1)
        r->doc = true;
    if (r->nrec == 0 && !r->doc) {
        http_reply_text(s, r, 400,
                        "empty body: POST one record, or a document of records%s\n",
                        s->header_row ? " under the header row" : "");
        return;
    }
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
    char why[200];
    if (s->fatal)
        http_reply_text(s, r, 503, "fatal: %s: %s\n", exec_err_name(EXEC_EFATAL),
                        exec_strerror(EXEC_EFATAL));
    else if (s->draining)
        http_reply_text(s, r, 503, "draining: shutting down\n");
    else if (serve_unhealthy(s, why, sizeof why))
        http_reply_text(s, r, 503, "unhealthy: %s\n", why);
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

#define SPEC_MAX 4096

/* POST /admin/reload (the admin listener only): the operator's --spec, or
 * with --admin-spec the spec in the body. */
static void reload(struct serve *s, struct req *r)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->http);
    size_t n = evbuffer_get_length(in);
    if (n && !s->o.admin_spec) {
        http_reply_text(s, r, 403,
                        "forbidden: a spec in the body needs --admin-spec; an empty body "
                        "rebuilds the context from --spec\n");
        return;
    }
    if (n > SPEC_MAX) {
        http_reply_text(s, r, 413, "a spec is %d bytes at most\n", SPEC_MAX);
        return;
    }
    const char *spec = n ? (const char *)evbuffer_pullup(in, -1) : NULL;
    while (n && (spec[n - 1] == '\n' || spec[n - 1] == '\r'))
        n--;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)spec[i] < 0x20 || spec[i] == 0x7f) {
            http_reply_text(s, r, 400, "bad spec: it holds a control character\n");
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
    struct evhttp_connection *evcon = evhttp_request_get_connection(http);
    struct conn *c = conn_of(s, evcon);
    if (!c) {
        /* Not a connection of ours (out of memory when it came): no checks
         * were made on it, so nothing of it is served. */
        evhttp_send_error(http, 503, "Service Unavailable");
        return;
    }
    struct req *r = req_new(s, http);
    if (!r) {
        evhttp_send_error(http, 500, "out of memory");
        return;
    }
    r->conn = c;
    c->cur = r;
    enum evhttp_cmd_type m = evhttp_request_get_command(http);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(http);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path)
        path = "";
    if (s->log) {
        char *peer = NULL;
        ev_uint16_t port = 0;
        evhttp_connection_get_peer(evcon, &peer, &port);
        const char *target = evhttp_request_get_uri(http);
        char esc[128];
        snprintf(r->line, sizeof r->line, "%s%s:%u \"%s %s\"", c->admin ? "admin " : "",
                 peer ? peer : "-", port, method_name(m),
                 serve_escape(esc, sizeof esc, target, strlen(target)));
    }
    bool get = m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD;
    if (s->draining) {
        http_reply_text(s, r, 503, "shutting down\n");
    } else if (!c->admin && strcmp(path, "/classify") == 0) {
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
    } else if (c->admin && strcmp(path, "/admin/reload") == 0) {
        if (m == EVHTTP_REQ_POST)
            reload(s, r);
        else
            not_allowed(s, r, "POST");
    } else {
        char esc[128];
        http_reply_text(s, r, 404, "not found: %s (try %s)\n",
                        serve_escape(esc, sizeof esc, path, strlen(path)),
                        c->admin ? "POST /admin/reload, GET /metrics, GET /healthz"
                                 : "POST /classify, GET /metrics, GET /healthz");
    }
}

/* Out of descriptors, accept() fails while the connection waits in the
 * backlog: the listener rests 100 ms rather than spin (as nginx does). The
 * listeners are evhttp's, and so are their callbacks' arguments. */
static struct serve *listening;

static void on_accept_rested(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct listener *l = arg;
    if (l->bound)
        evconnlistener_enable(evhttp_bound_socket_get_listener(l->bound));
}

static void on_accept_error(struct evconnlistener *el, void *arg)
{
    (void)arg;
    struct serve *s = listening;
    int err = EVUTIL_SOCKET_ERROR();
    if (s->accept_errors++ % 100 == 0)
        serve_log("accept: %s%s (%llu times so far); new connections wait", strerror(err),
                  err == EMFILE || err == ENFILE ? ": too many open descriptors" : "",
                  (unsigned long long)s->accept_errors);
    struct listener *l = s->adm.bound && evhttp_bound_socket_get_listener(s->adm.bound) == el
                             ? &s->adm
                             : &s->pub;
    evconnlistener_disable(el);
    struct timeval tv = {0, 100000};
    event_base_once(s->base, -1, EV_TIMEOUT, on_accept_rested, l, &tv);
}

int http_start(struct serve *s, struct listener *l, int listen_fd)
{
    l->s = s;
    l->http = evhttp_new(s->base);
    if (!l->http)
        return -1;
    evhttp_set_gencb(l->http, on_request, s);
    evhttp_set_bevcb(l->http, conn_new, l);
    /* Every method reaches on_request, which answers 405 itself. */
    evhttp_set_allowed_methods(l->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    /* (conn.c refuses a body over --max-body from its header, before evhttp.) */
    evhttp_set_max_body_size(l->http, (ev_ssize_t)s->o.max_body);
    evhttp_set_max_headers_size(l->http, 64 * 1024);
    evhttp_set_timeout(l->http, (int)s->o.idle_timeout_s);
    l->bound = evhttp_accept_socket_with_handle(l->http, listen_fd);
    if (!l->bound)
        return -1;
    listening = s;
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(l->bound), on_accept_error);
    return 0;
}
