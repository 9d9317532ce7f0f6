/*
 * EXEC_FORK: what the supervisor watches in a live worker, once per pass
 * (fk->lock held): records past slow_ms (reported) and timeout_ms (a soft
 * stop, then SIGKILL after grace_ms), memory growth (recycling), and stalls.
 *
 * A worker can write anything over its own header, so nothing it says there
 * is trusted for liveness: a worker that holds queued slots and neither
 * returns one nor moves on for FK_NUDGE_NS gets its ring republished and a
 * wake-up; after FK_STALL_NS it has broken the protocol and is killed. With
 * timeout_ms, a head slot that is not back within batch x (timeout + grace)
 * plus that margin is the parent's own deadline, whatever the header says.
 */
#include "fork.h"

#include <ck_pr.h>
#include <poll.h>
#include <signal.h>
#include <sys/pidfd.h>

/*
 * A timeout's (or a cancel's) signal must end the record it was meant for,
 * never the next one: a worker may finish a record between our look at its
 * tick and the signal. So the aim is announced first (aim_tick, aim_busy), then the tick
 * read again; a worker leaving a record moves its tick, then reads the
 * announcement (fk_w_on_return). With a full fence between on both sides,
 * at least one sees the other: either we see it gone (no signal), or it sees
 * the aim and waits, SIGTERM blocked, until fk_aim_end says what was sent.
 * True when the signal may go; fk_aim_end follows either way.
 */
static bool fk_aim(struct fk_hdr *h, uint32_t tick)
{
    ck_pr_store_32(&h->aim_sig, 0);
    ck_pr_store_32(&h->aim_busy, 1);
    ck_pr_store_32(&h->aim_tick, tick);
    ck_pr_fence_memory();
    return ck_pr_load_32(&h->tick) == tick;
}

static void fk_aim_end(struct fk_hdr *h, int sig)
{
    ck_pr_store_32(&h->aim_sig, (uint32_t)sig);
    ck_pr_fence_store();
    ck_pr_store_32(&h->aim_busy, 0);
}

/* q.lock held. Is slot cs the worker's (dispatched to it, not yet reaped)?
 * Slots it finished wait ahead of the one it runs until the consumer takes
 * them. */
static bool fk_theirs(const struct fk_worker *wk, uint32_t cs)
{
    for (unsigned k = 0; k < wk->q.n; k++)
        if (wk->q.fifo[(wk->q.head + k) % wk->g->nslot] == cs)
            return true;
    return false;
}

/*
 * wk ran past timeout_ms on (to_slot, to_rec) at `tick`: flag the record
 * (exec_cancelled() then says so) and send SIGTERM; the hard kill follows
 * after grace_ms. The flag goes on only while the slot is still the worker's
 * (in its FIFO), so a slot being refilled never gets it. False when the
 * FIFO lock is busy (lock order: q.lock before fk->lock): try again.
 */
static bool fk_soft_stop(struct fk_worker *wk, uint32_t tick, uint64_t now)
{
    EXEC__ASSERT_HELD(&wk->g->fk->lock);
    struct fk_gen *g = wk->g;
    if (exec__trylock(&wk->q.lock) != 0)
        return false;
    const bool on = fk_aim(wk->hdr, tick);
    uint32_t cs = wk->w.to_slot, cr = wk->w.to_rec;
    if (on && cs < g->nslot && fk_theirs(wk, cs) && cr < wk->slots[cs].b.n)
        __atomic_fetch_or(&wk->slots[cs].b.rflags[cr], EXEC__RF_SOFT, __ATOMIC_RELAXED);
    exec__unlock(&wk->q.lock);
    const bool sent =
        on && wk->p.pidfd >= 0 && pidfd_send_signal(wk->p.pidfd, SIGTERM, NULL, 0) == 0;
    fk_aim_end(wk->hdr, sent ? SIGTERM : 0);
    if (on) {
        wk->w.soft_at = now ? now : 1;
        wk->w.soft_tick = tick;
        wk->w.soft_sent = true;
    } else {
        /* It finished that record meanwhile: start its clock again. */
        wk->w.last_tick = 0;
        wk->w.last_change = 0;
    }
    return true;
}

