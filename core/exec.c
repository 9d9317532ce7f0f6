/*
 * Core: validation, backend choice, the window and backpressure, batching,
 * ordered and unordered delivery, stats. Knows backends only through
 * struct exec__backend.
 *
 * Threads and locks:
 *   submit_lock  the producer side: the open batch, sequence numbers, dispatch.
 *   next_lock    the consumer side: reaping, the reorder buffer, delivery.
 *   wait_lock    only for sleeping submitters (window full or no free batch).
 * The window needs no atomic read-modify-write: the producer owns `submitted`,
 * the consumer owns `collected`, and in flight is their difference.
 */
#include "exec_internal.h"
#include "tsan.h"

#include <ck_pr.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define EXEC__DEFAULT_BATCH 128u
#define EXEC__DEFAULT_SIZE ((size_t)64 << 10)

uint64_t exec__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *exec_backend_name(exec_backend_t b)
{
    switch (b) {
    case EXEC_AUTO: return "auto";
    case EXEC_THREADS: return "threads";
    case EXEC_FORK: return "fork";
    }
    return "unknown";
}

exec_backend_t exec_backend(const exec_t *ex)
{
    return ex ? ex->backend : EXEC_AUTO;
}

int exec_get_options(const exec_t *ex, exec_options_t *out)
{
    if (!ex || !out)
        return EXEC_EINVAL;
    *out = ex->opt;
    return 0;
}

int exec_fd(const exec_t *ex)
{
    return ex ? ex->efd : EXEC_EINVAL;
}

uint32_t exec__max_batches(const exec_t *ex)
{
    /* Enough full batches to hold the window, as many again for batches sent
     * early and small (see exec__append), and one the consumer still holds. */
    uint64_t full = (ex->opt.window + ex->opt.batch - 1) / ex->opt.batch;
    uint64_t m = 2 * full + 2;
    if (m > ex->opt.window)
        m = ex->opt.window;
    return (uint32_t)m + 1;
}

/* Fills defaults and checks ranges. */
static int exec__options(exec_options_t *o, const exec_options_t *in)
{
    if (in)
        *o = *in;
    else
        memset(o, 0, sizeof *o);
    if (o->flags & ~(EXEC_ORDERED | EXEC_NO_REPLAY))
        return EXEC_EINVAL;
    if (o->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o->workers = n > 0 ? (unsigned)n : 1u;
        if (o->workers > EXEC__MAX_WORKERS)
            o->workers = EXEC__MAX_WORKERS;
    }
    if (o->workers > EXEC__MAX_WORKERS)
        return EXEC_EINVAL;
    if (o->window == 0) {
        uint64_t w = 4096ull * o->workers;
        o->window = w > EXEC__MAX_WINDOW ? EXEC__MAX_WINDOW : (unsigned)w;
    }
    if (o->window > EXEC__MAX_WINDOW)
        return EXEC_EINVAL;
    if (o->batch == 0)
        o->batch = EXEC__DEFAULT_BATCH;
    if (o->batch > EXEC__MAX_BATCH)
        return EXEC_EINVAL;
    if (o->max_record == 0)
        o->max_record = EXEC__DEFAULT_SIZE;
    if (o->max_result == 0)
        o->max_result = EXEC__DEFAULT_SIZE;
    if (o->grace_ms == 0)
        o->grace_ms = 1000;
    if (o->start_timeout_ms == 0)
        o->start_timeout_ms = 10000;
    if (o->max_record > EXEC__MAX_SIZE || o->max_result > EXEC__MAX_SIZE)
        return EXEC_EINVAL;
    return 0;
}

static int exec__choose(const exec_ops_t *ops, exec_backend_t want, exec_backend_t *got)
{
    bool ts = ops->caps & EXEC_CAP_THREAD_SAFE, fs = ops->caps & EXEC_CAP_FORK_SAFE;
    switch (want) {
    case EXEC_AUTO:
        if (!ts && !fs)
            return EXEC_ECAPS;
        *got = ts ? EXEC_THREADS : EXEC_FORK;
        return 0;
    case EXEC_THREADS:
        if (!ts)
            return EXEC_ECAPS;
        *got = EXEC_THREADS;
        return 0;
    case EXEC_FORK:
        if (!fs)
            return EXEC_ECAPS;
        *got = EXEC_FORK;
        return 0;
    }
    return EXEC_EINVAL;
}

