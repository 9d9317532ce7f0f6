/*
 * EXEC_FORK: the supervisor thread (one per executor, every signal blocked).
 * It owns the processes: for each generation it forks a zygote and asks it
 * for workers; it polls the zygotes' channels and every worker's pidfd (no
 * SIGCHLD handler anywhere), admits a new worker once it watches it, marks
 * deaths for the consumer to settle, and on each pass runs the watches
 * (watch.c) and recycling (recycle.c). What those share with it (a zygote's
 * start, a process's kill, reset and death) is in procs.c, below all three.
 * Its state is under fk->lock.
 */
#include "fork.h"

#include <ck_pr.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

/* ------------------------------------------------------------------------- */
/* Zygotes                                                                   */
/* ------------------------------------------------------------------------- */

/* fk->lock held. The zygote exited: reap it and forget its descriptors. */
static void fk_zygote_gone(struct fk_gen *g)
{
    EXEC__ASSERT_HELD(&g->fk->lock);
    siginfo_t si;
    /* ECHILD when the host ignores SIGCHLD or reaped it first: fine. */
    waitid((idtype_t)P_PIDFD, (id_t)g->zpidfd, &si, WEXITED | WNOHANG | __WALL);
    close(g->zpidfd);
    if (g->zsock >= 0)
        close(g->zsock);
    g->zpidfd = -1;
    g->zsock = -1;
    g->zpid = 0;
}

/* ------------------------------------------------------------------------- */
/* Messages from a zygote                                                    */
/* ------------------------------------------------------------------------- */

/* fk->lock held. A place's process (not a successor) spoke. */
static void fk_sup_msg(struct fk *fk, struct fk_gen *g, struct fk_worker *wk,
                       const struct fk_msg *m, int *fd, bool cut)
{
    EXEC__ASSERT_HELD(&fk->lock);
    struct fk_proc *p = &wk->p;
    switch (m->op) {
    case FK_M_SPAWNED:
        if (p->state != W_SPAWNING || p->nofd)
            break;
        p->pid = m->pid;
        if (*fd >= 0) {
            p->state = W_LIVE;
            p->pidfd = *fd;
            *fd = -1;
        } else {
            /* Its pidfd never reached us (our descriptor table is full): we
             * could not watch it, so it must not run. It waits to be admitted;
             * the zygote kills it, and the start counts as failed. */
            (void)cut;
            p->nofd = true;
            p->spawn_err = -EMFILE;
            struct fk_msg k = {FK_M_KILL, (int32_t)p->zi, m->pid, 0};
            fk_sup_send(g, &k);
        }
        break;
    case FK_M_FAILED:
        if (p->state == W_SPAWNING) {
            p->spawn_err = exec__spawn_error(m->val ? m->val : EAGAIN);
            p->wstatus = 127 << 8;
            p->have_status = p->exited = true;
            fk_sup_dead(fk, g, wk);
        }
        break;
    case FK_M_EXITED:
        if (p->state == W_SPAWNING && p->nofd && p->pid == m->pid) {
            p->wstatus = m->val;
            p->have_status = p->exited = true;
            fk_sup_dead(fk, g, wk);
        } else if (p->state == W_LIVE && p->pid == m->pid) {
            p->wstatus = m->val;
            p->have_status = true;
            if (p->exited)
                fk_sup_gone(fk, g, wk);
        }
        break;
    }
}

/* fk->lock held. Reads everything g's zygote said. */
static void fk_sup_recv(struct fk *fk, struct fk_gen *g)
{
    EXEC__ASSERT_HELD(&fk->lock);
    while (g->zsock >= 0) {
        struct fk_msg m;
        int fd;
        bool cut;
        int got = fk_chan_recv(g->zsock, &m, &fd, &cut);
        if (got == 0)
            return;
        if (got < 0) {
            /* EOF: the zygote died; its workers die with it (PDEATHSIG). */
            close(g->zsock);
            g->zsock = -1;
            return;
        }
        if (m.op == FK_M_FAILED && m.idx == -1) {
            /* The zygote could not start; its death follows. */
            if (ck_pr_load_32(&g->state) == G_STARTING && !g->zerr) {
                g->zerr = exec__spawn_error(m.val ? m.val : EAGAIN);
                pthread_cond_broadcast(&fk->cond);
            }
        } else if (m.idx >= 0 && (unsigned)m.idx < 2 * g->nw) {
            struct fk_worker *wk = &g->w[(unsigned)m.idx % g->nw];
            if ((unsigned)m.idx == wk->p.zi)
                fk_sup_msg(fk, g, wk, &m, &fd, cut);
            else if (m.op == FK_M_SPAWNED)
                fk_succ_spawned(fk, wk, &m, &fd);
            else if (m.op == FK_M_FAILED && wk->s.pid == 0)
                fk_succ_gone(fk, g, wk, 127 << 8);
            else if (m.op == FK_M_EXITED && wk->s.pid == m.pid)
                fk_succ_gone(fk, g, wk, m.val);
        }
        if (fd >= 0)
            close(fd);
    }
}

