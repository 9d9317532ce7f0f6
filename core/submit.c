/*
 * Core: the producer side of the stream: submit, batching, dispatch, finish.
 * The consumer side is next.c; map.c runs both in one thread. Lock rules:
 * exec_core.h.
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

#define EXEC__PREFETCH 8 /* records ahead whose bytes a copy asks for */

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

/* submit_lock held. May a batch go out before it is full? Only while fewer
 * than half the batches are out: see exec__append. */
static bool exec__spare(exec_t *ex)
{
    EXEC__ASSERT_HELD(&ex->submit_lock);
    return ex->batches - ck_pr_load_64(&ex->batches_put) < ex->early_max;
}

/* The consumer found nothing ready. The open batch goes out if batches are
 * to spare, or if nothing else it waits for is out; else it fills up, and
 * goes when full or when a worker idles. Sending it on every empty look
 * would spend a batch per record and run out of batches long before the
 * window is full (a loop polling exec_next with timeout 0). */
void exec__flush_consumer(exec_t *ex)
{
    exec__lock(&ex->submit_lock);
    struct exec__batch *b = ex->open;
    if (b && b->n > 0 &&
        (exec__spare(ex) ||
         ck_pr_load_64(&ex->submitted) - ck_pr_load_64(&ex->collected) <= b->n))
        exec__dispatch_open(ex);
    exec__unlock(&ex->submit_lock);
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

/* submit_lock held. A fresh batch becomes the open one: NULL with *err set to
 * EXEC_EAGAIN when none is free now, or the backend's error when none will
 * come back to reuse. */
static struct exec__batch *exec__open_batch(exec_t *ex, int *err)
{
    EXEC__ASSERT_HELD(&ex->submit_lock);
    int e = 0;
    struct exec__batch *b = ex->be->batch_get(ex, &e);
    if (!b) {
        /* Out of memory with no batch out: none will come back to reuse. */
        *err = e && ex->batches == ck_pr_load_64(&ex->batches_put) ? e : EXEC_EAGAIN;
        return NULL;
    }
    if (b->recs_buf)
        b->recs = b->recs_buf; /* it may have been a view */
    b->n = 0;
    exec__bc(b)->cursor = 0;
    b->data_len = 0;
    b->rdata_len = 0;
    b->generation = 0;
    b->progress = 0;
    exec__bc(b)->holders = 0;
    exec__bc(b)->spent = false;
    exec__bc(b)->t_open = exec__now_ns();
    b->seq = ex->next_batch_seq++;
    b->rec_seq0 = ex->next_rec_seq;
    ex->open = b;
    /* cppcheck takes exec__bc()'s cast for b pointing at e. */
    // cppcheck-suppress returnDanglingLifetime
    return b;
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
        b = exec__open_batch(ex, &err);
        if (!b)
            return err;
    }
    exec__batch_put(ex, b, rec, len, tag, by_ref);
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

/* submit_lock held. How many of `left` records go into b in one run: as
 * many as fit, the window allows, the batch size the backend asks for, and
 * the spread of a short array (run_cap). */
static size_t exec__run_size(exec_t *ex, const struct exec__batch *b, size_t left,
                             uint64_t inflight)
{
    uint32_t lim = ck_pr_load_32(&ex->batch_limit);
    size_t k = b->cap - b->n;
    if (k > left)
        k = left;
    if (ex->run_cap) {
        size_t room = b->n < ex->run_cap ? ex->run_cap - b->n : 0;
        if (k > room)
            k = room; /* 0: the batch is full, and goes out */
    }
    if (k > ex->opt.window - inflight)
        k = (size_t)(ex->opt.window - inflight);
    if (exec__spare(ex) && lim > b->n && k > lim - b->n)
        k = lim - b->n;
    return k;
}

int exec__append_many(exec_t *ex, const exec_record_t *recs, size_t n, enum exec__take how,
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
        if (how == EXEC__VIEWS && (!b || b->n == 0)) {
            /* A view: the batch's records are a run of the caller's array,
             * where they are (nothing copied); it goes out at once. */
            if (!b && !(b = exec__open_batch(ex, &rc)))
                break;
            if (b->recs_buf) {
                size_t k = exec__run_size(ex, b, n - i, inflight);
                b->recs = (struct exec__rec *)(uintptr_t)(recs + i); /* only read */
                memset(b->rflags, 0, k);
                b->n = (uint32_t)k;
                i += k;
                ex->next_rec_seq += k;
                ck_pr_store_64(&ex->submitted, ex->submitted + k);
                exec__dispatch_open(ex);
                continue;
            }
        }
        if (!b) {
            /* The single-record path opens a batch (and says when none is free). */
            rc = exec__append(ex, recs[i].data, recs[i].len, recs[i].tag,
                              how == EXEC__VIEWS ||
                                  (how == EXEC__IN_BUFFER &&
                                   exec__in_buffer(ex, recs[i].data, recs[i].len)));
            if (rc == 0)
                i++;
            continue;
        }
        /* A run of records into the open batch. */
        bool spare = exec__spare(ex);
        uint32_t lim = ck_pr_load_32(&ex->batch_limit);
        size_t k = exec__run_size(ex, b, n - i, inflight);
        struct exec__rec *r = &b->recs[b->n];
        size_t j;
        for (j = 0; j < k; j++) {
            const exec_record_t *x = &recs[i + j];
            /* Records a program allocated one by one lie apart: a copy
             * waits on memory unless their bytes are asked for early. */
            if (j + EXEC__PREFETCH < k) {
                const exec_record_t *a = &x[EXEC__PREFETCH];
                __builtin_prefetch(a->data);
                if (a->len > 64)
                    __builtin_prefetch((const char *)a->data + 64);
            }
            r[j].tag = x->tag;
            r[j].len = x->len;
            if (how == EXEC__VIEWS ||
                (how == EXEC__IN_BUFFER && exec__in_buffer(ex, x->data, x->len))) {
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
            if (exec__append_quick(ex, r->data, r->len, r->tag, false))
                continue;
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