/* SIGKILL for `why`, aimed at wk's record of `tick`. False when it had left it. */
static bool fk_aimed_kill(struct fk_worker *wk, uint32_t tick, int why)
{
    EXEC__ASSERT_HELD(&wk->g->fk->lock);
    const bool on = fk_aim(wk->hdr, tick);
    if (on)
        fk_sup_kill(wk, why);
    fk_aim_end(wk->hdr, on && wk->p.kill_why == why ? SIGKILL : 0);
    return on;
}

/* grace_ms after the soft stop, still on that record: SIGKILL. */
static void fk_hard_stop(struct fk_worker *wk)
{
    if (!fk_aimed_kill(wk, wk->w.soft_tick, K_TIMEOUT))
        wk->w.soft_at = 0; /* it stopped within the grace after all */
}

/*
 * Queues a slow-record report for wk's current record (sent after the pass,
 * without the lock). False when the FIFO lock was busy or the queue is full:
 * try again at the next pass.
 */
static bool fk_slow_report(struct fk *fk, struct fk_worker *wk, uint32_t tick, uint64_t now)
{
    EXEC__ASSERT_HELD(&fk->lock);
    struct fk_gen *g = wk->g;
    if (fk->nslow == fk->slow_cap || exec__trylock(&wk->q.lock) != 0)
        return false;
    uint32_t cs = 0, cr = 0;
    bool ok = fk_where(wk->hdr, tick, &cs, &cr) && cs < g->nslot && fk_theirs(wk, cs) &&
              cr < wk->slots[cs].b.n;
    if (ok) {
        const struct fk_slot *s = &wk->slots[cs];
        exec_slow_t *r = &fk->slow[fk->nslow++];
        r->tag = s->b.recs[cr].tag;
        r->seq = s->b.rec_seq0 + cr;
        r->worker = wk->idx;
        r->pid = wk->p.pid;
        r->elapsed_ms = (now - wk->w.last_change) / 1000000u;
    }
    exec__unlock(&wk->q.lock);
    /* A record that moved on was not slow after all: nothing to say. */
    return ok || ck_pr_load_32(&wk->hdr->tick) != tick;
}

/* Timeouts and slow reports, from the header's (slot, record, tick). */
static void fk_watch_time(struct fk *fk, struct fk_worker *wk, uint64_t now, int *wait_ms)
{
    const exec_options_t *o = fk->o;
    struct fk_watch *w = &wk->w;
    uint32_t busy = ck_pr_load_32(&wk->hdr->busy);
    uint32_t tick = ck_pr_load_32(&wk->hdr->tick);
    uint64_t limit = (uint64_t)o->timeout_ms * 1000000u;
    uint64_t slow = o->slow_ms ? (uint64_t)o->slow_ms * 1000000u : UINT64_MAX;
    uint64_t grace = (uint64_t)o->grace_ms * 1000000u;
    if (w->soft_at && (!busy || tick != w->soft_tick))
        w->soft_at = 0; /* it stopped within the grace */
    if (w->soft_at) {
        if (now - w->soft_at >= grace)
            fk_hard_stop(wk);
        else
            fk_wait_at(wait_ms, now, w->soft_at + grace);
    } else if (!busy) {
        w->last_change = 0;
    } else if (w->last_change == 0 || tick != w->last_tick) {
        w->last_tick = tick;
        w->last_change = now;
        w->slow_told = false;
    } else if (!w->slow_told && o->on_slow && o->slow_ms &&
               (now - w->last_change >= slow || (limit && now - w->last_change >= limit))) {
        /* Told first; a timeout acts at the next pass. */
        if (fk_slow_report(fk, wk, tick, now))
            w->slow_told = true;
        fk_wait_at(wait_ms, now, now);
    } else if (limit && now - w->last_change >= limit) {
        struct pollfd pf = {.fd = wk->p.pidfd, .events = POLLIN};
        if (wk->p.pidfd < 0 || poll(&pf, 1, 0) != 0) {
            /* Dead already (its pidfd says so before we read it): the record
             * it was on crashed, it did not run past its time. */
        } else if (!fk_where(wk->hdr, tick, &w->to_slot, &w->to_rec)) {
            /* It moved on meanwhile: (slot, rec) may not be the slow
             * record's. Start its clock again. */
            w->last_tick = 0;
            w->last_change = 0;
        } else if (!fk_soft_stop(wk, tick, now)) {
            fk_wait_at(wait_ms, now, now + 1000000u); /* busy lock: soon again */
        }
    }
    /* Look again while it has work (idle pools sleep). */
    if ((busy || ck_pr_load_uint(&wk->q.qn)) && wk->p.kill_why == K_NONE) {
        unsigned tick_ms = 100;
        if (o->timeout_ms && o->timeout_ms / 4 + 1 < tick_ms)
            tick_ms = o->timeout_ms / 4 + 1;
        if (o->slow_ms && o->slow_ms / 4 + 1 < tick_ms)
            tick_ms = o->slow_ms / 4 + 1;
        fk_wait_at(wait_ms, now, now + (uint64_t)tick_ms * 1000000u);
    }
}