/* fk->lock held: admits each new worker that reported ready (it runs no
 * record before), and notices ready successors. */
static void fk_sup_ready(struct fk *fk)
{
    EXEC__ASSERT_HELD(&fk->lock);
    uint64_t now = exec__now_ns();
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *g = &fk->gens[k];
        uint32_t gs = ck_pr_load_32(&g->state);
        if (gs == G_FREE || !g->w)
            continue;
        for (unsigned i = 0; i < g->nw; i++) {
            struct fk_worker *wk = &g->w[i];
            if (wk->p.state != W_LIVE)
                continue;
            if (!wk->p.admitted && ck_pr_load_32(&wk->hdr->state) == FK_W_READY &&
                ck_pr_load_32((uint32_t *)&wk->hdr->pid) == (uint32_t)wk->p.pid) {
                wk->p.admitted = true;
                wk->p.ready_at = now;
                ck_pr_store_32(&wk->alive, 1);
                ck_pr_store_32(&wk->hdr->admit, (uint32_t)wk->p.pid);
                ck_ec32_inc(&wk->hdr->ec, &exec__ec_procs);
                fk_watch_memory_ready(fk, wk);
                g->nready++;
                pthread_cond_broadcast(&fk->cond);
            }
            if (wk->s.state == S_LIVE && ck_pr_load_32(&wk->hdr->succ_state) == FK_W_READY)
                fk_succ_ready(fk, wk);
        }
    }
}

/* ------------------------------------------------------------------------- */
/* The pass                                                                  */
/* ------------------------------------------------------------------------- */

/* fk->lock held. A generation that is over: stop its processes, then free it. */
static void fk_sup_close(struct fk *fk, struct fk_gen *g, uint32_t gs, uint64_t now, int *wait_ms)
{
    EXEC__ASSERT_HELD(&fk->lock);
    if (gs == G_DRAINED) {
        for (unsigned i = 0; i < g->nw; i++) {
            ck_pr_store_32(&g->w[i].hdr->stop, 1);
            ck_ec32_inc(&g->w[i].hdr->ec, &exec__ec_procs);
        }
        int grace = fk->stopping ? FK_STOP_GRACE : FK_DRAIN_GRACE;
        struct fk_msg m = {FK_M_EXIT, 0, 0, grace};
        fk_sup_send(g, &m);
        g->close_deadline = now + (uint64_t)(grace + 3000) * 1000000u;
        ck_pr_store_32(&g->state, G_CLOSING);
    }
    if (g->zpidfd < 0) {
        /* Nothing (left) to wait for. */
        for (unsigned i = 0; i < g->nw; i++)
            if (g->w[i].p.pidfd >= 0) {
                close(g->w[i].p.pidfd);
                g->w[i].p.pidfd = -1;
            }
        if (!fk->stopping) {
            exec__unlock(&fk->lock);
            fk_gen_free(fk, g, g->release_ctx);
            exec__lock(&fk->lock);
        }
        return;
    }
    if (now >= g->close_deadline) {
        pidfd_send_signal(g->zpidfd, SIGKILL, NULL, 0);
        g->close_deadline = now + 1000000000u;
    }
    fk_wait_at(wait_ms, now, g->close_deadline);
}

/* fk->lock held. One pass over every generation: start what should run, stop
 * what should stop, watch deadlines. Returns how long poll may sleep (ms). */
