/*
 * EXEC_FORK: worker processes forked after the context was built, inheriting
 * it copy-on-write; the context is never serialized. This file is the seam:
 * what core calls (exec_internal.h), on core's threads. The design is in
 * docs/fork.md; fork.h says which file does what.
 */
#include "fork.h"
#include "alloc.h"
#include "tsan.h"

#include <ck_pr.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static struct exec__batch *fk_batch_get(exec_t *ex, int *err)
{
    (void)err; /* slots are made with the generation */
    struct fk *fk = exec__priv(ex);
    struct fk_gen *g = fk->cur;
    struct fk_worker *best = NULL;
    if (ck_pr_load_32(&fk->held_all) >= fk->maxb)
        return NULL; /* old generations still hold their share */
    /* The worker with the fewest records queued (a worker takes no records
     * from another's queue, so the work must be spread when it is queued);
     * a tie goes to the first, so a lone record goes to the same worker as
     * the last one, which is still awake (round robin would find each
     * asleep). A worker not serving yet counts as one record more when it
     * was asked for a moment ago and its place has not failed (it is about
     * to serve: the first records of a short job must not all go to the
     * worker that happened to start first), else as full. */
    uint64_t best_q = UINT64_MAX;
    uint64_t now = 0;
    for (unsigned k = 0; k < g->nw; k++) {
        struct fk_worker *wk = &g->w[k];
        if (ck_pr_load_32(&wk->c.gone) || ck_pr_load_32(&wk->freemask) == 0)
            continue;
        uint64_t q = ck_pr_load_64(&wk->q.nrec);
        if (!ck_pr_load_32(&wk->alive)) {
            uint64_t young = ck_pr_load_64(&wk->young_at);
            if (young && !now)
                now = exec__now_ns();
            q += young && now - young < FK_YOUNG_NS ? 1 : (uint64_t)1 << 40;
        }
        if (q < best_q) {
            best = wk;
            best_q = q;
        }
    }
    if (!best)
        return NULL;
    struct fk_slot *s = fk_slot_take(best);
    if (!s)
        return NULL;
    ck_pr_inc_32(&g->held);
    ck_pr_inc_32(&fk->held_all);
    return &s->b;
}

static void fk_dispatch(exec_t *ex, struct exec__batch *b)
{
    struct fk *fk = exec__priv(ex);
    struct fk_slot *s = (struct fk_slot *)b;
    struct fk_worker *wk = s->wk;
    b->worker = wk->idx;
    b->generation = s->g->generation;
    exec__lock(&wk->q.lock);
    s->from = 0;
    s->copied = false;
    s->rbuf_len = 0;
    bool ok = fk_enqueue(wk, s);
    exec__unlock(&wk->q.lock);
    if (!ok)
        fk_kill_req(fk, wk, K_OURS);
    if (ck_pr_load_32(&fk->sup_idle) && ck_pr_fas_32(&fk->sup_idle, 0))
        fk_wake_sup(fk);
}

static bool fk_hungry(exec_t *ex, const struct exec__batch *b)
{
    (void)ex;
    const struct fk_slot *s = (const struct fk_slot *)b;
    struct fk_hdr *h = s->wk->hdr;
    return ck_pr_load_uint(&h->in.p_tail) - ck_pr_load_uint(&h->in.c_head) == 0;
}

/*
 * Under core's submit and flight locks: cancel record i of a dispatched
 * batch. Its flag (in the slot's input, read-only to workers) makes a worker
 * skip it, and makes us report it cancelled whatever a worker wrote; a worker
 * running it right now is killed and replaced (the rest of its slot re-runs).
 */
static int fk_cancel(exec_t *ex, struct exec__batch *b, uint32_t i)
{
    struct fk *fk = exec__priv(ex);
    struct fk_slot *s = (struct fk_slot *)b;
    struct fk_worker *wk = s->wk;
    exec__lock(&wk->q.lock);
    if (i < s->from) {
        exec__unlock(&wk->q.lock);
        return 0; /* its result is already ours */
    }
    __atomic_fetch_or(&b->rflags[i], EXEC__RF_CANCEL, __ATOMIC_SEQ_CST);
    exec__unlock(&wk->q.lock);
    /* If it runs, the supervisor stops it (watch.c): it sees the flag on the
     * record the worker is on. */
    fk_wake_sup(fk);
    return 1;
}

