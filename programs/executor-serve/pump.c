/*
 * Records into the executor and results out of it, on the event loop's
 * thread: the request slots whose numbers tag the records; submission with
 * backpressure (the window, over records in flight and records waiting, is
 * the server's: a request that finds it full is answered 503; below it, a
 * request the executor has no room for waits in a queue, in arrival order,
 * with the documents, which keep at most half the window each); and the
 * drain that runs when exec_fd() polls readable and once at the end of every
 * loop pass in which records were submitted. Every call into the executor
 * here is non-blocking (exec_try_submit, exec_next_many with a zero timeout).
 *
 * A document also stops feeding records while its connection has more than
 * --max-pending bytes of reply not yet written (a client that does not
 * read), and goes on when they drain. Work that is long for one loop turn
 * (cutting a body into records, the error lines of a document the executor
 * gave up on) is done a slice per turn from the step queue. A request whose
 * client leaves has its records cancelled; on EXEC_THREADS, where the
 * library has no record timeout, a record past --timeout is cancelled here.
 */
#include "serve.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* The backend: the executor, or the inline stand-in (--backend inline). */
static int be_try_submit(struct serve *s, const void *rec, size_t len, uint64_t tag)
{
    return s->inl ? inline_try_submit(s->inl, rec, len, tag)
                  : exec_try_submit(s->ex, rec, len, tag);
}

/* Up to max results under one lock; they stay valid until the next call. */
static int be_next(struct serve *s, exec_result_t *res, size_t max, size_t *got)
{
    if (s->inl) {
        *got = 0;
        int rc;
        while (*got < max && (rc = inline_next(s->inl, &res[*got])) == 0)
            ++*got;
        return *got ? 0 : rc;
    }
    return exec_next_many(s->ex, res, max, got, 0);
}

/* The HTTP status for a record's outcome. */
int status_of(int st)
{
    switch (st) {
    case 0: return 200;
    case EXEC_EUSER: return 422;        /* the classifier refused this record */
    case EXEC_ECRASHED: return 500;     /* its worker died */
    case EXEC_ERESULT2BIG: return 500;  /* its result is larger than --max-result */
    case EXEC_EWORKER: return 502;      /* its worker wrote garbage */
    case EXEC_ERECTIMEOUT: return 504;  /* it ran past --timeout */
    case EXEC_E2BIG: return 413;        /* larger than --max-record */
    case EXEC_EAGAIN:                   /* window full */
    case EXEC_ECANCELLED:               /* shutting down */
    case EXEC_EFATAL: return 503;       /* the executor gave up */
    default: return 500;
    }
}

enum outcome outcome_of(int st)
{
    switch (st) {
    case 0: return O_OK;
    case EXEC_EUSER: return O_USER;
    case EXEC_ECRASHED: return O_CRASHED;
    case EXEC_ERECTIMEOUT: return O_TIMEOUT;
    case EXEC_ERESULT2BIG: return O_RESULT2BIG;
    case EXEC_ECANCELLED: return O_CANCELLED;
    case EXEC_E2BIG: return O_TOO_BIG;
    case EXEC_EAGAIN: return O_REJECTED;
    default: return O_WORKER;
    }
}

/* "SIGSEGV" and the like. */
const char *signal_name(int sig)
{
    static char buf[16];
    const char *abbrev = sigabbrev_np(sig);
    if (!abbrev)
        return "unknown signal";
    snprintf(buf, sizeof buf, "SIG%s", abbrev);
    return buf;
}

/* ------------------------------------------------------------------------- */
/* Request slots                                                             */
/* ------------------------------------------------------------------------- */

