/*
 * Peers: OpenMP as its users would write it (libgomp). Both write each
 * record's result into an array the caller owns; when the parallel region
 * ends, the caller reads every result (the consumer pass, in the timed part).
 *   omp-for:  parallel for, schedule(dynamic, 256).
 *   omp-task: one task per batch of 128 records created by a single thread.
 *             Not taskloop: libgomp runs a taskloop that would queue more than
 *             64 x threads tasks in the encountering thread alone.
 */
#include "bench.h"

#include <stdlib.h>
#include <string.h>

#ifdef BENCH_HAVE_OPENMP
#include <omp.h>

#define OMP_CHUNK 256
#define OMP_TASK_BATCH 128

/* The results array, its pages touched before the clock starts: a fresh
 * array's page faults are not the pool's cost. */
static uint64_t *omp_results(struct bench_run *r)
{
    uint64_t *res = malloc(r->n * sizeof *res);
    if (!res) {
        strcpy(r->err, "openmp: out of memory");
        return NULL;
    }
    memset(res, 0, r->n * sizeof *res);
    return res;
}

/* The consumer: every result, in the calling thread. */
static uint64_t omp_consume(const uint64_t *res, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += bench_sum_add(i, res[i]);
    return sum;
}

int bench_run_omp_for(struct bench_run *r)
{
    const struct bench_rec *recs = r->recs;
    const struct bench_ctx *c = r->ctx;
    long n = (long)r->n;
    int nt = (int)r->workers;
    uint64_t *res = omp_results(r);
    if (!res)
        return BENCH_FAIL;
    /* Start the team outside the timed part, as a long-running program would have. */
#pragma omp parallel num_threads(nt)
    {
    }
    double t0 = bench_now(), c0 = bench_cpu();
#pragma omp parallel for num_threads(nt) schedule(dynamic, OMP_CHUNK)
    for (long i = 0; i < n; i++)
        res[i] = bench_classify(c, recs[i].p, recs[i].len);
    r->checksum = omp_consume(res, r->n);
    r->seconds = bench_now() - t0;
    r->cpu_s = bench_cpu() - c0;
    free(res);
    return 0;
}

int bench_run_omp_task(struct bench_run *r)
{
    const struct bench_rec *recs = r->recs;
    const struct bench_ctx *c = r->ctx;
    size_t n = r->n;
    int nt = (int)r->workers;
    uint64_t *res = omp_results(r);
    if (!res)
        return BENCH_FAIL;
#pragma omp parallel num_threads(nt)
    {
    }
    double t0 = bench_now(), c0 = bench_cpu();
#pragma omp parallel num_threads(nt)
#pragma omp single
    {
        for (size_t b = 0; b < n; b += OMP_TASK_BATCH) {
            size_t e = b + OMP_TASK_BATCH < n ? b + OMP_TASK_BATCH : n;
#pragma omp task firstprivate(b, e)
            for (size_t i = b; i < e; i++)
                res[i] = bench_classify(c, recs[i].p, recs[i].len);
        }
    }
    /* The region's end waits for every task: all results are in. */
    r->checksum = omp_consume(res, n);
    r->seconds = bench_now() - t0;
    r->cpu_s = bench_cpu() - c0;
    free(res);
    return 0;
}

#else

int bench_run_omp_for(struct bench_run *r)
{
    strcpy(r->err, "openmp: not available in this build (no OpenMP compiler support)");
    return BENCH_NOTAV;
}

int bench_run_omp_task(struct bench_run *r)
{
    return bench_run_omp_for(r);
}

#endif
