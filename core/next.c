/*
 * Core: the consumer side of the stream: reap, reorder, deliver, and the
 * consumer threads' holds (a result's bytes stay valid until the same
 * thread's next call). The producer side is submit.c. Lock rules: exec_core.h.
 */
#include "exec_core.h"
#include "alloc.h"

#include <ck_pr.h>
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------- */
/* Consumer                                                                  */
/* ------------------------------------------------------------------------- */

/* next_lock held. The calling thread's entry in the consumer table, or NULL
 * (out of memory). */
static struct exec__consumer *exec__me(exec_t *ex)
{
    EXEC__ASSERT_HELD(&ex->next_lock);
    pthread_t self = pthread_self();
    for (unsigned i = 0; i < ex->ncons; i++)
        if (pthread_equal(ex->cons[i].tid, self))
            return &ex->cons[i];
    if (ex->ncons == ex->cons_cap) {
        unsigned cap = 2 * ex->cons_cap + EXEC__CONS_INLINE;
        struct exec__consumer *c =
            ex->cons == ex->cons_inline ? exec__malloc(cap * sizeof *c)
                                        : exec__realloc(ex->cons, cap * sizeof *c);
        if (!c)
            return NULL;
        if (ex->cons == ex->cons_inline)
            memcpy(c, ex->cons_inline, sizeof ex->cons_inline);
        ex->cons = c;
        ex->cons_cap = cap;
    }
    ex->cons[ex->ncons] = (struct exec__consumer){self, NULL};
    return &ex->cons[ex->ncons++];
}

/* next_lock held. b's results are all handed out and nobody holds them. */
static void exec__recycle(exec_t *ex, struct exec__batch *b)
{
    EXEC__ASSERT_HELD(&ex->next_lock);
    EXEC__ASSERT(exec__bc(b)->spent && exec__bc(b)->holders == 0);
    ex->be->batch_put(ex, b);
    ck_pr_store_64(&ex->batches_put, ex->batches_put + 1);
    exec__wake_submitters(ex);
}

/* next_lock held. The thread gives back the results it holds. */
static void exec__release_held(exec_t *ex, struct exec__consumer *me)
{
    EXEC__ASSERT_HELD(&ex->next_lock);
    struct exec__batch *b = me->held;
    if (!b)
        return;
    me->held = NULL;
    EXEC__ASSERT(exec__bc(b)->holders > 0);
    if (--exec__bc(b)->holders == 0 && exec__bc(b)->spent)
        exec__recycle(ex, b);
}

/* A completed batch from the backend; it leaves the cancellable set. */
static struct exec__batch *exec__reap(exec_t *ex)
{
    struct exec__batch *b = ex->be->reap(ex);
    if (b)
        exec__flight_remove(ex, b);
    return b;
}

/* next_lock held. The next batch to deliver from, or NULL if none is ready. */
static struct exec__batch *exec__take(exec_t *ex)
{
    EXEC__ASSERT_HELD(&ex->next_lock);
    if (!ex->reorder)
        return exec__reap(ex);
    for (;;) {
        struct exec__batch **slot = &ex->reorder[ex->deliver_seq & ex->reorder_mask];
        if (*slot && (*slot)->seq == ex->deliver_seq) {
            struct exec__batch *b = *slot;
            *slot = NULL;
            ck_pr_store_64(&ex->deliver_seq, ex->deliver_seq + 1);
            return b;
        }
        struct exec__batch *r = exec__reap(ex);
        if (!r)
            return NULL;
        EXEC__ASSERT(!ex->reorder[r->seq & ex->reorder_mask]);
        ex->reorder[r->seq & ex->reorder_mask] = r;
    }
}

static void exec__count(exec_t *ex, int status)
{
    uint64_t *c;
    switch (status) {
    case 0: c = &ex->ok; break;
    case EXEC_EUSER: c = &ex->user_errors; break;
    case EXEC_ECRASHED: c = &ex->crashed; break;
    case EXEC_ERECTIMEOUT: c = &ex->timed_out; break;
    case EXEC_ERESULT2BIG: c = &ex->too_big; break;
    case EXEC_ECANCELLED: c = &ex->cancelled; break;
    default: c = &ex->worker_errors; break;
    }
    ck_pr_store_64(c, *c + 1);
}

/* One latency sample per batch: its first record, submit to result. */
static void exec__lat_sample(exec_t *ex, const struct exec__batch *b)
{
    uint64_t d = exec__now_ns() - exec__bcc(b)->t_open;
    unsigned k = d ? 63u - (unsigned)__builtin_clzll(d) : 0;
    if (k >= EXEC_LAT_BUCKETS)
        k = EXEC_LAT_BUCKETS - 1;
    ck_pr_store_64(&ex->lat_hist[k], ex->lat_hist[k] + 1);
}

