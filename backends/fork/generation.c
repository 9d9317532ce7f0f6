/*
 * EXEC_FORK: generations. Each context has one: a region, a zygote, its
 * workers. exec_create starts generation 0; a swap starts a new one with a
 * single canary worker that replays a few records that ran well, then the
 * rest; only then does it become current, and the old generation drains
 * the slots it was given and exits (its context is released then).
 * Swaps run on the swapping thread (with fork hooks, it forks the new
 * zygote too); freeing runs on the supervisor thread or in destroy.
 */
#include "fork.h"
#include "alloc.h"
#include "tsan.h"

#include <ck_pr.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

void fk_gen_free(struct fk *fk, struct fk_gen *g, bool release)
{
    if (release && fk->ops->ctx_release)
        fk->ops->ctx_release(g->ctx);
    /* Under the lock: fk_worker_stats() may be reading g->w. */
    exec__lock(&fk->lock);
    if (g->w) {
        for (unsigned i = 0; i < g->nw; i++) {
            struct fk_worker *wk = &g->w[i];
            if (wk->hdr && wk->place) {
                /* Its last processes' figures join the place's. */
                ck_pr_add_64(&wk->place->startup_ns, ck_pr_load_64(&wk->hdr->startup_ns));
                ck_pr_add_64(&wk->place->busy_ns, ck_pr_load_64(&wk->hdr->busy_ns));
                ck_pr_add_64(&wk->place->idle_ns, ck_pr_load_64(&wk->hdr->idle_ns));
            }
            if (wk->p.pidfd >= 0)
                close(wk->p.pidfd);
            if (wk->s.pidfd >= 0)
                close(wk->s.pidfd);
            if (fk->recycling == wk)
                fk->recycling = NULL;
            if (wk->slots)
                for (unsigned s = 0; s < g->nslot; s++)
                    free(wk->slots[s].rbuf);
            fk_private_free(wk->res_block, wk->res_bytes);
            free(wk->slots);
            free(wk->q.fifo);
            exec__mutex_destroy(&wk->q.lock);
        }
    }
    free(g->w);
    free(g->zpids);
    if (g->base)
        munmap(g->base, g->size);
    memset(g, 0, sizeof *g);
    g->zpidfd = g->zsock = -1;
    ck_pr_store_32(&g->state, G_FREE);
    exec__unlock(&fk->lock);
}

/* A worker place's bookkeeping and its slots in the region. */
static int fk_gen_place(struct fk *fk, struct fk_gen *g, struct fk_worker *wk, unsigned i)
{
    const exec_options_t *o = fk->o;
    wk->g = g;
    wk->idx = i;
    wk->place = &fk->places[i];
    wk->hdr = fk_hdr_at(g, i);
    ck_ring_init(&wk->hdr->in, FK_RING);
    ck_ring_init(&wk->hdr->out, FK_RING);
    wk->hdr->cur_slot = FK_NOSLOT;
    ck_ring_init(&wk->q.in_sh, FK_RING);
    ck_ring_init(&wk->c.out_sh, FK_RING);
    wk->q.fifo = exec__calloc(g->nslot, sizeof *wk->q.fifo);
    wk->slots = exec__calloc(g->nslot, sizeof *wk->slots);
    wk->res_bytes = (size_t)g->nslot * o->batch * sizeof(struct exec__res);
    wk->res_block = fk_private(wk->res_bytes);
    if (!wk->q.fifo || !wk->slots || !wk->res_block)
        return EXEC_ENOMEM;
    for (unsigned s = 0; s < g->nslot; s++) {
        struct fk_slot *sl = &wk->slots[s];
        sl->g = g;
        sl->wk = wk;
        sl->idx = s;
        sl->sin = fk_sin_at(g, i, s);
        sl->sout = fk_sout_at(g, i, s);
        sl->sres = (struct exec__res *)(sl->sout + 1);
        sl->srdata = (char *)sl->sout + g->res_size;
        sl->b.cap = o->batch;
        sl->b.recs = (struct exec__rec *)(sl->sin + 1);
        sl->b.recs_buf = sl->b.recs; /* core may point recs at a view */
        sl->b.rflags = (uint8_t *)(sl->b.recs + o->batch);
        sl->b.data = (char *)sl->sin + g->recs_size;
        sl->b.data_cap = g->dcap;
        sl->b.res = wk->res_block + (size_t)s * o->batch;
    }
    ck_pr_store_32(&wk->freemask, g->nslot >= 32 ? UINT32_MAX : (1u << g->nslot) - 1u);
    return 0;
}

