/*
 * EXEC_MPI on rank 0: the progress thread. It alone calls MPI once the
 * executor has started: it takes dispatched batches, sends each to the rank
 * with the most room (at most depth batches per rank), receives RESULT
 * messages into their batches and hands them to the consumer, runs a swap's
 * round (PREPARE, every PREPARED, ABORT on a refusal), watches the ranks'
 * liveness, and ends the session (END, BYE). It sleeps on an eventfd between
 * short polls: Open MPI has no descriptor to wait on, and a thread spinning
 * in MPI would take a core from the records.
 */
#include "host.h"

#include <ck_pr.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MH_NAP_MAX_NS 100000u     /* longest nap while ranks hold batches */
#define MH_PUSH_NAP_NS 50000u     /* ... while a send is not complete */
#define MH_IDLE_NAP_NS 50000000u  /* nap with nothing out */
#define MH_CHECK_NS 20000000u     /* liveness looked at this often */
#define MH_POLL_BURST 64          /* messages taken per round at most */
#define MH_BATCH_NS 1000000u      /* aim for batches of about this much work per rank */

/* Hands a finished batch to the consumer. */
static void mh_deliver(struct mh *h, struct mh_batch *mb)
{
    exec__lock(&h->lock);
    EXEC__ASSERT(mb->state == MH_QUEUED || mb->state == MH_SENT); /* once */
    mb->state = MH_DONE;
    exec__unlock(&h->lock);
    MH_PUT(ck_ring_enqueue_spsc(&h->out, h->outbuf, mb));
    exec__notify(h->ex);
}

/* Every record of mb gets status (a lost rank, garbage, no rank left). */
static void mh_settle(struct mh *h, struct mh_batch *mb, int status)
{
    for (uint32_t i = 0; i < mb->b.n; i++)
        mb->b.res[i] = (struct exec__res){.status = status};
    mb->b.rdata_len = 0;
    mh_deliver(h, mb);
}

/* Completes or drops a batch's sends. */
static void mh_forget_sends(struct mh_batch *mb, bool wait)
{
    for (int k = 0; k < 2; k++) {
        if (mb->req[k] == MPI_REQUEST_NULL)
            continue;
        int done = 0;
        if (wait)
            MPI_Wait(&mb->req[k], MPI_STATUS_IGNORE);
        else if (MPI_Test(&mb->req[k], &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || !done)
            MPI_Request_free(&mb->req[k]);
        mb->req[k] = MPI_REQUEST_NULL;
    }
}

static void mh_set_room(struct mh *h)
{
    uint32_t room = 0;
    for (int i = 0; i < h->nranks; i++)
        if (!h->r[i].lost && h->r[i].inflight < h->r[i].depth)
            room += h->r[i].depth - h->r[i].inflight;
    ck_pr_store_32(&h->room, room);
}

/* A rank is taken for lost: the records it holds read EXEC_ELOST, and the
 * rest of the stream goes to the others. */
static void mh_lose(struct mh *h, struct mh_rank *rk)
{
    if (rk->lost)
        return;
    rk->lost = true;
    ck_pr_store_32(&rk->gone, 1);
    h->live--;
    for (uint32_t i = 0; i < h->nall; i++) {
        struct mh_batch *mb = h->all[i];
        if (mb->state == MH_SENT && mb->rank == rk->rank) {
            mh_forget_sends(mb, false);
            mh_settle(h, mb, EXEC_ELOST);
        }
    }
    rk->inflight = 0;
    rk->prep_wait = false;
    mh_set_room(h);
    if (h->live == 0)
        exec__fatal(h->ex);
}

/* The next batch goes to the live rank with the most room left. */
static struct mh_rank *mh_pick(struct mh *h)
{
    struct mh_rank *best = NULL;
    uint32_t best_room = 0;
    for (int i = 0; i < h->nranks; i++) {
        struct mh_rank *rk = &h->r[i];
        uint32_t room = rk->depth > rk->inflight ? rk->depth - rk->inflight : 0;
        if (!rk->lost && room > best_room) {
            best = rk;
            best_room = room;
        }
    }
    return best;
}

static void mh_send(struct mh *h, struct mh_batch *mb, struct mh_rank *rk)
{
    struct exec__batch *b = &mb->b;
    uint32_t n = b->n;
    char *p = mb->hdr + sizeof(struct mx_batch);
    exec__lock(&h->lock); /* rflags and state vs cancel */
    EXEC__ASSERT(mb->state == MH_QUEUED || mb->state == MH_SENT); /* a resend after a loss */
    mb->state = MH_SENT;
    mb->rank = rk->rank;
    memcpy(p + 4 * (size_t)n, b->rflags, n);
    exec__unlock(&h->lock);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = (uint32_t)b->recs[i].len; /* <= max_record */
        memcpy(p + 4 * (size_t)i, &len, 4);
    }
    mb->sends++;
    mb->id = mb->index | (uint64_t)mb->sends << 32;
    struct mx_batch m = {.h.session = h->session, .id = mb->id, .generation = b->generation,
                         .n = n, .data_len = b->data_len};
    memcpy(mb->hdr, &m, sizeof m);
    rk->inflight++;
    mh_set_room(h);
    if (MPI_Isend(mb->hdr, (int)(sizeof m + 5 * (size_t)n), MPI_BYTE, rk->rank, MX_BATCH,
                  h->comm, &mb->req[0]) != MPI_SUCCESS ||
        MPI_Isend(b->data, (int)b->data_len, MPI_BYTE, rk->rank, MX_BDATA, h->comm,
                  &mb->req[1]) != MPI_SUCCESS) {
        mh_lose(h, rk); /* settles mb with the rest of what it holds */
        return;
    }
    if (!mb->unconfirmed) {
        mb->unconfirmed = true;
        EXEC__ASSERT(h->nunconf < h->maxb); /* one place per batch */
        h->unconf[h->nunconf++] = mb;
    }
}