struct req *req_new(struct serve *s, struct evhttp_request *http)
{
    uint32_t slot;
    if (s->nfree) {
        slot = s->free_slots[--s->nfree];
    } else {
        if (s->nslots == s->cap_slots) {
            uint32_t cap = s->cap_slots ? 2 * s->cap_slots : 256;
            struct req **ns = realloc(s->slots, cap * sizeof *ns);
            if (!ns)
                return NULL;
            s->slots = ns;
            uint32_t *nf = realloc(s->free_slots, cap * sizeof *nf);
            if (!nf)
                return NULL;
            s->free_slots = nf;
            s->cap_slots = cap;
        }
        slot = s->nslots++;
    }
    struct req *r = calloc(1, sizeof *r);
    if (!r) {
        s->free_slots[s->nfree++] = slot;
        return NULL;
    }
    r->s = s;
    r->http = http;
    r->slot = slot;
    r->t0 = serve_now_ns();
    r->counted = true;
    s->slots[slot] = r;
    s->open++;
    return r;
}

static void req_free(struct serve *s, struct req *r)
{
    body_free(r);
    if (r->held) {
        for (uint32_t i = 0; i < s->hold_cap; i++)
            free(r->held[i].data);
        free(r->held);
    }
    if (r->out)
        evbuffer_free(r->out);
    free(r->recs);
    s->slots[r->slot] = NULL;
    s->free_slots[s->nfree++] = r->slot;
    if (r->counted)
        s->open--;
    free(r);
    serve_maybe_exit(s);
}

/*
 * Frees r once nothing refers to it: its reply is handed over (or its client
 * left), no record of it is in flight, and it waits on no queue. A request
 * whose client left still owes evhttp the call that frees its evhttp_request.
 */
void req_settle(struct serve *s, struct req *r)
{
    if (r->in_flight || r->waiting || r->dirty || r->stepping || r->reloading)
        return;
    if (r->conn && r->http)
        return; /* still to be answered */
    if (r->http) {
        /* Gone: evhttp dropped the connection but left us the request. */
        evhttp_send_reply(r->http, 500, NULL, NULL);
        r->http = NULL;
        r->code = 499; /* nginx's "client closed request" */
        access_log_line(s, r, r->nrec);
    }
    req_free(s, r);
}

/* ------------------------------------------------------------------------- */
/* Submitting                                                                */
/* ------------------------------------------------------------------------- */

void pump_kick(struct serve *s)
{
    if (!s->kicked) {
        s->kicked = true;
        event_active(s->ev_flush, EV_TIMEOUT, 0);
    }
}

/* r waits for room, behind the requests that wait already. */
static void wait_push(struct serve *s, struct req *r)
{
    if (r->waiting || r->paused)
        return;
    r->waiting = true;
    if (!r->doc)
        s->waiting_singles++;
    r->next_wait = NULL;
    if (s->wait_tail)
        s->wait_tail->next_wait = r;
    else
        s->wait_head = r;
    s->wait_tail = r;
}

/* A document's reply bytes held for its connection: not yet written, waiting
 * their turn, or lines not yet handed to evhttp. */
static size_t doc_pending(const struct req *r)
{
    return conn_pending(r->conn) + r->held_bytes + (r->out ? evbuffer_get_length(r->out) : 0);
}

/* Stops r (a document) while its client has too much to read: true if so. */
static bool doc_pause(struct serve *s, struct req *r)
{
    if (doc_pending(r) <= s->o.max_pending)
        return false;
    r->paused = true;
    metrics_paused(s);
    return true;
}

/* The connection wrote some of r's reply: r goes on once below half the bound. */
void pump_output_drained(struct serve *s, struct req *r)
{
    if (!r->paused || !r->conn || doc_pending(r) > s->o.max_pending / 2)
        return;
    r->paused = false;
    if (r->abort_code)
        pump_step(s, r);
    else if (r->next_submit < r->nrec) {
        wait_push(s, r);
        pump_kick(s);
    }
}

/*
 * Submits what r may submit now: every record (a single record), or up to
 * s->hold_cap records ahead of the first unanswered one (a document). Returns
 * 0, EXEC_EAGAIN (window full: r->next_submit says how far it got), or the
 * code that refused the next record (a single record's EXEC_E2BIG, EXEC_EFATAL).
 * A document's records larger than --max-record get their error line and are
 * skipped; a document whose client is slow to read pauses (r->paused).
 */