/* The worker's baseline: what worker_init made private (it was just admitted). */
void fk_watch_memory_ready(struct fk *fk, struct fk_worker *wk)
{
    if (!fk->o->max_worker_growth_kb)
        return;
    uint64_t pss = 0, dirty = 0;
    fk_smaps(wk->p.pid, &pss, &dirty);
    wk->w.mem_base = dirty;
    wk->w.mem_base_set = true;
}

/*
 * Memory recycling. Two processes in a row that pass the limit within
 * FK_MEM_QUICK_NS of starting mean the limit is below the context's own
 * steady state (a collector rewriting it after fork): recycling stops for
 * the place, and its figures say so, rather than thrash.
 */
static void fk_watch_memory(struct fk *fk, struct fk_worker *wk, uint64_t now, int *wait_ms)
{
    struct fk_watch *w = &wk->w;
    struct fk_place *pl = wk->place;
    if (!w->mem_base_set || w->mem_told || wk->p.kill_why != K_NONE ||
        (ck_pr_load_32(&pl->flags) & EXEC_WORKER_MEM_OFF))
        return;
    if (now >= w->mem_at) {
        uint64_t pss = 0, dirty = 0;
        fk_smaps(wk->p.pid, &pss, &dirty);
        if (dirty > w->mem_base + fk->o->max_worker_growth_kb) {
            w->mem_told = true;
            pl->mem_quick = now - wk->p.ready_at < FK_MEM_QUICK_NS ? pl->mem_quick + 1 : 0;
            if (pl->mem_quick >= 2) {
                ck_pr_store_32(&pl->flags, ck_pr_load_32(&pl->flags) | EXEC_WORKER_MEM_OFF);
            } else {
                /* Grew: replaced as soon as a successor is ready. */
                w->mem_want = true;
                fk_wait_at(wait_ms, now, now); /* another pass starts the recycling */
            }
        }
        w->mem_at = now + 100000000u;
    }
    if (!w->mem_told)
        fk_wait_at(wait_ms, now, w->mem_at);
}

/* Stalls: see the top of this file. */
static void fk_watch_stall(struct fk *fk, struct fk_worker *wk, uint64_t now, int *wait_ms)
{
    struct fk_watch *w = &wk->w;
    /* Slots it sent back wait for the consumer, who may take its time: only
     * what the worker still holds counts (its out ring's fill is a hint). */
    unsigned qn = ck_pr_load_uint(&wk->q.qn);
    unsigned back = ck_pr_load_uint(&wk->hdr->out.p_tail) - ck_pr_load_uint(&wk->hdr->out.c_head);
    if (!wk->p.admitted || wk->p.exited || wk->p.kill_req || wk->p.kill_why != K_NONE ||
        qn == 0 || back >= qn) {
        w->st_since = 0;
        return;
    }
    uint64_t returned = ck_pr_load_64(&wk->c.returned);
    uint32_t tick = ck_pr_load_32(&wk->hdr->tick);
    if (w->st_since == 0 || returned != w->st_returned || tick != w->st_tick) {
        w->st_returned = returned;
        w->st_tick = tick;
        w->st_since = now;
        w->st_nudged = false;
    }
    uint64_t quiet = now - w->st_since;
    /* A seqlock held odd is a scribble, not a record running. */
    bool idle = !ck_pr_load_32(&wk->hdr->busy) || (tick & 1u);
    if (!idle) {
        /* Running a record, as it says: the timeout (if any) acts, and our
         * own deadline for the head slot backs it. */
        uint64_t since = ck_pr_load_64(&wk->q.head_since);
        if (fk->o->timeout_ms && since) {
            uint64_t per = ((uint64_t)fk->o->timeout_ms + fk->o->grace_ms) * 1000000u;
            uint64_t dl = since + (uint64_t)fk->o->batch * per + FK_STALL_NS;
            if (now >= dl)
                fk_sup_kill(wk, K_STALL);
            else
                fk_wait_at(wait_ms, now, dl);
        }
        return;
    }
    if (!w->st_nudged && quiet >= FK_NUDGE_NS) {
        /* Republish our ring's tail and wake it: a lost or scribbled
         * wake-up costs a moment, not the stream. */
        if (exec__trylock(&wk->q.lock) == 0) {
            ck_pr_store_uint(&wk->hdr->in.p_tail, wk->q.in_sh.p_tail);
            exec__unlock(&wk->q.lock);
        }
        ck_ec32_inc(&wk->hdr->ec, &exec__ec_procs);
        w->st_nudged = true;
    }
    if (quiet >= FK_STALL_NS) {
        fk_sup_kill(wk, K_STALL);
        return;
    }
    fk_wait_at(wait_ms, now, w->st_since + (w->st_nudged ? FK_STALL_NS : FK_NUDGE_NS));
}

