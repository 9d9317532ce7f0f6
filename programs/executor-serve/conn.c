/*
 * Client connections, from accept to close. evhttp asks us for each new
 * connection's bufferevent (evhttp_set_bevcb), so every connection has a
 * struct conn of ours from its first moment, found by its bufferevent (a
 * table) and freed when evhttp closes it (its close callback). That gives:
 *   - the framing check (frame.c), run from a callback on the socket's input
 *     buffer: libevent calls it as bytes arrive, before evhttp's read
 *     callback parses them. A request found malformed is dropped from the
 *     buffer once evhttp has read what precedes it (evhttp never sees it),
 *     and answered by a reply of ours once the replies before it are
 *     written, then the connection closes, lingering (RFC 9112 9.6);
 *   - deadlines per request, not renewed by each byte: the header section
 *     within --header-timeout of its first byte (the first request: of the
 *     connection), the body within --body-timeout of the header;
 *   - the cap on connections (--max-connections): one over it is answered
 *     503 and closed at once;
 *   - a watch on the peer's hang-up (EV_CLOSED) while its request is ours
 *     and no reply has started (evhttp reads nothing then), so that its
 *     records are cancelled;
 *   - the bytes of reply waiting in the socket's buffer: a document stops
 *     feeding records while they are many (pump.c), and resumes as they
 *     drain; a client that reads nothing for --idle-timeout is closed by
 *     evhttp's write timeout.
 * Unread input is bounded too (the socket is not read past --max-body and
 * a little more).
 *
 * evhttp gives a connection's data no place of ours, and tells of a
 * connection only with its first request; its close callback is set as soon
 * as the connection exists, from the bufferevent's callback argument (evhttp
 * 2.1 and 2.2 give it the evhttp_connection; checked before use).
 */
#include "serve.h"

#include <errno.h>
#include <event2/bufferevent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define LINGER_MS 2000           /* after a refusal: read and drop, then close */
#define REFUSE_LINGER_MS 500     /* the same for a connection over the cap */
#define ADMIN_MAX 64             /* the admin listener's own cap (not --max-connections) */
/* A connection with this much unread input is not read further: evhttp
 * keeps a body there until it is whole, and reads nothing while it answers
 * (pipelined requests wait there). */
#define SOCK_IN_SLACK (128u << 10)

enum { DL_NONE, DL_SETUP, DL_HEADER, DL_BODY, DL_LINGER };
enum { PH_OPEN, PH_LINGER };

/* ------------------------------------------------------------------------- */
/* The table                                                                 */
/* ------------------------------------------------------------------------- */

static uint32_t conn_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (uint32_t)x;
}

/* Open addressing with linear probing, deletion by backward shift. */
static struct conn **conn_find(struct serve *s, const struct bufferevent *bev)
{
    uint32_t i = conn_hash(bev) & s->conns_mask;
    while (s->conns[i] && s->conns[i]->bev != bev)
        i = (i + 1) & s->conns_mask;
    return &s->conns[i];
}

static int conn_grow(struct serve *s)
{
    uint32_t cap = s->conns ? 2 * (s->conns_mask + 1) : 1024;
    struct conn **old = s->conns, **nc = calloc(cap, sizeof *nc);
    if (!nc)
        return -1;
    uint32_t oldcap = s->conns ? s->conns_mask + 1 : 0;
    s->conns = nc;
    s->conns_mask = cap - 1;
    for (uint32_t i = 0; i < oldcap; i++)
        if (old[i])
            *conn_find(s, old[i]->bev) = old[i];
    free(old);
    return 0;
}

static void conn_remove(struct serve *s, struct conn *c)
{
    struct conn **p = conn_find(s, c->bev);
    if (!*p)
        return;
    uint32_t i = (uint32_t)(p - s->conns);
    s->conns[i] = NULL;
    for (uint32_t j = (i + 1) & s->conns_mask; s->conns[j]; j = (j + 1) & s->conns_mask) {
        struct conn *m = s->conns[j];
        s->conns[j] = NULL;
        *conn_find(s, m->bev) = m;
    }
}

/* ------------------------------------------------------------------------- */
/* Deadlines, refusals, closing                                              */
/* ------------------------------------------------------------------------- */

static void arm(struct conn *c, int which, unsigned ms)
{
    c->deadline = (uint8_t)which;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    event_add(c->ev_timer, &tv);
}

static void disarm(struct conn *c)
{
    if (c->deadline != DL_NONE) {
        c->deadline = DL_NONE;
        event_del(c->ev_timer);
    }
}