int pump_submit(struct serve *s, struct req *r)
{
    int rc = 0;
    bool sent = false;
    if (r->doc && r->conn && doc_pause(s, r))
        return 0;
    uint64_t now = serve_now_ns();
    while (r->conn && r->next_submit < r->nrec && r->next_submit - r->next_emit < s->hold_cap) {
        const struct span *sp = &r->recs[r->next_submit];
        uint64_t tag = (uint64_t)r->slot << 32 | r->next_submit;
        rc = be_try_submit(s, r->body + sp->off, sp->len, tag);
        if (rc == 0) {
            if (r->doc) {
                if (!r->held && !(r->held = calloc(s->hold_cap, sizeof *r->held))) {
                    rc = EXEC_ENOMEM; /* (cannot happen but under memory pressure) */
                    break;
                }
                r->held[r->next_submit % s->hold_cap].sent = now;
            } else {
                r->sent = now;
            }
            r->next_submit++;
            r->in_flight++;
            s->records_in_flight++;
            sent = true;
            continue;
        }
        if (rc == EXEC_E2BIG && r->doc) {
            metrics_record(s, O_TOO_BIG);
            http_doc_line(s, r, r->next_submit++, EXEC_E2BIG, 0, 0, 0, NULL, sp->len);
            rc = 0;
            if ((r->next_submit & 63) == 0 && doc_pause(s, r))
                break;
            continue;
        }
        if (rc == EXEC_EFATAL)
            s->fatal = true;
        break;
    }
    if (sent)
        pump_kick(s);
    return rc;
}

#define ABORT_SLICE 4096u /* error lines of an aborted document per turn */

/* A slice of an aborted document's error lines: true when done. */
static bool doc_abort_step(struct serve *s, struct req *r)
{
    if (!r->conn)
        return true;
    for (unsigned k = 0; k < ABORT_SLICE && r->next_emit < r->nrec; k++)
        http_doc_line(s, r, r->next_emit, r->abort_code, 0, 0, 0, NULL, 0);
    if (r->next_emit < r->nrec && doc_pause(s, r))
        return true; /* the drain of its output steps it again */
    return r->next_emit == r->nrec;
}

/* Ends a document on the executor's failure: each record without a result
 * gets an error line (one line per record, whatever happens), a slice per
 * loop turn. */
static void doc_abort(struct serve *s, struct req *r, int code)
{
    s->records_in_flight -= r->in_flight;
    r->in_flight = 0;
    r->next_submit = r->nrec;
    r->abort_code = code;
    if (r->conn && r->next_emit < r->nrec)
        pump_step(s, r);
}

/* Gives waiting requests the room that results made. True if any record went in. */
static bool refill(struct serve *s)
{
    bool any = false;
    while (s->wait_head) {
        struct req *r = s->wait_head;
        uint32_t before = r->next_submit;
        int rc = pump_submit(s, r);
        any |= r->next_submit != before;
        if (rc == EXEC_EAGAIN)
            break;
        s->wait_head = r->next_wait;
        if (!s->wait_head)
            s->wait_tail = NULL;
        r->waiting = false;
        if (!r->doc)
            s->waiting_singles--;
        if (rc && r->doc)
            doc_abort(s, r, rc);
        else if (rc && r->conn)
            http_reply_text(s, r, status_of(rc), "%s: %s\n", exec_err_name(rc),
                            exec_strerror(rc));
        req_settle(s, r);
    }
    return any;
}

/*
 * A new request's records go in, or wait behind the requests that wait for
 * room already (the executor may refuse records before its window is full:
 * records that travel one to a batch can use up its batches first). The
 * window, over records in flight and records waiting, is the server's.
 * Returns 0, EXEC_EAGAIN (the window is full: answer 503), or the code that
 * refused a single record (EXEC_E2BIG, EXEC_EFATAL).
 */
int pump_request(struct serve *s, struct req *r)
{
    if (s->records_in_flight + s->waiting_singles >= s->o.window)
        return EXEC_EAGAIN;
    if (!r->doc && r->recs[0].len > s->o.max_record)
        return EXEC_E2BIG;
    int rc = 0;
    if (!s->wait_head)
        rc = pump_submit(s, r);
    if (s->wait_head || rc == EXEC_EAGAIN) {
        wait_push(s, r);
        return 0;
    }
    return rc;
}

