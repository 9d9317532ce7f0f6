/*
 * Core: the stream. The producer side (submit, batching, dispatch, finish)
 * and the consumer side (reap, reorder, deliver, the consumer threads'
 * holds). map.c runs both in one thread. Lock rules: exec_core.h.
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
/* Producer                                                                  */
/* ------------------------------------------------------------------------- */

void exec__wake_submitters(exec_t *ex)
{
    ck_pr_inc_64(&ex->progress); /* any thread: the consumer, a fatal backend, destroy */
    ck_pr_fence_memory();
    if (ck_pr_load_uint(&ex->waiters)) {
        exec__lock(&ex->wait_lock);
        pthread_cond_broadcast(&ex->wait_cond);
        exec__unlock(&ex->wait_lock);
    }
}

void exec__dispatch_open(exec_t *ex)
{
    EXEC__ASSERT_HELD(&ex->submit_lock);
    struct exec__batch *b = ex->open;
    if (!b || b->n == 0)
        return;
    ex->open = NULL;
    ck_pr_store_64(&ex->batches, ex->batches + 1);
    exec__flight_add(ex, b);
    ex->be->dispatch(ex, b);
}

/* Sends the open batch now, so that nothing waits in it (consumer, finish). */
static void exec__flush(exec_t *ex)
{
    exec__lock(&ex->submit_lock);
    exec__dispatch_open(ex);
    exec__unlock(&ex->submit_lock);
}

/* submit_lock held. May a batch go out before it is full? Only while fewer
 * than half the batches are out: see exec__append. */
static bool exec__spare(exec_t *ex)
{
    EXEC__ASSERT_HELD(&ex->submit_lock);
    return ex->batches - ck_pr_load_64(&ex->batches_put) < ex->early_max;
}

int exec__flush_idle(exec_t *ex)
{
    if (exec__trylock(&ex->submit_lock) != 0)
        return -1;
    int sent = ex->open && ex->open->n > 0 && exec__spare(ex);
    if (sent)
        exec__dispatch_open(ex);
    exec__unlock(&ex->submit_lock);
    return sent;
}

int exec__append(exec_t *ex, const void *rec, size_t len, uint64_t tag, bool by_ref)
{
    EXEC__ASSERT_HELD(&ex->submit_lock);
    int err; /* (here, not in the block: cppcheck reads batch_get's result as &err) */
    if (ex->finished)
        return EXEC_ESTATE;
    if (ck_pr_load_32(&ex->fatal))
        return EXEC_EFATAL;
    uint64_t collected = ck_pr_load_64(&ex->collected);
    EXEC__ASSERT(ex->submitted >= collected && ex->submitted - collected <= ex->opt.window);
    if (ex->submitted - collected >= ex->opt.window)
        return EXEC_EAGAIN;
    struct exec__batch *b = ex->open;
    if (b && (b->n >= b->cap || (!by_ref && b->data_cap - b->data_len < len))) {
        exec__dispatch_open(ex);
        b = NULL;
    }
    if (!b) {
        err = 0;
        b = ex->be->batch_get(ex, &err);
        if (!b) {
            /* Out of memory with no batch out: none will come back to reuse. */
            if (err && ex->batches == ck_pr_load_64(&ex->batches_put))
                return err;
            return EXEC_EAGAIN;
        }
        b->n = 0;
        b->cursor = 0;
        b->data_len = 0;
        b->rdata_len = 0;
        b->generation = 0;
        b->progress = 0;
        b->holders = 0;
        b->spent = false;
        b->t_open = exec__now_ns();
        b->seq = ex->next_batch_seq++;
        b->rec_seq0 = ex->next_rec_seq;
        ex->open = b;
    }
    struct exec__rec *r = &b->recs[b->n];
    r->tag = tag;
    r->len = (uint32_t)len;
    if (by_ref) {
        r->p = rec;
    } else {
        r->p = b->data + b->data_len;
        if (len)
            memcpy(b->data + b->data_len, rec, len);
        b->data_len += len;
    }
    if (b->rflags)
        b->rflags[b->n] = 0;
    b->n++;
    ex->next_rec_seq++;
    ck_pr_store_64(&ex->submitted, ex->submitted + 1);
    /* Send early when a worker runs short; looking every 8th record is enough
     * (and the first record of a batch always looks: latency mode); or at the
     * smaller size the backend asks for when records are heavy. Such early,
     * small batches may take only half the batches, so the rest fill up and
     * the window, not the batch count, is what bounds a slow consumer. */
    bool spare = exec__spare(ex);
    if (b->n == b->cap ||
        (spare && (b->n >= ck_pr_load_32(&ex->batch_limit) || ck_pr_load_32(&ex->idle) ||
                   ((b->n & 7) == 1 && ex->be->hungry(ex, b)))))
        exec__dispatch_open(ex);
    return 0;
}

