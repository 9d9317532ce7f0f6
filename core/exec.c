/*
 * Core: creating and destroying an executor (validation, backend choice),
 * swaps, stats, and the calls a backend makes into core (exec_internal.h).
 * The stream itself is in submit.c and next.c, cancel in cancel.c. Knows
 * backends only through struct exec__backend.
 */
#include "exec_core.h"
#include "executor_records.h" /* exec_plugin_t: EXEC_MPI's options.plugin */
#include "alloc.h"
#include "tsan.h"

#include <ck_pr.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define EXEC__DEFAULT_BATCH 128u
#define EXEC__DEFAULT_BUFFER ((size_t)16 << 20)
#define EXEC__MAX_BUFFER ((size_t)1 << 30)
#define EXEC__DEFAULT_SIZE ((size_t)64 << 10)

#ifdef EXEC__CHECKED
void exec__assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "libexecutor: %s:%d: assertion failed: %s\n", file, line, what);
    abort();
}
#endif

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
    case EXEC_MPI: return "mpi";
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
    if (exec__foreign(ex))
        return EXEC_ESTATE;
    *out = ex->opt;
    return 0;
}

int exec_fd(const exec_t *ex)
{
    if (!ex)
        return EXEC_EINVAL;
    return exec__foreign(ex) ? EXEC_ESTATE : ex->efd;
}

/* ------------------------------------------------------------------------- */
/* What backends ask of core                                                 */
/* ------------------------------------------------------------------------- */

void *exec__priv(const exec_t *ex) { return ex->be_priv; }
const exec_ops_t *exec__ops(const exec_t *ex) { return ex->ops; }
const exec_options_t *exec__opts(const exec_t *ex) { return &ex->opt; }
void *exec__ctx0(const exec_t *ex) { return ex->ctx0; }
bool exec__started(const exec_t *ex) { return ex->started; }
int exec__efd(const exec_t *ex) { return ex->efd; }

uint32_t exec__max_batches(const exec_t *ex)
{
    /* Enough full batches to hold the window, as many again for batches sent
     * early and small (see exec__append), and one the consumer still holds;
     * at least 64 (up to the window) so that a stream of lone records, each
     * sent at once, fills the window before it runs out of batches. */
    uint64_t full = (ex->opt.window + ex->opt.batch - 1) / ex->opt.batch;
    uint64_t m = 2 * full + 2;
    if (m < 64)
        m = 64;
    if (m > ex->opt.window)
        m = ex->opt.window;
    return (uint32_t)m + 1;
}

void exec__use_armed(exec_t *ex, uint32_t *word)
{
    uint32_t *to = word ? word : &ex->armed_local;
    *to = ck_pr_load_32(ex->armed);
    ex->armed = to;
}

void exec__wake(exec_t *ex)
{
    ck_pr_fence_memory();
    uint64_t one = 1;
    ssize_t r = write(ex->efd, &one, sizeof one);
    (void)r; /* EAGAIN only if the counter is saturated: already readable */
}

bool exec__armed(const exec_t *ex)
{
    return ck_pr_load_32(ex->armed) != 0;
}