/* ------------------------------------------------------------------------- */
/* Results                                                                   */
/* ------------------------------------------------------------------------- */

static void deliver(struct serve *s, const exec_result_t *res)
{
    uint32_t slot = (uint32_t)(res->tag >> 32), idx = (uint32_t)res->tag;
    struct req *r = slot < s->nslots ? s->slots[slot] : NULL;
    if (!r || !r->in_flight)
        return; /* cannot happen: every slot waits for its records */
    r->in_flight--;
    s->records_in_flight--;
    s->last_result = serve_now_ns();
    /* Cancelled here at --timeout (threads): a timeout for the client. */
    bool timed_out = r->doc ? r->held && r->held[idx % s->hold_cap].timed_out : r->timed_out;
    int status = res->status == EXEC_ECANCELLED && timed_out ? EXEC_ERECTIMEOUT : res->status;
    if (r->doc && r->held)
        r->held[idx % s->hold_cap].timed_out = false;
    metrics_record(s, outcome_of(status));
    if (res->generation > r->generation)
        r->generation = res->generation;
    if (r->conn) {
        if (!r->doc) {
            exec_result_t copy = *res;
            copy.status = status;
            http_reply_result(s, r, &copy);
        } else {
            http_doc_line(s, r, idx, status, res->user_code, res->signal, res->exit_status,
                          res->data, res->len);
        }
    }
    /* A document below its share submits more (through the queue, so that
     * documents take turns). */
    if (r->doc && r->conn && r->next_submit < r->nrec)
        wait_push(s, r);
    req_settle(s, r);
}

/* Sends what documents have ready, once per drain rather than once per line. */
static void flush_dirty(struct serve *s)
{
    while (s->dirty) {
        struct req *r = s->dirty;
        s->dirty = r->next_dirty;
        r->dirty = false;
        if (r->conn)
            http_doc_flush(s, r);
        req_settle(s, r);
    }
}

static void drain(struct serve *s)
{
    exec_result_t res[64];
    size_t got;
    int rc = 0;
    for (int round = 0; round < 4; round++) {
        while ((rc = be_next(s, res, 64, &got)) == 0)
            for (size_t i = 0; i < got; i++)
                deliver(s, &res[i]);
        if (rc == EXEC_EFATAL) {
            pump_fail_all(s, rc);
            break;
        }
        /* EXEC_EAGAIN: the open batch went out and exec_fd() is armed. Records
         * that refill() submits need one more exec_next() for that. */
        if (!refill(s))
            break;
        if (round == 3)
            pump_kick(s);
    }
    flush_dirty(s);
}

/* The executor has results (exec_fd() readable). */
static void on_exec_fd(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    drain(arg);
}

/* The end of a loop pass that submitted records. */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct serve *s = arg;
    s->kicked = false;
    drain(s);
}

/* ------------------------------------------------------------------------- */
/* Work a slice per loop turn                                                */
/* ------------------------------------------------------------------------- */

/*
 * r has work for the coming turns (its body to cut, its error lines). The
 * step queue runs from a zero timeout: a timer fires once per loop turn,
 * after the loop has polled the connections, so every slice lets the others
 * in (an event made active again from its own callback would run before
 * any new I/O was read).
 */
void pump_step(struct serve *s, struct req *r)
{
    if (r->stepping)
        return;
    r->stepping = true;
    r->next_step = NULL;
    if (s->step_tail)
        s->step_tail->next_step = r;
    else
        s->step_head = r;
    s->step_tail = r;
    if (!evtimer_pending(s->ev_step, NULL)) {
        struct timeval zero = {0, 0};
        evtimer_add(s->ev_step, &zero);
    }
}

static void on_step(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct serve *s = arg;
    struct req *list = s->step_head;
    s->step_head = s->step_tail = NULL;
    while (list) {
        struct req *r = list;
        list = r->next_step;
        /* (Still stepping meanwhile: a reply made in the step frees nothing.) */
        bool done = r->scanning ? body_step(s, r) : doc_abort_step(s, r);
        r->stepping = false;
        if (!done)
            pump_step(s, r);
        else
            req_settle(s, r);
    }
    flush_dirty(s);
}