/*
 * Ends the connection now, through evhttp's own path for a peer that hung up:
 * it frees the connection, and its close callback frees c. Only from a
 * callback of ours (a timer, the hang-up watch), never from inside evhttp's.
 */
static void conn_kill(struct conn *c)
{
    if (c->dead)
        return;
    c->dead = true;
    bufferevent_trigger_event(c->bev, BEV_EVENT_EOF | BEV_EVENT_READING, 0);
}

/* The deadline that applies now. A request waiting behind one being
 * answered has none yet (evhttp does not read it); its clock starts when
 * the reply before it is written. */
static void conn_deadlines(struct conn *c)
{
    const struct serve_opts *o = &c->s->o;
    if (c->phase != PH_OPEN || c->deadline == DL_SETUP || c->deadline == DL_LINGER)
        return;
    int want = DL_NONE;
    if (c->replied == c->fr.done && !c->cur) {
        if (c->fr.st == FR_HEAD)
            want = DL_HEADER;
        else if (frame_in_body(&c->fr))
            want = DL_BODY;
        else if (c->fr.st == FR_IDLE && c->fr.done == 0)
            want = DL_HEADER; /* the first request: from the connection's start */
    }
    if (want == c->deadline)
        return;
    disarm(c);
    if (want != DL_NONE)
        arm(c, want, (want == DL_HEADER ? o->header_timeout_s : o->body_timeout_s) * 1000);
}

static const char *reason_phrase(int code)
{
    switch (code) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Internal Server Error";
    }
}

/* Drops every byte of input (they belong to a refused request or after it). */
static void drop_input(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t n = evbuffer_get_length(in);
    if (n)
        evbuffer_drain(in, n); /* (our callback counts it into c->base) */
}

/* Writes what is left of our reply; once it is all written, shuts the
 * write side (the client sees the end of the reply). */
static void answer_write(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct conn *c = arg;
    while (evbuffer_get_length(c->answer)) {
        if (evbuffer_write(c->answer, fd) <= 0) {
            if (EVUTIL_SOCKET_ERROR() == EAGAIN && c->ev_answer)
                event_add(c->ev_answer, NULL); /* the linger timer bounds the wait */
            return;
        }
    }
    shutdown(fd, SHUT_WR);
}

/*
 * A reply of ours (its text is ours, never the client's bytes), then a
 * lingering close: the reply is written, the write side shut (the client
 * sees the whole reply, then the end), and what the client still sends is
 * read and dropped for a while, so that its socket is not reset before it
 * read the reply. evhttp writes nothing meanwhile: every request before this
 * one is answered, and evhttp saw nothing of this one it could answer. The
 * reply does not go through the bufferevent's output: evhttp's write
 * callback would take it for the end of a reply of its own.
 */
static void conn_answer_close(struct conn *c, int code, const char *why, unsigned linger_ms)
{
    struct serve *s = c->s;
    char body[160];
    int n = snprintf(body, sizeof body, "%s\n", why);
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    c->answer = evbuffer_new();
    if (c->answer && fd >= 0) {
        evbuffer_add_printf(c->answer,
                            "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                            "Content-Length: %d\r\nConnection: close\r\n%s\r\n",
                            code, reason_phrase(code), n,
                            code == 503 ? "Retry-After: 1\r\n" : "");
        evbuffer_add(c->answer, body, (size_t)n);
        c->ev_answer = event_new(s->base, fd, EV_WRITE, answer_write, c);
        answer_write(fd, EV_WRITE, c);
    }
    c->phase = PH_LINGER;
    c->fr.st = FR_REFUSED;
    drop_input(c);
    disarm(c);
    arm(c, DL_LINGER, linger_ms);
    metrics_request(s, code, 0);
    access_log_refusal(s, c, code, why);
}

/* A refusal waits until evhttp has read every byte before the refused
 * request, and every reply before it is written. */
static void refusal_try(struct conn *c)
{
    if (c->phase != PH_OPEN || !c->refuse_code)
        return;
    if (c->base >= c->bad_at)
        drop_input(c);
    if (c->replied == c->fr.done && !c->cur && c->base >= c->bad_at)
        conn_answer_close(c, c->refuse_code, c->refuse_why, LINGER_MS);
}

static void on_timer(evutil_socket_t fd, short what, void *arg);

/* ------------------------------------------------------------------------- */
/* The socket's buffers                                                      */
/* ------------------------------------------------------------------------- */

