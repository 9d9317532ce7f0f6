/*
 * Core: the loops that run a whole stream from one thread, exec_map() (records
 * from a callback, copied) and exec_run_records() (an array the caller keeps,
 * read in place where the backend allows). The calling thread produces,
 * collects, and, where the backend lets it (help), runs batches itself when it
 * would otherwise wait, so that P workers means P runners in all, as with
 * OpenMP and oneTBB: the backend rests one worker meanwhile (caller_joins).
 */
#include "exec_core.h"

#include <ck_pr.h>
#include <string.h>
#include <time.h>

#define EXEC__EMIT_CHUNK 128u /* results handed to an emit_many call at most */
#define EXEC__SPREAD 8u       /* exec_run_records: batches a worker, at least */

/* Where results go: one at a time, or a batch's worth at a time. */
struct exec__emitter {
    exec_emit_fn one;
    exec_emit_many_fn many;
    void *arg;
};

/*
 * Delivers results, waiting for one first if `wait`. With `one`, stops after
 * the batch being delivered is done: its window room is then free, and the
 * caller goes back to submitting, so the workers are refilled batch by batch
 * while results are collected (collecting everything ready first lets them
 * run dry on light records). *delivered counts what was handed out.
 * 0, or the callback's non-zero return (in *stop too), or an error other
 * than EXEC_EAGAIN.
 */
static int exec__drain(exec_t *ex, const struct exec__emitter *em, bool wait, bool one, int *stop,
                       uint64_t *delivered)
{
    exec_result_t res[EXEC__EMIT_CHUNK];
    exec__lock(&ex->next_lock);
    struct exec__consumer *me = exec__consumer_begin(ex);
    int rc = me ? exec__ready(ex, wait ? -1 : EXEC__LOOK) : EXEC_ENOMEM;
    while (rc == 0) {
        if (em->many) {
            size_t k = exec__deliver_many(ex, me, res, EXEC__EMIT_CHUNK);
            *delivered += k;
            *stop = em->many(em->arg, res, k);
        } else {
            /* One by one to the callback, the bookkeeping once for all: a
             * stop hands out only the results it was given. */
            size_t k = exec__fill(ex, me, res, EXEC__EMIT_CHUNK), j = 0;
            while (j < k && !(*stop = em->one(em->arg, &res[j])))
                j++;
            j += j < k; /* the one it stopped at was handed out too */
            exec__commit(ex, res, j);
            *delivered += j;
        }
        if (*stop)
            break;
        if (one && exec__bc(ex->cur)->cursor == ex->cur->n)
            break;
        rc = exec__ready(ex, EXEC__LOOK);
    }
    exec__unlock(&ex->next_lock);
    return rc == EXEC_EAGAIN ? 0 : rc;
}

/* The calling thread runs a queued batch (the backend's help), its time
 * counted: that is work, not the caller's hand-over. The clock is the
 * monotonic one (vDSO, ~25 ns): a thread CPU clock is a system call, over
 * 1 us on a virtual machine, paid on every look for a batch; the caller is
 * rarely preempted inside one batch. True if it ran one. */
static bool exec__help(exec_t *ex)
{
    if (!ex->be->help)
        return false;
    uint64_t t0 = exec__now_ns();
    bool ran = ex->be->help(ex);
    if (ran)
        ck_pr_store_64(&ex->help_ns, ex->help_ns + (exec__now_ns() - t0));
    return ran;
}

/* The producer found no room: collect a batch if one is ready, else run one
 * (help), else wait for one. 0, the callback's stop, or an error. */
static int exec__make_room(exec_t *ex, const struct exec__emitter *em, int *stop)
{
    uint64_t got = 0;
    int r = exec__drain(ex, em, false, true, stop, &got);
    if (r || *stop || got)
        return r;
    if (exec__help(ex))
        return 0;
    return exec__drain(ex, em, true, true, stop, &got);
}

/* After the last record: collect everything, helping while it waits. until_eof:
 * to the end of stream (exec_map), else until nothing is in flight. */
