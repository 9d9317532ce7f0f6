/*
 * EXEC_THREADS: a pool of pthreads sharing the context under RCU (urcu-memb).
 *
 * Each worker has its own SPSC rings from ck: `in` (producer -> worker, filled
 * under the core's submit_lock) and `out` (worker -> consumer, drained under
 * next_lock). A worker with nothing to do spins briefly, then sleeps on a ck_ec
 * event count that the producer bumps after each enqueue.
 *
 * The context lives in an exec__ctxref published with rcu_xchg_pointer; each
 * batch reads it once inside one read-side critical section, so a record sees
 * exactly one context. Swapped-out refs go to a reclaimer thread of ours that
 * waits for a grace period (synchronize_rcu) and then calls ops->ctx_release,
 * so neither workers nor the swapping thread ever wait for readers.
 */
#define _LGPL_SOURCE
#include "exec_internal.h"
#include "tsan.h"

#include <ck_ec.h>
#include <ck_pr.h>
#include <ck_ring.h>
#include <ck_stack.h>
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#define THR_SPIN 256                 /* pauses before a worker sleeps */
#define THR_LOW 2u                   /* a worker with this few batches queued is running dry */
#define THR_BATCH_NS 250000u         /* aim for batches of about this much work */
#define THR_WAKE_AGE_NS 1000000u     /* results wait at most about this long for a wake-up */

struct exec__ctxref {
    void *ctx;
    uint64_t generation;
    struct exec__ctxref *next; /* reclaimer list */
};

struct thr_worker {
    struct ck_ring in;
    char pad0[64];
    struct ck_ring out;
    char pad1[64];
    struct ck_ec32 ec; /* bumped after each enqueue on `in` */
    char pad2[64];
    ck_ring_buffer_t *inbuf, *outbuf;
    struct thr *t;
    unsigned idx;
    pthread_t tid;
    bool started;
    int init_rc;
    /* Figures: written by the worker (ck_pr stores), read by anyone. */
    uint64_t t_start, startup_ns, busy_ns, records, batches;
    uint64_t ewma_ns; /* smoothed cost of one record */
};

struct thr_batch {
    struct exec__batch b; /* first: a struct exec__batch * is a struct thr_batch * */
    struct exec_writer w;
    ck_stack_entry_t link; /* in the free stack */
};
CK_STACK_CONTAINER(struct thr_batch, link, thr_batch_of)

struct thr {
    exec_t *ex;
    const exec_ops_t *ops;
    size_t max_result;
    unsigned nw;
    struct thr_worker *w;
    struct exec__ctxref *cur;     /* RCU-protected */
    struct exec__ctxref *pending; /* prepared by swap_prepare, published by swap_commit */
    uint32_t stop;

    /* Startup handshake: workers report worker_init's result. */
    pthread_mutex_t init_lock;
    pthread_cond_t init_cond;
    unsigned init_done;

    /* Batch pool: a LIFO of free batches (the consumer pushes, the producer
     * pops; one popper, so no ABA). LIFO reuses the batches still warm in
     * cache and keeps the touched set, hence RSS, as small as what is in flight. */
    ck_stack_t free;
    struct thr_batch **all;
    uint32_t nall, maxb;
    unsigned reap_pos;
    unsigned wake_out; /* wake the consumer once a worker has this many batches done */
    uint64_t last_wake; /* when a worker last woke the consumer (ck_pr) */

    /* Reclaimer. */
    pthread_t reclaimer;
    bool reclaimer_started;
    pthread_mutex_t rec_lock;
    pthread_cond_t rec_cond;
    struct exec__ctxref *rec_list;
    bool rec_stop;
    char tsan_gp; /* grace-period annotation address */
};

/* ck_ec ops for threads of one process: private futexes. */
static int thr_gettime(const struct ck_ec_ops *ops, struct timespec *out)
{
    (void)ops;
    return clock_gettime(CLOCK_MONOTONIC, out);
}