int exec_create(exec_t **exp, const exec_ops_t *ops, void *ctx, exec_backend_t backend,
                const exec_options_t *opts)
{
    if (!exp)
        return EXEC_EINVAL;
    *exp = NULL;
    if (!ops || !ops->process)
        return EXEC_EINVAL;
    if (ops->version != EXEC_OPS_VERSION)
        return EXEC_EVERSION;
    if (ops->caps & ~(EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE))
        return EXEC_EINVAL;
    exec_options_t o;
    int rc = exec__options(&o, opts);
    if (rc)
        return rc;
    exec_backend_t chosen;
    rc = exec__choose(ops, backend, &chosen);
    if (rc)
        return rc;
    const struct exec__backend *be = NULL;
    for (size_t i = 0; exec__backends[i]; i++)
        if (exec__backends[i]->id == chosen)
            be = exec__backends[i];
    if (!be || !be->start)
        return EXEC_ENOTSUP;

    exec_t *ex = calloc(1, sizeof *ex);
    if (!ex)
        return EXEC_ENOMEM;
    ex->ops = ops;
    ex->ctx0 = ctx;
    ex->backend = chosen;
    ex->opt = o;
    ex->be = be;
    ex->armed = &ex->armed_local;
    ex->armed_local = 1;
    ex->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ex->efd < 0) {
        rc = -errno;
        free(ex);
        return rc;
    }
    pthread_mutex_init(&ex->submit_lock, NULL);
    pthread_mutex_init(&ex->next_lock, NULL);
    pthread_mutex_init(&ex->wait_lock, NULL);
    pthread_mutex_init(&ex->swap_lock, NULL);
    pthread_mutex_init(&ex->flight_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ex->wait_cond, &ca);
    pthread_condattr_destroy(&ca);

    ex->early_max = exec__max_batches(ex) / 2;
    ex->batch_limit = o.batch;
    uint64_t n = 1;
    while (n < exec__max_batches(ex))
        n <<= 1;
    ex->reorder_mask = n - 1;
    if (o.flags & EXEC_ORDERED) {
        ex->reorder = calloc(n, sizeof *ex->reorder);
        if (!ex->reorder) {
            rc = EXEC_ENOMEM;
            goto fail;
        }
    }
    if (be->cancel_flags || be->cancel) {
        ex->flight = calloc(n, sizeof *ex->flight);
        if (!ex->flight) {
            rc = EXEC_ENOMEM;
            goto fail;
        }
    }
    rc = be->start(ex);
    if (rc) {
        be->stop(ex);
        goto fail;
    }
    ex->started = true;
    *exp = ex;
    return 0;
fail:
    free(ex->reorder);
    free(ex->flight);
    close(ex->efd);
    pthread_mutex_destroy(&ex->submit_lock);
    pthread_mutex_destroy(&ex->next_lock);
    pthread_mutex_destroy(&ex->wait_lock);
    pthread_mutex_destroy(&ex->swap_lock);
    pthread_mutex_destroy(&ex->flight_lock);
    pthread_cond_destroy(&ex->wait_cond);
    free(ex);
    return rc;
}

/* ------------------------------------------------------------------------- */
/* Wake-ups                                                                  */
/* ------------------------------------------------------------------------- */

void exec__notify(exec_t *ex)
{
    ck_pr_fence_memory();
    if (ck_pr_load_32(ex->armed) && ck_pr_fas_32(ex->armed, 0)) {
        uint64_t one = 1;
        ssize_t r = write(ex->efd, &one, sizeof one);
        (void)r; /* EAGAIN only if the counter is saturated: already readable */
    }
}