int exec__append_many(exec_t *ex, const exec_record_t *recs, size_t n, bool by_ref,
                      size_t *taken)
{
    EXEC__ASSERT_HELD(&ex->submit_lock);
    size_t i = 0;
    int rc = 0;
    if (ex->finished)
        rc = EXEC_ESTATE;
    else if (ck_pr_load_32(&ex->fatal))
        rc = EXEC_EFATAL;
    while (rc == 0 && i < n) {
        uint64_t inflight = ex->submitted - ck_pr_load_64(&ex->collected);
        if (inflight >= ex->opt.window) {
            rc = EXEC_EAGAIN;
            break;
        }
        struct exec__batch *b = ex->open;
        if (b && b->n >= b->cap) {
            exec__dispatch_open(ex);
            b = NULL;
        }
        if (!b) {
            /* The single-record path opens a batch (and says when none is free). */
            rc = exec__append(ex, recs[i].data, recs[i].len, recs[i].tag, by_ref);
            if (rc == 0)
                i++;
            continue;
        }
        /* A run of records into the open batch: as many as fit, the window
         * allows, and the batch size the backend asks for. */
        bool spare = exec__spare(ex);
        uint32_t lim = ck_pr_load_32(&ex->batch_limit);
        size_t k = b->cap - b->n;
        if (k > n - i)
            k = n - i;
        if (k > ex->opt.window - inflight)
            k = (size_t)(ex->opt.window - inflight);
        if (spare && lim > b->n && k > lim - b->n)
            k = lim - b->n;
        struct exec__rec *r = &b->recs[b->n];
        size_t j;
        for (j = 0; j < k; j++) {
            const exec_record_t *x = &recs[i + j];
            r[j].tag = x->tag;
            r[j].len = (uint32_t)x->len;
            if (by_ref) {
                r[j].p = x->data;
            } else {
                if (b->data_cap - b->data_len < x->len)
                    break;
                r[j].p = b->data + b->data_len;
                if (x->len)
                    memcpy(b->data + b->data_len, x->data, x->len);
                b->data_len += x->len;
            }
        }
        if (j == 0) {
            exec__dispatch_open(ex); /* its data area is full */
            continue;
        }
        memset(b->rflags + b->n, 0, j);
        b->n += (uint32_t)j;
        i += j;
        ex->next_rec_seq += j;
        ck_pr_store_64(&ex->submitted, ex->submitted + j);
        if (b->n == b->cap ||
            (spare && (b->n >= lim || ck_pr_load_32(&ex->idle) || ex->be->hungry(ex, b))))
            exec__dispatch_open(ex);
    }
    *taken = i;
    return rc;
}

/* Sleeps until the consumer collects something (or the state changes) after
 * the producer saw `snap`. */
static void exec__wait_room(exec_t *ex, uint64_t snap)
{
    exec__lock(&ex->wait_lock);
    ck_pr_inc_uint(&ex->waiters);
    ck_pr_fence_memory();
    while (ck_pr_load_64(&ex->progress) == snap && !ck_pr_load_8((uint8_t *)&ex->finished) &&
           !ck_pr_load_32(&ex->fatal) && !ck_pr_load_8((uint8_t *)&ex->destroying))
        exec__cond_wait(&ex->wait_cond, &ex->wait_lock);
    ck_pr_dec_uint(&ex->waiters);
    exec__unlock(&ex->wait_lock);
}