/* Any thread: place i's figures, over every generation and process. */
static void fk_worker_stats(exec_t *ex, unsigned i, exec_worker_stats_t *ws)
{
    struct fk *fk = exec__priv(ex);
    int pid = 0;
    exec__lock(&fk->lock);
    const struct fk_place *pl = &fk->places[i];
    ws->records = ck_pr_load_64(&pl->records);
    ws->batches = ck_pr_load_64(&pl->batches);
    ws->respawns_crash = ck_pr_load_64(&pl->resp_crash);
    ws->respawns_timeout = ck_pr_load_64(&pl->resp_timeout);
    ws->respawns_recycle = ck_pr_load_64(&pl->resp_recycle);
    ws->respawns_cancel = ck_pr_load_64(&pl->resp_cancel);
    ws->startup_ns = ck_pr_load_64(&pl->startup_ns);
    ws->busy_ns = ck_pr_load_64(&pl->busy_ns);
    ws->idle_ns = ck_pr_load_64(&pl->idle_ns);
    ws->flags = ck_pr_load_32(&pl->flags);
    uint64_t now = exec__now_ns();
    /* Processes still in the place (the current generation's, and those of
     * generations that are draining) add what they have so far. */
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *g = &fk->gens[k];
        /* The state first: a free generation's fields are being written
         * (fk_gen_init, without the lock) until it is G_STARTING. */
        uint32_t gs = ck_pr_load_32(&g->state);
        if (gs == G_FREE || gs == G_STARTING || !g->w || i >= g->nw)
            continue;
        struct fk_worker *wk = &g->w[i];
        ws->startup_ns += ck_pr_load_64(&wk->hdr->startup_ns);
        ws->busy_ns += ck_pr_load_64(&wk->hdr->busy_ns);
        ws->idle_ns += ck_pr_load_64(&wk->hdr->idle_ns);
        uint64_t since = ck_pr_load_64(&wk->hdr->idle_since);
        if (wk->p.state == W_LIVE && since && since < now)
            ws->idle_ns += now - since; /* waiting now */
        if (g == ck_pr_load_ptr(&fk->cur) && wk->p.state == W_LIVE && wk->p.admitted)
            pid = wk->p.pid; /* a process not admitted yet serves nobody */
    }
    exec__unlock(&fk->lock);
    ws->pid = pid;
    if (pid > 0)
        fk_smaps(pid, &ws->pss_kb, &ws->private_dirty_kb);
}

/*
 * Consumer. Keeps copies of the last few records of s that ran without error
 * (records that fail on the current context prove nothing about a new one).
 */
static void fk_probe_keep(struct fk *fk, const struct fk_slot *s)
{
    if (pthread_mutex_trylock(&fk->probe_lock) != 0)
        return; /* a swap is reading them: next time */
    unsigned n = 0;
    size_t len = 0;
    for (uint32_t j = s->b.n; j-- > 0 && n < FK_PROBE_N;) {
        const struct exec__rec *r = &s->b.recs[j];
        if (s->b.res[j].status != 0 || r->len > FK_PROBE_BYTES - len)
            continue;
        memcpy(fk->probe_data + len, r->p, r->len);
        fk->probe_rec[n].tag = r->tag;
        fk->probe_rec[n].p = fk->probe_data + len;
        fk->probe_rec[n].len = r->len;
        len += r->len;
        n++;
    }
    if (n)
        fk->probe_n = n;
    pthread_mutex_unlock(&fk->probe_lock);
}