/*
 * A message above the transport's eager limit moves only while its sender
 * calls MPI (over shared memory without a single-copy mechanism, or over
 * TCP past 64 KiB): sends not yet complete are tested each round, and the
 * thread naps briefly while there are some.
 */
static void mh_push_sends(struct mh *h)
{
    for (uint32_t i = 0; i < h->nunconf;) {
        struct mh_batch *mb = h->unconf[i];
        for (int k = 0; k < 2; k++) {
            int done = 0;
            if (mb->req[k] != MPI_REQUEST_NULL &&
                MPI_Test(&mb->req[k], &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done)
                mb->req[k] = MPI_REQUEST_NULL;
        }
        if (mb->req[0] == MPI_REQUEST_NULL && mb->req[1] == MPI_REQUEST_NULL) {
            mb->unconfirmed = false;
            h->unconf[i] = h->unconf[--h->nunconf];
        } else {
            i++;
        }
    }
}

/* Takes dispatched batches, sends what the ranks have room for. */
static bool mh_pump(struct mh *h)
{
    bool did = false;
    struct mh_batch *mb;
    while (ck_ring_dequeue_spsc(&h->in, h->inbuf, &mb)) {
        mb->next = NULL;
        if (h->qtail)
            h->qtail->next = mb;
        else
            h->qhead = mb;
        h->qtail = mb;
        did = true;
    }
    while (h->qhead) {
        struct mh_rank *rk = h->live ? mh_pick(h) : NULL;
        if (!rk && h->live)
            break; /* every rank full: results first */
        mb = h->qhead;
        h->qhead = mb->next;
        if (!h->qhead)
            h->qtail = NULL;
        EXEC__ASSERT(ck_pr_load_32(&h->pending) > 0); /* mb was dispatched */
        ck_pr_dec_32(&h->pending);
        if (rk)
            mh_send(h, mb, rk);
        else
            mh_settle(h, mb, EXEC_ELOST); /* no rank left to run it */
        did = true;
    }
    return did;
}

/* Per-record cost on the ranks, smoothed, sets how many records a batch
 * holds: about MH_BATCH_NS of a rank's time, at most options.batch. Light
 * records travel many to a message; heavy ones few, so that the work stays
 * spread over the ranks to the end of a stream. */
static void mh_tune(struct mh *h, struct mh_rank *rk, const struct mx_figs *f)
{
    if (f->records <= rk->seen_records || f->busy_ns <= rk->seen_busy)
        return;
    uint64_t per = (f->busy_ns - rk->seen_busy) / (f->records - rk->seen_records) + 1;
    rk->seen_records = f->records;
    rk->seen_busy = f->busy_ns;
    h->rec_ns = h->rec_ns ? (h->rec_ns * 7 + per) / 8 : per;
    uint64_t limit = (uint64_t)MH_BATCH_NS * (rk->workers ? rk->workers : 1) / h->rec_ns;
    exec__tune_batch(h->ex, limit > UINT32_MAX ? UINT32_MAX : (uint32_t)limit);
}

static void mh_figs(struct mh *h, struct mh_rank *rk, const struct mx_figs *f)
{
    ck_pr_store_64(&rk->figs.records, f->records);
    ck_pr_store_64(&rk->figs.batches, f->batches);
    ck_pr_store_64(&rk->figs.busy_ns, f->busy_ns);
    ck_pr_store_64(&rk->figs.idle_ns, f->idle_ns);
    ck_pr_store_64(&rk->figs.respawns, f->respawns);
    for (; rk->respawns < f->respawns; rk->respawns++)
        exec__respawned(h->ex);
}

/* A RESULT from rank `from`: checked, then received into the batch. */
static void mh_result(struct mh *h, struct mh_rank *rk, size_t len)
{
    struct mx_result m;
    if (len < sizeof m)
        return;
    memcpy(&m, h->scratch, sizeof m);
    uint64_t index = m.id & 0xffffffffu;
    if (index >= h->nall)
        return;
    struct mh_batch *mb = h->all[index];
    if (mb->state != MH_SENT || mb->id != m.id || mb->rank != rk->rank)
        return; /* stale: sent by a rank taken for lost */
    mh_forget_sends(mb, true);
    rk->inflight--;
    mh_set_room(h);
    mh_figs(h, rk, &m.figs);
    mh_tune(h, rk, &m.figs);
    struct exec__batch *b = &mb->b;
    size_t head = sizeof m + (size_t)b->n * sizeof(struct mx_res);
    if (m.n != b->n || len < head) {
        mh_settle(h, mb, EXEC_EWORKER);
        return;
    }
    uint64_t bytes = len - head;
    for (uint32_t i = 0; i < b->n; i++) {
        struct mx_res r;
        memcpy(&r, h->scratch + sizeof m + i * sizeof r, sizeof r);
        if (r.off > bytes || r.len > bytes - r.off) {
            mh_settle(h, mb, EXEC_EWORKER);
            return;
        }
        b->res[i] = (struct exec__res){.status = r.status, .user_code = r.user_code,
                                       .signal = r.signal, .exit_status = r.exit_status,
                                       .len = r.len, .flags = r.flags, .off = r.off};
    }
    /* The message becomes the batch's result area; its old one the next
     * message's buffer. */
    char *t = mb->rbuf;
    size_t tc = mb->rbuf_cap;
    mb->rbuf = h->scratch;
    mb->rbuf_cap = h->scratch_cap;
    h->scratch = t;
    h->scratch_cap = tc;
    b->rdata = mb->rbuf + head;
    b->rdata_len = bytes;
    b->rdata_cap = mb->rbuf_cap - head;
    b->worker = (uint32_t)(rk->rank - 1);
    mh_deliver(h, mb);
}

static void mh_prepared(struct mh *h, struct mh_rank *rk, size_t len)
{
    struct mx_ready m;
    if (len != sizeof m || !rk->prep_wait)
        return;
    memcpy(&m, h->scratch, sizeof m);
    if (m.generation != h->swap.generation)
        return;
    m.err[MX_ERRLEN - 1] = '\0';
    rk->prep_wait = false;
    rk->prep_rc = m.rc;
    if (m.rc && h->swap.rc == 0) {
        h->swap.rc = EXEC_EINIT;
        mx_err(h->swap.err, sizeof h->swap.err, "rank %d (%s): %s", rk->rank, rk->host,
                 m.err[0] ? m.err : exec_strerror(m.rc));
    }
}

void mh_handle(struct mh *h, int from, int tag, char *buf, size_t len)
{
    struct mh_rank *rk = mh_rank_of(h, from);
    struct mx_head head;
    if (!rk || rk->lost || rk->bye || len < sizeof head)
        return;
    memcpy(&head, buf, sizeof head);
    if (head.session != h->session)
        return;
    rk->last_heard = exec__now_ns();
    switch (tag) {
    case MX_RESULT: mh_result(h, rk, len); break;
    case MX_PREPARED: mh_prepared(h, rk, len); break;
    case MX_BEAT:
    case MX_BYE:
        if (len == sizeof(struct mx_beat)) {
            struct mx_beat m;
            memcpy(&m, buf, sizeof m);
            mh_figs(h, rk, &m.figs);
            if (tag == MX_BYE)
                rk->bye = true; /* ended in order: nothing more comes */
        }
        break;
    default: break;
    }
}

static bool mh_is_lost(void *arg, int rank)
{
    struct mh_rank *rk = mh_rank_of(arg, rank);
    return !rk || rk->lost;
}

int mh_recv(struct mh *h, int tag, size_t *len, int *from, int *tag_out)
{
    int got = mx_recv_any(h->comm, MPI_ANY_SOURCE, tag, &h->scratch, &h->scratch_cap, len, from,
                          tag_out, (uint64_t)h->o->rank_timeout_ms * 1000000u, mh_is_lost, h);
    if (got == EXEC_ETIMEDOUT) {
        /* Its sender died mid-message: MPI may still hold the buffer. */
        char **g = realloc(h->graves, (h->ngraves + 1) * sizeof *g);
        if (g) {
            h->graves = g;
            h->graves[h->ngraves++] = h->scratch;
            h->scratch = NULL;
            h->scratch_cap = 0;
        }
        struct mh_rank *rk = mh_rank_of(h, *from);
        if (rk && h->thread_started)
            mh_lose(h, rk);
        else if (rk)
            rk->lost = true; /* start(): not waited for any more */
    }
    return got;
}

/* Takes what has come, MH_POLL_BURST messages at most. */
static bool mh_poll(struct mh *h)
{
    bool did = false;
    for (int k = 0; k < MH_POLL_BURST; k++) {
        size_t len;
        int from, tag;
        int got = mh_recv(h, MPI_ANY_TAG, &len, &from, &tag);
        if (got == EXEC_ETIMEDOUT) {
            did = true;
            continue;
        }
        if (got <= 0)
            break;
        mh_handle(h, from, tag, h->scratch, len);
        did = true;
    }
    return did;
}

/* Sends a small control message to every live rank and waits for the sends. */
static void mh_tell_all(struct mh *h, int tag, const void *msg, size_t len)
{
    for (int i = 0; i < h->nranks; i++) {
        struct mh_rank *rk = &h->r[i];
        MPI_Request req;
        if (rk->lost)
            continue;
        if (MPI_Isend(msg, (int)len, MPI_BYTE, rk->rank, tag, h->comm, &req) != MPI_SUCCESS) {
            mh_lose(h, rk);
            continue;
        }
        if (!mx_wait(&req, exec__now_ns() + (uint64_t)h->o->rank_timeout_ms * 1000000u)) {
            MPI_Request_free(&req);
            mh_lose(h, rk);
        }
    }
}

/* A swap's round: PREPARE to every live rank, then every answer (or the
 * deadline), then ABORT if one refused. */
static bool mh_swap_step(struct mh *h)
{
    struct mh_swap *s = &h->swap;
    exec__lock(&h->lock);
    bool asked = s->asked && !s->done;
    exec__unlock(&h->lock);
    if (!asked)
        return false;
    if (!s->running) {
        s->running = true;
        s->rc = 0;
        s->err[0] = '\0';
        s->deadline = exec__now_ns() + (uint64_t)h->o->start_timeout_ms * 1000000u;
        size_t sl = strlen(s->spec);
        char *msg = malloc(sizeof(struct mx_prepare) + sl);
        if (!msg) {
            s->rc = EXEC_ENOMEM;
        } else {
            struct mx_prepare m = {.h.session = h->session, .generation = s->generation,
                                   .spec_len = sl};
            memcpy(msg, &m, sizeof m);
            memcpy(msg + sizeof m, s->spec, sl);
            for (int i = 0; i < h->nranks; i++)
                h->r[i].prep_wait = !h->r[i].lost;
            mh_tell_all(h, MX_PREPARE, msg, sizeof m + sl);
            free(msg);
        }
    }
    bool waiting = false;
    for (int i = 0; i < h->nranks && s->rc == 0; i++)
        waiting |= h->r[i].prep_wait && !h->r[i].lost;
    if (waiting && exec__now_ns() < s->deadline)
        return false;
    for (int i = 0; i < h->nranks && s->rc == 0; i++) {
        if (h->r[i].prep_wait && !h->r[i].lost) {
            s->rc = EXEC_EINIT;
            mx_err(s->err, sizeof s->err, "rank %d did not build within start_timeout_ms (%u ms)",
                     h->r[i].rank, h->o->start_timeout_ms);
        }
    }
    if (s->rc == 0 && h->live == 0) {
        s->rc = EXEC_EFATAL;
        mx_err(s->err, sizeof s->err, "no rank left");
    }
    if (s->rc) {
        struct mx_gen m = {.h.session = h->session, .generation = s->generation};
        mh_tell_all(h, MX_ABORT, &m, sizeof m);
    }
    for (int i = 0; i < h->nranks; i++)
        h->r[i].prep_wait = false;
    s->running = false;
    exec__lock(&h->lock);
    s->done = true;
    pthread_cond_broadcast(&h->cond);
    exec__unlock(&h->lock);
    return true;
}

/* Ranks that hold batches and were silent for rank_timeout_ms are lost. */
static void mh_check(struct mh *h)
{
    uint64_t now = exec__now_ns();
    if (now < h->next_check)
        return;
    h->next_check = now + MH_CHECK_NS;
    uint64_t limit = (uint64_t)h->o->rank_timeout_ms * 1000000u;
    for (int i = 0; i < h->nranks; i++) {
        struct mh_rank *rk = &h->r[i];
        if (!rk->lost && (rk->inflight || rk->prep_wait) && now - rk->last_heard > limit)
            mh_lose(h, rk);
    }
}

void mh_shutdown(struct mh *h)
{
    if (h->comm == MPI_COMM_NULL)
        return;
    struct mx_head end = {.session = h->session};
    mh_tell_all(h, MX_END, &end, sizeof end);
    /* Take everything until each rank said BYE: results still on their way
     * are dropped, and a rank's sends complete only once they are taken. */
    uint64_t deadline = exec__now_ns() + (uint64_t)h->o->rank_timeout_ms * 1000000u;
    uint64_t nap = 0;
    for (;;) {
        int left = 0;
        for (int i = 0; i < h->nranks; i++)
            left += !h->r[i].lost && !h->r[i].bye;
        if (!left || exec__now_ns() >= deadline)
            break;
        if (mh_poll(h)) {
            nap = 0;
            continue;
        }
        nap = mx_backoff(nap, MH_NAP_MAX_NS);
        mx_nap(nap, NULL, 0);
    }
    for (int i = 0; i < h->nranks; i++)
        if (!h->r[i].bye)
            ck_pr_store_32(&h->r[i].gone, 1);
    for (uint32_t i = 0; i < h->nall; i++)
        mh_forget_sends(h->all[i], false);
}

void *mh_progress_main(void *arg)
{
    struct mh *h = arg;
    uint64_t nap = 0;
    for (;;) {
        if (ck_pr_load_32(&h->stop))
            break;
        bool did = mh_pump(h);
        did |= mh_poll(h);
        did |= mh_pump(h);
        did |= mh_swap_step(h);
        mh_push_sends(h);
        mh_check(h);
        if (did) {
            nap = 0;
            continue;
        }
        uint64_t out = 0;
        for (int i = 0; i < h->nranks; i++)
            out += h->r[i].inflight;
        bool busy = out || h->qhead || h->swap.running;
        nap = busy ? mx_backoff(nap, h->nunconf ? MH_PUSH_NAP_NS : MH_NAP_MAX_NS)
                   : MH_IDLE_NAP_NS;
        ck_pr_store_32(&h->sleeping, 1);
        ck_pr_fence_memory();
        exec__lock(&h->lock);
        bool swap = h->swap.asked && !h->swap.done;
        exec__unlock(&h->lock);
        if (!ck_ring_size(&h->in) && !swap && !ck_pr_load_32(&h->stop))
            mx_nap(nap, &h->wake_fd, 1);
        ck_pr_store_32(&h->sleeping, 0);
        uint64_t v;
        while (read(h->wake_fd, &v, sizeof v) > 0)
            ;
    }
    mh_shutdown(h);
    return NULL;
}
