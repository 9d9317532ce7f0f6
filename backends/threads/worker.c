/*
 * EXEC_THREADS: a worker thread's loop (every signal blocked, registered with
 * urcu-memb). It takes batches from its own ring, steals from the longest
 * other one when it runs dry, runs each batch inside one RCU read-side
 * section (one context for the whole batch), hands it to the consumer over
 * its `out` ring, and sleeps on its event count when there is nothing to do.
 * The worker resting while a caller works (thr->parked) sleeps until woken.
 */
#define _LGPL_SOURCE
#include "threads.h"
#include "tsan.h"

#include <ck_pr.h>
#include <time.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>


/* Runs batch tb against ref's context (the caller keeps ref alive). */
void thr_run(struct thr *t, struct thr_batch *tb, struct exec__ctxref *ref, void *wstate,
             unsigned worker)
{
    struct exec__batch *b = &tb->b;
    b->worker = worker;
    b->generation = ref->generation;
    tb->w.len = 0;
    exec__run_batch(t->ops, ref->ctx, wstate, b, 0, &tb->w, t->max_result, NULL);
    b->rdata_len = tb->w.len;
}

static void thr_process(struct thr_worker *wk, struct thr_batch *tb, void *wstate)
{
    struct thr *t = wk->t;
    urcu_memb_read_lock();
    struct exec__ctxref *ref = rcu_dereference(t->cur);
    exec__tsan_acquire(ref);
    thr_run(t, tb, ref, wstate, wk->idx);
    exec__tsan_release(&t->tsan_gp);
    urcu_memb_read_unlock();
}

/* In-rings are single-producer, multi-consumer: the owner takes from its own
 * ring, and a worker that runs dry steals from the longest other one, so the
 * last batches of a stream do not wait behind one busy worker. */
bool thr_take(struct thr_worker *wk, struct thr_batch **out)
{
    if (ck_ring_dequeue_spmc(&wk->in, wk->inbuf, out)) {
        exec__tsan_acquire(*out);
        return true;
    }
    return false;
}

/* From the longest ring other than self's (self may be NULL: a caller). */
bool thr_steal(struct thr *t, const struct thr_worker *self, struct thr_batch **out)
{
    struct thr_worker *victim = NULL;
    unsigned most = 0;
    for (unsigned i = 0; i < t->nw; i++) {
        unsigned n = ck_ring_size(&t->w[i].in);
        if (&t->w[i] != self && n > most) {
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

static bool thr_parked(const struct thr_worker *wk)
{
    return ck_pr_load_32(&wk->t->parked) == wk->idx + 1;
}

/* Waits for a batch: spins a little (stealing now and then), then sleeps.
 * False when the pool stops. */
static bool thr_wait_batch(struct thr_worker *wk, struct thr_batch **tb, uint32_t snap)
{
    struct thr *t = wk->t;
    exec_t *ex = t->ex;
    int spins = 0;
    uint64_t t_idle = 0;
    while (thr_parked(wk) || !thr_take(wk, tb)) {
        if (ck_pr_load_32(&t->stop))
            return false;
        if (thr_parked(wk)) {
            /* A caller works in our place: rest until it leaves. */
            ck_ec32_wait(&wk->ec, &exec__ec_threads, snap, NULL);
            snap = ck_ec32_value(&wk->ec);
            continue;
        }
        if ((spins & 31) == 0) {
            if (thr_steal(t, wk, tb))
                return true;
            /* The next record of a server often comes within microseconds:
             * a short look costs less than a sleep and a wake-up. */
            uint64_t now = exec__now_ns();
            if (!t_idle)
                t_idle = now;
            if (now - t_idle >= THR_SPIN_NS)
                spins = -1; /* time to sleep */
        }
        if (spins >= 0) {
            spins++;
            ck_pr_stall();
            continue;
        }
        /* Nothing came: tell a waiting consumer, make sure nothing waits in
         * the open batch, then sleep. */
        if (ck_ring_size(&wk->out))
            exec__notify(ex);
        exec__idle_enter(ex);
        int sent = exec__flush_idle(ex);
        if (sent != 1) {
            /* Lock busy: its holder may have looked at `idle` just before we
             * counted ourselves; look again in 1 ms. */
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
            ck_ec32_wait(&wk->ec, &exec__ec_threads, snap, dlp);
        }
        exec__idle_leave(ex);
        snap = ck_ec32_value(&wk->ec);
        spins = 0;
        t_idle = 0;
    }
    return true;
}

void *thr_main(void *arg)
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
        /* (CPU, not wall: a preempted worker_init is not a dear one.) */
        uint64_t c0 = exec__thread_cpu_ns();
        rc = t->ops->worker_init(ref->ctx, &wstate);
        ck_pr_store_64(&wk->init_cpu_ns, exec__thread_cpu_ns() - c0);
        urcu_memb_read_unlock();
    }
    ck_pr_store_64(&wk->startup_ns, exec__now_ns() - wk->t_start);
    exec__lock(&t->init_lock);
    wk->init_rc = rc;
    EXEC__ASSERT(t->init_done < t->nw);
    t->init_done++;
    pthread_cond_broadcast(&t->init_cond);
    exec__unlock(&t->init_lock);

    while (rc == 0) {
        struct thr_batch *tb;
        uint32_t snap = ck_ec32_value(&wk->ec);
        if (!thr_wait_batch(wk, &tb, snap) || ck_pr_load_32(&t->stop))
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
        THR_PUT(ck_ring_enqueue_spsc(&wk->out, wk->outbuf, tb));
        /* Wake a sleeping consumer only when a good share is done, we run
         * dry, it waits for this very batch, or results have waited long
         * enough: each wake-up costs both sides a context switch. */
        if (exec__armed(ex) &&
            (ck_ring_size(&wk->out) >= t->wake_out || ck_ring_size(&wk->in) <= THR_LOW ||
             awaited || t1 - ck_pr_load_64(&t->last_wake) > t->wake_age_ns)) {
            ck_pr_store_64(&t->last_wake, t1);
            exec__notify(ex);
        }
    }
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