/* Builds a generation's region and bookkeeping; the supervisor starts it
 * with `start` workers (the rest wait: a canary goes first). */
int fk_gen_init(struct fk *fk, struct fk_gen *g, void *ctx, uint64_t generation, unsigned start)
{
    g->fk = fk;
    g->ctx = ctx;
    g->generation = generation;
    g->nw = fk->o->workers;
    g->zpidfd = g->zsock = -1;
    int rc = fk_region_map(g, fk->o);
    if (rc)
        return rc;
    /* A zygote forked meanwhile reads w to close pidfds: publish it with -1s. */
    struct fk_worker *w = exec__calloc(g->nw, sizeof *w);
    g->zpids = exec__calloc(2 * (size_t)g->nw, sizeof *g->zpids); /* places, then successors */
    if (!w || !g->zpids) {
        free(w);
        return EXEC_ENOMEM;
    }
    for (unsigned i = 0; i < g->nw; i++) {
        w[i].p.pidfd = w[i].s.pidfd = -1;
        w[i].p.zi = i;
        w[i].p.state = i < start ? W_NONE : W_HOLD;
        exec__mutex_init(&w[i].q.lock);
    }
    g->w = w;
    for (unsigned i = 0; i < g->nw; i++) {
        rc = fk_gen_place(fk, g, &g->w[i], i);
        if (rc)
            return rc;
    }
    exec__lock(&fk->lock);
    ck_pr_store_32(&g->state, G_STARTING);
    exec__unlock(&fk->lock);
    fk_wake_sup(fk);
    return 0;
}

/* Waits until `want` of g's workers were admitted, or one failed: 0, the
 * system's reason (-errno, EXEC_ELIMIT), or EXEC_EINIT (worker_init refused,
 * crashed, or ran past start_timeout_ms). */
int fk_gen_wait(struct fk *fk, struct fk_gen *g, unsigned want)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += fk->o->start_timeout_ms / 1000;
    dl.tv_nsec += (long)(fk->o->start_timeout_ms % 1000) * 1000000;
    if (dl.tv_nsec >= 1000000000) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000;
    }
    bool late = false;
    exec__lock(&fk->lock);
    while (!g->zerr && g->nfailed == 0 && g->nready < want && !late)
        late = exec__cond_timedwait(&fk->cond, &fk->lock, &dl) == ETIMEDOUT;
    int rc = g->zerr        ? g->zerr
             : g->start_err ? g->start_err
             : g->nfailed || (late && g->nready < want) ? EXEC_EINIT
                                                        : 0;
    exec__unlock(&fk->lock);
    return rc;
}

/* A generation that never served: stop its processes; the supervisor frees it. */
void fk_gen_abandon(struct fk *fk, struct fk_gen *g)
{
    exec__lock(&fk->lock);
    g->release_ctx = false;
    if (ck_pr_load_32(&g->state) == G_STARTING)
        ck_pr_store_32(&g->state, G_DRAINED);
    exec__unlock(&fk->lock);
    fk_wake_sup(fk);
}

/* Consumer. A draining generation whose slots are all back: let it go. */
void fk_drained(struct fk *fk, struct fk_gen *g)
{
    exec__lock(&fk->lock);
    bool was = ck_pr_load_32(&g->state) == G_RETIRING;
    if (was)
        ck_pr_store_32(&g->state, G_DRAINED);
    exec__unlock(&fk->lock);
    if (was)
        fk_wake_sup(fk);
}

/*
 * The canary (g's first worker, admitted) replays records that ran well on
 * the current context; their results are dropped. 0 when it sent them all
 * back (whatever their status), else why it failed: EXEC_ECRASHED (it died),
 * EXEC_ERECTIMEOUT (past timeout_ms, or start_timeout_ms without a timeout),
 * EXEC_EWORKER (it broke the protocol). Nothing to replay: 0.
 */
