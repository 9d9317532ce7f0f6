/*
 * EXEC_FORK: the parent's queues. The producer hands a slot to a worker (its
 * FIFO and `in` ring); the consumer takes slots back from `out`, checks them
 * and copies each result entry out of shared memory before believing it.
 *
 * The truth about slots (whose, queued where, which pass) is kept in parent
 * memory: the FIFO mirrors the `in` ring, and whatever comes out of `out`
 * must be the FIFO's head. The parent never uses a ring header a worker can
 * write (it keeps private shadows with the mask) and bounds every offset and
 * length. A worker that breaks the protocol is killed and replaced, and its
 * bad records read EXEC_EWORKER.
 */
#include "fork.h"
#include "alloc.h"
#include "tsan.h"

#include <ck_pr.h>
#include <stdlib.h>
#include <string.h>

/* Asks the supervisor to kill wk (and so to replace it). */
void fk_kill_req(struct fk *fk, struct fk_worker *wk, int why)
{
    exec__lock(&fk->lock);
    wk->p.kill_req = true;
    wk->p.kill_req_why = why;
    wk->p.kill_req_at = exec__now_ns();
    exec__unlock(&fk->lock);
    fk_wake_sup(fk);
}

/* Consumer. wk broke the protocol: kill it and stop reading what it writes. */
void fk_violation(struct fk *fk, struct fk_worker *wk, bool head)
{

    wk->c.distrust = true;
    if (head)
        wk->c.viol_head = true;
    fk_kill_req(fk, wk, K_OURS);
}

struct fk_slot *fk_slot_take(struct fk_worker *wk)
{
    uint32_t m = ck_pr_load_32(&wk->freemask);
    while (m) {
        uint32_t bit = m & -m;
        if (ck_pr_cas_32_value(&wk->freemask, m, m & ~bit, &m)) {
            struct fk_slot *s = &wk->slots[__builtin_ctz(bit)];
            exec__tsan_acquire(s);
            return s;
        }
    }
    return NULL;
}

void fk_slot_give(struct fk_worker *wk, struct fk_slot *s)
{
    exec__tsan_release(s);
    ck_pr_or_32(&wk->freemask, 1u << s->idx);
}

/* q.lock held. Puts s on wk's `in` ring (not the FIFO). */
bool fk_ring_put(struct fk_worker *wk, struct fk_slot *s)
{
    EXEC__ASSERT_HELD(&wk->q.lock);
    struct fk_hdr *h = wk->hdr;
    s->sin->n = s->b.n;
    s->sin->from = s->from;
    s->sin->view = s->b.recs == s->b.recs_buf ? 0 : (uint64_t)(uintptr_t)s->b.recs;
    ck_pr_store_32(&s->sout->done, 0);
    ck_pr_store_32(&s->sout->cur, 0);
    exec__tsan_release(s);
    wk->q.in_sh.c_head = ck_pr_load_uint(&h->in.c_head);
    if (!ck_ring_enqueue_spsc(&wk->q.in_sh, h->inbuf, (void *)(uintptr_t)s->idx))
        return false; /* cannot happen unless the worker wrote c_head */
    ck_pr_fence_store();
    ck_pr_store_uint(&h->in.p_tail, wk->q.in_sh.p_tail);
    ck_ec32_inc(&h->ec, &exec__ec_procs);
    return true;
}

/* q.lock held. */
bool fk_enqueue(struct fk_worker *wk, struct fk_slot *s)
{
    EXEC__ASSERT_HELD(&wk->q.lock);
    struct fk_gen *g = wk->g;
    EXEC__ASSERT(wk->q.n < g->nslot);
    if (wk->q.n == 0)
        ck_pr_store_64(&wk->q.head_since, exec__now_ns());
    wk->q.fifo[(wk->q.head + wk->q.n) % g->nslot] = s->idx;
    wk->q.n++;
    ck_pr_store_uint(&wk->q.qn, wk->q.n);
    s->qrec = s->b.n - s->from;
    ck_pr_store_64(&wk->q.nrec, wk->q.nrec + s->qrec);
    return fk_ring_put(wk, s);
}

