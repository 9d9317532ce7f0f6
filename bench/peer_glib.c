/*
 * Peer: GLib's GThreadPool as its documentation shows it: one record per
 * g_thread_pool_push(), results handed back through a GAsyncQueue that the
 * caller pops.
 */
#include "bench.h"

#include <stdio.h>
#include <string.h>

#ifdef BENCH_HAVE_GLIB
#include <glib.h>

struct glib_job {
    const struct bench_run *r;
    uint64_t *vals;
    GAsyncQueue *done;
};

/* Task data is the record index + 1 (a NULL task cannot be pushed). */
static void glib_task(gpointer data, gpointer user)
{
    struct glib_job *j = user;
    size_t idx = GPOINTER_TO_SIZE(data) - 1;
    const struct bench_rec *rec = &j->r->recs[idx % j->r->n];
    j->vals[idx] = bench_classify(j->r->ctx, rec->p, rec->len);
    g_async_queue_push(j->done, data);
}

static GThreadPool *glib_start(struct glib_job *j, struct bench_run *r)
{
    GError *error = NULL;
    j->r = r;
    j->done = g_async_queue_new();
    GThreadPool *pool = g_thread_pool_new(glib_task, j, (gint)r->workers, TRUE, &error);
    if (!pool) {
        snprintf(r->err, sizeof r->err, "glib: %s", error ? error->message : "no pool");
        g_clear_error(&error);
        g_async_queue_unref(j->done);
    }
    return pool;
}

int bench_run_glib(struct bench_run *r)
{
    struct glib_job j;
    j.vals = g_new(uint64_t, r->n);
    GThreadPool *pool = glib_start(&j, r);
    if (!pool) {
        g_free(j.vals);
        return BENCH_FAIL;
    }
    double t0 = bench_now(), c0 = bench_cpu();
    for (size_t i = 0; i < r->n; i++)
        g_thread_pool_push(pool, GSIZE_TO_POINTER(i + 1), NULL);
    uint64_t sum = 0;
    for (size_t i = 0; i < r->n; i++) {
        size_t idx = GPOINTER_TO_SIZE(g_async_queue_pop(j.done)) - 1;
        sum += bench_sum_add(idx, j.vals[idx]);
    }
    r->seconds = bench_now() - t0;
    r->cpu_s = bench_cpu() - c0;
    r->checksum = sum;
    g_thread_pool_free(pool, FALSE, TRUE);
    g_async_queue_unref(j.done);
    g_free(j.vals);
    return 0;
}

int bench_lat_glib(struct bench_run *r, double *samples, size_t n)
{
    struct glib_job j;
    j.vals = g_new(uint64_t, n);
    GThreadPool *pool = glib_start(&j, r);
    if (!pool) {
        g_free(j.vals);
        return BENCH_FAIL;
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        double t0 = bench_now();
        g_thread_pool_push(pool, GSIZE_TO_POINTER(i + 1), NULL);
        size_t idx = GPOINTER_TO_SIZE(g_async_queue_pop(j.done)) - 1;
        samples[i] = bench_now() - t0;
        sum += j.vals[idx];
    }
    r->checksum = sum;
    g_thread_pool_free(pool, FALSE, TRUE);
    g_async_queue_unref(j.done);
    g_free(j.vals);
    return 0;
}

#else

int bench_run_glib(struct bench_run *r)
{
    strcpy(r->err, "glib: not available in this build (libglib2.0-dev missing)");
    return BENCH_NOTAV;
}

int bench_lat_glib(struct bench_run *r, double *samples, size_t n)
{
    (void)samples;
    (void)n;
    return bench_run_glib(r);
}

#endif