/*
 * Bytes came in (before evhttp's read callback sees them), or evhttp read
 * some (it drained them). Our own drains come back here too: c->base counts
 * every byte that left the buffer.
 */
static void on_sock_in(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct conn *c = arg;
    struct serve *s = c->s;
    c->base += info->n_deleted;
    if (c->in_cb_now || c->dead)
        return;
    c->in_cb_now = true;
    if (c->phase != PH_OPEN || c->refused) {
        drop_input(c);
    } else if (c->refuse_code) {
        refusal_try(c);
    } else if (info->n_added) {
        unsigned ev = 0;
        int rc = frame_feed(&c->fr, buf, c->base, s->o.max_body, &ev);
        if (rc) {
            metrics_refused(s, rc == 413 ? R_BODY_TOO_LARGE
                               : rc == 414 || rc == 431 ? R_HEADER_TOO_LARGE
                                                        : R_FRAMING);
            c->refuse_code = rc;
            c->refuse_why = c->fr.why ? c->fr.why : "bad request";
            c->bad_at = c->fr.req;
            refusal_try(c);
        } else if (ev) {
            conn_deadlines(c);
        }
    }
    c->in_cb_now = false;
}

/* Bytes of this connection's replies not yet written to its socket. */
size_t conn_pending(const struct conn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

/* The socket's output drained some: a document paused for its client's
 * reading may go on. */
static void on_sock_out(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    struct conn *c = arg;
    if (info->n_deleted && !c->dead && c->cur && c->cur->paused)
        pump_output_drained(c->s, c->cur);
}

/* ------------------------------------------------------------------------- */
/* From accept to close                                                      */
/* ------------------------------------------------------------------------- */

/* The peer hung up. While its request is ours and no reply has started,
 * evhttp reads nothing and would not notice: end the connection (its
 * records are cancelled). Otherwise evhttp reads the end itself. */
static void on_gone(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    event_del(c->ev_gone); /* level-triggered: once is enough */
    if (c->dead)
        return;
    if (c->phase == PH_LINGER || (c->cur && !c->writing && !c->cur->started)) {
        if (c->cur)
            metrics_client_gone(c->s);
        conn_kill(c);
    }
}

/*
 * evhttp closes the connection (and frees it once this returns). Its socket
 * is shut down first: a worker process forked while it was open may hold a
 * copy of the descriptor (--inherit-fds), so close() alone would not end
 * the connection. Its request, if any, is let go when its records are back.
 */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct conn *c = arg;
    struct serve *s = c->s;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
    c->dead = true;
    if (c->in_cb)
        evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->in_cb);
    if (c->out_cb)
        evbuffer_remove_cb_entry(bufferevent_get_output(c->bev), c->out_cb);
    if (c->writing)
        s->writing--;
    if (c->refused)
        s->nrefusing--;
    else if (c->admin)
        s->nadmin--;
    struct req *r = c->cur;
    if (r) {
        r->conn = NULL;
        if (r->started && r->http) {
            /* A document cut off: by its client, or for not reading its
             * reply (evhttp's write timeout, with the document paused). */
            r->code = 499; /* nginx's "client closed request" */
            if (r->paused)
                metrics_unread(s);
            metrics_request(s, 499, serve_now_ns() - r->t0);
            access_log_line(s, r, r->next_emit);
        }
        /* A request evhttp took off the connection is ours to free (by a
         * reply call); one still on it goes with the connection. */
        if (r->http && evhttp_request_get_connection(r->http) == evcon)
            r->http = NULL;
    }
    event_free(c->ev_timer);
    if (c->ev_gone)
        event_free(c->ev_gone);
    if (c->ev_answer)
        event_free(c->ev_answer);
    if (c->answer)
        evbuffer_free(c->answer);
    conn_remove(s, c);
    s->nconns--;
    free(c);
    if (r) {
        pump_client_gone(s, r);
        req_settle(s, r);
    }
    serve_maybe_exit(s);
}

/*
 * The connection exists in evhttp now (this runs before any of its I/O: a
 * first-priority event made active at accept): its close callback, the
 * hang-up watch, then its first deadline or, over the cap, its refusal.
 */