static int exec__collect(exec_t *ex, const struct exec__emitter *em, bool until_eof, int *stop)
{
    for (;;) {
        if (!until_eof && ck_pr_load_64(&ex->collected) == ck_pr_load_64(&ex->submitted))
            return 0;
        uint64_t got = 0;
        int r = exec__drain(ex, em, false, false, stop, &got);
        if (*stop || (r && r != EXEC_EOF))
            return r;
        if (r == EXEC_EOF)
            return until_eof ? 0 : r;
        if (got)
            continue;
        if (exec__help(ex))
            continue;
        if (!until_eof && ck_pr_load_64(&ex->collected) == ck_pr_load_64(&ex->submitted))
            return 0;
        r = exec__drain(ex, em, true, false, stop, &got);
        if (*stop || (r && r != EXEC_EOF))
            return r;
        if (r == EXEC_EOF)
            return until_eof ? 0 : r;
    }
}

static int exec__drop(void *arg, const exec_result_t *res, size_t n)
{
    (void)arg;
    (void)res;
    (void)n;
    return 0;
}

/* submit_lock held: may a whole-stream call start? It takes the executor for
 * itself until it returns (calls from other threads get EXEC_EBUSY). */
static int exec__claim(exec_t *ex, bool fresh)
{
    EXEC__ASSERT_HELD(&ex->submit_lock);
    if (ex->finished)
        return EXEC_ESTATE;
    if (fresh ? ex->submitted != 0 : ex->submitted != ck_pr_load_64(&ex->collected))
        return EXEC_EBUSY;
    if (__atomic_load_n(&ex->in_map, __ATOMIC_ACQUIRE))
        return EXEC_EBUSY;
    /* From here on the callbacks run in this thread. */
    __atomic_store_n(&ex->map_thread, pthread_self(), __ATOMIC_RELAXED); /* read racily */
    __atomic_store_n(&ex->in_map, 1, __ATOMIC_RELEASE);
    if (ex->be->caller_joins)
        ex->be->caller_joins(ex, true);
    ex->claim_cpu_ns = exec__thread_cpu_ns();
    ex->claim_recs = ex->submitted;
    ex->claim_help_ns = ex->help_ns;
    return 0;
}

static void exec__unclaim(exec_t *ex)
{
    if (ex->be->caller_joins)
        ex->be->caller_joins(ex, false);
    uint64_t cpu = exec__thread_cpu_ns() - ex->claim_cpu_ns,
             helped = ck_pr_load_64(&ex->help_ns) - ex->claim_help_ns;
    ck_pr_store_64(&ex->caller_cpu_ns, ex->caller_cpu_ns + (cpu > helped ? cpu - helped : 0));
    ck_pr_store_64(&ex->caller_recs, ex->caller_recs + (ck_pr_load_64(&ex->submitted) -
                                                         ex->claim_recs));
    __atomic_store_n(&ex->in_map, 0, __ATOMIC_RELEASE);
}

static int exec__map(exec_t *ex, exec_read_fn read_cb, void *read_arg,
                     const struct exec__emitter *em)
{
    /* Reads and submits under one hold of submit_lock, dropping it only to
     * make room: the per-record cost is a copy. */
    int rc = 0, stop = 0;
    for (;;) {
        const void *rec = NULL;
        size_t len = 0;
        uint64_t tag = 0;
        int r = read_cb(read_arg, &rec, &len, &tag);
        if (r == EXEC_EAGAIN && ex->submitted != ck_pr_load_64(&ex->collected)) {
            /* No record until results come back: send what is open (it may
             * be what the reader waits for) and hand at least one out. */
            exec__dispatch_open(ex);
            exec__unlock(&ex->submit_lock);
            uint64_t got = 0;
            r = exec__drain(ex, em, true, true, &stop, &got);
            exec__lock(&ex->submit_lock);
            if (r || stop) {
                rc = r;
                break;
            }
            continue;
        }
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
        /* Bytes in exec_buffer() stay put while in flight: not copied. */
        const bool by_ref = exec__in_buffer(ex, rec, len);
        if (exec__append_quick(ex, rec, len, tag, by_ref))
            continue;
        while ((r = exec__append(ex, rec, len, tag, by_ref)) == EXEC_EAGAIN) {
            exec__unlock(&ex->submit_lock);
            r = exec__make_room(ex, em, &stop);
            exec__lock(&ex->submit_lock);
            if (r || stop)
                break;
        }
        if (r || stop) {
            rc = r;
            break;
        }
    }
    exec__dispatch_open(ex);
    ck_pr_store_8((uint8_t *)&ex->finished, 1);
    exec__unlock(&ex->submit_lock);
    exec__notify(ex);
    exec__lock(&ex->wait_lock); /* other threads' submitters see `finished` */
    pthread_cond_broadcast(&ex->wait_cond);
    exec__unlock(&ex->wait_lock);
    if (stop)
        return stop;
    int c = exec__collect(ex, em, true, &stop);
    if (stop)
        return stop;
    return rc ? rc : c;
}

