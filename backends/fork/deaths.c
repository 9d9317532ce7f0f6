/*
 * EXEC_FORK: settling a dead worker, on the consumer's thread (inside reap).
 * The supervisor marks the death (W_DEAD: pidfd readable and status known);
 * here the record the worker was on is charged (crash, timeout, a stall),
 * the results it finished keep their values, the rest of that slot and every
 * queued slot are re-queued for the replacement (same area, rings rebuilt
 * from the FIFO), and the supervisor is asked for the replacement. A record
 * thus gets exactly one result. A place whose processes keep failing is
 * given up on: its records read EXEC_EWORKER, and when every place of the
 * current generation is gone the executor is fatal.
 *
 * A kill we asked for because of a record whose result is already out (the
 * consumer found garbage in it) ends after that result: until its death is
 * settled here, fk_unsettled() holds back EXEC_EOF, so that exec_stats()
 * counts the respawn once the stream is over.
 */
#include "fork.h"
#include "tsan.h"

#include <ck_pr.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

static void fk_set_cause(struct exec__res *o, int status, int wstatus)
{
    memset(o, 0, sizeof *o);
    o->status = status;
    if (WIFSIGNALED(wstatus))
        o->signal = WTERMSIG(wstatus);
    else if (WIFEXITED(wstatus))
        o->exit_status = WEXITSTATUS(wstatus);
}

/* Which record of the head slot s wk was on, as far as its words say (the
 * header's seqlock, else the slot's own marker): an index in
 * [s->from, s->b.n), or -1 when neither says. */
static int64_t fk_culprit(struct fk_worker *wk, const struct fk_slot *s)
{
    struct fk_hdr *h = wk->hdr;
    uint32_t cs = 0, cr = 0;
    if (fk_where(h, ck_pr_load_32(&h->tick), &cs, &cr) && cs == s->idx && cr >= s->from &&
        cr < s->b.n)
        return cr;
    uint32_t c = ck_pr_load_32(&s->sout->cur);
    if (c > s->from && c <= s->b.n)
        return c - 1;
    return -1;
}

/* q.lock held. The head slot s of a worker that died (or stalled) on it:
 * what ran before keeps its results, the record it was on is charged.
 * True when one was. */
static bool fk_blame(struct fk_worker *wk, struct fk_slot *s, int why, int wstatus,
                     uint32_t to_slot, uint32_t to_rec)
{
    EXEC__ASSERT_HELD(&wk->q.lock);
    struct fk_gen *g = wk->g;
    uint32_t done = ck_pr_load_32(&s->sout->done);
    if (done > s->from && done <= s->b.n) {
        /* Its pass was over: it died before sending the slot back. */
        uint64_t rlen = ck_pr_load_64(&s->sout->rdata_len);
        fk_harvest(s, done, rlen <= g->rcap ? rlen : g->rcap, false);
        ck_pr_add_64(&wk->place->records, done - s->from);
        s->from = done;
        return false;
    }
    int64_t cul = fk_culprit(wk, s);
    if (cul < 0)
        return false;
    uint32_t cr = (uint32_t)cul;
    /* Records before it in this pass have results (bounded by the area:
     * the pass never published its length). */
    fk_harvest(s, cr, g->rcap, false);
    if (why == K_CANCEL && !fk_cancelled(s, cr)) {
        /* Killed for a cancel, but already past the cancelled record: the
         * one it was on is innocent and runs again. */
        ck_pr_add_64(&wk->place->records, cr - s->from);
        s->from = cr;
        return false;
    }
    int status = why == K_STALL                                        ? EXEC_EWORKER
                 : why == K_CANCEL                                       ? EXEC_ECANCELLED
                 : why == K_TIMEOUT && to_slot == s->idx && to_rec == cr ? EXEC_ERECTIMEOUT
                                                                        : EXEC_ECRASHED;
    fk_set_cause(&s->b.res[cr], status, status == EXEC_EWORKER ? 0 : wstatus);
    if (fk_cancelled(s, cr))
        fk_set_cause(&s->b.res[cr], EXEC_ECANCELLED, 0);
    ck_pr_add_64(&wk->place->records, cr + 1 - s->from);
    s->from = cr + 1;
    return true;
}

/* q.lock held. Fresh rings and header for the place's next process,
 * refilled from our FIFO; the leaving process's figures join the place's. */
