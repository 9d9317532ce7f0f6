/*
 * EXEC_THREADS: the context, and the calling thread that works too.
 *
 * The context lives in an exec__ctxref published with rcu_xchg_pointer; each
 * batch reads it once inside one read-side critical section, so a record sees
 * exactly one context. Swapped-out refs go to a reclaimer thread of ours that
 * waits for a grace period (synchronize_rcu) and then calls ops->ctx_release,
 * so neither workers nor the swapping thread ever wait for readers.
 *
 * The calling thread of exec_map()/exec_run_records() runs batches too when
 * it would wait (help): it is the host's thread, which may or may not be
 * registered with liburcu (with this flavour or another), so it does not
 * read under RCU. It publishes the ref it uses in a hazard pointer, checks
 * the ref is still current, and the reclaimer waits for the hazard to move
 * before it releases a context. One worker rests while the caller works
 * (parked). The caller runs worker_init in its own thread the first time it
 * has a batch to run, and keeps that state for later calls (a long input
 * run chunk by chunk pays for it once); stop gives it worker_fini.
 */
#define _LGPL_SOURCE
#include "threads.h"
#include "alloc.h"
#include "tsan.h"

#include <ck_pr.h>
#include <stdlib.h>
#include <time.h>
#include <urcu/urcu-memb.h>

void *thr_reclaim_main(void *arg)
{
    struct thr *t = arg;
    const exec_ops_t *ops = t->ops;
    exec__lock(&t->rec_lock);
    for (;;) {
        while (!t->rec_list && !t->rec_stop)
            exec__cond_wait(&t->rec_cond, &t->rec_lock);
        struct exec__ctxref *list = t->rec_list;
        t->rec_list = NULL;
        if (!list && t->rec_stop)
            break;
        exec__unlock(&t->rec_lock);
        urcu_memb_synchronize_rcu(); /* every worker reading these refs is done */
        exec__tsan_acquire(&t->tsan_gp);
        while (list) {
            struct exec__ctxref *next = list->next;
            /* ... and the calling thread, which reads outside RCU. */
            while (ck_pr_load_ptr(&t->help_hazard) == list) {
                struct timespec ts = {0, 50000};
                nanosleep(&ts, NULL);
            }
            exec__tsan_acquire(&t->tsan_gp);
            if (ops->ctx_release)
                ops->ctx_release(list->ctx);
            free(list);
            list = next;
        }
        exec__lock(&t->rec_lock);
    }
    exec__unlock(&t->rec_lock);
    return NULL;
}

/*
 * Swap, first step: nothing is published yet. Workers never run worker_init
 * on a context swapped in (their state outlives contexts), so the proof a
 * fork canary gives is made here, on the swapping thread: worker_init must
 * accept new_ctx, and its state is undone at once with worker_fini.
 */
int thr_swap_prepare(exec_t *ex, void *new_ctx, uint64_t generation)
{
    struct thr *t = exec__priv(ex);
    EXEC__ASSERT(!t->pending); /* core commits each prepared swap before the next */
    if (t->ops->worker_init) {
        void *ws = NULL;
        if (t->ops->worker_init(new_ctx, &ws) != 0)
            return EXEC_EINIT;
        if (t->ops->worker_fini)
            t->ops->worker_fini(new_ctx, ws);
    }
    struct exec__ctxref *ref = exec__calloc(1, sizeof *ref);
    if (!ref)
        return EXEC_ENOMEM;
    ref->ctx = new_ctx;
    ref->generation = generation;
    t->pending = ref;
    return 0;
}

/* Swap, second step: every batch started from now on reads the new context;
 * the old one goes to the reclaimer. */
void thr_swap_commit(exec_t *ex)
{
    struct thr *t = exec__priv(ex);
    struct exec__ctxref *ref = t->pending;
    EXEC__ASSERT(ref); /* swap_prepare succeeded */
    t->pending = NULL;
    exec__tsan_release(ref);
    struct exec__ctxref *old = rcu_xchg_pointer(&t->cur, ref);
    exec__lock(&t->rec_lock);
    old->next = t->rec_list;
    t->rec_list = old;
    pthread_cond_signal(&t->rec_cond);
    exec__unlock(&t->rec_lock);
}

