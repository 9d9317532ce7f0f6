/*
 * EXEC_FORK with fork hooks (exec_options_t.fork_hooks): the zygotes are
 * forked on the host's threads, where its runtime can take part in the fork
 * (an interpreter needs its own thread state on the forking thread, and the
 * supervisor, a library thread, has none). exec_create and a swap fork their
 * new generation's zygote themselves. A zygote that dies is due again after
 * the supervisor's back-off: the supervisor raises fk->zneed and wakes the
 * consumer, whose next reap forks it (fk_host_refork). The supervisor never
 * forks then. Such a zygote outlives the thread that forked it (no
 * PR_SET_PDEATHSIG there): it watches the host process through a pidfd.
 */
#include "fork.h"

#include <ck_pr.h>
#include <errno.h>
#include <signal.h>

/*
 * Forks g's zygote on this thread, between the host's prepare and parent
 * hooks (parent once, whatever happens), every signal blocked (the zygote
 * starts so), under fk->lock (its snapshot of fk is consistent). Only for a
 * generation that is starting (when `starting`) or serving, has no zygote
 * and is not being stopped. A failure is g's: zerr for a starting one, a
 * back-off for another.
 */
void fk_host_fork(struct fk *fk, struct fk_gen *g, bool starting)
{
    const exec_fork_hooks_t *h = &fk->o->fork_hooks;
    if (h->prepare)
        h->prepare(h->arg);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    exec__lock(&fk->lock);
    uint32_t gs = ck_pr_load_32(&g->state);
    int pid = -ECANCELED;
    bool want = starting ? gs == G_STARTING : gs == G_ACTIVE || gs == G_RETIRING;
    if (want && !fk->stopping && g->zpidfd < 0 && !g->zerr) {
        int rc = fk_zygote_start(fk, g, &pid);
        if (rc && gs == G_STARTING) {
            g->zerr = rc;
            pthread_cond_broadcast(&fk->cond);
        } else if (rc) {
            g->zfails++;
            g->zretry_at = exec__now_ns() + (1000000ull << (g->zfails < 10 ? g->zfails : 10));
        }
    }
    exec__unlock(&fk->lock);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (h->parent)
        h->parent(h->arg, pid);
    fk_wake_sup(fk); /* it watches the new zygote, or the back-off */
}

/* Consumer (core's next lock held): forks every zygote that is due. */
void fk_host_refork(struct fk *fk)
{
    ck_pr_store_32(&fk->zneed, 0);
    uint64_t now = exec__now_ns();
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *g = &fk->gens[k];
        exec__lock(&fk->lock);
        uint32_t gs = ck_pr_load_32(&g->state);
        bool due = !fk->stopping && (gs == G_ACTIVE || gs == G_RETIRING) && g->zpidfd < 0 &&
                   now >= g->zretry_at;
        exec__unlock(&fk->lock);
        if (due)
            fk_host_fork(fk, g, false);
    }
}