/* q.lock held. */
struct fk_slot *fk_fifo_pop(struct fk_worker *wk)
{
    EXEC__ASSERT_HELD(&wk->q.lock);
    EXEC__ASSERT(wk->q.n > 0);
    struct fk_slot *s = &wk->slots[wk->q.fifo[wk->q.head]];
    wk->q.head = (wk->q.head + 1) % wk->g->nslot;
    wk->q.n--;
    ck_pr_store_uint(&wk->q.qn, wk->q.n);
    EXEC__ASSERT(wk->q.nrec >= s->qrec);
    ck_pr_store_64(&wk->q.nrec, wk->q.nrec - s->qrec);
    s->qrec = 0;
    ck_pr_store_64(&wk->q.head_since, wk->q.n ? exec__now_ns() : 0);
    return s;
}

bool fk_cancelled(const struct fk_slot *s, uint32_t i)
{
    return __atomic_load_n(&s->b.rflags[i], __ATOMIC_RELAXED) & EXEC__RF_CANCEL;
}

static bool fk_rbuf_room(struct fk_slot *s, size_t n)
{
    /* Allocated even for n == 0: results point into it (never NULL + 0). */
    if (s->rbuf && s->rbuf_cap - s->rbuf_len >= n)
        return true;
    size_t cap = s->rbuf_cap ? s->rbuf_cap : 4096;
    while (cap - s->rbuf_len < n)
        cap *= 2;
    char *p = exec__realloc(s->rbuf, cap);
    if (!p)
        return false;
    s->rbuf = p;
    s->rbuf_cap = cap;
    return true;
}

/* s's results are gathered apart (rbuf, which may have moved) from here on:
 * more than one pass. */
void fk_results_apart(struct fk_slot *s)
{
    s->b.rdata = s->rbuf;
    s->copied = true;
}

/*
 * Copies the results of records [s->from, to) out of shared memory and checks
 * each one; bytes must lie within [0, rlen). in_place: the result bytes stay in
 * the slot (one pass did the whole batch); else they are copied to rbuf.
 * Returns false if an entry was garbage (it then reads EXEC_EWORKER).
 */
bool fk_harvest(struct fk_slot *s, uint32_t to, uint64_t rlen, bool in_place)
{
    bool ok = true;
    for (uint32_t j = s->from; j < to; j++) {
        struct exec__res r;
        memcpy(&r, &s->sres[j], sizeof r);
        ck_pr_barrier(); /* use this copy only, never re-read shared memory */
        struct exec__res *o = &s->b.res[j];
        memset(o, 0, sizeof *o);
        bool has_data = r.status == 0 || r.status == EXEC_EUSER;
        uint8_t rf = __atomic_load_n(&s->b.rflags[j], __ATOMIC_RELAXED);
        if ((rf & EXEC__RF_SOFT) && r.status == EXEC_ERECTIMEOUT) {
            /* Stopped within the grace after its timeout. */
            o->status = EXEC_ERECTIMEOUT;
            o->flags = r.flags & EXEC_RESULT_EARLY;
            continue;
        }
        if (rf & EXEC__RF_CANCEL) {
            /* Cancelled before we took its result: that is what it reports. */
            o->status = EXEC_ECANCELLED;
            o->flags = r.status == EXEC_ECANCELLED ? (r.flags & EXEC_RESULT_EARLY) : 0;
            continue;
        }
        if ((!has_data && r.status != EXEC_ERESULT2BIG) ||
            (has_data && (r.off > rlen || r.len > rlen - r.off))) {
            o->status = EXEC_EWORKER;
            ok = false;
            continue;
        }
        o->status = r.status;
        o->user_code = r.status == EXEC_EUSER ? r.user_code : 0;
        if (!has_data)
            continue;
        if (in_place) {
            o->off = r.off;
            o->len = r.len;
        } else if (fk_rbuf_room(s, r.len)) {
            memcpy(s->rbuf + s->rbuf_len, s->srdata + r.off, r.len);
            o->off = s->rbuf_len;
            o->len = r.len;
            s->rbuf_len += r.len;
        } else {
            o->status = EXEC_EWORKER; /* out of memory here: report, never drop */
        }
    }
    if (in_place)
        s->b.rdata = s->srdata;
    else
        fk_results_apart(s);
    return ok;
}