static int exec__submit(exec_t *ex, const void *rec, size_t len, uint64_t tag, bool block)
{
    if (!ex || (!rec && len))
        return EXEC_EINVAL;
    int g = exec__guard(ex);
    if (g)
        return g;
    if (ck_pr_load_8((uint8_t *)&ex->finished))
        return EXEC_ESTATE;
    if (len > ex->opt.max_record)
        return EXEC_E2BIG;
    for (;;) {
        uint64_t snap = ck_pr_load_64(&ex->progress);
        exec__lock(&ex->submit_lock);
        int rc = exec__append(ex, rec, len, tag, false);
        exec__unlock(&ex->submit_lock);
        if (rc != EXEC_EAGAIN || !block)
            return rc;
        exec__wait_room(ex, snap);
    }
}

int exec_submit(exec_t *ex, const void *rec, size_t len, uint64_t tag)
{
    return exec__submit(ex, rec, len, tag, true);
}

int exec_try_submit(exec_t *ex, const void *rec, size_t len, uint64_t tag)
{
    return exec__submit(ex, rec, len, tag, false);
}

static int exec__submit_many(exec_t *ex, const exec_record_t *recs, size_t n, size_t *accepted,
                             bool block)
{
    if (accepted)
        *accepted = 0;
    if (!ex || !accepted || (!recs && n))
        return EXEC_EINVAL;
    int g = exec__guard(ex);
    if (g)
        return g;
    size_t i = 0;
    int rc = 0;
    while (i < n) {
        exec__lock(&ex->submit_lock);
        for (; i < n; i++) {
            const exec_record_t *r = &recs[i];
            if (!r->data && r->len) {
                rc = EXEC_EINVAL;
                break;
            }
            if (r->len > ex->opt.max_record) {
                rc = EXEC_E2BIG;
                break;
            }
            rc = exec__append(ex, r->data, r->len, r->tag, false);
            if (rc)
                break;
        }
        exec__unlock(&ex->submit_lock);
        *accepted = i;
        if (rc != EXEC_EAGAIN || !block)
            return rc;
        /* No room for recs[i]: the single-record path knows how to wait. */
        rc = exec__submit(ex, recs[i].data, recs[i].len, recs[i].tag, true);
        if (rc)
            return rc;
        *accepted = ++i;
    }
    return rc;
}

int exec_submit_many(exec_t *ex, const exec_record_t *recs, size_t n, size_t *accepted)
{
    return exec__submit_many(ex, recs, n, accepted, true);
}

int exec_try_submit_many(exec_t *ex, const exec_record_t *recs, size_t n, size_t *accepted)
{
    return exec__submit_many(ex, recs, n, accepted, false);
}

int exec_finish(exec_t *ex)
{
    if (!ex)
        return EXEC_EINVAL;
    int g = exec__guard(ex);
    if (g)
        return g;
    exec__lock(&ex->submit_lock);
    if (ex->finished) {
        exec__unlock(&ex->submit_lock);
        return EXEC_ESTATE;
    }
    exec__dispatch_open(ex);
    ck_pr_store_8((uint8_t *)&ex->finished, 1);
    exec__unlock(&ex->submit_lock);
    exec__notify(ex);
    exec__lock(&ex->wait_lock); /* submitters see `finished` and stop */
    pthread_cond_broadcast(&ex->wait_cond);
    exec__unlock(&ex->wait_lock);
    return 0;
}

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
    EXEC__ASSERT(b->spent && b->holders == 0);
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
    EXEC__ASSERT(b->holders > 0);
    if (--b->holders == 0 && b->spent)
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
    uint64_t d = exec__now_ns() - b->t_open;
    unsigned k = d ? 63u - (unsigned)__builtin_clzll(d) : 0;
    if (k >= EXEC_LAT_BUCKETS)
        k = EXEC_LAT_BUCKETS - 1;
    ck_pr_store_64(&ex->lat_hist[k], ex->lat_hist[k] + 1);
}

void exec__deliver(exec_t *ex, struct exec__consumer *me, exec_result_t *res)
{
    exec__deliver_many(ex, me, res, 1);
}

