/*
 * Peers: OpenMP as its users would write it (libgomp).
 *   omp-for:  parallel for, schedule(dynamic, 256), a reduction for the checksum.
 *   omp-task: one task per batch of 128 records created by a single thread.
 *             Not taskloop: libgomp runs a taskloop that would queue more than
 *             64 x threads tasks in the encountering thread alone.
 */
#include "bench.h"

#include <string.h>

#ifdef BENCH_HAVE_OPENMP
#include <omp.h>

#define OMP_CHUNK 256
#define OMP_TASK_BATCH 128

int bench_run_omp_for(struct bench_run *r)
{
    const struct bench_rec *recs = r->recs;
    const struct bench_ctx *c = r->ctx;
    long n = (long)r->n;
    uint64_t sum = 0;
    int nt = (int)r->workers;
    /* Start the team outside the timed part, as a long-running program would have. */
#pragma omp parallel num_threads(nt)
    {
    }
    double t0 = bench_now();
#pragma omp parallel for num_threads(nt) schedule(dynamic, OMP_CHUNK) reduction(+ : sum)
    for (long i = 0; i < n; i++)
        sum += bench_sum_add((uint64_t)i, bench_classify(c, recs[i].p, recs[i].len));
    r->seconds = bench_now() - t0;
    r->checksum = sum;
    return 0;
}

int bench_run_omp_task(struct bench_run *r)
{
    const struct bench_rec *recs = r->recs;
    const struct bench_ctx *c = r->ctx;
    size_t n = r->n;
    uint64_t sum = 0;
    int nt = (int)r->workers;
#pragma omp parallel num_threads(nt)
    {
    }
    double t0 = bench_now();
#pragma omp parallel num_threads(nt)
#pragma omp single
    {
        for (size_t b = 0; b < n; b += OMP_TASK_BATCH) {
            size_t e = b + OMP_TASK_BATCH < n ? b + OMP_TASK_BATCH : n;
#pragma omp task firstprivate(b, e) shared(sum)
            {
                uint64_t part = 0;
                for (size_t i = b; i < e; i++)
                    part += bench_sum_add(i, bench_classify(c, recs[i].p, recs[i].len));
#pragma omp atomic
                sum += part;
            }
        }
    }
    r->seconds = bench_now() - t0;
    r->checksum = sum;
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