/* The consumer made room (window or batches): wake sleeping submitters. */
static void exec__wake_submitters(exec_t *ex)
{
    ck_pr_store_64(&ex->progress, ex->progress + 1);
    ck_pr_fence_memory();
    if (ck_pr_load_uint(&ex->waiters)) {
        pthread_mutex_lock(&ex->wait_lock);
        pthread_cond_broadcast(&ex->wait_cond);
        pthread_mutex_unlock(&ex->wait_lock);
    }
}

/* ------------------------------------------------------------------------- */
/* Producer                                                                  */
/* ------------------------------------------------------------------------- */

/* submit_lock held. */
static void exec__dispatch_open(exec_t *ex)
{
    struct exec__batch *b = ex->open;
    if (!b || b->n == 0)
        return;
    ex->open = NULL;
    ck_pr_store_64(&ex->batches, ex->batches + 1);
    if (ex->flight) {
        pthread_mutex_lock(&ex->flight_lock);
        ex->flight[b->seq & ex->reorder_mask] = b;
        pthread_mutex_unlock(&ex->flight_lock);
    }
    ex->be->dispatch(ex, b);
}

/* Sends the open batch now, so that nothing waits in it (consumer, finish). */
static void exec__flush(exec_t *ex)
{
    pthread_mutex_lock(&ex->submit_lock);
    exec__dispatch_open(ex);
    pthread_mutex_unlock(&ex->submit_lock);
}

/* submit_lock held. May a batch go out before it is full? Only while fewer
 * than half the batches are out: see exec__append. */
static bool exec__spare(exec_t *ex)
{
    return ex->batches - ck_pr_load_64(&ex->batches_put) < ex->early_max;
}

int exec__flush_idle(exec_t *ex)
{
    if (pthread_mutex_trylock(&ex->submit_lock) != 0)
        return -1;
    int sent = ex->open && ex->open->n > 0 && exec__spare(ex);
    if (sent)
        exec__dispatch_open(ex);
    pthread_mutex_unlock(&ex->submit_lock);
    return sent;
}

/* Appends one record under submit_lock: 0, EXEC_EAGAIN (no room: window or
 * batches), EXEC_ESTATE, EXEC_EFATAL. */