int exec__spawn(pthread_t *tid, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(tid, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return exec__spawn_error(rc);
}

void exec__notify(exec_t *ex)
{
    ck_pr_fence_memory();
    if (ck_pr_load_32(ex->armed) && ck_pr_fas_32(ex->armed, 0))
        exec__wake(ex);
}

bool exec__awaited(exec_t *ex, const struct exec__batch *b)
{
    return ex->reorder && b->seq == ck_pr_load_64(&ex->deliver_seq);
}

void exec__tune_batch(exec_t *ex, uint32_t records)
{
    if (records < 1)
        records = 1;
    if (records > ex->opt.batch)
        records = ex->opt.batch;
    if (ck_pr_load_32(&ex->batch_limit) != records)
        ck_pr_store_32(&ex->batch_limit, records);
}

void exec__batch_room(exec_t *ex, uint32_t n)
{
    uint32_t m = exec__max_batches(ex);
    if (n < m)
        m = n;
    ex->early_max = m / 2 ? m / 2 : 1;
}

void exec__idle_enter(exec_t *ex)
{
    ck_pr_inc_32(&ex->idle);
    ck_pr_fence_memory();
}

void exec__idle_leave(exec_t *ex)
{
    ck_pr_dec_32(&ex->idle);
}

void exec__respawned(exec_t *ex)
{
    ck_pr_inc_64(&ex->respawns);
}

bool exec__is_fatal(const exec_t *ex)
{
    return ck_pr_load_32(&ex->fatal) != 0;
}

void exec__fatal(exec_t *ex)
{
    ck_pr_store_32(&ex->fatal, 1);
    exec__wake_submitters(ex);
    exec__wake(ex);
}

/* ------------------------------------------------------------------------- */
/* Create and destroy                                                        */
/* ------------------------------------------------------------------------- */

/* Fills defaults and checks ranges; the backend may adjust the caller's
 * options first (configure). */
static int exec__options(exec_options_t *o, const exec_options_t *in,
                         const struct exec__backend *be)
{
    if (in)
        *o = *in;
    else
        memset(o, 0, sizeof *o);
    if (be->configure) {
        int rc = be->configure(o);
        if (rc)
            return rc;
    }
    if (o->flags & ~(EXEC_ORDERED | EXEC_NO_REPLAY | EXEC_CLOSE_FDS))
        return EXEC_EINVAL;
    if (o->n_keep_fds > 1024 || (o->n_keep_fds && !o->keep_fds))
        return EXEC_EINVAL;
    for (unsigned i = 0; i < o->n_keep_fds; i++)
        if (o->keep_fds[i] < 0)
            return EXEC_EINVAL;
    if (!o->n_keep_fds)
        o->keep_fds = NULL;
    if (o->rank_backend != EXEC_AUTO && o->rank_backend != EXEC_THREADS &&
        o->rank_backend != EXEC_FORK)
        return EXEC_EINVAL;
    if (o->rank_workers > EXEC__MAX_WORKERS || o->rank_batches > EXEC__MAX_BATCH)
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
    if (o->buffer_size == 0)
        o->buffer_size = EXEC__DEFAULT_BUFFER;
    if (o->buffer_size > EXEC__MAX_BUFFER)
        return EXEC_EINVAL;
    if (o->grace_ms == 0)
        o->grace_ms = 1000;
    if (o->start_timeout_ms == 0)
        o->start_timeout_ms = 10000;
    if (o->result_delay_us == 0)
        o->result_delay_us = 1000;
    if (o->result_delay_us > 1000000)
        return EXEC_EINVAL;
    if (o->max_record > EXEC__MAX_SIZE || o->max_result > EXEC__MAX_SIZE)
        return EXEC_EINVAL;
    return 0;
}

/* EXEC_MPI: every rank builds its own context from a spec, so there must be
 * a way to build one, and no context here. */
static int exec__choose_mpi(const exec_ops_t *ops, const void *ctx, const exec_options_t *o)
{
    bool ts = ops->caps & EXEC_CAP_THREAD_SAFE, fs = ops->caps & EXEC_CAP_FORK_SAFE;
    if (!o || !o->plugin || !o->plugin->ctx_build || !o->spec)
        return EXEC_ECAPS;
    if (ctx || o->plugin->abi != EXEC_PLUGIN_ABI || o->plugin->ops != ops)
        return EXEC_EINVAL;
    if ((o->rank_backend == EXEC_AUTO && !ts && !fs) ||
        (o->rank_backend == EXEC_THREADS && !ts) || (o->rank_backend == EXEC_FORK && !fs))
        return EXEC_ECAPS;
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
    case EXEC_MPI: /* checked by exec__choose_mpi */
        *got = EXEC_MPI;
        return 0;
    }
    return EXEC_EINVAL;
}