static int fk_sup_pass(struct fk *fk, uint64_t now)
{
    EXEC__ASSERT_HELD(&fk->lock);
    int wait_ms = -1;
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *g = &fk->gens[k];
        uint32_t gs = ck_pr_load_32(&g->state);
        if (gs == G_FREE)
            continue;
        if (fk->stopping && gs != G_CLOSING)
            gs = G_DRAINED;
        if (gs == G_DRAINED || gs == G_CLOSING) {
            fk_sup_close(fk, g, gs, now, &wait_ms);
            continue;
        }
        /* STARTING, ACTIVE, RETIRING: keep the zygote and the workers up. */
        if (g->zerr)
            continue;
        if (g->zpidfd < 0 && fk_hooked(fk)) {
            /* The host forks it (hostfork.c): a starting generation's on its
             * way (one that died fails the start), a serving one's from the
             * consumer's next call once the back-off is over. */
            if (gs == G_STARTING) {
                if (g->zdied) {
                    g->zerr = EXEC_EINIT;
                    pthread_cond_broadcast(&fk->cond);
                }
            } else if (now < g->zretry_at) {
                fk_wait_at(&wait_ms, now, g->zretry_at);
            } else if (!ck_pr_load_32(&fk->zneed)) {
                ck_pr_store_32(&fk->zneed, 1);
                exec__wake(fk->ex);
            }
            continue;
        }
        if (g->zpidfd < 0) {
            if (now < g->zretry_at) {
                fk_wait_at(&wait_ms, now, g->zretry_at);
                continue;
            }
            int forked;
            int rc = fk_zygote_start(fk, g, &forked);
            if (rc) {
                if (gs == G_STARTING) {
                    g->zerr = rc;
                    pthread_cond_broadcast(&fk->cond);
                    continue;
                }
                g->zfails++;
                g->zretry_at = now + (1000000ull << (g->zfails < 10 ? g->zfails : 10));
                fk_wait_at(&wait_ms, now, g->zretry_at);
                continue;
            }
        }
        for (unsigned i = 0; i < g->nw; i++) {
            struct fk_worker *wk = &g->w[i];
            if (wk->p.state == W_NONE || (wk->p.state == W_WAIT && now >= wk->p.respawn_at)) {
                if (g->zsock < 0)
                    continue;
                /* Reset before the worker runs: it may break the protocol
                 * (kill_req) before its SPAWNED message is read. */
                fk_proc_reset(wk);
                ck_pr_store_32(&wk->hdr->admit, 0);
                ck_pr_store_64(&wk->young_at, wk->p.fails ? 0 : now);
                struct fk_msg m = {FK_M_SPAWN, (int32_t)wk->p.zi, 0, 0};
                fk_sup_send(g, &m);
                wk->p.state = W_SPAWNING;
            } else if (wk->p.state == W_WAIT) {
                fk_wait_at(&wait_ms, now, wk->p.respawn_at);
            } else if (wk->p.state == W_LIVE) {
                if (wk->p.kill_req)
                    fk_sup_kill(wk, wk->p.kill_req_why);
                fk_succ_maybe_start(fk, g, wk, now, &wait_ms);
                fk_watch_worker(fk, g, wk, now, &wait_ms);
            }
        }
    }
    return wait_ms;
}

/* Anything queued to a worker of a serving generation? */
static bool fk_any_queued(struct fk *fk)
{
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *g = &fk->gens[k];
        uint32_t gs = ck_pr_load_32(&g->state);
        if (gs != G_ACTIVE && gs != G_RETIRING)
            continue;
        for (unsigned i = 0; i < g->nw; i++)
            if (ck_pr_load_uint(&g->w[i].q.qn))
                return true;
    }
    return false;
}

/* fk->lock held. The poll set: our eventfd, each zygote's channel and pidfd,
 * each live worker's pidfd. */
static size_t fk_sup_pollset(struct fk *fk)
{
    EXEC__ASSERT_HELD(&fk->lock);
    size_t n = 0;
    fk->pfd[n] = (struct pollfd){.fd = fk->sup_efd, .events = POLLIN};
    fk->ptag[n++] = (struct fk_ptag){P_EFD, NULL, NULL};
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *g = &fk->gens[k];
        if (ck_pr_load_32(&g->state) == G_FREE)
            continue;
        if (g->zsock >= 0) {
            fk->pfd[n] = (struct pollfd){.fd = g->zsock, .events = POLLIN};
            fk->ptag[n++] = (struct fk_ptag){P_ZSOCK, g, NULL};
        }
        if (g->zpidfd >= 0) {
            fk->pfd[n] = (struct pollfd){.fd = g->zpidfd, .events = POLLIN};
            fk->ptag[n++] = (struct fk_ptag){P_ZPID, g, NULL};
        }
        for (unsigned i = 0; i < g->nw; i++) {
            struct fk_worker *wk = &g->w[i];
            if (wk->p.state == W_LIVE && !wk->p.exited && wk->p.pidfd >= 0) {
                fk->pfd[n] = (struct pollfd){.fd = wk->p.pidfd, .events = POLLIN};
                fk->ptag[n++] = (struct fk_ptag){P_WORKER, g, wk};
            }
        }
    }
    return n;
}