static void thr_wait32(const struct ck_ec_wait_state *st, const uint32_t *addr, uint32_t expected,
                       const struct timespec *deadline)
{
    (void)st;
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, as ck_ec gives. */
    syscall(SYS_futex, addr, FUTEX_WAIT_BITSET_PRIVATE, expected, deadline, NULL,
            FUTEX_BITSET_MATCH_ANY);
}

static void thr_wake32(const struct ck_ec_ops *ops, const uint32_t *addr)
{
    (void)ops;
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static const struct ck_ec_ops thr_ec_ops = {
    .gettime = thr_gettime,
    .wait32 = thr_wait32,
    .wake32 = thr_wake32,
    .busy_loop_iter = 64,
};
static const struct ck_ec_mode thr_ec_mode = {.ops = &thr_ec_ops, .single_producer = false};

static int thr_grow(struct exec_writer *w, size_t need)
{
    struct thr_batch *tb = w->grow_arg;
    size_t cap = w->cap ? w->cap : 4096;
    while (cap < need)
        cap *= 2;
    char *p = realloc(w->buf, cap);
    if (!p)
        return EXEC_ENOMEM;
    w->buf = p;
    w->cap = cap;
    tb->b.rdata = p;
    tb->b.rdata_cap = cap;
    return 0;
}

static void thr_process(struct thr_worker *wk, struct thr_batch *tb, void *wstate)
{
    struct thr *t = wk->t;
    struct exec__batch *b = &tb->b;
    urcu_memb_read_lock();
    struct exec__ctxref *ref = rcu_dereference(t->cur);
    exec__tsan_acquire(ref);
    b->worker = wk->idx;
    b->generation = ref->generation;
    tb->w.len = 0;
    exec__run_batch(t->ops, ref->ctx, wstate, b, 0, &tb->w, t->max_result, NULL);
    b->rdata_len = tb->w.len;
    exec__tsan_release(&t->tsan_gp);
    urcu_memb_read_unlock();
}

/* In-rings are single-producer, multi-consumer: the owner takes from its own
 * ring, and a worker that runs dry steals from the longest other one, so the
 * last batches of a stream do not wait behind one busy worker. */
static bool thr_take(struct thr_worker *wk, struct thr_batch **out)
{
    if (ck_ring_dequeue_spmc(&wk->in, wk->inbuf, out)) {
        exec__tsan_acquire(*out);
        return true;
    }
    return false;
}

static bool thr_steal(struct thr_worker *wk, struct thr_batch **out)
{
    struct thr *t = wk->t;
    struct thr_worker *victim = NULL;
    unsigned most = 0;
    for (unsigned i = 0; i < t->nw; i++) {
        unsigned n = ck_ring_size(&t->w[i].in);
        if (&t->w[i] != wk && n > most) {
            most = n;
            victim = &t->w[i];
        }
    }
    return victim && thr_take(victim, out);
}

/* Per-record cost, smoothed, sets how many records the producer puts in a
 * batch: about THR_BATCH_NS of work, at most options.batch. Heavy records thus
 * travel in small batches and the work stays spread to the end. */
static void thr_tune(struct thr_worker *wk, uint64_t ns, uint32_t n)
{
    uint64_t per = ns / (n ? n : 1) + 1;
    wk->ewma_ns = wk->ewma_ns ? (wk->ewma_ns * 7 + per) / 8 : per;
    uint64_t limit = THR_BATCH_NS / wk->ewma_ns;
    exec__tune_batch(wk->t->ex, limit > UINT32_MAX ? UINT32_MAX : (uint32_t)limit);
}

static void *thr_main(void *arg)
{
    struct thr_worker *wk = arg;
    struct thr *t = wk->t;
    exec_t *ex = t->ex;
    void *wstate = NULL;

    ck_pr_store_64(&wk->t_start, exec__now_ns());
    urcu_memb_register_thread();
    int rc = 0;
    if (t->ops->worker_init) {
        urcu_memb_read_lock();
        struct exec__ctxref *ref = rcu_dereference(t->cur);
        exec__tsan_acquire(ref);
        rc = t->ops->worker_init(ref->ctx, &wstate);
        urcu_memb_read_unlock();
    }
    ck_pr_store_64(&wk->startup_ns, exec__now_ns() - wk->t_start);
    pthread_mutex_lock(&t->init_lock);
    wk->init_rc = rc;
    t->init_done++;
    pthread_cond_broadcast(&t->init_cond);
    pthread_mutex_unlock(&t->init_lock);

    if (rc == 0) {
        for (;;) {
            struct thr_batch *tb;
            uint32_t snap = ck_ec32_value(&wk->ec);
            if (!thr_take(wk, &tb)) {
                int spins = 0;
                while (!thr_take(wk, &tb)) {
                    if (ck_pr_load_32(&t->stop))
                        goto out;
                    if ((spins & 31) == 0 && thr_steal(wk, &tb))
                        break;
                    if (++spins < THR_SPIN) {
                        ck_pr_stall();
                        continue;
                    }
                    /* Nothing came: tell a waiting consumer, make sure nothing
                     * waits in the open batch, then sleep. */
                    if (ck_ring_size(&wk->out))
                        exec__notify(ex);
                    exec__idle_enter(ex);
                    int sent = exec__flush_idle(ex);
                    if (sent != 1) {
                        /* Lock busy: its holder may have looked at `idle` just
                         * before we counted ourselves; look again in 1 ms. */
                        struct timespec dl, *dlp = NULL;
                        if (sent < 0) {
                            clock_gettime(CLOCK_MONOTONIC, &dl);
                            dl.tv_nsec += 1000000;
                            if (dl.tv_nsec >= 1000000000) {
                                dl.tv_sec++;
                                dl.tv_nsec -= 1000000000;
                            }
                            dlp = &dl;
                        }
                        ck_ec32_wait(&wk->ec, &thr_ec_mode, snap, dlp);
                    }
                    exec__idle_leave(ex);
                    snap = ck_ec32_value(&wk->ec);
                    spins = 0;
                }
            }
            if (ck_pr_load_32(&t->stop))
                break;
            uint64_t t0 = exec__now_ns();
            thr_process(wk, tb, wstate);
            uint64_t t1 = exec__now_ns();
            ck_pr_store_64(&wk->busy_ns, wk->busy_ns + (t1 - t0));
            thr_tune(wk, t1 - t0, tb->b.n);
            ck_pr_store_64(&wk->records, wk->records + tb->b.n);
            ck_pr_store_64(&wk->batches, wk->batches + 1);
            bool awaited = exec__awaited(ex, &tb->b);
            exec__tsan_release(tb);
            ck_ring_enqueue_spsc(&wk->out, wk->outbuf, tb);
            /* Wake a sleeping consumer only when a good share is done, we run
             * dry, it waits for this very batch, or results have waited long
             * enough: each wake-up costs both sides a context switch. */
            if (exec__armed(ex) &&
                (ck_ring_size(&wk->out) >= t->wake_out || ck_ring_size(&wk->in) <= THR_LOW ||
                 awaited || t1 - ck_pr_load_64(&t->last_wake) > THR_WAKE_AGE_NS)) {
                ck_pr_store_64(&t->last_wake, t1);
                exec__notify(ex);
            }
        }
    }
out:
    if (t->ops->worker_fini && rc == 0) {
        urcu_memb_read_lock();
        struct exec__ctxref *ref = rcu_dereference(t->cur);
        exec__tsan_acquire(ref);
        t->ops->worker_fini(ref->ctx, wstate);
        urcu_memb_read_unlock();
    }
    urcu_memb_unregister_thread();
    return NULL;
}

static void *thr_reclaim_main(void *arg)
{
    struct thr *t = arg;
    const exec_ops_t *ops = t->ops;
    pthread_mutex_lock(&t->rec_lock);
    for (;;) {
        while (!t->rec_list && !t->rec_stop)
            pthread_cond_wait(&t->rec_cond, &t->rec_lock);
        struct exec__ctxref *list = t->rec_list;
        t->rec_list = NULL;
        if (!list && t->rec_stop)
            break;
        pthread_mutex_unlock(&t->rec_lock);
        urcu_memb_synchronize_rcu(); /* every reader of these refs is done */
        exec__tsan_acquire(&t->tsan_gp);
        while (list) {
            struct exec__ctxref *next = list->next;
            if (ops->ctx_release)
                ops->ctx_release(list->ctx);
            free(list);
            list = next;
        }
        pthread_mutex_lock(&t->rec_lock);
    }
    pthread_mutex_unlock(&t->rec_lock);
    return NULL;
}

/* Starts a thread with every signal blocked, so a host's signals never land
 * on our threads (they inherit the mask). */
static int thr_spawn(pthread_t *tid, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(tid, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return exec__spawn_error(rc);
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
    pthread_mutex_init(&t->init_lock, NULL);
    pthread_cond_init(&t->init_cond, NULL);
    pthread_mutex_init(&t->rec_lock, NULL);
    pthread_cond_init(&t->rec_cond, NULL);

    unsigned rsz = thr_pow2(t->maxb + 1);
    t->w = calloc(t->nw, sizeof *t->w);
    t->all = calloc(t->maxb, sizeof *t->all);
    t->cur = calloc(1, sizeof *t->cur);
    if (!t->w || !t->all || !t->cur)
        return EXEC_ENOMEM;
    ck_stack_init(&t->free);
    t->cur->ctx = exec__ctx0(ex);
    exec__tsan_release(t->cur);
    for (unsigned i = 0; i < t->nw; i++) {
        struct thr_worker *wk = &t->w[i];
        wk->t = t;
        wk->idx = i;
        ck_ring_init(&wk->in, rsz);
        ck_ring_init(&wk->out, rsz);
        wk->inbuf = calloc(rsz, sizeof *wk->inbuf);
        wk->outbuf = calloc(rsz, sizeof *wk->outbuf);
        if (!wk->inbuf || !wk->outbuf)
            return EXEC_ENOMEM;
    }
    int rc = thr_spawn(&t->reclaimer, thr_reclaim_main, t);
    if (rc)
        return rc;
    t->reclaimer_started = true;
    for (unsigned i = 0; i < t->nw; i++) {
        rc = thr_spawn(&t->w[i].tid, thr_main, &t->w[i]);
        if (rc)
            return rc;
        t->w[i].started = true;
    }
    pthread_mutex_lock(&t->init_lock);
    while (t->init_done < t->nw)
        pthread_cond_wait(&t->init_cond, &t->init_lock);
    pthread_mutex_unlock(&t->init_lock);
    for (unsigned i = 0; i < t->nw; i++)
        if (t->w[i].init_rc)
            return EXEC_EINIT;
    return 0;
}

static struct exec__batch *thr_batch_get(exec_t *ex)
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
    if (t->nall == t->maxb)
        return NULL;
    tb = calloc(1, sizeof *tb);
    if (!tb)
        return NULL;
    size_t dcap = o->max_record > 65536 ? o->max_record : 65536;
    tb->b.cap = o->batch;
    tb->b.recs = malloc(tb->b.cap * sizeof *tb->b.recs);
    tb->b.res = malloc(tb->b.cap * sizeof *tb->b.res);
    tb->b.data = malloc(dcap);
    tb->b.rflags = malloc(tb->b.cap);
    if (!tb->b.recs || !tb->b.res || !tb->b.data || !tb->b.rflags) {
        free(tb->b.recs);
        free(tb->b.res);
        free(tb->b.data);
        free(tb->b.rflags);
        free(tb);
        return NULL;
    }
    tb->b.data_cap = dcap;
    tb->w.max = o->max_result;
    tb->w.grow = thr_grow;
    tb->w.grow_arg = tb;
    t->all[t->nall++] = tb;
    return &tb->b;
}

static void thr_dispatch(exec_t *ex, struct exec__batch *b)
{
    struct thr *t = exec__priv(ex);
    struct thr_worker *best = &t->w[0];
    unsigned best_n = ck_ring_size(&best->in);
    for (unsigned i = 1; i < t->nw && best_n; i++) {
        unsigned n = ck_ring_size(&t->w[i].in);
        if (n < best_n) {
            best = &t->w[i];
            best_n = n;
        }
    }
    exec__tsan_release(b);
    ck_ring_enqueue_spmc(&best->in, best->inbuf, b); /* sized to hold every batch */
    ck_ec32_inc(&best->ec, &thr_ec_mode);
}

static bool thr_hungry(exec_t *ex, const struct exec__batch *b)
{
    (void)b;
    struct thr *t = exec__priv(ex);
    for (unsigned i = 0; i < t->nw; i++)
        if (ck_ring_size(&t->w[i].in) == 0)
            return true;
    return false;
}

static struct exec__batch *thr_reap(exec_t *ex)
{
    struct thr *t = exec__priv(ex);
    for (unsigned k = 0; k < t->nw; k++) {
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

/* Swap, first step: nothing is published yet. */
static int thr_swap_prepare(exec_t *ex, void *new_ctx, uint64_t generation)
{
    struct thr *t = exec__priv(ex);
    struct exec__ctxref *ref = calloc(1, sizeof *ref);
    if (!ref)
        return EXEC_ENOMEM;
    ref->ctx = new_ctx;
    ref->generation = generation;
    t->pending = ref;
    return 0;
}

/* Swap, second step: every batch a worker starts from now on reads the new
 * context; the old one goes to the reclaimer. */
static void thr_swap_commit(exec_t *ex)
{
    struct thr *t = exec__priv(ex);
    struct exec__ctxref *ref = t->pending;
    t->pending = NULL;
    exec__tsan_release(ref);
    struct exec__ctxref *old = rcu_xchg_pointer(&t->cur, ref);
    pthread_mutex_lock(&t->rec_lock);
    old->next = t->rec_list;
    t->rec_list = old;
    pthread_cond_signal(&t->rec_cond);
    pthread_mutex_unlock(&t->rec_lock);
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
            ck_ec32_inc(&t->w[i].ec, &thr_ec_mode);
            pthread_join(t->w[i].tid, NULL);
        }
    }
    if (t->reclaimer_started) {
        pthread_mutex_lock(&t->rec_lock);
        t->rec_stop = true;
        pthread_cond_signal(&t->rec_cond);
        pthread_mutex_unlock(&t->rec_lock);
        pthread_join(t->reclaimer, NULL);
    }
    /* Every worker is gone: the current context has no reader left. */
    if (t->cur) {
        exec__tsan_acquire(t->cur);
        if (t->ops->ctx_release && exec__started(ex))
            t->ops->ctx_release(t->cur->ctx);
        free(t->cur);
    }
    for (uint32_t i = 0; i < t->nall; i++) {
        free(t->all[i]->b.recs);
        free(t->all[i]->b.res);
        free(t->all[i]->b.data);
        free(t->all[i]->b.rflags);
        free(t->all[i]->w.buf);
        free(t->all[i]);
    }
    if (t->w) {
        for (unsigned i = 0; i < t->nw; i++) {
            free(t->w[i].inbuf);
            free(t->w[i].outbuf);
        }
    }
    free(t->w);
    free(t->all);
    free(t->pending);
    pthread_mutex_destroy(&t->init_lock);
    pthread_cond_destroy(&t->init_cond);
    pthread_mutex_destroy(&t->rec_lock);
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
    .worker_stats = thr_worker_stats,
    .stop = thr_stop,
};
