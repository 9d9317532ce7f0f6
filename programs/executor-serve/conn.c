/*
 * Client connections, as executor-serve keeps them: evhttp has no place for a
 * connection's data of ours, so a small table maps each evhttp_connection
 * that sent a request to a struct conn (the request it is answering, whether
 * a reply is still being written). A connection that closes while its
 * request is in flight leaves the request to be let go when its records are
 * back; replies being written count for the graceful shutdown.
 */
#include "serve.h"

#include <event2/bufferevent.h>
#include <stdlib.h>
#include <sys/socket.h>

static uint32_t conn_hash(const struct evhttp_connection *evcon)
{
    uint64_t x = (uint64_t)(uintptr_t)evcon;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (uint32_t)x;
}

/* Open addressing with linear probing, deletion by backward shift. */
static struct conn **conn_find(struct serve *s, const struct evhttp_connection *evcon)
{
    uint32_t i = conn_hash(evcon) & s->conns_mask;
    while (s->conns[i] && s->conns[i]->evcon != evcon)
        i = (i + 1) & s->conns_mask;
    return &s->conns[i];
}

static int conn_grow(struct serve *s)
{
    uint32_t cap = s->conns ? 2 * (s->conns_mask + 1) : 256;
    struct conn **old = s->conns, **nc = calloc(cap, sizeof *nc);
    if (!nc)
        return -1;
    uint32_t oldcap = s->conns ? s->conns_mask + 1 : 0;
    s->conns = nc;
    s->conns_mask = cap - 1;
    for (uint32_t i = 0; i < oldcap; i++)
        if (old[i])
            *conn_find(s, old[i]->evcon) = old[i];
    free(old);
    return 0;
}

static void conn_remove(struct serve *s, struct conn *c)
{
    struct conn **p = conn_find(s, c->evcon);
    uint32_t i = (uint32_t)(p - s->conns);
    s->conns[i] = NULL;
    for (uint32_t j = (i + 1) & s->conns_mask; s->conns[j]; j = (j + 1) & s->conns_mask) {
        struct conn *m = s->conns[j];
        s->conns[j] = NULL;
        *conn_find(s, m->evcon) = m;
    }
    s->nconns--;
}

/*
 * evhttp closes the connection. Its socket is shut down first: a worker
 * process forked while it was open holds a copy of the descriptor, so close()
 * alone would not end the connection (libevent shuts the write side down as
 * well, but only after freeing the bufferevent that owns the descriptor).
 */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct conn *c = arg;
    struct serve *s = c->s;
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
    if (c->writing)
        s->writing--;
    struct req *r = c->cur;
    conn_remove(s, c);
    free(c);
    if (r) {
        r->conn = NULL;
        /* A request evhttp took off the connection is ours to free (by a
         * reply call); one still on it goes with the connection. */
        if (r->http && evhttp_request_get_connection(r->http) == evcon)
            r->http = NULL;
        req_settle(s, r);
    }
    serve_maybe_exit(s);
}

struct conn *conn_of(struct serve *s, struct evhttp_connection *evcon)
{
    if (!evcon)
        return NULL;
    if (s->conns) {
        struct conn *c = *conn_find(s, evcon);
        if (c)
            return c;
    }
    if ((s->nconns + 1) * 2 > (s->conns ? s->conns_mask + 1 : 0) && conn_grow(s) != 0)
        return NULL;
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->evcon = evcon;
    c->s = s;
    *conn_find(s, evcon) = c;
    s->nconns++;
    evhttp_connection_set_closecb(evcon, on_conn_close, c);
    return c;
}

/* The reply is written: the connection may close or take its next request. */
void conn_reply_written(struct evhttp_request *http, void *arg)
{
    (void)http;
    struct conn *c = arg;
    if (c->writing) {
        c->writing = false;
        c->s->writing--;
    }
    serve_maybe_exit(c->s);
}

/* Frees the connection table (after evhttp_free() closed every connection). */
void conn_forget_all(struct serve *s)
{
    for (uint32_t i = 0; s->conns && i <= s->conns_mask; i++)
        free(s->conns[i]);
    free(s->conns);
    s->conns = NULL;
    s->nconns = 0;
}
