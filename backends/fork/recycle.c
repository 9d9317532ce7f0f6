/*
 * EXEC_FORK: recycling, on the supervisor thread (fk->lock held throughout).
 * One place at a time: a successor is forked ahead (the zygote's number
 * idx + nw or idx), runs worker_init and waits; the worker in the place
 * leaves at a batch boundary and hands over the header (FK_H_GO), and the
 * successor goes on with the same rings and slots: nothing is re-queued and
 * no record waits. A successor that cannot take over (it refused, died, was
 * too slow, or we could not watch it) is killed, and the worker then leaves
 * and is replaced the ordinary way.
 */
#include "fork.h"

#include <ck_pr.h>
#include <sys/wait.h>
#include <unistd.h>

/* SIGKILL to wk's successor and its group. */
void fk_succ_kill(struct fk_worker *wk)
{
    EXEC__ASSERT_HELD(&wk->g->fk->lock);
    if (wk->s.killed || wk->s.pidfd < 0)
        return;
    fk_kill_proc(wk->s.pid, wk->s.pidfd);
    wk->s.killed = true;
}

/* wk has no successor (any more); the next recycling may start. */
void fk_succ_clear(struct fk *fk, struct fk_worker *wk)
{
    EXEC__ASSERT_HELD(&fk->lock);
    if (wk->s.pidfd >= 0)
        close(wk->s.pidfd);
    wk->s.pidfd = -1;
    wk->s.state = S_NONE;
    wk->s.pid = 0;
    wk->s.dead = wk->s.killed = false;
    if (fk->recycling == wk)
        fk->recycling = NULL;
}

/* From the pass: starts a successor for wk when it asks for one (records
 * limit) or grew (memory), and kills one that is too slow to start. */
void fk_succ_maybe_start(struct fk *fk, struct fk_gen *g, struct fk_worker *wk, uint64_t now,
                         int *wait_ms)
{
    EXEC__ASSERT_HELD(&fk->lock);
    struct fk_hdr *h = wk->hdr;
    uint32_t gs = ck_pr_load_32(&g->state);
    bool asks = (fk->o->max_records_per_worker && ck_pr_load_32(&h->want_out)) || wk->w.mem_want;
    /* (The pid check: the last successor has taken the place.) */
    if (wk->s.state == S_NONE && !fk->recycling && gs == G_ACTIVE && wk->p.admitted &&
        !wk->p.exited && !wk->p.kill_req && wk->p.kill_why == K_NONE && g->zsock >= 0 && asks &&
        ck_pr_load_32((uint32_t *)&h->pid) == (uint32_t)wk->p.pid) {
        ck_pr_store_32(&h->want_out, 0);
        ck_pr_store_32(&h->succ_state, FK_W_STARTING);
        ck_pr_store_32(&h->handoff, FK_H_NONE);
        struct fk_msg m = {FK_M_SPAWN, (int32_t)(wk->p.zi == wk->idx ? wk->idx + g->nw : wk->idx),
                           0, 1};
        fk_sup_send(g, &m);
        wk->s.state = S_SPAWNING;
        wk->s.now = wk->w.mem_want;
        wk->s.at = now;
        wk->s.mem_base_set = false;
        fk->recycling = wk;
    }
    if (wk->s.state == S_SPAWNING || wk->s.state == S_LIVE) {
        uint64_t dl = wk->s.at + (uint64_t)fk->o->start_timeout_ms * 1000000u;
        if (now >= dl)
            fk_succ_kill(wk); /* too slow: the recycling fails */
        else
            fk_wait_at(wait_ms, now, dl);
    }
}

/* The zygote forked wk's successor: keep its pidfd. Without one (our
 * descriptor table is full) it must not take over: the zygote kills it. */
void fk_succ_spawned(struct fk *fk, struct fk_worker *wk, const struct fk_msg *m, int *fd)
{
    EXEC__ASSERT_HELD(&fk->lock);
    if (wk->s.state != S_SPAWNING && wk->s.state != S_DOOMED)
        return;
    wk->s.pid = m->pid;
    if (*fd < 0) {
        /* Its end (EXITED) fails the recycling: see fk_succ_gone. */
        struct fk_msg k = {FK_M_KILL, m->idx, m->pid, 0};
        fk_sup_send(wk->g, &k);
        wk->s.killed = true;
        return;
    }
    wk->s.pidfd = *fd;
    *fd = -1;
    if (wk->s.state == S_DOOMED)
        fk_succ_kill(wk);
    else
        wk->s.state = S_LIVE;
}