static void fk_reset_place(struct fk_worker *wk)
{
    EXEC__ASSERT_HELD(&wk->q.lock);
    struct fk_hdr *h = wk->hdr;
    struct fk_place *pl = wk->place;
    ck_pr_add_64(&pl->startup_ns, ck_pr_load_64(&h->startup_ns));
    ck_pr_add_64(&pl->busy_ns, ck_pr_load_64(&h->busy_ns));
    ck_pr_add_64(&pl->idle_ns, ck_pr_load_64(&h->idle_ns));
    ck_pr_store_64(&h->startup_ns, 0);
    ck_pr_store_64(&h->busy_ns, 0);
    ck_pr_store_64(&h->idle_ns, 0);
    ck_pr_store_64(&h->idle_since, 0);
    ck_ring_init(&h->in, FK_RING);
    ck_ring_init(&h->out, FK_RING);
    ck_ring_init(&wk->q.in_sh, FK_RING);
    ck_ring_init(&wk->c.out_sh, FK_RING);
    ck_pr_store_32(&h->busy, 0);
    ck_pr_store_32(&h->cur_slot, FK_NOSLOT);
    ck_pr_store_32(&h->state, FK_W_STARTING);
    ck_pr_store_32(&h->stop, 0);
    ck_pr_store_32(&h->admit, 0);
    ck_pr_store_32(&h->want_out, 0);
    ck_pr_store_32(&h->handoff, FK_H_NONE);
    ck_pr_store_32(&h->aim_busy, 0);
    ck_pr_store_32(&h->aim_sig, 0);
    for (unsigned k = 0; k < wk->q.n; k++)
        fk_ring_put(wk, &wk->slots[wk->q.fifo[(wk->q.head + k) % wk->g->nslot]]);
    if (wk->q.n)
        ck_pr_store_64(&wk->q.head_since, exec__now_ns());
    wk->c.distrust = false;
    wk->c.viol_head = false;
}

/* fk->lock held. wk died without a kill of ours: did a timeout's soft stop
 * end it? Yes when it died still on the stopped record (of the SIGTERM or
 * soon after), or of the SIGTERM as it left that record (one that returns
 * at its flag may leave before the signal lands); not when it died on a
 * later record. soft_at can say neither (the supervisor lets it go at its
 * next look, which a quick crash or a slow death can beat): the header's
 * tick, frozen at the death, says. */
static bool fk_died_stopped(struct fk_worker *wk, int wstatus)
{
    EXEC__ASSERT_HELD(&wk->g->fk->lock);
    if (!wk->w.soft_sent)
        return false;
    uint32_t tick = ck_pr_load_32(&wk->hdr->tick);
    return tick == wk->w.soft_tick ||
           (tick == wk->w.soft_tick + 1 && WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGTERM);
}

