/*
 * EXEC_THREADS: a pool of pthreads sharing the context under RCU (urcu-memb).
 * This file is the seam: what core calls (exec_internal.h), on core's
 * threads. threads.h says which file does what.
 */
#include "threads.h"
#include "alloc.h"
#include "tsan.h"

#include <ck_pr.h>
#include <errno.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

/* A batch's first result buffer: in the mapping, after its flags. */
static char *thr_first_wbuf(const struct thr_batch *tb)
{
    return (char *)(tb->b.rflags + tb->b.cap);
}

/* A batch's result buffer outgrew the first one (or grows again): from here
 * on it is malloc'd. */
static int thr_grow(struct exec_writer *w, size_t need)
{
    struct thr_batch *tb = w->grow_arg;
    if (w->buf != thr_first_wbuf(tb)) {
        int rc = exec__writer_grow(w, need);
        if (rc)
            return rc;
    } else {
        size_t cap = w->cap * 2;
        while (cap < need)
            cap *= 2;
        char *p = exec__malloc(cap);
        if (!p)
            return EXEC_ENOMEM;
        memcpy(p, w->buf, w->len);
        w->buf = p;
        w->cap = cap;
    }
    tb->b.rdata = w->buf;
    tb->b.rdata_cap = w->cap;
    return 0;
}

/* Each batch's small part: the thr_batch, record and result entries, flags
 * and the first result buffer, 64-byte aligned. */
static size_t thr_small_size(const exec_options_t *o)
{
    size_t n = sizeof(struct thr_batch) +
               o->batch * (sizeof(struct exec__rec) + sizeof(struct exec__res) + 1) + THR_WBUF;
    return (n + 63) & ~(size_t)63;
}

/*
 * The batches' memory, laid out (threads.h) so that what every batch writes,
 * its entries, lies together, asked for huge pages (MADV_HUGEPAGE): a fresh
 * executor otherwise pays a fault for each 4 KiB of it (~11 us on a VM that
 * shadows page tables; docs/architecture.md). A group is mapped when its
 * first batch is needed, and touched only as batches use it (LIFO reuse keeps
 * that to what is in flight). Not MADV_DONTFORK: valgrind's memcheck, in a
 * child of the host, spins on the mapping it believes it has.
 */
static int thr_layout(struct thr *t, const exec_options_t *o)
{
    t->small_sz = thr_small_size(o);
    t->dcap = o->max_record > 65536 ? o->max_record : 65536;
    /* A group: a huge page of small parts (one batch at least), all batches
     * at most. */
    size_t n = THR_HUGE / t->small_sz;
    if (n > t->maxb)
        n = t->maxb;
    if (n == 0)
        n = 1;
    t->grp_n = (uint32_t)n;
    t->grp_small = (n * t->small_sz + THR_HUGE - 1) & ~(THR_HUGE - 1);
    t->grp_data = n * t->dcap <= THR_DATA_MAP;
    /* A huge page's worth more, to start the small parts on a boundary. */
    t->grp_len = t->grp_small + (t->grp_data ? n * t->dcap : 0) + THR_HUGE;
    t->grp = exec__calloc(t->maxb / n + 1, sizeof *t->grp); /* (one to spare at most) */
    return t->grp ? 0 : EXEC_ENOMEM;
}

/* Group g's small parts, on a huge-page boundary. */
static char *thr_group_base(const struct thr *t, uint32_t g)
{
    return (char *)(((uintptr_t)t->grp[g] + THR_HUGE - 1) & ~(uintptr_t)(THR_HUGE - 1));
}

/* Batch i's place: its small part, which starts with its thr_batch. */
static struct thr_batch *thr_batch_at(const struct thr *t, uint32_t i)
{
    return (struct thr_batch *)(thr_group_base(t, i / t->grp_n) +
                                (size_t)(i % t->grp_n) * t->small_sz);
}

