/*
 * executor-bench: the runners of our own executors (the sequential loop, the
 * static split, EXEC_THREADS and EXEC_FORK through libexecutor; the peers are
 * in peer_*.c) and the table of every executor the program can run.
 */
#include "harness.h"
#include "real.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Set by the fork runner after each run (workers == 0: none measured). */
struct fork_mem last_mem;

/* The library's own figures from the last run of each backend (threads, fork),
 * read while the pool is still up: utilisation, latency, per-worker counts. */
#define INS_MAX_WORKERS 64
struct insights {
    int valid;
    exec_stats_t st;
    unsigned nw;
    exec_worker_stats_t w[INS_MAX_WORKERS];
};
static struct insights last_ins[2];

static void insights_take(exec_t *ex, exec_backend_t backend)
{
    struct insights *in = &last_ins[backend == EXEC_FORK];
    if (exec_stats(ex, &in->st) != 0)
        return;
    in->nw = in->st.workers < INS_MAX_WORKERS ? in->st.workers : INS_MAX_WORKERS;
    for (unsigned i = 0; i < in->nw; i++)
        exec_worker_stats(ex, i, &in->w[i]);
    in->valid = 1;
}

void insights_print(exec_backend_t backend)
{
    struct insights *in = &last_ins[backend == EXEC_FORK];
    if (!in->valid)
        return;
    say("insights %s (last run): utilisation %.2f; latency p50 %.0f us, p99 %.0f us, "
        "p999 %.0f us (%llu samples); respawns %llu\n",
        exec_backend_name(backend), in->st.utilisation, in->st.lat_p50_ns / 1e3,
        in->st.lat_p99_ns / 1e3, in->st.lat_p999_ns / 1e3,
        (unsigned long long)in->st.lat_samples, (unsigned long long)in->st.respawns);
    for (unsigned i = 0; i < in->nw; i++) {
        const exec_worker_stats_t *w = &in->w[i];
        char pid[32] = "";
        if (w->pid)
            snprintf(pid, sizeof pid, " pid %d", w->pid);
        char mem[96] = "";
        if (w->pss_kb || w->private_dirty_kb)
            snprintf(mem, sizeof mem, "; PSS %.1f MB, private dirty %.1f MB",
                     w->pss_kb / 1024.0, w->private_dirty_kb / 1024.0);
        say("  worker %u%s: %llu records in %llu batches; busy %.1f ms, idle %.1f ms, "
            "startup %.2f ms; respawns crash/timeout/recycle/cancel %llu/%llu/%llu/%llu%s\n",
            i, pid, (unsigned long long)w->records, (unsigned long long)w->batches,
            w->busy_ns / 1e6, w->idle_ns / 1e6, w->startup_ns / 1e6,
            (unsigned long long)w->respawns_crash, (unsigned long long)w->respawns_timeout,
            (unsigned long long)w->respawns_recycle, (unsigned long long)w->respawns_cancel, mem);
    }
    in->valid = 0;
}

int run_seq(struct bench_run *r)
{
    const struct bench_rec *recs = r->recs;
    uint64_t sum = 0;
    double t0 = bench_now(), c0 = bench_cpu();
    for (size_t i = 0; i < r->n; i++)
        sum += bench_sum_add(i, bench_classify(r->ctx, recs[i].p, recs[i].len));
    r->seconds = bench_now() - t0;
    r->cpu_s = bench_cpu() - c0;
    r->checksum = sum;
    return 0;
}

/*
 * The hardware ceiling: each worker over a fixed share, no queue. Workers
 * write each result into an array; once they are joined, the caller reads
 * every result, as the OpenMP peers' callers do.
 */
struct static_arg {
    struct bench_run *r;
    size_t begin, end;
    uint64_t *res;
    pthread_barrier_t *bar;
};

