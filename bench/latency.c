/*
 * executor-bench --latency: one record in flight at a time, submit-to-result
 * per executor (p50/p99/p99.9/max), to table.txt and latency.csv.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Latency through libexecutor: one record in flight at a time. */
static int exec_latency(struct bench_run *r, exec_backend_t backend, double *samples, size_t n)
{
    exec_t *ex;
    int rc = bench_exec_create(r, backend, 0, &ex);
    if (rc)
        return rc;
    uint64_t sum = 0;
    exec_result_t res;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct bench_rec *x = &r->recs[i % r->n];
        double t0 = bench_now();
        rc = exec_submit(ex, x->p, x->len, i);
        if (rc == 0)
            rc = exec_next(ex, &res, -1);
        samples[i] = bench_now() - t0;
        if (rc == 0 && (res.status != 0 || res.tag != i)) {
            rc = res.status ? res.status : EXEC_EWORKER;
        } else if (rc == 0) {
            uint64_t v;
            memcpy(&v, res.data, sizeof v);
            sum += v;
        }
    }
    exec_destroy(ex);
    r->checksum = sum;
    if (rc) {
        snprintf(r->err, sizeof r->err, "%s latency: %s", exec_backend_name(backend),
                 exec_strerror(rc));
        return BENCH_FAIL;
    }
    return 0;
}

int lat_threads(struct bench_run *r, double *s, size_t n)
{
    return exec_latency(r, EXEC_THREADS, s, n);
}

int lat_fork(struct bench_run *r, double *s, size_t n)
{
    return exec_latency(r, EXEC_FORK, s, n);
}

static int lat_seq(struct bench_run *r, double *s, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        const struct bench_rec *x = &r->recs[i % r->n];
        double t0 = bench_now();
        sum += bench_classify(r->ctx, x->p, x->len);
        s[i] = bench_now() - t0;
    }
    r->checksum = sum;
    return 0;
}

void run_latency(const struct opts *o, const struct dataset *d, const char *dir)
{
    unsigned pw = o->workers[o->nworkers - 1];
    size_t ns = o->quick ? 300 : 20000;
    double *s = malloc(ns * sizeof *s);
    char path[4096];
    snprintf(path, sizeof path, "%s/latency.csv", dir);
    FILE *f = fopen(path, "w");
    if (!s || !f) {
        fprintf(stderr, "executor-bench: latency: cannot write %s\n", path);
        failures++;
        free(s);
        if (f)
            fclose(f);
        return;
    }
    fprintf(f, "weight_ns,workers,executor,samples,p50_us,p99_us,p999_us,max_us\n");
    say("\n== latency: one record in flight at a time, %u workers, %zu records each; "
        "submit-to-result in us\n",
        pw, ns);
    struct {
        const char *name;
        bench_lat_fn fn;
        int e;
    } lat[NEXEC + 1];
    int nl = 0;
    lat[nl].name = "seq (the call)";
    lat[nl].fn = lat_seq;
    lat[nl++].e = -1;
    for (int e = 0; e < NEXEC; e++)
        if (executors[e].selected && executors[e].lat) {
            lat[nl].name = executors[e].name;
            lat[nl].fn = executors[e].lat;
            lat[nl++].e = e;
        }
    for (int wi = 0; wi < o->nweights; wi++) {
        struct bench_ctx ctx = {&d->table, spin_for(o->weights[wi]), 0, o->init_ms};
        say("weight %.0f ns\n%-16s %9s %9s %9s %9s\n", o->weights[wi], "executor", "p50",
            "p99", "p99.9", "max");
        for (int i = 0; i < nl; i++) {
            if (lat[i].e >= 0 && executors[lat[i].e].notav)
                continue;
            struct bench_run r;
            memset(&r, 0, sizeof r);
            r.ctx = &ctx;
            r.recs = d->recs;
            r.n = d->nrecs;
            r.workers = pw;
            progress("latency: %.0f ns: %s", o->weights[wi], lat[i].name);
            wd_arm(120, "latency: %s at %.0f ns", lat[i].name, o->weights[wi]);
            int rc = lat[i].fn(&r, s, ns);
            wd_disarm();
            if (rc == BENCH_NOTAV) {
                progress_clear();
                fprintf(stderr, "%s (going on without it)\n", r.err);
                executors[lat[i].e].notav = 1;
                continue;
            }
            if (rc) {
                note_failure(lat[i].name, &r, o->weights[wi], pw);
                continue;
            }
            qsort(s, ns, sizeof *s, cmp_double);
            double p50 = percentile(s, ns, 0.5) * 1e6, p99 = percentile(s, ns, 0.99) * 1e6,
                   p999 = percentile(s, ns, 0.999) * 1e6, mx = s[ns - 1] * 1e6;
            say("%-16s %9.2f %9.2f %9.2f %9.2f\n", lat[i].name, p50, p99, p999, mx);
            fprintf(f, "%.0f,%u,%s,%zu,%.3f,%.3f,%.3f,%.3f\n", o->weights[wi], pw,
                    lat[i].e < 0 ? "seq" : lat[i].name, ns, p50, p99, p999, mx);
        }
    }
    fclose(f);
    free(s);
    progress_clear();
}