/* wk's successor ran worker_init and waits: tell the worker in the place. */
void fk_succ_ready(struct fk *fk, struct fk_worker *wk)
{
    EXEC__ASSERT_HELD(&fk->lock);
    wk->s.state = S_READY;
    ck_pr_store_64(&wk->hdr->lead_ns, exec__now_ns() - wk->s.at);
    if (fk->o->max_worker_growth_kb) {
        uint64_t pss = 0, dirty = 0;
        fk_smaps(wk->s.pid, &pss, &dirty);
        wk->s.mem_base = dirty;
        wk->s.mem_base_set = true;
    }
    /* The worker in the place may be asleep. */
    ck_pr_store_32(&wk->hdr->handoff, wk->s.now ? FK_H_NOW : FK_H_READY);
    ck_ec32_inc(&wk->hdr->ec, &exec__ec_procs);
}

/*
 * The worker left the place to its ready successor: the successor is now the
 * place's process, with the same rings and slots.
 */
static void fk_sup_promote(struct fk *fk, struct fk_gen *g, struct fk_worker *wk)
{
    EXEC__ASSERT_HELD(&fk->lock);
    EXEC__ASSERT(wk->s.state == S_READY && wk->s.pidfd >= 0);
    struct fk_place *pl = wk->place;
    if (wk->p.pidfd >= 0)
        close(wk->p.pidfd);
    /* The leaving process's own figures: the successor carries the place's
     * on in the header (it read them at the hand-over). */
    pid_t pid = wk->s.pid;
    int pidfd = wk->s.pidfd;
    unsigned zi = wk->p.zi == wk->idx ? wk->idx + g->nw : wk->idx;
    fk_proc_reset(wk);
    wk->p.pid = pid;
    wk->p.pidfd = pidfd;
    wk->s.pidfd = -1;
    wk->p.zi = zi;
    wk->p.admitted = true;
    wk->p.ready_at = exec__now_ns();
    wk->p.fails = 0;
    wk->w.mem_base = wk->s.mem_base;
    wk->w.mem_base_set = wk->s.mem_base_set;
    /* handoff stays FK_H_GO: the successor may not have seen it yet. */
    ck_pr_inc_64(&pl->resp_recycle);
    exec__respawned(fk->ex);
    bool dead = wk->s.dead;
    int wstatus = wk->s.wstatus;
    fk_succ_clear(fk, wk);
    if (dead) {
        /* It died after it took over: a death of the place's worker. */
        wk->p.wstatus = wstatus;
        wk->p.exited = wk->p.have_status = true;
        fk_sup_dead(fk, g, wk);
    }
}

/*
 * wk's process is gone (pidfd readable, status known). Its successor takes
 * the place if it was handed over; otherwise the successor goes too and the
 * place is settled (fk_sup_dead) once both are gone, so the consumer never
 * rebuilds rings a live process still reads.
 */
void fk_sup_gone(struct fk *fk, struct fk_gen *g, struct fk_worker *wk)
{
    EXEC__ASSERT_HELD(&fk->lock);
    if (wk->s.state == S_NONE) {
        fk_sup_dead(fk, g, wk);
    } else if (wk->s.state == S_READY && ck_pr_load_32(&wk->hdr->handoff) == FK_H_GO &&
               !wk->p.kill_req && wk->p.kill_why == K_NONE) {
        fk_sup_promote(fk, g, wk);
    } else if (wk->s.dead) {
        fk_succ_clear(fk, wk);
        fk_sup_dead(fk, g, wk);
    } else {
        fk_succ_kill(wk);
        wk->s.state = S_DOOMED;
    }
}

/* wk's successor is gone (the zygote's word, or its fork failed). */
void fk_succ_gone(struct fk *fk, struct fk_gen *g, struct fk_worker *wk, int wstatus)
{
    EXEC__ASSERT_HELD(&fk->lock);
    int st = wk->s.state;
    if (st == S_NONE)
        return;
    if (st != S_DOOMED && ck_pr_load_32(&wk->hdr->handoff) == FK_H_GO &&
        wk->p.state == W_LIVE && !(wk->p.exited && wk->p.have_status)) {
        /* It had taken the place: settled when the old worker is gone. */
        wk->s.dead = true;
        wk->s.wstatus = wstatus;
        return;
    }
    fk_succ_clear(fk, wk);
    if (st == S_DOOMED) {
        if (wk->p.state == W_LIVE && wk->p.exited && wk->p.have_status)
            fk_sup_dead(fk, g, wk);
        return;
    }
    /* The recycling failed (worker_init refused, a crash, too slow): the
     * worker leaves at its next batch boundary and is replaced as before. */
    if (wk->p.state == W_LIVE) {
        ck_pr_store_32(&wk->hdr->stop, 1);
        ck_ec32_inc(&wk->hdr->ec, &exec__ec_procs);
    }
}