static int thr_group(struct thr *t, uint32_t g)
{
    if (exec__fault())
        return EXEC_ENOMEM;
    void *m = mmap(NULL, t->grp_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                   0);
    if (m == MAP_FAILED)
        return EXEC_ENOMEM;
    t->grp[g] = m;
#ifdef MADV_HUGEPAGE
    /* Where the small parts fill half a huge page or more (a small window's
     * would hold a whole one for little). Advice: nothing happens where
     * transparent huge pages are off. */
    if ((size_t)t->grp_n * t->small_sz >= THR_HUGE / 2)
        madvise(thr_group_base(t, g), t->grp_small, MADV_HUGEPAGE);
#endif
    return 0;
}

static unsigned thr_pow2(unsigned n)
{
    unsigned p = 2;
    while (p < n)
        p <<= 1;
    return p;
}

static void thr_stop(exec_t *ex);

static int thr_start(exec_t *ex)
{
    struct thr *t = exec__priv(ex);
    const exec_options_t *o = exec__opts(ex);
    t->ex = ex;
    t->ops = exec__ops(ex);
    t->max_result = o->max_result;
    t->nw = o->workers;
    t->maxb = exec__max_batches(ex);
    t->wake_out = t->maxb / t->nw / 2;
    if (t->wake_out < 4)
        t->wake_out = 4;
    t->wake_age_ns = (uint64_t)o->result_delay_us * 1000u;
    exec__mutex_init(&t->init_lock);
    pthread_cond_init(&t->init_cond, NULL);
    exec__mutex_init(&t->rec_lock);
    pthread_cond_init(&t->rec_cond, NULL);

    unsigned rsz = thr_pow2(t->maxb + 1);
    t->w = exec__calloc(t->nw, sizeof *t->w);
    t->cur = exec__calloc(1, sizeof *t->cur);
    t->help_outbuf = exec__calloc(rsz, sizeof *t->help_outbuf);
    if (!t->w || !t->cur || !t->help_outbuf)
        return EXEC_ENOMEM;
    int rc = thr_layout(t, o);
    if (rc)
        return rc;
    ck_ring_init(&t->help_out, rsz);
    ck_stack_init(&t->free);
    t->cur->ctx = exec__ctx0(ex);
    exec__tsan_release(t->cur);
    for (unsigned i = 0; i < t->nw; i++) {
        struct thr_worker *wk = &t->w[i];
        wk->t = t;
        wk->idx = i;
        ck_ring_init(&wk->in, rsz);
        ck_ring_init(&wk->out, rsz);
        wk->inbuf = exec__calloc(rsz, sizeof *wk->inbuf);
        wk->outbuf = exec__calloc(rsz, sizeof *wk->outbuf);
        if (!wk->inbuf || !wk->outbuf)
            return EXEC_ENOMEM;
    }
    rc = exec__spawn(&t->reclaimer, thr_reclaim_main, t);
    if (rc)
        return rc;
    t->reclaimer_started = true;
    for (unsigned i = 0; i < t->nw; i++) {
        rc = exec__spawn(&t->w[i].tid, thr_main, &t->w[i]);
        if (rc)
            return rc;
        t->w[i].started = true;
    }
    exec__lock(&t->init_lock);
    while (t->init_done < t->nw)
        exec__cond_wait(&t->init_cond, &t->init_lock);
    EXEC__ASSERT(t->init_done == t->nw);
    exec__unlock(&t->init_lock);
    for (unsigned i = 0; i < t->nw; i++)
        if (t->w[i].init_rc)
            return EXEC_EINIT;
    return 0;
}