static void *static_main(void *p)
{
    struct static_arg *a = p;
    pthread_barrier_wait(a->bar);
    for (size_t i = a->begin; i < a->end; i++)
        a->res[i] = bench_classify(a->r->ctx, a->r->recs[i].p, a->r->recs[i].len);
    return NULL;
}

static int run_static(struct bench_run *r)
{
    unsigned p = r->workers;
    struct static_arg *a = calloc(p, sizeof *a);
    pthread_t *tid = calloc(p, sizeof *tid);
    /* Its pages are touched before the clock: page faults are not the cost
     * being measured. */
    uint64_t *res = malloc(r->n * sizeof *res);
    pthread_barrier_t bar;
    if (!a || !tid || !res) {
        free(a);
        free(tid);
        free(res);
        strcpy(r->err, "static: out of memory");
        return BENCH_FAIL;
    }
    memset(res, 0, r->n * sizeof *res);
    pthread_barrier_init(&bar, NULL, p + 1);
    unsigned started = 0;
    for (unsigned i = 0; i < p; i++) {
        a[i].r = r;
        a[i].begin = r->n * i / p;
        a[i].end = r->n * (i + 1) / p;
        a[i].res = res;
        a[i].bar = &bar;
        if (pthread_create(&tid[i], NULL, static_main, &a[i]) != 0)
            break;
        started++;
    }
    if (started < p) {
        /* Cannot happen on a sane machine; the barrier would never open. */
        fprintf(stderr, "executor-bench: static: pthread_create failed\n");
        abort();
    }
    /* The clock starts before the barrier opens: no worker can start earlier. */
    double t0 = bench_now(), c0 = bench_cpu();
    pthread_barrier_wait(&bar);
    for (unsigned i = 0; i < p; i++)
        pthread_join(tid[i], NULL);
    uint64_t sum = 0;
    for (size_t i = 0; i < r->n; i++)
        sum += bench_sum_add(i, res[i]);
    r->seconds = bench_now() - t0;
    r->cpu_s = bench_cpu() - c0;
    r->checksum = sum;
    pthread_barrier_destroy(&bar);
    free(a);
    free(tid);
    free(res);
    return 0;
}

/* libexecutor: the classifier ops. The context is a struct bench_ctx. */
static int bx_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    uint64_t v = bench_classify(ctx, rec, len);
    return exec_write(out, &v, sizeof v);
}

/* A worker start as slow as asked (--init-ms): a model being loaded. */
static int bx_worker_init(void *ctx, void **ws)
{
    const struct bench_ctx *c = ctx;
    *ws = NULL;
    struct timespec ts = {(time_t)(c->init_ms / 1000), (long)(c->init_ms % 1000) * 1000000L};
    if (c->init_ms)
        nanosleep(&ts, NULL);
    return 0;
}

static const exec_ops_t bx_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "bench-classify",
    .process = bx_process,
    .worker_init = bx_worker_init,
};

struct xmap {
    const struct bench_run *r;
    size_t next, got, bad;
    uint64_t sum;
    int first_bad_status;
};

static int xm_read(void *arg, const void **rec, size_t *len, uint64_t *tag)
{
    struct xmap *m = arg;
    if (m->next >= m->r->n)
        return 0;
    const struct bench_rec *x = &m->r->recs[m->next];
    *rec = x->p;
    *len = x->len;
    *tag = m->next++;
    return 1;
}

static int xm_emit(void *arg, const exec_result_t *res)
{
    struct xmap *m = arg;
    uint64_t v;
    if (res->status != 0 || res->len != sizeof v || res->tag >= m->r->n) {
        if (!m->bad)
            m->first_bad_status = res->status;
        m->bad++;
    } else {
        memcpy(&v, res->data, sizeof v);
        m->sum += bench_sum_add(res->tag, v);
    }
    if (m->r->ordered && res->tag != m->got)
        m->bad++; /* out of order */
    m->got++;
    return 0;
}