static int fk_canary(struct fk *fk, struct fk_gen *g)
{
    struct fk_worker *wk = &g->w[0];
    struct fk_slot *s;
    if (!fk->probe_data || !(s = fk_slot_take(wk)))
        return 0;
    pthread_mutex_lock(&fk->probe_lock);
    s->b.recs = s->b.recs_buf;
    unsigned n = fk->probe_n < s->b.cap ? fk->probe_n : s->b.cap;
    size_t len = 0;
    for (unsigned j = 0; j < n; j++) {
        const struct exec__rec *r = &fk->probe_rec[j];
        memcpy(s->b.data + len, r->p, r->len);
        s->b.recs[j] = (struct exec__rec){.tag = r->tag, .p = s->b.data + len, .len = r->len};
        __atomic_store_n(&s->b.rflags[j], 0, __ATOMIC_RELAXED);
        len += r->len;
    }
    pthread_mutex_unlock(&fk->probe_lock);
    int rc = 0;
    if (n) {
        s->b.n = n;
        s->b.data_len = len;
        s->from = 0;
        s->copied = false;
        s->rbuf_len = 0;
        exec__lock(&wk->q.lock);
        bool ok = fk_enqueue(wk, s);
        exec__unlock(&wk->q.lock);
        if (!ok)
            fk_kill_req(fk, wk, K_OURS);
        const exec_options_t *o = fk->o;
        uint64_t ms = o->timeout_ms ? (uint64_t)o->timeout_ms + o->grace_ms + 1000
                                    : o->start_timeout_ms;
        uint64_t deadline = exec__now_ns() + ms * 1000000u;
        for (;;) {
            /* The consumer leaves a starting generation alone: we read it. */
            struct fk_slot *back = fk_pull(fk, wk, false);
            if (back == s && !wk->c.distrust)
                break;
            exec__lock(&fk->lock);
            bool dead = wk->p.state != W_LIVE || g->nfailed || wk->p.exited;
            bool timed_out = wk->p.kill_why == K_TIMEOUT || wk->w.soft_at;
            exec__unlock(&fk->lock);
            if (dead || wk->c.distrust) {
                rc = wk->c.distrust ? EXEC_EWORKER : timed_out ? EXEC_ERECTIMEOUT : EXEC_ECRASHED;
                break;
            }
            if (exec__now_ns() >= deadline) {
                fk_kill_req(fk, wk, K_OURS);
                rc = EXEC_ERECTIMEOUT;
                break;
            }
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
    }
    if (rc == 0) {
        wk->c.completed = 0;
        fk_slot_give(wk, s);
    }
    return rc; /* on failure the slot goes with the generation */
}

int fk_swap_prepare(exec_t *ex, void *new_ctx, uint64_t generation)
{
    struct fk *fk = exec__priv(ex);
    struct fk_gen *g = NULL;
    exec__lock(&fk->lock);
    for (unsigned k = 0; k < FK_MAXGEN && !g; k++)
        if (ck_pr_load_32(&fk->gens[k].state) == G_FREE && !fk->gens[k].base)
            g = &fk->gens[k];
    exec__unlock(&fk->lock);
    if (!g)
        return EXEC_EBUSY; /* too many generations still draining */
    /* One canary first: its worker_init, then a replay of recent records;
     * only then the rest of the generation. */
    int rc = fk_gen_init(fk, g, new_ctx, generation, 1);
    if (rc == 0 && fk_hooked(fk))
        fk_host_fork(fk, g, true); /* on the swapping thread */
    if (rc == 0)
        rc = fk_gen_wait(fk, g, 1);
    if (rc == 0)
        rc = fk_canary(fk, g);
    if (rc == 0) {
        exec__lock(&fk->lock);
        for (unsigned i = 0; i < g->nw; i++)
            if (g->w[i].p.state == W_HOLD)
                g->w[i].p.state = W_NONE;
        exec__unlock(&fk->lock);
        fk_wake_sup(fk);
        rc = fk_gen_wait(fk, g, g->nw);
    }
    if (rc) {
        if (ck_pr_load_32(&g->state) == G_STARTING) {
            fk_gen_abandon(fk, g);
        } else {
            /* Never reached the supervisor: free it here. */
            g->release_ctx = false;
            fk_gen_free(fk, g, false);
        }
        return rc;
    }
    fk->pending = g;
    return 0;
}

/* Core holds its submit lock and has sent the open batch to the current
 * generation: from here on new batches go to the new one. */
void fk_swap_commit(exec_t *ex)
{
    struct fk *fk = exec__priv(ex);
    struct fk_gen *g = fk->pending, *old = fk->cur;
    fk->pending = NULL;
    ck_pr_store_ptr(&fk->cur, g);
    exec__tsan_release(g);
    exec__lock(&fk->lock);
    g->release_ctx = true;
    ck_pr_store_32(&g->state, G_ACTIVE);
    ck_pr_store_32(&old->state, G_RETIRING);
    ck_pr_store_32(&fk->dead_pending, 1);
    exec__unlock(&fk->lock);
}