static struct exec__batch *fk_reap(exec_t *ex)
{
    struct fk *fk = exec__priv(ex);
    if (ck_pr_load_32(&fk->zneed))
        fk_host_refork(fk); /* fork hooks: a zygote died, forked again here */
    if (ck_pr_load_32(&fk->dead_pending))
        fk_deaths(fk);
    for (unsigned k = 0; k <= FK_MAXGEN; k++) {
        if (fk->done) {
            struct fk_slot *s = fk->done;
            fk->done = s->next_done;
            return &s->b;
        }
        if (k == FK_MAXGEN)
            break;
        struct fk_gen *g = &fk->gens[(fk->reap_g + k) % FK_MAXGEN];
        uint32_t gs = ck_pr_load_32(&g->state);
        if (gs != G_ACTIVE && gs != G_RETIRING)
            continue;
        exec__tsan_acquire(g);
        if (gs == G_RETIRING && ck_pr_load_32(&g->held) == 0) {
            fk_drained(fk, g);
            continue;
        }
        for (unsigned i = 0; i < g->nw; i++) {
            struct fk_worker *wk = &g->w[(g->reap_w + i) % g->nw];
            if (ck_pr_load_32(&wk->c.gone)) {
                exec__lock(&wk->q.lock);
                fk_fail_all(fk, wk, EXEC_EWORKER);
                exec__unlock(&wk->q.lock);
                continue;
            }
            struct fk_slot *s = fk_pull(fk, wk, true);
            if (s) {
                if (fk->probe_data && fk->probe_tick++ % FK_PROBE_EVERY == 0)
                    fk_probe_keep(fk, s);
                /* Start after this worker next time: fair to every ring. */
                fk->reap_g = (fk->reap_g + k) % FK_MAXGEN;
                g->reap_w = wk->idx + 1 == g->nw ? 0 : wk->idx + 1;
                return &s->b;
            }
        }
    }
    return NULL;
}

static void fk_batch_put(exec_t *ex, struct exec__batch *b)
{
    struct fk *fk = exec__priv(ex);
    struct fk_slot *s = (struct fk_slot *)b;
    struct fk_gen *g = s->g;
    fk_slot_give(s->wk, s);
    ck_pr_dec_32(&g->held);
    ck_pr_dec_32(&fk->held_all);
    if (ck_pr_load_32(&g->state) == G_RETIRING && ck_pr_load_32(&g->held) == 0)
        fk_drained(fk, g);
}

static int fk_start(exec_t *ex)
{
    struct fk *fk = exec__priv(ex);
    const exec_options_t *o = exec__opts(ex);
    fk->ex = ex;
    fk->ops = exec__ops(ex);
    fk->o = o;
    fk->maxb = exec__max_batches(ex);
    fk->sup_efd = -1;
    exec__mutex_init(&fk->lock);
    pthread_mutex_init(&fk->probe_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&fk->cond, &ca);
    pthread_condattr_destroy(&ca);
    for (unsigned k = 0; k < FK_MAXGEN; k++)
        fk->gens[k].zpidfd = fk->gens[k].zsock = -1;

    void *ctl = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (ctl == MAP_FAILED)
        return -errno;
    fk->ctl = ctl;
    exec__use_armed(ex, &fk->ctl->armed);
    /* The records buffer, before any zygote: every process has it at the
     * same address. Pages are memory only once the host writes them. */
    int bfd = memfd_create("exec-buffer", MFD_CLOEXEC);
    if (bfd < 0)
        return -errno;
    if (ftruncate(bfd, (off_t)o->buffer_size) != 0) {
        int e = errno;
        close(bfd);
        return -e;
    }
    void *buf = mmap(NULL, o->buffer_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                     bfd, 0);
    close(bfd);
    if (buf == MAP_FAILED)
        return -errno;
    fk->buf = buf;
    fk->buf_size = o->buffer_size;
    exec__use_buffer(ex, buf, o->buffer_size);
    fk->sup_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fk->sup_efd < 0)
        return -errno;
    fk->npfd_max = 1 + FK_MAXGEN * (2 + (size_t)o->workers);
    fk->seed = fk_mix(exec__now_ns() ^ (uint64_t)(uintptr_t)fk);
    if (o->slow_ms && o->on_slow) {
        fk->slow_cap = o->workers < 64 ? 2 * o->workers : 128;
        fk->slow = exec__calloc(fk->slow_cap, sizeof *fk->slow);
        if (!fk->slow)
            return EXEC_ENOMEM;
    }
    fk->pfd = exec__calloc(fk->npfd_max, sizeof *fk->pfd);
    fk->ptag = exec__calloc(fk->npfd_max, sizeof *fk->ptag);
    fk->places = exec__calloc(o->workers, sizeof *fk->places);
    if (!(o->flags & EXEC_NO_REPLAY))
        fk->probe_data = exec__malloc(FK_PROBE_BYTES);
    if (!fk->pfd || !fk->ptag || !fk->places ||
        (!(o->flags & EXEC_NO_REPLAY) && !fk->probe_data))
        return EXEC_ENOMEM;

    struct fk_gen *g = &fk->gens[0];
    int rc = fk_gen_init(fk, g, exec__ctx0(ex), 0, o->workers);
    if (rc)
        return rc;
    g->release_ctx = true; /* if exec_create succeeds (exec__started) */

    rc = exec__spawn(&fk->sup, fk_sup_main, fk);
    if (rc)
        return rc;
    fk->sup_started = true;
    if (fk_hooked(fk))
        fk_host_fork(fk, g, true); /* on this thread; a failure is g->zerr */
    rc = fk_gen_wait(fk, g, g->nw);
    if (rc)
        return rc;
    fk->cur = g;
    exec__batch_room(ex, g->nw * g->nslot);
    exec__tsan_release(g);
    exec__lock(&fk->lock);
    ck_pr_store_32(&g->state, G_ACTIVE);
    ck_pr_store_32(&fk->dead_pending, 1);
    exec__unlock(&fk->lock);
    return 0;
}