static struct exec__batch *thr_batch_get(exec_t *ex, int *err)
{
    struct thr *t = exec__priv(ex);
    const exec_options_t *o = exec__opts(ex);
    struct thr_batch *tb;
    ck_stack_entry_t *e = ck_stack_pop_upmc(&t->free);
    if (e) {
        tb = thr_batch_of(e);
        exec__tsan_acquire(tb);
        return &tb->b;
    }
    EXEC__ASSERT(t->nall <= t->maxb);
    if (t->nall == t->maxb)
        return NULL;
    /* Batch nall's place in its group's mapping (zero-filled, never used). */
    const uint32_t i = t->nall, g = i / t->grp_n, k = i % t->grp_n;
    if (!t->grp[g]) {
        int rc = thr_group(t, g);
        if (rc) {
            *err = rc;
            return NULL;
        }
    }
    tb = thr_batch_at(t, i);
    char *data = t->grp_data ? thr_group_base(t, g) + t->grp_small + (size_t)k * t->dcap
                             : exec__malloc(t->dcap);
    if (!data) {
        *err = EXEC_ENOMEM;
        return NULL;
    }
    char *p = (char *)(tb + 1);
    tb->b.recs = (struct exec__rec *)p;
    p += o->batch * sizeof *tb->b.recs;
    tb->b.res = (struct exec__res *)p;
    p += o->batch * sizeof *tb->b.res;
    tb->b.rflags = (uint8_t *)p;
    tb->b.cap = o->batch;
    tb->b.recs_buf = tb->b.recs; /* views of a caller's array come and go */
    tb->b.data = data;
    tb->b.data_cap = t->dcap;
    tb->w.buf = thr_first_wbuf(tb);
    tb->w.cap = THR_WBUF;
    tb->b.rdata = tb->w.buf;
    tb->b.rdata_cap = tb->w.cap;
    tb->w.max = o->max_result;
    tb->w.grow = thr_grow;
    tb->w.grow_arg = tb;
    t->nall++;
    return &tb->b;
}

/* The worker with the fewest batches queued; never the one resting while a
 * caller works (the caller steals what is left in its ring). */
static void thr_dispatch(exec_t *ex, struct exec__batch *b)
{
    struct thr *t = exec__priv(ex);
    unsigned parked = ck_pr_load_32(&t->parked);
    EXEC__ASSERT(parked <= t->nw);
    struct thr_worker *best = NULL;
    unsigned best_n = UINT32_MAX;
    for (unsigned i = 0; i < t->nw && best_n; i++) {
        if (i + 1 == parked)
            continue;
        unsigned n = ck_ring_size(&t->w[i].in);
        if (n < best_n) {
            best = &t->w[i];
            best_n = n;
        }
    }
    exec__tsan_release(b);
    if (!best) {
        /* The only worker, resting: the caller takes the batch from its ring
         * (waking the worker would only put it back to sleep). */
        THR_PUT(ck_ring_enqueue_spmc(&t->w[0].in, t->w[0].inbuf, b));
        return;
    }
    THR_PUT(ck_ring_enqueue_spmc(&best->in, best->inbuf, b));
    ck_ec32_inc(&best->ec, &exec__ec_threads);
}

static bool thr_hungry(exec_t *ex, const struct exec__batch *b)
{
    (void)b;
    struct thr *t = exec__priv(ex);
    unsigned parked = ck_pr_load_32(&t->parked);
    for (unsigned i = 0; i < t->nw; i++)
        if (i + 1 != parked && ck_ring_size(&t->w[i].in) == 0)
            return true;
    return false;
}

static struct exec__batch *thr_reap(exec_t *ex)
{
    struct thr *t = exec__priv(ex);
    struct thr_batch *mine;
    if (ck_ring_dequeue_spsc(&t->help_out, t->help_outbuf, &mine)) {
        exec__tsan_acquire(mine);
        return &mine->b; /* what the calling thread ran */
    }
    for (unsigned k = 0; k < t->nw; k++) {
        EXEC__ASSERT(t->reap_pos < t->nw);
        struct thr_worker *wk = &t->w[t->reap_pos];
        struct thr_batch *tb;
        if (ck_ring_dequeue_spsc(&wk->out, wk->outbuf, &tb)) {
            exec__tsan_acquire(tb);
            return &tb->b;
        }
        t->reap_pos = t->reap_pos + 1 == t->nw ? 0 : t->reap_pos + 1;
    }
    return NULL;
}

static void thr_batch_put(exec_t *ex, struct exec__batch *b)
{
    struct thr *t = exec__priv(ex);
    struct thr_batch *tb = (struct thr_batch *)b;
    exec__tsan_release(tb);
    ck_stack_push_upmc(&t->free, &tb->link);
}