/*
 * Is the worker, by its header, on a record flagged cancelled? 1 yes, 0 no,
 * -1 unknown (its FIFO lock was busy: lock order, q.lock before fk->lock).
 * The header may name a slot the worker has already given back, which the
 * producer may be refilling (its flags rewritten) right now: so the flag is
 * read under q.lock, and only while the slot is still in the worker's FIFO
 * (dispatched to it and not yet reaped).
 */
static int fk_on_cancelled(struct fk *fk, struct fk_worker *wk, uint32_t tick)
{
    struct fk_hdr *h = wk->hdr;
    uint32_t cs = 0, cr = 0;
    if (!ck_pr_load_32(&h->busy) || !fk_where(h, tick, &cs, &cr) || cs >= wk->g->nslot ||
        cr >= fk->o->batch)
        return 0;
    if (exec__trylock(&wk->q.lock) != 0)
        return -1;
    const struct fk_slot *s = &wk->slots[cs];
    bool on = fk_theirs(wk, cs) && cr < s->b.n && fk_cancelled(s, cr);
    exec__unlock(&wk->q.lock);
    return on;
}

/*
 * Cancel of a running record: its flag is up (exec_cancelled() says so).
 * A record that looks at it stops by itself; one still on it FK_CANCEL_NS
 * later has its worker killed. Killing at once would often land after the
 * record had stopped, on the next one, which then runs again.
 */
static void fk_watch_cancel(struct fk *fk, struct fk_worker *wk, uint64_t now, int *wait_ms)
{
    struct fk_watch *w = &wk->w;
    uint32_t tick = ck_pr_load_32(&wk->hdr->tick);
    int on = fk_on_cancelled(fk, wk, tick);
    if (on < 0) {
        /* Not known this pass: look again soon, the clock going on. */
        fk_wait_at(wait_ms, now, now + 1000000u);
        return;
    }
    if (!on) {
        w->cancel_at = 0;
        if (ck_pr_load_32(&wk->hdr->busy))
            fk_wait_at(wait_ms, now, now + 50000000u); /* while it works, look again */
        return;
    }
    if (!w->cancel_at || w->cancel_tick != tick) {
        w->cancel_at = now;
        w->cancel_tick = tick;
    }
    if (now - w->cancel_at < FK_CANCEL_NS) {
        fk_wait_at(wait_ms, now, w->cancel_at + FK_CANCEL_NS);
        return;
    }
    fk_aimed_kill(wk, tick, K_CANCEL); /* if still on it */
}

void fk_watch_worker(struct fk *fk, struct fk_gen *g, struct fk_worker *wk, uint64_t now,
                     int *wait_ms)
{
    EXEC__ASSERT_HELD(&fk->lock);
    (void)g;
    if (!wk->p.admitted || wk->p.exited)
        return; /* not yet watched, or dead: its status is on its way */
    fk_watch_cancel(fk, wk, now, wait_ms);
    if (wk->p.kill_why != K_NONE)
        return;
    if (fk->o->max_worker_growth_kb)
        fk_watch_memory(fk, wk, now, wait_ms);
    if ((fk->o->timeout_ms || (fk->o->slow_ms && fk->o->on_slow)) && wk->p.kill_why == K_NONE)
        fk_watch_time(fk, wk, now, wait_ms);
    fk_watch_stall(fk, wk, now, wait_ms);
}