/* An executor for run r: 0, or BENCH_NOTAV / BENCH_FAIL with r->err said. */
int bench_exec_create(struct bench_run *r, exec_backend_t backend, unsigned flags,
                             exec_t **ex)
{
    return bench_exec_create_buf(r, backend, flags, 0, ex);
}

int bench_exec_create_buf(struct bench_run *r, exec_backend_t backend, unsigned flags,
                          size_t buffer_size, exec_t **ex)
{
    exec_options_t o;
    memset(&o, 0, sizeof o);
    o.workers = r->workers;
    o.flags = flags;
    o.buffer_size = buffer_size;
    if (backend == EXEC_FORK)
        o.max_records_per_worker = r->recycle;
    int rc = exec_create(ex, &bx_ops, (void *)r->ctx, backend, &o);
    if (rc == EXEC_ENOTSUP) {
        snprintf(r->err, sizeof r->err, "%s: not available in this build",
                 exec_backend_name(backend));
        return BENCH_NOTAV;
    }
    if (rc) {
        snprintf(r->err, sizeof r->err, "%s: exec_create: %s", exec_backend_name(backend),
                 exec_strerror(rc));
        return BENCH_FAIL;
    }
    return 0;
}

static int xm_emit_many(void *arg, const exec_result_t *res, size_t n)
{
    for (size_t i = 0; i < n; i++)
        xm_emit(arg, &res[i]);
    return 0;
}

/* How a runner feeds the executor. */
enum { X_RUN, X_MAP, X_PER_RECORD, X_BUFFER, X_WARM };

/* X_BUFFER: the records and their array copied into exec_buffer() (a program
 * that reads its input straight there), then run once before the clock: a
 * program reuses its buffer, and a worker's first look at each page of it
 * costs a fault (docs/fork.md). NULL, with r->err said, when it cannot be. */
static exec_record_t *xb_fill(struct bench_run *r, exec_t *ex)
{
    size_t size = 0;
    char *buf = exec_buffer(ex, &size);
    size_t bytes = r->n * sizeof(exec_record_t);
    for (size_t i = 0; i < r->n; i++)
        bytes += r->recs[i].len;
    if (!buf || size < bytes) {
        snprintf(r->err, sizeof r->err, "exec_buffer: %zu bytes, %zu needed", size, bytes);
        return NULL;
    }
    exec_record_t *recs = (exec_record_t *)buf;
    char *at = buf + r->n * sizeof *recs;
    for (size_t i = 0; i < r->n; i++) {
        memcpy(at, r->recs[i].p, r->recs[i].len);
        recs[i] = (exec_record_t){at, r->recs[i].len, i};
        at += r->recs[i].len;
    }
    struct xmap m;
    memset(&m, 0, sizeof m);
    m.r = r;
    int rc = exec_run_records(ex, recs, r->n, xm_emit_many, &m);
    if (rc) {
        snprintf(r->err, sizeof r->err, "exec_run_records (warm-up): %s", exec_strerror(rc));
        return NULL;
    }
    return recs;
}