int exec_map(exec_t *ex, exec_read_fn read_cb, void *read_arg, exec_emit_fn emit_cb,
             void *emit_arg)
{
    if (!ex || !read_cb || !emit_cb)
        return EXEC_EINVAL;
    if (exec__refuse(ex))
        return EXEC_ESTATE;
    exec__lock(&ex->submit_lock);
    int rc = exec__claim(ex, true);
    if (rc) {
        exec__unlock(&ex->submit_lock);
        return rc;
    }
    struct exec__emitter em = {emit_cb, NULL, emit_arg};
    rc = exec__map(ex, read_cb, read_arg, &em);
    exec__unclaim(ex);
    return rc;
}

int exec_run_records(exec_t *ex, const exec_record_t *recs, size_t n, exec_emit_many_fn emit_cb,
                     void *emit_arg)
{
    if (!ex || (!recs && n) || !emit_cb)
        return EXEC_EINVAL;
    if (exec__refuse(ex))
        return EXEC_ESTATE;
    /* Every record is checked before any is submitted: all run, or none.
     * Where workers read only the shared buffer, batches can be views of the
     * caller's array when it, and every record, lies in that buffer. */
    enum exec__take how = ex->be->refs ? EXEC__VIEWS : ex->buf_shared ? EXEC__IN_BUFFER
                                                                     : EXEC__COPY;
    bool all_in = how == EXEC__IN_BUFFER && exec__in_buffer(ex, recs, n * sizeof *recs);
    for (size_t i = 0; i < n; i++) {
        if (!recs[i].data && recs[i].len)
            return EXEC_EINVAL;
        if (recs[i].len > ex->opt.max_record)
            return EXEC_E2BIG;
        if (all_in && !exec__in_buffer(ex, recs[i].data, recs[i].len))
            all_in = false;
    }
    if (all_in)
        how = EXEC__VIEWS;
    exec__lock(&ex->submit_lock);
    int rc = exec__claim(ex, false);
    if (rc) {
        exec__unlock(&ex->submit_lock);
        return rc;
    }
    struct exec__emitter em = {NULL, emit_cb, emit_arg};
    int stop = 0;
    size_t i = 0;
    /* Eight batches a worker at least: before the first results nobody
     * knows the records' weight, and a short array of heavy records cut
     * into full batches would leave workers idle while one runs the rest
     * (on EXEC_FORK no worker takes records queued to another). */
    size_t per = (size_t)EXEC__SPREAD * ex->opt.workers;
    size_t spread = (n + per - 1) / per;
    ex->run_cap = spread < ex->opt.batch ? (uint32_t)spread : 0;
    while (i < n && rc == 0 && !stop) {
        size_t k = 0;
        rc = exec__append_many(ex, recs + i, n - i, how, &k);
        i += k;
        if (rc == EXEC_EAGAIN) {
            exec__unlock(&ex->submit_lock);
            rc = exec__make_room(ex, &em, &stop);
            exec__lock(&ex->submit_lock);
        }
    }
    ex->run_cap = 0;
    exec__dispatch_open(ex);
    exec__unlock(&ex->submit_lock);
    int c = stop ? 0 : exec__collect(ex, &em, false, &stop);
    /* After a stop or an error, workers may still read the caller's records:
     * wait for every result, dropping them, before the call returns. */
    struct exec__emitter drop = {NULL, exec__drop, NULL};
    while (ck_pr_load_64(&ex->collected) != ck_pr_load_64(&ex->submitted) &&
           !ck_pr_load_32(&ex->fatal)) {
        int again = 0;
        exec__collect(ex, &drop, false, &again);
    }
    exec__unclaim(ex);
    if (stop)
        return stop;
    return rc ? rc : c;
}