size_t exec__fill(exec_t *ex, struct exec__consumer *me, exec_result_t *res, size_t max)
{
    EXEC__ASSERT_HELD(&ex->next_lock);
    struct exec__batch *b = ex->cur;
    EXEC__ASSERT(b && exec__bc(b)->cursor < b->n);
    if (me->held != b) {
        exec__release_held(ex, me);
        me->held = b;
        exec__bc(b)->holders++;
    }
    uint32_t i0 = exec__bc(b)->cursor; /* NOLINT(clang-analyzer-core.NullDereference): ex->cur is set */
    size_t k = b->n - i0 < max ? b->n - i0 : max;
    const struct exec__res *r = &b->res[i0];
    const struct exec__rec *in = &b->recs[i0];
    const uint64_t seq0 = b->rec_seq0 + i0, gen = b->generation;
    const unsigned worker = b->worker;
    for (size_t j = 0; j < k; j++) {
        exec_result_t *o = &res[j];
        const bool data = r[j].status == 0 || r[j].status == EXEC_EUSER;
        *o = (exec_result_t){.tag = in[j].tag,
                             .status = r[j].status,
                             .user_code = r[j].user_code,
                             .signal = r[j].signal,
                             .exit_status = r[j].exit_status,
                             .data = data ? b->rdata + r[j].off : NULL,
                             .len = data ? r[j].len : 0,
                             .seq = seq0 + j,
                             .generation = gen,
                             .worker = worker,
                             .flags = r[j].flags & EXEC_RESULT_EARLY};
    }
    return k;
}

void exec__commit(exec_t *ex, const exec_result_t *res, size_t k)
{
    EXEC__ASSERT_HELD(&ex->next_lock);
    struct exec__batch *b = ex->cur;
    EXEC__ASSERT(b && k <= b->n - exec__bc(b)->cursor);
    uint64_t ok = 0;
    for (size_t j = 0; j < k; j++) {
        if (res[j].status == 0)
            ok++;
        else
            exec__count(ex, res[j].status);
    }
    if (ok)
        ck_pr_store_64(&ex->ok, ex->ok + ok);
    if (exec__bc(b)->cursor == 0 && k)
        exec__lat_sample(ex, b);
    exec__bc(b)->cursor += (uint32_t)k;
    /* Window room comes back with each result handed out (the bytes stay the
     * holder's until its next call). While a whole-stream call has the
     * executor, its thread is the only submitter, and it is here. */
    ck_pr_store_64(&ex->collected, ex->collected + k);
    if (!__atomic_load_n(&ex->in_map, __ATOMIC_RELAXED))
        exec__wake_submitters(ex);
}

size_t exec__deliver_many(exec_t *ex, struct exec__consumer *me, exec_result_t *res, size_t max)
{
    size_t k = exec__fill(ex, me, res, max);
    exec__commit(ex, res, k);
    return k;
}

/* next_lock held. Looks for a completed batch for up to EXEC__SPIN_NS: a
 * few microseconds of pauses (the worker is on another core), then yielding
 * the core between looks, so that a worker that shares it runs. */
static struct exec__batch *exec__spin_take(exec_t *ex)
{
    if (EXEC__SPIN_NS == 0)
        return NULL;
    uint64_t t0 = exec__now_ns(), now = t0;
    while (now - t0 < EXEC__SPIN_NS) {
        if (now - t0 < EXEC__SPIN_NS / 8) {
            for (int k = 0; k < 32; k++)
                ck_pr_stall();
        } else {
            sched_yield();
        }
        struct exec__batch *b = exec__take(ex);
        if (b)
            return b;
        now = exec__now_ns();
    }
    return NULL;
}

static bool exec__drained(exec_t *ex)
{
    return ck_pr_load_8((uint8_t *)&ex->finished) &&
           ck_pr_load_64(&ex->submitted) == ck_pr_load_64(&ex->collected);
}

/* Drained, and nothing the stream set off is left to settle: EXEC_EOF. */
static bool exec__ended(exec_t *ex)
{
    return exec__drained(ex) && !(ex->be->unsettled && ex->be->unsettled(ex));
}

/* Sleeps on the eventfd until a worker signals or the deadline passes, at
 * most 10 ms when brief (something to settle: looked at again). Returns
 * false on timeout. */
static bool exec__sleep(exec_t *ex, int64_t deadline_ns, bool brief)
{
    int ms = -1;
    if (deadline_ns >= 0) {
        int64_t left = deadline_ns - (int64_t)exec__now_ns();
        if (left <= 0)
            return false;
        ms = (int)((left + 999999) / 1000000);
    }
    if (brief && (ms < 0 || ms > 10))
        ms = 10;
    struct pollfd p = {.fd = ex->efd, .events = POLLIN};
    int r = poll(&p, 1, ms);
    if (r > 0) {
        uint64_t v;
        ssize_t n = read(ex->efd, &v, sizeof v);
        (void)n;
    }
    return true;
}