/* fk->lock held. g's zygote is gone, and with it its workers (PDEATHSIG):
 * statuses will not come now. */
static void fk_sup_zygote_died(struct fk *fk, struct fk_gen *g)
{
    EXEC__ASSERT_HELD(&fk->lock);
    if (g->zsock >= 0)
        fk_sup_recv(fk, g);
    fk_zygote_gone(g);
    for (unsigned i = 0; i < g->nw; i++) {
        struct fk_worker *wk = &g->w[i];
        if (wk->s.state != S_NONE) {
            bool settle = wk->s.state == S_DOOMED && wk->p.state == W_LIVE && wk->p.exited &&
                          wk->p.have_status;
            fk_succ_clear(fk, wk);
            if (settle)
                fk_sup_dead(fk, g, wk);
        }
        if (wk->p.state == W_SPAWNING || (wk->p.state == W_LIVE && !wk->p.have_status)) {
            wk->p.wstatus = SIGKILL;
            wk->p.have_status = true;
            if (wk->p.state == W_SPAWNING || wk->p.exited)
                fk_sup_dead(fk, g, wk);
        }
    }
    g->zdied = true;
    if (ck_pr_load_32(&g->state) != G_CLOSING) {
        g->zfails++;
        g->zretry_at = exec__now_ns() + (1000000ull << (g->zfails < 10 ? g->zfails : 10));
    }
}

void *fk_sup_main(void *arg)
{
    struct fk *fk = arg;
    exec__lock(&fk->lock);
    for (;;) {
        uint64_t now = exec__now_ns();
        int wait_ms = fk_sup_pass(fk, now);
        if (fk->nslow) {
            /* Slow-record reports, without the lock; then a fresh pass. */
            unsigned n = fk->nslow;
            exec__unlock(&fk->lock);
            for (unsigned i = 0; i < n; i++)
                fk->o->on_slow(fk->o->slow_arg, &fk->slow[i]);
            exec__lock(&fk->lock);
            fk->nslow = 0;
            continue;
        }
        if (fk->stopping) {
            bool any = false;
            for (unsigned k = 0; k < FK_MAXGEN; k++)
                if (fk->gens[k].zpidfd >= 0)
                    any = true;
            if (!any)
                break;
        }
        size_t n = fk_sup_pollset(fk);
        if (wait_ms < 0) {
            /* Idle: a dispatch wakes us to watch again. One that came before
             * the flag was up did not: look again soon. */
            ck_pr_store_32(&fk->sup_idle, 1);
            ck_pr_fence_memory();
            if (fk_any_queued(fk))
                wait_ms = (int)(FK_NUDGE_NS / 1000000u);
        }
        exec__unlock(&fk->lock);
        int r = poll(fk->pfd, n, wait_ms);
        ck_pr_store_32(&fk->sup_idle, 0);
        exec__lock(&fk->lock);
        if (r <= 0)
            continue;
        for (size_t j = 0; j < n; j++) {
            if (!fk->pfd[j].revents)
                continue;
            struct fk_ptag *t = &fk->ptag[j];
            switch (t->kind) {
            case P_EFD: {
                uint64_t v;
                ssize_t rd = read(fk->sup_efd, &v, sizeof v);
                (void)rd;
                break;
            }
            case P_ZSOCK:
                fk_sup_recv(fk, t->g);
                break;
            case P_ZPID:
                break; /* below, after the channel was read to its end */
            case P_WORKER:
                if (t->wk->p.state == W_LIVE && !t->wk->p.exited) {
                    t->wk->p.exited = true;
                    if (t->wk->p.have_status)
                        fk_sup_gone(fk, t->g, t->wk);
                }
                break;
            }
        }
        /* A worker may report ready before we read its SPAWNED message. */
        fk_sup_ready(fk);
        for (size_t j = 0; j < n; j++) {
            struct fk_ptag *t = &fk->ptag[j];
            if (t->kind == P_ZPID && fk->pfd[j].revents && t->g->zpidfd >= 0)
                fk_sup_zygote_died(fk, t->g);
        }
    }
    exec__unlock(&fk->lock);
    return NULL;
}
