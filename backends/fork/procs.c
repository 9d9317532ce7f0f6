/*
 * EXEC_FORK: the processes, below the supervisor's loop. Starting a zygote
 * (from the supervisor, or with fork hooks from a host's thread), a message
 * to it, and a place's process: its reset, its death, its kill, and where it
 * is. The supervisor (supervisor.c), its watches (watch.c) and recycling
 * (recycle.c), the consumer settling deaths (deaths.c) and hostfork.c call
 * these; they call none of those back. fk->lock guards what they touch.
 */
#include "fork.h"

#include <ck_pr.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

/* ------------------------------------------------------------------------- */
/* Zygotes                                                                   */
/* ------------------------------------------------------------------------- */

/*
 * fk->lock held, every signal blocked. Forks g's zygote from this thread: the
 * supervisor (long-lived: the zygote dies with it), or with fork hooks a
 * host's thread (hostfork.c). *forked gets the child's pid, or -errno of the
 * step that failed before there was one.
 */
int fk_zygote_start(struct fk *fk, struct fk_gen *g, int *forked)
{
    EXEC__ASSERT_HELD(&fk->lock);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        *forked = -errno;
        return -errno;
    }
    memset(g->zpids, 0, (size_t)2 * g->nw * sizeof *g->zpids);
    pid_t parent = getpid();
    urcu_memb_call_rcu_before_fork();
    pid_t pid = fork();
    if (pid == 0) {
        urcu_memb_call_rcu_after_fork_child();
        close(sv[0]);
        fk_zygote_main(fk, g, sv[1], parent);
    }
    int err = errno;
    urcu_memb_call_rcu_after_fork_parent();
    close(sv[1]);
    *forked = pid < 0 ? -err : pid;
    if (pid < 0) {
        close(sv[0]);
        return exec__spawn_error(err);
    }
    int pfd = pidfd_open(pid, 0);
    if (pfd < 0) {
        err = errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, __WALL);
        close(sv[0]);
        return -err;
    }
    g->zpid = pid;
    g->zpidfd = pfd;
    g->zsock = sv[0];
    return 0;
}

void fk_sup_send(struct fk_gen *g, const struct fk_msg *m)
{
    if (g->zsock >= 0 && send(g->zsock, m, sizeof *m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
        /* A dead zygote: its pidfd will tell. */
    }
}

/* ------------------------------------------------------------------------- */
/* A place's process                                                         */
/* ------------------------------------------------------------------------- */

/* fk->lock held. What the supervisor knows of a place's process, for a new one. */
void fk_proc_reset(struct fk_worker *wk)
{
    EXEC__ASSERT_HELD(&wk->g->fk->lock);
    struct fk_proc *p = &wk->p;
    p->exited = p->have_status = p->admitted = p->nofd = p->kill_req = false;
    p->kill_why = K_NONE;
    p->spawn_err = 0;
    p->pid = 0;
    memset(&wk->w, 0, sizeof wk->w);
}

/* fk->lock held. A worker is gone for good (status known). */
void fk_sup_dead(struct fk *fk, struct fk_gen *g, struct fk_worker *wk)
{
    EXEC__ASSERT_HELD(&fk->lock);
    if (wk->p.pidfd >= 0) {
        close(wk->p.pidfd);
        wk->p.pidfd = -1;
    }
    ck_pr_store_32(&wk->alive, 0);
    uint32_t gs = ck_pr_load_32(&g->state);
    if (gs == G_STARTING) {
        /* worker_init failed, the canary died on its records, or it could
         * not start: say why when the system said. */
        g->nfailed++;
        if (wk->p.spawn_err && !g->start_err)
            g->start_err = wk->p.spawn_err;
    }
    wk->p.state = W_DEAD;
    pthread_cond_broadcast(&fk->cond);
    if (gs == G_STARTING || gs == G_ACTIVE || gs == G_RETIRING) {
        ck_pr_store_32(&fk->dead_pending, 1);
        /* Whatever the armed word says: a worker killed inside exec__notify()
         * may have cleared it without writing the eventfd. */
        exec__wake(fk->ex);
    }
}

/* SIGKILL to a worker process and its group (whatever it forked goes too);
 * the group only while the pidfd says the process is not reaped yet. */
void fk_kill_proc(pid_t pid, int pidfd)
{
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    if (poll(&p, 1, 0) == 0 && pid > 0)
        kill(-pid, SIGKILL);
    pidfd_send_signal(pidfd, SIGKILL, NULL, 0);
}

/* fk->lock held. */
void fk_sup_kill(struct fk_worker *wk, int why)
{
    EXEC__ASSERT_HELD(&wk->g->fk->lock);
    if (wk->p.kill_why != K_NONE || wk->p.pidfd < 0)
        return;
    fk_kill_proc(wk->p.pid, wk->p.pidfd);
    wk->p.kill_why = why;
}

/*
 * Where wk is, read under its seqlock: true when (slot, record) were stable
 * and belong to `tick` (even), the tick the caller has been timing.
 */
bool fk_where(const struct fk_hdr *h, uint32_t tick, uint32_t *slot, uint32_t *rec)
{
    if (tick & 1u || ck_pr_load_32(&h->tick) != tick)
        return false;
    ck_pr_fence_load();
    *slot = ck_pr_load_32(&h->cur_slot);
    *rec = ck_pr_load_32(&h->cur_rec);
    ck_pr_fence_load();
    return ck_pr_load_32(&h->tick) == tick;
}