size_t exec__deliver_many(exec_t *ex, struct exec__consumer *me, exec_result_t *res, size_t max)
{
    EXEC__ASSERT_HELD(&ex->next_lock);
    struct exec__batch *b = ex->cur;
    EXEC__ASSERT(b && b->cursor < b->n);
    if (me->held != b) {
        exec__release_held(ex, me);
        me->held = b;
        b->holders++;
    }
    uint32_t i0 = b->cursor; /* NOLINT(clang-analyzer-core.NullDereference): ex->cur is set */
    size_t k = b->n - i0 < max ? b->n - i0 : max;
    uint64_t ok = 0;
    for (size_t j = 0; j < k; j++) {
        const struct exec__res *r = &b->res[i0 + j];
        exec_result_t *o = &res[j];
        o->tag = b->recs[i0 + j].tag;
        o->status = r->status;
        o->user_code = r->user_code;
        o->signal = r->signal;
        o->exit_status = r->exit_status;
        if (r->status == 0 || r->status == EXEC_EUSER) {
            o->data = b->rdata + r->off;
            o->len = r->len;
        } else {
            o->data = NULL;
            o->len = 0;
        }
        o->seq = b->rec_seq0 + i0 + j;
        o->generation = b->generation;
        o->worker = b->worker;
        o->flags = r->flags & EXEC_RESULT_EARLY;
        if (r->status == 0)
            ok++;
        else
            exec__count(ex, r->status);
    }
    if (ok)
        ck_pr_store_64(&ex->ok, ex->ok + ok);
    if (i0 == 0)
        exec__lat_sample(ex, b);
    b->cursor = i0 + (uint32_t)k;
    /* Window room comes back with each result handed out (the bytes stay the
     * holder's until its next call). */
    ck_pr_store_64(&ex->collected, ex->collected + k);
    exec__wake_submitters(ex);
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

/* Sleeps on the eventfd until a worker signals or the deadline passes.
 * Returns false on timeout. */
static bool exec__sleep(exec_t *ex, int64_t deadline_ns)
{
    int ms = -1;
    if (deadline_ns >= 0) {
        int64_t left = deadline_ns - (int64_t)exec__now_ns();
        if (left <= 0)
            return false;
        ms = (int)((left + 999999) / 1000000);
    }
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
        if (ex->cur && ex->cur->cursor < ex->cur->n)
            return 0;
        if (ex->cur) {
            struct exec__batch *c = ex->cur;
            ex->cur = NULL;
            c->spent = true;
            if (c->holders == 0)
                exec__recycle(ex, c);
        }
        struct exec__batch *b = exec__take(ex);
        if (b) {
            b->cursor = 0;
            ex->cur = b;
            continue;
        }
        if (exec__drained(ex))
            return EXEC_EOF;
        if (ck_pr_load_32(&ex->fatal))
            return EXEC_EFATAL;
        /* Nothing ready: make sure nothing waits in the open batch, then arm
         * the wake-up and look once more before sleeping. */
        exec__flush(ex);
        /* A result due in a moment (one request in flight in a server) is
         * worth a short spin: a sleep and a wake-up cost both sides several
         * microseconds. Once a call, and only with records in flight. */
        if (timeout_ms != 0 && !spun &&
            ck_pr_load_64(&ex->submitted) != ck_pr_load_64(&ex->collected)) {
            spun = true;
            b = exec__spin_take(ex);
            if (b) {
                b->cursor = 0;
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
            b->cursor = 0;
            ex->cur = b;
            continue;
        }
        if (exec__drained(ex))
            continue;
        if (timeout_ms == 0)
            return EXEC_EAGAIN; /* stays armed: exec_fd() turns readable */
        if (deadline == -2)
            deadline = timeout_ms < 0 ? -1
                                      : (int64_t)(exec__now_ns() + (uint64_t)timeout_ms * 1000000u);
        if (!exec__sleep(ex, deadline))
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

int exec_next(exec_t *ex, exec_result_t *res, int timeout_ms)
{
    if (!ex || !res || timeout_ms < -1)
        return EXEC_EINVAL;
    int g = exec__guard(ex);
    if (g)
        return g;
    exec__lock(&ex->next_lock);
    struct exec__consumer *me = exec__consumer_begin(ex);
    int rc = me ? exec__ready(ex, timeout_ms) : EXEC_ENOMEM;
    if (rc == 0)
        exec__deliver(ex, me, res);
    exec__unlock(&ex->next_lock);
    return rc;
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

int exec_release(exec_t *ex)
{
    if (!ex)
        return EXEC_EINVAL;
    if (exec__in_callback(ex))
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