static void fk_stop(exec_t *ex)
{
    struct fk *fk = exec__priv(ex);
    if (!fk->ex)
        return; /* start() never ran */
    if (fk->sup_started) {
        exec__lock(&fk->lock);
        fk->stopping = true;
        exec__unlock(&fk->lock);
        fk_wake_sup(fk);
        pthread_join(fk->sup, NULL);
    }
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *g = &fk->gens[k];
        if (g->base || g->w)
            fk_gen_free(fk, g, g->release_ctx && exec__started(ex));
    }
    free(fk->pfd);
    free(fk->ptag);
    free(fk->places);
    free(fk->probe_data);
    free(fk->slow);
    pthread_mutex_destroy(&fk->probe_lock);
    if (fk->sup_efd >= 0)
        close(fk->sup_efd);
    if (fk->ctl) {
        exec__use_armed(ex, NULL);
        munmap(fk->ctl, 4096);
    }
    if (fk->buf) {
        exec__use_buffer(ex, NULL, 0);
        munmap(fk->buf, fk->buf_size);
    }
    exec__mutex_destroy(&fk->lock);
    pthread_cond_destroy(&fk->cond);
}

/*
 * exec_destroy() in a child of the host's fork(): the supervisor thread does
 * not exist here, and the workers, zygotes and the region are the creator's.
 * Only this process's copy goes: our heap, and our copies of the pidfds,
 * sockets and mappings (the creator's stay open). Nothing is written to the
 * region, signalled, waited for or locked. (The same frees as fk_gen_free()
 * and fk_stop(), without their lock, figures and user callbacks.)
 */
static void fk_forget(exec_t *ex)
{
    struct fk *fk = exec__priv(ex);
    if (!fk->ex)
        return;
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *g = &fk->gens[k];
        for (unsigned i = 0; g->w && i < g->nw; i++) {
            struct fk_worker *wk = &g->w[i];
            if (wk->p.pidfd >= 0)
                close(wk->p.pidfd);
            if (wk->s.pidfd >= 0)
                close(wk->s.pidfd);
            /* (res_block is not mapped here: MADV_DONTFORK.) */
            for (unsigned j = 0; wk->slots && j < g->nslot; j++)
                free(wk->slots[j].rbuf);
            free(wk->slots);
            free(wk->q.fifo);
        }
        free(g->w);
        free(g->zpids);
        if (g->base)
            munmap(g->base, g->size);
        if (g->zpidfd >= 0)
            close(g->zpidfd);
        if (g->zsock >= 0)
            close(g->zsock);
    }
    free(fk->pfd);
    free(fk->ptag);
    free(fk->places);
    free(fk->probe_data);
    free(fk->slow);
    if (fk->sup_efd >= 0)
        close(fk->sup_efd);
    if (fk->ctl)
        munmap(fk->ctl, 4096);
    if (fk->buf)
        munmap(fk->buf, fk->buf_size);
}

const struct exec__backend exec__fork_backend = {
    .version = 1,
    .id = EXEC_FORK,
    .name = "fork",
    .priv_size = sizeof(struct fk),
    .start = fk_start,
    .batch_get = fk_batch_get,
    .dispatch = fk_dispatch,
    .hungry = fk_hungry,
    .reap = fk_reap,
    .batch_put = fk_batch_put,
    .swap_prepare = fk_swap_prepare,
    .swap_commit = fk_swap_commit,
    .cancel = fk_cancel,
    .worker_stats = fk_worker_stats,
    .stop = fk_stop,
    .unsettled = fk_unsettled,
    .forget = fk_forget,
};