static void conn_setup(struct conn *c)
{
    struct serve *s = c->s;
    bufferevent_data_cb rcb = NULL;
    void *arg = NULL;
    bufferevent_getcb(c->bev, &rcb, NULL, NULL, &arg);
    struct evhttp_connection *evcon = arg;
    if (!rcb || !evcon || evhttp_connection_get_bufferevent(evcon) != c->bev) {
        /* Unknown to us from here on: its requests are refused (conn_of). */
        if (!s->warned_evcon++)
            serve_log("this libevent does not give a bufferevent its evhttp connection: "
                      "requests are refused");
        c->dead = true;
        return;
    }
    c->evcon = evcon;
    evhttp_connection_set_closecb(evcon, on_conn_close, c);
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (fd >= 0 && (c->ev_gone = event_new(s->base, fd, EV_CLOSED | EV_PERSIST, on_gone, c)))
        event_add(c->ev_gone, NULL);
    if (c->refused) {
        conn_answer_close(c, 503, "too many connections: retry later", REFUSE_LINGER_MS);
        return;
    }
    conn_deadlines(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    struct serve *s = c->s;
    int which = c->deadline;
    c->deadline = DL_NONE;
    if (c->dead)
        return;
    switch (which) {
    case DL_SETUP:
        conn_setup(c);
        break;
    case DL_HEADER:
    case DL_BODY:
        metrics_deadline(s, which == DL_BODY);
        conn_answer_close(c, 408,
                          which == DL_BODY ? "the body did not arrive within --body-timeout"
                                           : "the request header did not arrive within "
                                             "--header-timeout",
                          LINGER_MS);
        break;
    case DL_LINGER:
        conn_kill(c);
        break;
    default: break;
    }
}

/*
 * evhttp's bevcb: a new connection on listener l (the socket is set by
 * evhttp once this returns). On NULL evhttp makes a bufferevent of its own,
 * which conn_of() does not know: such a connection is served nothing.
 */
struct bufferevent *conn_new(struct event_base *base, void *arg)
{
    struct listener *l = arg;
    struct serve *s = l->s;
    if ((s->nconns + 1) * 2 > (s->conns ? s->conns_mask + 1 : 0) && conn_grow(s) != 0)
        return NULL;
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->s = s;
    c->admin = l->admin;
    c->bad_at = UINT64_MAX;
    c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    c->ev_timer = evtimer_new(base, on_timer, c);
    if (c->bev)
        c->in_cb = evbuffer_add_cb(bufferevent_get_input(c->bev), on_sock_in, c);
    if (c->bev)
        c->out_cb = evbuffer_add_cb(bufferevent_get_output(c->bev), on_sock_out, c);
    if (!c->bev || !c->ev_timer || !c->in_cb || !c->out_cb) {
        if (c->bev)
            bufferevent_free(c->bev);
        if (c->ev_timer)
            event_free(c->ev_timer);
        free(c);
        return NULL;
    }
    bufferevent_setwatermark(c->bev, EV_READ, 0, s->o.max_body + SOCK_IN_SLACK);
    *conn_find(s, c->bev) = c;
    /* The admin listener has a small cap of its own: clients that fill the
     * public one do not lock the operator out. */
    if (c->admin ? s->nadmin >= ADMIN_MAX
                 : s->nconns - s->nrefusing - s->nadmin >= s->o.max_connections) {
        c->refused = true;
        s->nrefusing++;
        metrics_conn_refused(s);
    } else if (c->admin) {
        s->nadmin++;
    }
    s->nconns++;
    /* Set up before any I/O of the connection: first priority, active now. */
    c->deadline = DL_SETUP;
    event_priority_set(c->ev_timer, 0);
    event_active(c->ev_timer, EV_TIMEOUT, 1);
    return c->bev;
}

/* ------------------------------------------------------------------------- */
/* The request's side                                                        */
/* ------------------------------------------------------------------------- */

/* The connection of a request. */
struct conn *conn_of(struct serve *s, struct evhttp_connection *evcon)
{
    if (!evcon || !s->conns)
        return NULL;
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    struct conn *c = bev ? *conn_find(s, bev) : NULL;
    if (!c || c->dead || c->evcon != evcon)
        return NULL;
    disarm(c); /* the request is whole */
    return c;
}

/* The reply is written: the next request on the connection may be read,
 * and its clock starts; or a refused one is answered now. */
void conn_reply_written(struct evhttp_request *http, void *arg)
{
    (void)http;
    struct conn *c = arg;
    struct serve *s = c->s;
    if (c->writing) {
        c->writing = false;
        s->writing--;
    }
    c->replied++;
    if (!c->dead && c->phase == PH_OPEN) {
        if (c->refuse_code)
            refusal_try(c);
        else
            conn_deadlines(c);
    }
    serve_maybe_exit(s);
}