static size_t exec__page(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

/*
 * The creator's mark (see exec_core.h): a private page that fork() gives a
 * child zeroed (MADV_WIPEONFORK). 0, or -errno when the page cannot be had;
 * a kernel without MADV_WIPEONFORK leaves ex->mine NULL (pid compared).
 */
static int exec__mark(exec_t *ex)
{
    ex->pid = getpid();
    void *p = mmap(NULL, exec__page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return errno == ENOMEM ? EXEC_ENOMEM : -errno;
    if (madvise(p, exec__page(), MADV_WIPEONFORK) != 0) {
        munmap(p, exec__page());
        return 0;
    }
    *(uint32_t *)p = EXEC__MINE;
    ex->mine = p;
    return 0;
}

/*
 * exec_destroy() in a child of the creating process (the host forked): the
 * workers, threads and shared state are the creator's, so only this
 * process's own copy of the executor goes: its memory, and its copies of the
 * descriptors and mappings (closing a copy leaves the creator's open). No
 * thread is joined or woken, no process signalled or waited for, no user
 * callback run, and no lock taken or destroyed (a thread that does not exist
 * here may have held one, or waited on a condition, when the host forked).
 */
static void exec__forget(exec_t *ex)
{
    if (ex->be->forget)
        ex->be->forget(ex);
    free(ex->be_priv);
    free(ex->reorder);
    free((void *)ex->opt.keep_fds);
    if (ex->cons != ex->cons_inline)
        free(ex->cons);
    if (ex->efd >= 0)
        close(ex->efd);
    if (ex->mine)
        munmap((void *)ex->mine, exec__page());
    free(ex);
}

/* Frees what exec_create made; the backend is stopped already. */
static void exec__free(exec_t *ex)
{
    if (ex->buf_own)
        free(ex->buf);
    free(ex->be_priv);
    free(ex->reorder);
    free((void *)ex->opt.keep_fds); /* our copy */
    if (ex->cons != ex->cons_inline)
        free(ex->cons);
    if (ex->efd >= 0)
        close(ex->efd);
    if (ex->mine)
        munmap((void *)ex->mine, exec__page());
    exec__mutex_destroy(&ex->submit_lock);
    exec__mutex_destroy(&ex->next_lock);
    exec__mutex_destroy(&ex->wait_lock);
    exec__mutex_destroy(&ex->swap_lock);
    exec__mutex_destroy(&ex->flight_lock);
    pthread_cond_destroy(&ex->wait_cond);
    free(ex);
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
    exec_backend_t chosen;
    int rc = exec__choose(ops, backend, &chosen);
    if (rc == 0 && chosen == EXEC_MPI)
        rc = exec__choose_mpi(ops, ctx, opts);
    if (rc)
        return rc;
    const struct exec__backend *be = NULL;
    for (size_t i = 0; exec__backends[i]; i++)
        if (exec__backends[i]->id == chosen)
            be = exec__backends[i];
    if (!be || !be->start)
        return EXEC_ENOTSUP;
    exec_options_t o;
    rc = exec__options(&o, opts, be);
    if (rc)
        return rc;

    exec_t *ex = exec__calloc(1, sizeof *ex);
    if (!ex)
        return EXEC_ENOMEM;
    ex->ops = ops;
    ex->ctx0 = ctx;
    ex->backend = chosen;
    ex->opt = o;
    ex->be = be;
    if (o.n_keep_fds && o.keep_fds) { /* (checked by exec__options) */
        int *keep = exec__malloc(o.n_keep_fds * sizeof *keep);
        if (!keep) {
            free(ex);
            return EXEC_ENOMEM;
        }
        memcpy(keep, o.keep_fds, o.n_keep_fds * sizeof *keep);
        ex->opt.keep_fds = keep;
    }
    ex->armed = &ex->armed_local;
    ex->armed_local = 1;
    ex->cons = ex->cons_inline;
    ex->cons_cap = EXEC__CONS_INLINE;
    exec__mutex_init(&ex->submit_lock);
    exec__mutex_init(&ex->next_lock);
    exec__mutex_init(&ex->wait_lock);
    exec__mutex_init(&ex->swap_lock);
    exec__mutex_init(&ex->flight_lock);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ex->wait_cond, &ca);
    pthread_condattr_destroy(&ca);
    ex->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ex->efd < 0) {
        rc = -errno;
        exec__free(ex);
        return rc;
    }
    rc = exec__mark(ex);
    if (rc) {
        exec__free(ex);
        return rc;
    }

    ex->early_max = exec__max_batches(ex) / 2;
    ex->batch_limit = o.batch;
    uint64_t n = 1;
    while (n < exec__max_batches(ex))
        n <<= 1;
    ex->reorder_mask = n - 1;
    if (o.flags & EXEC_ORDERED) {
        ex->reorder = exec__calloc(n, sizeof *ex->reorder); /* NOLINT(bugprone-sizeof-expression) */
        if (!ex->reorder) {
            exec__free(ex);
            return EXEC_ENOMEM;
        }
    }
    ex->be_priv = exec__calloc(1, be->priv_size ? be->priv_size : 1);
    if (!ex->be_priv) {
        exec__free(ex);
        return EXEC_ENOMEM;
    }
    rc = be->start(ex);
    if (rc) {
        be->stop(ex);
        exec__free(ex);
        return rc;
    }
    ex->started = true;
    *exp = ex;
    return 0;
}