static int exec_runner(struct bench_run *r, exec_backend_t backend, int how)
{
    exec_t *ex;
    size_t bsize = 0;
    if (how == X_BUFFER) {
        bsize = 4096 + r->n * sizeof(exec_record_t);
        for (size_t i = 0; i < r->n; i++)
            bsize += r->recs[i].len;
    }
    int rc = bench_exec_create_buf(r, backend, r->ordered ? EXEC_ORDERED : 0, bsize, &ex);
    if (rc)
        return rc;
    struct xmap m;
    memset(&m, 0, sizeof m);
    m.r = r;
    exec_record_t *recs = NULL, *bufrecs = NULL;
    if (how == X_BUFFER) {
        bufrecs = xb_fill(r, ex);
        if (!bufrecs) {
            exec_destroy(ex);
            return BENCH_FAIL;
        }
    }
    if (how == X_RUN || how == X_WARM) {
        /* The records as the caller holds them: built before the clock, as
         * the peers' arrays are. */
        recs = malloc(r->n * sizeof *recs);
        if (!recs) {
            exec_destroy(ex);
            strcpy(r->err, "out of memory");
            return BENCH_FAIL;
        }
        for (size_t i = 0; i < r->n; i++)
            recs[i] = (exec_record_t){r->recs[i].p, r->recs[i].len, i};
    }
    if (how == X_WARM && recs) {
        /* A second pass: the executor has run the records once, before the
         * clock (its workers have seen the context's pages). */
        struct xmap wm;
        memset(&wm, 0, sizeof wm);
        wm.r = r;
        rc = exec_run_records(ex, recs, r->n, xm_emit_many, &wm);
        if (rc) {
            free(recs);
            exec_destroy(ex);
            snprintf(r->err, sizeof r->err, "exec_run_records (warm-up): %s", exec_strerror(rc));
            return BENCH_FAIL;
        }
    }
    double t0 = bench_now(), c0 = bench_cpu();
    if (how == X_RUN || how == X_WARM || how == X_BUFFER) {
        rc = exec_run_records(ex, how == X_BUFFER ? bufrecs : recs, r->n, xm_emit_many, &m);
    } else if (how == X_MAP) {
        rc = exec_map(ex, xm_read, &m, xm_emit, &m);
    } else {
        /* The loop of the header's example: submit, and when the window is
         * full, collect what is ready. */
        exec_result_t res;
        for (size_t i = 0; i < r->n && rc == 0; i++) {
            while ((rc = exec_try_submit(ex, r->recs[i].p, r->recs[i].len, i)) == EXEC_EAGAIN) {
                rc = exec_next(ex, &res, -1);
                if (rc)
                    break;
                xm_emit(&m, &res);
                while (exec_next(ex, &res, 0) == 0)
                    xm_emit(&m, &res);
            }
        }
        if (rc == 0)
            rc = exec_finish(ex);
        while (rc == 0 && (rc = exec_next(ex, &res, -1)) == 0)
            xm_emit(&m, &res);
        if (rc == EXEC_EOF)
            rc = 0;
    }
    r->seconds = bench_now() - t0;
    r->cpu_s = bench_cpu() - c0;
    r->checksum = m.sum;
    free(recs);
    if (backend == EXEC_FORK)
        workers_mem(&last_mem);
    if (how == X_RUN || how == X_WARM || how == X_BUFFER)
        insights_take(ex, backend);
    exec_destroy(ex);
    if (rc) {
        snprintf(r->err, sizeof r->err, "%s: %s",
                 how == X_MAP ? "exec_map" : how == X_PER_RECORD ? "exec_next" : "exec_run_records",
                 exec_strerror(rc));
        return BENCH_FAIL;
    }
    if (m.bad || m.got != r->n) {
        snprintf(r->err, sizeof r->err,
                 "%s: %zu of %zu results bad or out of order, %zu delivered (first status %s)",
                 exec_backend_name(backend), m.bad, r->n, m.got,
                 exec_err_name(m.first_bad_status));
        return BENCH_FAIL;
    }
    return 0;
}

static int run_threads(struct bench_run *r)
{
    return exec_runner(r, EXEC_THREADS, X_RUN);
}

static int run_threads_map(struct bench_run *r)
{
    return exec_runner(r, EXEC_THREADS, X_MAP);
}

static int run_threads_submit(struct bench_run *r)
{
    return exec_runner(r, EXEC_THREADS, X_PER_RECORD);
}

int run_fork(struct bench_run *r)
{
    return exec_runner(r, EXEC_FORK, X_RUN);
}

static int run_fork_map(struct bench_run *r)
{
    return exec_runner(r, EXEC_FORK, X_MAP);
}

static int run_fork_warm(struct bench_run *r)
{
    return exec_runner(r, EXEC_FORK, X_WARM);
}