static int exec__append(exec_t *ex, const void *rec, size_t len, uint64_t tag)
{
    if (ex->finished)
        return EXEC_ESTATE;
    if (ck_pr_load_32(&ex->fatal))
        return EXEC_EFATAL;
    uint64_t collected = ck_pr_load_64(&ex->collected);
    if (ex->submitted - collected >= ex->opt.window)
        return EXEC_EAGAIN;
    struct exec__batch *b = ex->open;
    if (b && (b->n >= b->cap || b->data_cap - b->data_len < len)) {
        exec__dispatch_open(ex);
        b = NULL;
    }
    if (!b) {
        b = ex->be->batch_get(ex);
        if (!b)
            return EXEC_EAGAIN;
        b->n = 0;
        b->cursor = 0;
        b->data_len = 0;
        b->rdata_len = 0;
        b->generation = 0;
        b->progress = 0;
        b->t_open = exec__now_ns();
        b->seq = ex->next_batch_seq++;
        b->rec_seq0 = ex->next_rec_seq;
        ex->open = b;
    }
    struct exec__rec *r = &b->recs[b->n];
    r->tag = tag;
    r->off = (uint32_t)b->data_len;
    r->len = (uint32_t)len;
    if (len)
        memcpy(b->data + b->data_len, rec, len);
    b->data_len += len;
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

static int exec__submit(exec_t *ex, const void *rec, size_t len, uint64_t tag, bool block)
{
    if (!ex || (!rec && len))
        return EXEC_EINVAL;
    if (ck_pr_load_8((uint8_t *)&ex->finished))
        return EXEC_ESTATE;
    if (len > ex->opt.max_record)
        return EXEC_E2BIG;
    for (;;) {
        uint64_t snap = ck_pr_load_64(&ex->progress);
        pthread_mutex_lock(&ex->submit_lock);
        int rc = exec__append(ex, rec, len, tag);
        pthread_mutex_unlock(&ex->submit_lock);
        if (rc != EXEC_EAGAIN || !block)
            return rc;
        /* Sleep until the consumer collects something (or the state changes). */
        pthread_mutex_lock(&ex->wait_lock);
        ck_pr_inc_uint(&ex->waiters);
        ck_pr_fence_memory();
        while (ck_pr_load_64(&ex->progress) == snap && !ck_pr_load_8((uint8_t *)&ex->finished) &&
               !ck_pr_load_32(&ex->fatal) && !ck_pr_load_8((uint8_t *)&ex->destroying))
            pthread_cond_wait(&ex->wait_cond, &ex->wait_lock);
        ck_pr_dec_uint(&ex->waiters);
        pthread_mutex_unlock(&ex->wait_lock);
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
    size_t i = 0;
    int rc = 0;
    while (i < n) {
        pthread_mutex_lock(&ex->submit_lock);
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
            rc = exec__append(ex, r->data, r->len, r->tag);
            if (rc)
                break;
        }
        pthread_mutex_unlock(&ex->submit_lock);
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
    pthread_mutex_lock(&ex->submit_lock);
    if (ex->finished) {
        pthread_mutex_unlock(&ex->submit_lock);
        return EXEC_ESTATE;
    }
    exec__dispatch_open(ex);
    ck_pr_store_8((uint8_t *)&ex->finished, 1);
    pthread_mutex_unlock(&ex->submit_lock);
    exec__notify(ex);
    pthread_mutex_lock(&ex->wait_lock); /* submitters see `finished` and stop */
    pthread_cond_broadcast(&ex->wait_cond);
    pthread_mutex_unlock(&ex->wait_lock);
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Consumer                                                                  */
/* ------------------------------------------------------------------------- */

/* A completed batch from the backend; it leaves the cancellable set. */
static struct exec__batch *exec__reap(exec_t *ex)
{
    struct exec__batch *b = ex->be->reap(ex);
    if (b && ex->flight) {
        pthread_mutex_lock(&ex->flight_lock);
        if (ex->flight[b->seq & ex->reorder_mask] == b)
            ex->flight[b->seq & ex->reorder_mask] = NULL;
        pthread_mutex_unlock(&ex->flight_lock);
    }
    return b;
}

/* next_lock held. The next batch to deliver from, or NULL if none is ready. */
static struct exec__batch *exec__take(exec_t *ex)
{
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

/* next_lock held; ex->cur has an undelivered record. */
static void exec__deliver(exec_t *ex, exec_result_t *res)
{
    struct exec__batch *b = ex->cur;
    uint32_t i = b->cursor++;
    const struct exec__res *r = &b->res[i];
    res->tag = b->recs[i].tag;
    res->status = r->status;
    res->user_code = r->user_code;
    res->signal = r->signal;
    res->exit_status = r->exit_status;
    if (r->status == 0 || r->status == EXEC_EUSER) {
        res->data = b->rdata + r->off;
        res->len = r->len;
    } else {
        res->data = NULL;
        res->len = 0;
    }
    res->seq = b->rec_seq0 + i;
    res->generation = b->generation;
    res->worker = b->worker;
    res->flags = r->flags & EXEC_RESULT_EARLY;
    if (i == 0) {
        /* One latency sample per batch: its first record, submit to result. */
        uint64_t d = exec__now_ns() - b->t_open;
        unsigned k = d ? 63u - (unsigned)__builtin_clzll(d) : 0;
        if (k >= EXEC_LAT_BUCKETS)
            k = EXEC_LAT_BUCKETS - 1;
        ck_pr_store_64(&ex->lat_hist[k], ex->lat_hist[k] + 1);
    }
    exec__count(ex, r->status);
    if (b->cursor == b->n) {
        /* The whole batch is collected: give its window room back now, so a
         * submitter need not wait for our next call (the bytes stay valid). */
        ck_pr_store_64(&ex->collected, ex->collected + b->n);
        exec__wake_submitters(ex);
    }
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

/*
 * next_lock held. Makes ex->cur a batch with a record left to deliver (0), or
 * returns EXEC_EOF, EXEC_EFATAL, EXEC_EAGAIN (timeout_ms 0) or EXEC_ETIMEDOUT.
 */
static int exec__ready(exec_t *ex, int timeout_ms)
{
    int64_t deadline = -2; /* computed when we first have to sleep */
    for (;;) {
        if (ex->cur && ex->cur->cursor < ex->cur->n)
            return 0;
        if (ex->cur) {
            ex->be->batch_put(ex, ex->cur);
            ck_pr_store_64(&ex->batches_put, ex->batches_put + 1);
            ex->cur = NULL;
            exec__wake_submitters(ex);
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

int exec_next(exec_t *ex, exec_result_t *res, int timeout_ms)
{
    if (!ex || !res || timeout_ms < -1)
        return EXEC_EINVAL;
    pthread_mutex_lock(&ex->next_lock);
    int rc = exec__ready(ex, timeout_ms);
    if (rc == 0)
        exec__deliver(ex, res);
    pthread_mutex_unlock(&ex->next_lock);
    return rc;
}

int exec_next_many(exec_t *ex, exec_result_t *res, size_t max, size_t *got, int timeout_ms)
{
    if (got)
        *got = 0;
    if (!ex || !res || !got || max == 0 || timeout_ms < -1)
        return EXEC_EINVAL;
    pthread_mutex_lock(&ex->next_lock);
    int rc = exec__ready(ex, timeout_ms);
    if (rc == 0) {
        size_t n = 0;
        /* Only from the current batch: its bytes stay valid until the next call. */
        while (n < max && ex->cur->cursor < ex->cur->n)
            exec__deliver(ex, &res[n++]);
        *got = n;
    }
    pthread_mutex_unlock(&ex->next_lock);
    return rc;
}

/* ------------------------------------------------------------------------- */
/* map, swap, stats, destroy                                                 */
/* ------------------------------------------------------------------------- */

/*
 * Delivers results to emit_cb, waiting for one first if `wait`. With `one`,
 * stops after the batch being delivered is done: its window room is then free,
 * and the caller goes back to submitting, so the workers are refilled batch by
 * batch while results are collected (collecting everything ready first lets
 * them run dry on light records). *delivered counts what was handed out.
 * 0, or emit_cb's non-zero return, or an error other than EXEC_EAGAIN.
 */
static int exec__drain(exec_t *ex, exec_emit_fn emit_cb, void *emit_arg, bool wait, bool one,
                       int *stop, uint64_t *delivered)
{
    exec_result_t res;
    pthread_mutex_lock(&ex->next_lock);
    int rc = exec__ready(ex, wait ? -1 : 0);
    while (rc == 0) {
        exec__deliver(ex, &res);
        ++*delivered;
        *stop = emit_cb(emit_arg, &res);
        if (*stop)
            break;
        if (one && ex->cur->cursor == ex->cur->n)
            break;
        rc = exec__ready(ex, 0);
    }
    pthread_mutex_unlock(&ex->next_lock);
    return rc == EXEC_EAGAIN ? 0 : rc;
}

int exec_map(exec_t *ex, exec_read_fn read_cb, void *read_arg, exec_emit_fn emit_cb,
             void *emit_arg)
{
    if (!ex || !read_cb || !emit_cb)
        return EXEC_EINVAL;
    pthread_mutex_lock(&ex->submit_lock);
    if (ex->finished) {
        pthread_mutex_unlock(&ex->submit_lock);
        return EXEC_ESTATE;
    }
    if (ex->submitted != 0) {
        pthread_mutex_unlock(&ex->submit_lock);
        return EXEC_EBUSY;
    }
    /* Reads and submits under one hold of submit_lock, dropping it only to
     * collect when there is no room: the per-record cost is a copy. */
    int rc = 0, stop = 0;
    for (;;) {
        const void *rec = NULL;
        size_t len = 0;
        uint64_t tag = 0;
        int r = read_cb(read_arg, &rec, &len, &tag);
        if (r <= 0) {
            rc = r;
            break;
        }
        if (!rec && len) {
            rc = EXEC_EINVAL;
            break;
        }
        if (len > ex->opt.max_record) {
            rc = EXEC_E2BIG;
            break;
        }
        while ((r = exec__append(ex, rec, len, tag)) == EXEC_EAGAIN) {
            pthread_mutex_unlock(&ex->submit_lock);
            /* Collect one batch if one is ready, else wait for one. */
            uint64_t got = 0;
            r = exec__drain(ex, emit_cb, emit_arg, false, true, &stop, &got);
            if (!r && !stop && !got)
                r = exec__drain(ex, emit_cb, emit_arg, true, true, &stop, &got);
            pthread_mutex_lock(&ex->submit_lock);
            if (r || stop)
                break;
        }
        if (r || stop) {
            rc = r;
            break;
        }
    }
    pthread_mutex_unlock(&ex->submit_lock);
    int f = exec_finish(ex);
    if (stop)
        return stop;
    if (f && !rc)
        rc = f;
    for (;;) {
        uint64_t got = 0;
        int n = exec__drain(ex, emit_cb, emit_arg, true, false, &stop, &got);
        if (stop)
            return stop;
        if (n == EXEC_EOF)
            break;
        if (n) {
            if (!rc)
                rc = n;
            break;
        }
    }
    return rc;
}

int exec_swap_context(exec_t *ex, void *new_ctx)
{
    if (!ex)
        return EXEC_EINVAL;
    pthread_mutex_lock(&ex->swap_lock);
    int rc;
    if (ex->destroying) {
        rc = EXEC_ESTATE;
    } else if (!ex->be->swap) {
        rc = EXEC_ENOTSUP;
    } else {
        uint64_t gen = ex->generation + 1;
        rc = ex->be->swap(ex, new_ctx, gen);
        if (rc == 0) {
            ck_pr_store_64(&ex->generation, gen);
            ck_pr_store_64(&ex->swaps, ex->swaps + 1);
        }
    }
    pthread_mutex_unlock(&ex->swap_lock);
    return rc;
}

int exec_stats(const exec_t *ex, exec_stats_t *st)
{
    if (!ex || !st)
        return EXEC_EINVAL;
    exec_t *e = (exec_t *)ex;
    memset(st, 0, sizeof *st);
    st->backend = e->backend;
    st->workers = e->opt.workers;
    /* Submissions stand still while the result counters are read: then no
     * record is counted delivered but not submitted, and in_flight (never
     * above the window) is exact as of that moment or lower. */
    pthread_mutex_lock(&e->submit_lock);
    st->submitted = e->submitted;
    st->ok = ck_pr_load_64(&e->ok);
    st->user_errors = ck_pr_load_64(&e->user_errors);
    st->crashed = ck_pr_load_64(&e->crashed);
    st->timed_out = ck_pr_load_64(&e->timed_out);
    st->too_big = ck_pr_load_64(&e->too_big);
    st->cancelled = ck_pr_load_64(&e->cancelled);
    st->worker_errors = ck_pr_load_64(&e->worker_errors);
    pthread_mutex_unlock(&e->submit_lock);
    st->batches = ck_pr_load_64(&e->batches);
    st->swaps = ck_pr_load_64(&e->swaps);
    st->generation = ck_pr_load_64(&e->generation);
    st->respawns = ck_pr_load_64(&e->respawns);
    st->delivered = st->ok + st->user_errors + st->crashed + st->timed_out + st->too_big +
                    st->cancelled + st->worker_errors;
    st->in_flight = st->submitted > st->delivered ? st->submitted - st->delivered : 0;

    for (unsigned k = 0; k < EXEC_LAT_BUCKETS; k++) {
        st->lat_hist[k] = ck_pr_load_64(&e->lat_hist[k]);
        st->lat_samples += st->lat_hist[k];
    }
    uint64_t *pct[3] = {&st->lat_p50_ns, &st->lat_p99_ns, &st->lat_p999_ns};
    const double q[3] = {0.50, 0.99, 0.999};
    for (int j = 0; j < 3 && st->lat_samples; j++) {
        uint64_t need = (uint64_t)(q[j] * (double)st->lat_samples + 0.5), seen = 0;
        if (need == 0)
            need = 1;
        for (unsigned k = 0; k < EXEC_LAT_BUCKETS; k++) {
            seen += st->lat_hist[k];
            if (seen >= need) {
                *pct[j] = (2ull << k) - 1; /* the bucket's upper bound */
                break;
            }
        }
    }
    for (unsigned i = 0; i < e->opt.workers; i++) {
        exec_worker_stats_t ws;
        exec_worker_stats(e, i, &ws);
        st->busy_ns += ws.busy_ns;
        st->idle_ns += ws.idle_ns;
    }
    if (st->busy_ns + st->idle_ns)
        st->utilisation = (double)st->busy_ns / (double)(st->busy_ns + st->idle_ns);
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Cancel                                                                    */
/* ------------------------------------------------------------------------- */

static void exec__flag(struct exec__batch *b, uint32_t i)
{
    __atomic_fetch_or(&b->rflags[i], EXEC__RF_CANCEL, __ATOMIC_RELAXED);
}

/* Cancels the unfinished records of b that match (all, or those tagged tag). */
static int exec__cancel_batch(exec_t *ex, struct exec__batch *b, bool all, uint64_t tag,
                              bool dispatched)
{
    int n = 0;
    uint32_t from = 0;
    if (dispatched && !ex->be->cancel)
        from = __atomic_load_n(&b->progress, __ATOMIC_ACQUIRE);
    for (uint32_t i = from; i < b->n; i++) {
        if (!all && b->recs[i].tag != tag)
            continue;
        if (b->rflags && (__atomic_load_n(&b->rflags[i], __ATOMIC_RELAXED) & EXEC__RF_CANCEL))
            continue; /* already cancelled */
        if (dispatched && ex->be->cancel) {
            n += ex->be->cancel(ex, b, i) > 0;
        } else {
            exec__flag(b, i);
            n++;
        }
    }
    return n;
}

static int exec__cancel(exec_t *ex, bool all, uint64_t tag)
{
    if (!ex)
        return EXEC_EINVAL;
    if (!ex->flight)
        return EXEC_ENOTSUP;
    int n = 0;
    pthread_mutex_lock(&ex->submit_lock);
    pthread_mutex_lock(&ex->flight_lock);
    if (ex->open)
        n += exec__cancel_batch(ex, ex->open, all, tag, false);
    for (uint64_t k = 0; k <= ex->reorder_mask; k++)
        if (ex->flight[k])
            n += exec__cancel_batch(ex, ex->flight[k], all, tag, true);
    pthread_mutex_unlock(&ex->flight_lock);
    pthread_mutex_unlock(&ex->submit_lock);
    return n > 0 || all ? n : EXEC_ENOENT;
}

int exec_cancel(exec_t *ex, uint64_t tag)
{
    return exec__cancel(ex, false, tag);
}

int exec_cancel_all(exec_t *ex)
{
    return exec__cancel(ex, true, 0);
}

int exec_worker_stats(const exec_t *ex, unsigned i, exec_worker_stats_t *ws)
{
    if (!ex || !ws || i >= ex->opt.workers)
        return EXEC_EINVAL;
    memset(ws, 0, sizeof *ws);
    ws->index = i;
    if (ex->be->worker_stats)
        ex->be->worker_stats(ex, i, ws);
    return 0;
}

void exec_destroy(exec_t *ex)
{
    if (!ex)
        return;
    pthread_mutex_lock(&ex->swap_lock);
    ck_pr_store_8((uint8_t *)&ex->destroying, 1);
    pthread_mutex_unlock(&ex->swap_lock);
    exec__wake_submitters(ex);
    ex->be->stop(ex);
    free(ex->reorder);
    free(ex->flight);
    close(ex->efd);
    pthread_mutex_destroy(&ex->submit_lock);
    pthread_mutex_destroy(&ex->next_lock);
    pthread_mutex_destroy(&ex->wait_lock);
    pthread_mutex_destroy(&ex->swap_lock);
    pthread_mutex_destroy(&ex->flight_lock);
    pthread_cond_destroy(&ex->wait_cond);
    free(ex);
}