int exec__ready(exec_t *ex, int timeout_ms)
{
    EXEC__ASSERT_HELD(&ex->next_lock);
    int64_t deadline = -2; /* computed when we first have to sleep */
    bool spun = false;
    for (;;) {
        if (ex->cur && exec__bc(ex->cur)->cursor < ex->cur->n)
            return 0;
        if (ex->cur) {
            struct exec__batch *c = ex->cur;
            ex->cur = NULL;
            exec__bc(c)->spent = true;
            if (exec__bc(c)->holders == 0)
                exec__recycle(ex, c);
        }
        struct exec__batch *b = exec__take(ex);
        if (b) {
            exec__bc(b)->cursor = 0;
            ex->cur = b;
            continue;
        }
        if (exec__ended(ex))
            return EXEC_EOF;
        if (ck_pr_load_32(&ex->fatal))
            return EXEC_EFATAL;
        if (timeout_ms == EXEC__LOOK)
            return EXEC_EAGAIN;
        /* Nothing ready: make sure the open batch is not what we wait for,
         * then arm the wake-up and look once more before sleeping. */
        exec__flush_consumer(ex);
        /* A result due in a moment (one request in flight in a server) is
         * worth a short spin: a sleep and a wake-up cost both sides several
         * microseconds. Once a call, and only with records in flight. */
        if (timeout_ms != 0 && !spun &&
            ck_pr_load_64(&ex->submitted) != ck_pr_load_64(&ex->collected)) {
            spun = true;
            b = exec__spin_take(ex);
            if (b) {
                exec__bc(b)->cursor = 0;
                ex->cur = b;
                continue;
            }
        }
        /* Reset the eventfd before arming, so exec_fd() polls readable only
         * for what comes next (a loop that never sleeps here would else see
         * it readable for ever). */
        uint64_t v;
        while (read(ex->efd, &v, sizeof v) > 0)
            ;
        ck_pr_store_32(ex->armed, 1);
        ck_pr_fence_memory();
        b = exec__take(ex);
        if (b) {
            ck_pr_store_32(ex->armed, 0);
            exec__bc(b)->cursor = 0;
            ex->cur = b;
            continue;
        }
        if (exec__ended(ex))
            continue;
        if (timeout_ms == 0)
            return EXEC_EAGAIN; /* stays armed: exec_fd() turns readable */
        if (deadline == -2)
            deadline = timeout_ms < 0 ? -1
                                      : (int64_t)(exec__now_ns() + (uint64_t)timeout_ms * 1000000u);
        /* (Drained here: only something to settle keeps EXEC_EOF back.) */
        if (!exec__sleep(ex, deadline, exec__drained(ex)))
            return EXEC_ETIMEDOUT;
    }
}

struct exec__consumer *exec__consumer_begin(exec_t *ex)
{
    struct exec__consumer *me = exec__me(ex);
    if (me)
        exec__release_held(ex, me);
    return me;
}

int exec_next_many(exec_t *ex, exec_result_t *res, size_t max, size_t *got, int timeout_ms)
{
    if (got)
        *got = 0;
    if (!ex || !res || !got || max == 0 || timeout_ms < -1)
        return EXEC_EINVAL;
    int g = exec__guard(ex);
    if (g)
        return g;
    exec__lock(&ex->next_lock);
    struct exec__consumer *me = exec__consumer_begin(ex);
    int rc = me ? exec__ready(ex, timeout_ms) : EXEC_ENOMEM;
    if (rc == 0) /* only from the current batch: the thread holds one batch at a time */
        *got = exec__deliver_many(ex, me, res, max);
    exec__unlock(&ex->next_lock);
    return rc;
}

int exec_next(exec_t *ex, exec_result_t *res, int timeout_ms)
{
    size_t got;
    return exec_next_many(ex, res, 1, &got, timeout_ms);
}

int exec_release(exec_t *ex)
{
    if (!ex)
        return EXEC_EINVAL;
    if (exec__refuse(ex))
        return EXEC_ESTATE;
    exec__lock(&ex->next_lock);
    pthread_t self = pthread_self();
    for (unsigned i = 0; i < ex->ncons; i++) {
        if (pthread_equal(ex->cons[i].tid, self)) {
            exec__release_held(ex, &ex->cons[i]);
            ex->cons[i] = ex->cons[--ex->ncons];
            break;
        }
    }
    exec__unlock(&ex->next_lock);
    return 0;
}