/* The memory of the batches and rings (stop, and forget in a child). */
static void thr_free_all(struct thr *t)
{
    /* What lies outside the mapping: grown result buffers, and record bytes
     * where a group's would not fit. */
    for (uint32_t i = 0; i < t->nall; i++) {
        struct thr_batch *tb = thr_batch_at(t, i);
        if (tb->w.buf != thr_first_wbuf(tb))
            free(tb->w.buf);
        if (!t->grp_data)
            free(tb->b.data);
    }
    if (t->grp) {
        for (uint32_t g = 0; g * t->grp_n < t->maxb; g++)
            if (t->grp[g])
                munmap(t->grp[g], t->grp_len);
        free(t->grp);
        t->grp = NULL;
    }
    if (t->w) {
        for (unsigned i = 0; i < t->nw; i++) {
            free(t->w[i].inbuf);
            free(t->w[i].outbuf);
        }
    }
    free(t->w);
    free(t->pending);
    free(t->help_outbuf);
}

/* exec_destroy() in a child of the host's fork(): the worker and reclaimer
 * threads do not exist here, and the contexts and worker states are the
 * creator's; only this process's copy of our memory goes. */
static void thr_forget(exec_t *ex)
{
    struct thr *t = exec__priv(ex);
    if (!t->ex)
        return;
    free(t->cur);
    for (struct exec__ctxref *r = t->rec_list, *next; r; r = next) {
        next = r->next;
        free(r);
    }
    thr_free_all(t);
}

static void thr_stop(exec_t *ex)
{
    struct thr *t = exec__priv(ex);
    if (!t->ex)
        return; /* start() never ran */
    ck_pr_store_32(&t->stop, 1);
    if (t->w) {
        for (unsigned i = 0; i < t->nw; i++) {
            if (!t->w[i].started)
                continue;
            ck_ec32_inc(&t->w[i].ec, &exec__ec_threads);
            pthread_join(t->w[i].tid, NULL);
        }
    }
    if (t->reclaimer_started) {
        exec__lock(&t->rec_lock);
        t->rec_stop = true;
        pthread_cond_signal(&t->rec_cond);
        exec__unlock(&t->rec_lock);
        pthread_join(t->reclaimer, NULL);
    }
    /* Every worker is gone: the current context has no reader left. */
    if (t->cur) {
        thr_help_fini(t);
        exec__tsan_acquire(t->cur);
        if (t->ops->ctx_release && exec__started(ex))
            t->ops->ctx_release(t->cur->ctx);
        free(t->cur);
    }
    thr_free_all(t);
    exec__mutex_destroy(&t->init_lock);
    pthread_cond_destroy(&t->init_cond);
    exec__mutex_destroy(&t->rec_lock);
    pthread_cond_destroy(&t->rec_cond);
}

static void thr_worker_stats(exec_t *ex, unsigned i, exec_worker_stats_t *ws)
{
    struct thr *t = exec__priv(ex);
    struct thr_worker *wk = &t->w[i];
    uint64_t start = ck_pr_load_64(&wk->t_start);
    ws->records = ck_pr_load_64(&wk->records);
    ws->batches = ck_pr_load_64(&wk->batches);
    ws->busy_ns = ck_pr_load_64(&wk->busy_ns);
    ws->startup_ns = ck_pr_load_64(&wk->startup_ns);
    uint64_t up = start ? exec__now_ns() - start : 0;
    ws->idle_ns = up > ws->busy_ns + ws->startup_ns ? up - ws->busy_ns - ws->startup_ns : 0;
}

const struct exec__backend exec__threads_backend = {
    .version = 1,
    .id = EXEC_THREADS,
    .name = "threads",
    .priv_size = sizeof(struct thr),
    .start = thr_start,
    .batch_get = thr_batch_get,
    .dispatch = thr_dispatch,
    .hungry = thr_hungry,
    .reap = thr_reap,
    .batch_put = thr_batch_put,
    .swap_prepare = thr_swap_prepare,
    .swap_commit = thr_swap_commit,
    .refs = true,
    .help = thr_help,
    .caller_joins = thr_caller_joins,
    .worker_stats = thr_worker_stats,
    .stop = thr_stop,
    .forget = thr_forget,
};