static int run_fork_buffer(struct bench_run *r)
{
    return exec_runner(r, EXEC_FORK, X_BUFFER);
}

/* ------------------------------------------------------------------------- */
/* The executors                                                             */
/* ------------------------------------------------------------------------- */

struct executor executors[] = {
    {"static", "hardware ceiling: each worker over a fixed share, no queue", run_static, NULL,
     0, 0, 0, 0, 1, 0, ""},
    {"threads", "EXEC_THREADS via exec_run_records() (records in memory, not copied)",
     run_threads, lat_threads, 0, 1, 0, 1, 1, 0, ""},
    {"threads-map", "EXEC_THREADS via exec_map() (records from a callback, copied)",
     run_threads_map, NULL, 0, 1, 1, 1, 1, 0, ""},
    {"threads-submit", "EXEC_THREADS via exec_try_submit()/exec_next() per record",
     run_threads_submit, NULL, 0, 1, 1, 1, 1, 0, ""},
    {"fork", "EXEC_FORK via exec_run_records() (each record copied once to shared memory)",
     run_fork, lat_fork, 0, 1, 0, 1, 1, 0, ""},
    {"fork-map", "EXEC_FORK via exec_map()", run_fork_map, NULL, 0, 1, 1, 1, 1, 0, ""},
    {"fork-warm", "EXEC_FORK via exec_run_records(), the executor's second pass", run_fork_warm,
     NULL, 0, 1, 0, 1, 1, 0, ""},
    {"fork-buffer",
     "EXEC_FORK via exec_run_records(), records in exec_buffer() (not copied; second pass)",
     run_fork_buffer, NULL, 0, 1, 0, 1, 1, 0, ""},
    {"mutex", "mutex+condvar pool, one record per task (libuv threadpool.c style)",
     bench_run_mutex_pool, bench_lat_mutex_pool, 1, 0, 0, 0, 1, 0, ""},
    {"glib", "GLib GThreadPool, one record per task, results via GAsyncQueue", bench_run_glib,
     bench_lat_glib, 1, 0, 0, 0, 1, 0, ""},
    {"omp-for", "OpenMP parallel for schedule(dynamic,256)", bench_run_omp_for, NULL, 1, 0, 0,
     0, 1, 0, ""},
    {"omp-task", "OpenMP tasks over batches of 128", bench_run_omp_task, NULL, 1, 0, 0, 0, 1,
     0, ""},
    {"tbb", "oneTBB parallel_pipeline, batches of 128, 8 tokens", bench_run_tbb, NULL, 1, 0, 0,
     0, 1, 0, ""},
};
_Static_assert(sizeof executors / sizeof executors[0] == NEXEC, "NEXEC in harness.h");

int find_executor(const char *name, size_t len)
{
    for (int i = 0; i < NEXEC; i++)
        if (strlen(executors[i].name) == len && strncmp(executors[i].name, name, len) == 0)
            return i;
    return -1;
}

int select_executors(const char *list)
{
    for (int i = 0; i < NEXEC; i++)
        executors[i].selected = 0;
    const char *s = list;
    while (*s) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        int i = find_executor(s, len);
        if (i < 0 && real_path_known(s, len)) {
            s += len + (e ? 1 : 0);
            continue; /* a real workload's path (real.c) */
        }
        if (i < 0) {
            fprintf(stderr, "executor-bench: unknown executor '%.*s'\n", (int)len, s);
            return -1;
        }
        executors[i].selected = 1;
        s += len + (e ? 1 : 0);
    }
    return 0;
}

int find_peer(const char *name)
{
    int i = find_executor(name, strlen(name));
    return i;
}

const char *exec_label(int e, int ordered)
{
    static char buf[NEXEC][32];
    if (!ordered || !executors[e].takes_order)
        return executors[e].name;
    snprintf(buf[e], sizeof buf[e], "%s-ord", executors[e].name);
    return buf[e];
}