void exec_destroy(exec_t *ex)
{
    if (!ex)
        return;
    if (exec__foreign(ex)) {
        exec__forget(ex); /* a child of the creator: its own copy only */
        return;
    }
    if (exec__in_callback(ex))
        return; /* from exec_map's own callbacks: refused, map goes on */
    exec__lock(&ex->swap_lock);
    ck_pr_store_8((uint8_t *)&ex->destroying, 1);
    exec__unlock(&ex->swap_lock);
    exec__wake_submitters(ex);
    ex->be->stop(ex);
    exec__free(ex);
}

/* ------------------------------------------------------------------------- */
/* The shared buffer                                                         */
/* ------------------------------------------------------------------------- */

void exec__use_buffer(exec_t *ex, void *base, size_t size)
{
    ex->buf = base;
    ex->buf_size = base ? size : 0;
    ex->buf_shared = base != NULL;
}

void *exec_buffer(exec_t *ex, size_t *size)
{
    if (size)
        *size = 0;
    if (!ex || exec__refuse(ex))
        return NULL;
    exec__lock(&ex->submit_lock);
    if (!ex->buf && ex->be->refs) {
        /* Workers read any memory in place: plain memory will do (its pages
         * come as they are written). */
        ex->buf = exec__malloc(ex->opt.buffer_size);
        ex->buf_size = ex->buf ? ex->opt.buffer_size : 0;
        ex->buf_own = ex->buf != NULL;
    }
    void *b = ex->buf;
    if (size && b)
        *size = ex->buf_size;
    exec__unlock(&ex->submit_lock);
    return b;
}

/* ------------------------------------------------------------------------- */
/* Swap                                                                      */
/* ------------------------------------------------------------------------- */

/* A swap: new_ctx by swap_prepare, or spec by swap_spec. */
static int exec__swap(exec_t *ex, void *new_ctx, const char *spec, char *err, size_t errlen)
{
    exec__lock(&ex->swap_lock);
    int rc = EXEC_ESTATE;
    if (!ex->destroying) {
        uint64_t gen = ex->generation + 1;
        rc = spec ? ex->be->swap_spec(ex, spec, gen, err, errlen)
                  : ex->be->swap_prepare(ex, new_ctx, gen);
        if (rc == 0) {
            /* Records submitted before this call returns may see either
             * context; the open batch goes out now to the current one, and
             * everything after the commit sees the new one. */
            exec__lock(&ex->submit_lock);
            exec__dispatch_open(ex);
            ex->be->swap_commit(ex);
            exec__unlock(&ex->submit_lock);
            ck_pr_store_64(&ex->generation, gen);
            ck_pr_store_64(&ex->swaps, ex->swaps + 1);
            exec__notify(ex); /* the consumer may have a drained generation to free */
        }
    }
    exec__unlock(&ex->swap_lock);
    return rc;
}