/* ------------------------------------------------------------------------- */
/* Clients that leave, records that run too long                             */
/* ------------------------------------------------------------------------- */

/* Cancels r's records in flight (its client is gone): their results come
 * back cancelled, and r is let go then. */
void pump_client_gone(struct serve *s, struct req *r)
{
    if (!s->ex || !r->in_flight)
        return;
    if (!r->doc) {
        exec_cancel(s->ex, (uint64_t)r->slot << 32);
        return;
    }
    for (uint32_t k = r->next_emit; k < r->next_submit; k++)
        if (!r->held || !r->held[k % s->hold_cap].have)
            exec_cancel(s->ex, (uint64_t)r->slot << 32 | k);
}

/*
 * EXEC_THREADS has no record timeout of its own (a thread cannot be stopped):
 * a record in flight past --timeout is cancelled, so that its process() sees
 * exec_cancelled() and may return early; its result reads EXEC_ERECTIMEOUT.
 * One that does not look holds its worker until it returns (/healthz says
 * so when no worker is left). Called from the loop's tick.
 */
void pump_timeouts(struct serve *s)
{
    if (!s->ex || !s->o.timeout_ms || exec_backend(s->ex) != EXEC_THREADS ||
        !s->records_in_flight)
        return;
    uint64_t now = serve_now_ns(), limit = (uint64_t)s->o.timeout_ms * 1000000u;
    for (uint32_t i = 0; i < s->nslots; i++) {
        struct req *r = s->slots[i];
        if (!r || !r->in_flight)
            continue;
        if (!r->doc) {
            if (!r->timed_out && now - r->sent >= limit) {
                r->timed_out = true;
                exec_cancel(s->ex, (uint64_t)r->slot << 32);
            }
            continue;
        }
        for (uint32_t k = r->next_emit; r->held && k < r->next_submit; k++) {
            struct held *h = &r->held[k % s->hold_cap];
            if (!h->have && !h->timed_out && now - h->sent >= limit) {
                h->timed_out = true;
                exec_cancel(s->ex, (uint64_t)r->slot << 32 | k);
            }
        }
    }
}

void pump_start(struct serve *s)
{
    s->ev_step = evtimer_new(s->base, on_step, s);
    /* Activated by pump_kick(): it joins the tail of the active queue, so it
     * runs after the requests read in this pass, and their records go out in
     * as few batches as the library makes of them. */
    s->ev_flush = event_new(s->base, -1, 0, on_flush, s);
    if (s->ex) {
        /* Results first: a pass that finds exec_fd() readable answers the
         * requests whose records are done before it reads new ones. */
        s->ev_exec = event_new(s->base, exec_fd(s->ex), EV_READ | EV_PERSIST, on_exec_fd, s);
        event_priority_set(s->ev_exec, 0);
        event_add(s->ev_exec, NULL);
    }
}

/*
 * The executor gave up (EXEC_EFATAL): results in flight will never come.
 * Every request still waiting for one is answered with the code now.
 */
void pump_fail_all(struct serve *s, int code)
{
    if (!s->fatal)
        serve_log("the executor gave up (%s: %s); answering 503 from now on",
                  exec_err_name(code), exec_strerror(code));
    s->fatal = true;
    while (s->wait_head) {
        struct req *r = s->wait_head;
        s->wait_head = r->next_wait;
        r->waiting = false;
    }
    s->wait_tail = NULL;
    s->waiting_singles = 0;
    for (uint32_t i = 0; i < s->nslots; i++) {
        struct req *r = s->slots[i];
        if (!r || r->scanning || (!r->in_flight && r->next_submit == r->nrec))
            continue;
        if (r->doc) {
            doc_abort(s, r, code);
        } else {
            s->records_in_flight -= r->in_flight;
            r->in_flight = 0;
            if (r->conn)
                http_reply_text(s, r, 503, "%s: %s\n", exec_err_name(code), exec_strerror(code));
        }
        req_settle(s, r);
    }
    flush_dirty(s);
}