/* Consumer. wk died (W_DEAD): settle its slots, ask for a replacement. */
static void fk_bury(struct fk *fk, struct fk_worker *wk)
{
    struct fk_gen *g = wk->g;
    struct fk_hdr *h = wk->hdr;
    struct fk_place *pl = wk->place;
    exec__lock(&fk->lock);
    int wstatus = wk->p.wstatus, why = wk->p.kill_why;
    if (why == K_NONE && fk_died_stopped(wk, wstatus))
        why = K_TIMEOUT;
    if (why == K_OURS && !(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL))
        why = K_NONE; /* it died of its own record before our SIGKILL landed: charge it */
    bool admitted = wk->p.admitted;
    /* A process that served a while proved its start works, whatever ended it. */
    bool lived = admitted && exec__now_ns() - wk->p.ready_at >= FK_LIVED_NS;
    uint32_t to_slot = wk->w.to_slot, to_rec = wk->w.to_rec;
    exec__unlock(&fk->lock);

    /* What it finished and sent back before dying keeps its results. */
    struct fk_slot *c;
    while ((c = fk_pull(fk, wk, true)))
        fk_push_done(fk, c);

    bool blamed = false;
    bool planned = admitted && ck_pr_load_32(&h->state) == FK_W_RETIRED &&
                   WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0;
    exec__lock(&wk->q.lock);
    if (wk->q.n) {
        struct fk_slot *s = &wk->slots[wk->q.fifo[wk->q.head]];
        exec__tsan_acquire(s);
        if (wk->c.viol_head) {
            fk_results_apart(s);
            for (uint32_t j = s->from; j < s->b.n; j++) {
                memset(&s->b.res[j], 0, sizeof s->b.res[j]);
                s->b.res[j].status = fk_cancelled(s, j) ? EXEC_ECANCELLED : EXEC_EWORKER;
            }
            s->from = s->b.n;
        } else if (admitted && why != K_OURS && !planned) {
            /* (A cancel's kill charges the cancelled record, and keeps the
             * results before it: they must not run twice.) */
            blamed = fk_blame(wk, s, why, wstatus, to_slot, to_rec);
        }
        if (s->from == s->b.n)
            fk_push_done(fk, fk_fifo_pop(wk));
    }
    fk_reset_place(wk);
    unsigned completed = wk->c.completed;
    wk->c.completed = 0;

    exec__lock(&fk->lock);
    if (planned || blamed || completed || lived || why == K_CANCEL)
        wk->p.fails = 0; /* (a cancel's kill is ours, not a failure) */
    else
        wk->p.fails++; /* a start that failed, or a death that proved nothing */

    bool give_up = wk->p.fails > FK_MAX_FAILS;
    if (give_up) {
        wk->p.state = W_GONE;
    } else {
        if (admitted) {
            /* Counted here (the consumer): a result after a death sees it. */
            exec__respawned(fk->ex);
            ck_pr_inc_64(planned               ? &pl->resp_recycle
                         : why == K_TIMEOUT    ? &pl->resp_timeout
                         : why == K_CANCEL     ? &pl->resp_cancel
                                               : &pl->resp_crash);
        }
        wk->p.state = W_WAIT;
        unsigned f = wk->p.fails;
        uint64_t backoff = f ? 1000000ull << (f < 10 ? f : 10) : 0;
        wk->p.respawn_at = exec__now_ns() + backoff;
    }
    exec__unlock(&fk->lock);
    if (give_up) {
        ck_pr_store_32(&wk->c.gone, 1);
        ck_pr_store_32(&pl->flags, ck_pr_load_32(&pl->flags) | EXEC_WORKER_GONE);
        fk_fail_all(fk, wk, EXEC_EWORKER);
        bool all = true;
        for (unsigned i = 0; i < g->nw; i++)
            if (!ck_pr_load_32(&g->w[i].c.gone))
                all = false;
        if (all && ck_pr_load_ptr(&fk->cur) == g)
            exec__fatal(fk->ex);
    }
    exec__unlock(&wk->q.lock);
    fk_wake_sup(fk);
}

void fk_deaths(struct fk *fk)
{
    ck_pr_store_32(&fk->dead_pending, 0);
    ck_pr_fence_memory();
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *g = &fk->gens[k];
        uint32_t gs = ck_pr_load_32(&g->state);
        if (gs != G_ACTIVE && gs != G_RETIRING)
            continue;
        exec__tsan_acquire(g);
        for (unsigned i = 0; i < g->nw; i++) {
            struct fk_worker *wk = &g->w[i];
            exec__lock(&fk->lock);
            bool dead = wk->p.state == W_DEAD;
            exec__unlock(&fk->lock);
            if (dead)
                fk_bury(fk, wk);
        }
    }
}

/* Consumer (the seam's unsettled): a kill asked for by the consumer (kill_req)
 * whose process is not dead and settled yet, or a death not settled yet,
 * in a generation whose deaths we settle. Bounded: a process that outlives
 * FK_SETTLE_NS after the request is not waited for. */
bool fk_unsettled(exec_t *ex)
{
    struct fk *fk = exec__priv(ex);
    uint64_t now = exec__now_ns();
    bool owed = false;
    exec__lock(&fk->lock);
    for (unsigned k = 0; k < FK_MAXGEN && !owed; k++) {
        struct fk_gen *g = &fk->gens[k];
        uint32_t gs = ck_pr_load_32(&g->state);
        if (gs != G_ACTIVE && gs != G_RETIRING)
            continue;
        for (unsigned i = 0; i < g->nw && !owed; i++) {
            const struct fk_proc *p = &g->w[i].p;
            owed = p->state == W_DEAD ||
                   (p->kill_req && (p->state == W_LIVE || p->state == W_SPAWNING) &&
                    now - p->kill_req_at < FK_SETTLE_NS);
        }
    }
    exec__unlock(&fk->lock);
    return owed;
}