uint32_t fk_take_pass(struct fk_slot *s, uint64_t rcap, bool *clean)
{
    uint32_t done = ck_pr_load_32(&s->sout->done);
    uint64_t rlen = ck_pr_load_64(&s->sout->rdata_len);
    *clean = false;
    if (done <= s->from || done > s->b.n || rlen > rcap)
        return 0;
    bool in_place = !s->copied && s->from == 0 && done == s->b.n;
    *clean = fk_harvest(s, done, rlen, in_place);
    return done;
}

void fk_push_done(struct fk *fk, struct fk_slot *s)
{
    s->next_done = fk->done;
    fk->done = s;
}

/*
 * Consumer. Takes slots wk returned until one completes its batch (returned),
 * the ring is empty, or wk broke the protocol (NULL for both). count: the
 * records go into the place's figures (not a canary's replays).
 */
struct fk_slot *fk_pull(struct fk *fk, struct fk_worker *wk, bool count)
{
    struct fk_hdr *h = wk->hdr;
    struct fk_gen *g = wk->g;
    while (!wk->c.distrust) {
        void *v;
        wk->c.out_sh.p_tail = ck_pr_load_uint(&h->out.p_tail);
        if (!ck_ring_dequeue_spsc(&wk->c.out_sh, h->outbuf, &v))
            return NULL;
        ck_pr_store_uint(&h->out.c_head, wk->c.out_sh.c_head);
        uintptr_t si = (uintptr_t)v;
        exec__lock(&wk->q.lock);
        if (wk->q.n == 0 || si != wk->q.fifo[wk->q.head]) {
            exec__unlock(&wk->q.lock);
            fk_violation(fk, wk, true);
            return NULL;
        }
        struct fk_slot *s = &wk->slots[si];
        exec__tsan_acquire(s);
        /* Under q.lock: fk_cancel() sees either all of this or none. */
        bool clean;
        uint32_t done = fk_take_pass(s, g->rcap, &clean);
        if (!done) {
            exec__unlock(&wk->q.lock);
            fk_violation(fk, wk, true);
            return NULL;
        }
        fk_fifo_pop(wk);
        uint32_t ran = done - s->from;
        s->from = done;
        exec__unlock(&wk->q.lock);
        if (!clean)
            fk_violation(fk, wk, false);
        wk->c.completed++;
        ck_pr_store_64(&wk->c.returned, wk->c.returned + 1);
        if (count) {
            ck_pr_add_64(&wk->place->records, ran);
            ck_pr_inc_64(&wk->place->batches);
        }
        if (done == s->b.n)
            return s;
        /* The result area filled up: run the rest in another pass. */
        exec__lock(&wk->q.lock);
        bool ok = fk_enqueue(wk, s);
        exec__unlock(&wk->q.lock);
        if (!ok)
            fk_violation(fk, wk, false);
    }
    return NULL;
}

/* q.lock held. Every record left in wk's FIFO gets `status`. */
void fk_fail_all(struct fk *fk, struct fk_worker *wk, int status)
{
    EXEC__ASSERT_HELD(&wk->q.lock);
    while (wk->q.n) {
        struct fk_slot *s = fk_fifo_pop(wk);
        exec__tsan_acquire(s);
        fk_results_apart(s);
        for (uint32_t j = s->from; j < s->b.n; j++) {
            memset(&s->b.res[j], 0, sizeof s->b.res[j]);
            s->b.res[j].status = fk_cancelled(s, j) ? EXEC_ECANCELLED : status;
        }
        s->from = s->b.n;
        fk_push_done(fk, s);
    }
}