int exec_swap_context(exec_t *ex, void *new_ctx)
{
    if (!ex)
        return EXEC_EINVAL;
    if (exec__refuse(ex))
        return EXEC_ESTATE;
    if (!ex->be->swap_prepare)
        return EXEC_ENOTSUP;
    return exec__swap(ex, new_ctx, NULL, NULL, 0);
}

int exec_swap_spec(exec_t *ex, const char *spec, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!ex || !spec)
        return EXEC_EINVAL;
    if (exec__refuse(ex))
        return EXEC_ESTATE;
    if (!ex->be->swap_spec)
        return EXEC_ENOTSUP;
    return exec__swap(ex, NULL, spec, err, errlen);
}

/* ------------------------------------------------------------------------- */
/* Stats                                                                     */
/* ------------------------------------------------------------------------- */

/*
 * Whether the whole-stream calls can win here, from the executor's own
 * figures: a record's weight as the workers ran it (w = their busy time per
 * record) and what the calling side spends per record besides running
 * batches (c: producing, collecting, the callbacks). With P workers on P
 * cores, the caller's share competes with them (EXEC_FORK) or is time its
 * runner does not run records (EXEC_THREADS): the best speedup over one
 * thread running the records is about P w / (w + c).
 */
static void exec__insight(const exec_t *e, exec_stats_t *st, uint64_t worker_records)
{
    uint64_t recs = ck_pr_load_64(&e->caller_recs);
    if (worker_records)
        st->record_ns = st->busy_ns / worker_records;
    if (recs)
        st->caller_ns = ck_pr_load_64(&e->caller_cpu_ns) / recs;
    if (!st->record_ns || !recs)
        return;
    double w = (double)st->record_ns, c = (double)st->caller_ns;
    st->speedup_est = (double)st->workers * w / (w + c);
    if (st->speedup_est < 1.0)
        st->hints |= EXEC_HINT_SLOWER;
    if (st->speedup_est < 0.8 * (double)st->workers)
        st->hints |= EXEC_HINT_HANDOVER;
}

int exec_stats(const exec_t *ex, exec_stats_t *st)
{
    if (!ex || !st)
        return EXEC_EINVAL;
    exec_t *e = (exec_t *)ex;
    if (exec__refuse(e))
        return EXEC_ESTATE;
    memset(st, 0, sizeof *st);
    st->backend = e->backend;
    st->workers = e->opt.workers;
    /* Submissions stand still while the result counters are read: then no
     * record is counted delivered but not submitted, and in_flight (never
     * above the window) is exact as of that moment or lower. */
    exec__lock(&e->submit_lock);
    st->submitted = e->submitted;
    st->ok = ck_pr_load_64(&e->ok);
    st->user_errors = ck_pr_load_64(&e->user_errors);
    st->crashed = ck_pr_load_64(&e->crashed);
    st->timed_out = ck_pr_load_64(&e->timed_out);
    st->too_big = ck_pr_load_64(&e->too_big);
    st->cancelled = ck_pr_load_64(&e->cancelled);
    st->worker_errors = ck_pr_load_64(&e->worker_errors);
    exec__unlock(&e->submit_lock);
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
    uint64_t worker_records = 0;
    for (unsigned i = 0; i < e->opt.workers; i++) {
        exec_worker_stats_t ws;
        exec_worker_stats(e, i, &ws);
        st->busy_ns += ws.busy_ns;
        st->idle_ns += ws.idle_ns;
        worker_records += ws.records;
    }
    if (st->busy_ns + st->idle_ns)
        st->utilisation = (double)st->busy_ns / (double)(st->busy_ns + st->idle_ns);
    exec__insight(e, st, worker_records);
    return 0;
}

int exec_worker_stats(const exec_t *ex, unsigned i, exec_worker_stats_t *ws)
{
    if (!ex || !ws || i >= ex->opt.workers)
        return EXEC_EINVAL;
    if (exec__foreign(ex))
        return EXEC_ESTATE;
    memset(ws, 0, sizeof *ws);
    ws->index = i;
    if (ex->be->worker_stats)
        ex->be->worker_stats((exec_t *)ex, i, ws);
    return 0;
}