/* The caller's view of the current context: published as a hazard, and
 * current after that (a swap's exchange is ordered against both). */
static struct exec__ctxref *thr_hazard_take(struct thr *t)
{
    for (;;) {
        struct exec__ctxref *ref = ck_pr_load_ptr(&t->cur);
        ck_pr_store_ptr(&t->help_hazard, ref);
        ck_pr_fence_memory();
        if (ck_pr_load_ptr(&t->cur) == ref) {
            exec__tsan_acquire(ref);
            return ref;
        }
    }
}

static void thr_hazard_drop(struct thr *t)
{
    exec__tsan_release(&t->tsan_gp);
    ck_pr_fence_release();
    ck_pr_store_ptr(&t->help_hazard, NULL);
}

/* The worker the caller stands in for rests (one, with one worker: the
 * caller then runs every batch). */
static void thr_park(struct thr *t)
{
    ck_pr_store_32(&t->parked, t->nw);
}

static void thr_unpark(struct thr *t)
{
    unsigned p = ck_pr_load_32(&t->parked);
    EXEC__ASSERT(p <= t->nw);
    if (p) {
        ck_pr_store_32(&t->parked, 0);
        ck_ec32_inc(&t->w[p - 1].ec, &exec__ec_threads);
    }
}

bool thr_help(exec_t *ex)
{
    struct thr *t = exec__priv(ex);
    if (!t->help_joined || !pthread_equal(t->help_thread, pthread_self()))
        return false;
    struct exec__ctxref *ref;
    if (!t->help_ready) {
        if (t->help_tried)
            return false; /* it refused: the caller only submits and collects */
        t->help_tried = true;
        /* Every worker works meanwhile: worker_init may take long. */
        thr_unpark(t);
        ref = thr_hazard_take(t);
        t->help_ready = t->ops->worker_init(ref->ctx, &t->help_ws) == 0;
        thr_hazard_drop(t);
        if (!t->help_ready)
            return false; /* it refused: the caller only submits and collects */
        thr_park(t);
    }
    struct thr_batch *tb;
    if (!thr_steal(t, NULL, &tb))
        return false;
    ref = thr_hazard_take(t);
    uint32_t parked = ck_pr_load_32(&t->parked);
    EXEC__ASSERT(parked <= t->nw);
    thr_run(t, tb, ref, t->help_ws, parked ? parked - 1 : 0);
    thr_hazard_drop(t);
    exec__tsan_release(tb);
    THR_PUT(ck_ring_enqueue_spsc(&t->help_out, t->help_outbuf, tb));
    return true;
}

/* Did every worker's worker_init take over THR_SLOW_INIT_NS of CPU? */
static bool thr_init_slow(const struct thr *t)
{
    for (unsigned i = 0; i < t->nw; i++)
        if (ck_pr_load_64(&t->w[i].init_cpu_ns) < THR_SLOW_INIT_NS)
            return false;
    return true;
}

void thr_caller_joins(exec_t *ex, bool joins)
{
    struct thr *t = exec__priv(ex);
    if (joins) {
        t->help_thread = pthread_self();
        t->help_joined = true;
        t->help_tried = false;
        if (!t->ops->worker_init)
            t->help_ready = true;
        if (!t->help_ready && thr_init_slow(t)) {
            /* Making a state as dear as the workers' would hold the stream
             * up as long (this thread feeds the workers and collects): it
             * only does that, and every worker works. */
            t->help_tried = true;
            return;
        }
        /* P workers mean P runners: one worker rests while the caller works
         * (but not while the caller makes its worker state, see thr_help). */
        thr_park(t);
        return;
    }
    t->help_joined = false;
    thr_unpark(t);
}

/* stop: the callers' worker state goes (every worker is gone). */
void thr_help_fini(struct thr *t)
{
    if (t->help_ready && t->ops->worker_init && t->ops->worker_fini) {
        exec__tsan_acquire(t->cur);
        t->ops->worker_fini(t->cur->ctx, t->help_ws);
    }
    t->help_ready = false;
}
