/*
 * Peer: oneTBB's parallel_pipeline as its documentation advises for a stream:
 * a serial in-order input stage cutting batches of 128 records, a parallel
 * classify stage that fills the batch's results, a serial out-of-order output
 * stage that visits each result (the consumer); 8 tokens (4 per thread past
 * two threads). As in oneTBB's own text-filter example, the input stage
 * allocates each batch and the output stage frees it. Threads are limited
 * with global_control plus a task_arena of P, in which the calling thread
 * counts as one of P.
 */
#include "bench.h"

#include <cstring>

#ifdef BENCH_HAVE_TBB
#include <new>

#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#include <tbb/parallel_pipeline.h>
#include <tbb/task_arena.h>

namespace {

const size_t kBatch = 128;

struct Batch {
    size_t begin, end;
    uint64_t v[kBatch]; /* v[i - begin]: record i's result */
};

} // namespace

extern "C" int bench_run_tbb(struct bench_run *r)
{
    const bench_rec *recs = r->recs;
    const bench_ctx *c = r->ctx;
    const size_t n = r->n;
    const int p = (int)r->workers;
    const size_t tokens = r->workers > 2 ? 4 * (size_t)r->workers : 8;

    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, (size_t)p);
    tbb::task_arena arena(p);
    /* Start the workers outside the timed part. */
    arena.execute([&] { tbb::parallel_for(0, 64 * p, [](int) {}); });

    uint64_t sum = 0;
    bool nomem = false;
    double t0 = bench_now(), c0 = bench_cpu();
    arena.execute([&] {
        size_t next = 0;
        tbb::parallel_pipeline(
            tokens,
            tbb::make_filter<void, Batch *>(tbb::filter_mode::serial_in_order,
                                            [&](tbb::flow_control &fc) -> Batch * {
                                                Batch *bt = nullptr;
                                                if (next < n)
                                                    bt = new (std::nothrow) Batch;
                                                if (!bt) {
                                                    nomem = next < n;
                                                    fc.stop();
                                                    return nullptr;
                                                }
                                                bt->begin = next;
                                                bt->end = next + kBatch < n ? next + kBatch : n;
                                                next = bt->end;
                                                return bt;
                                            }) &
                tbb::make_filter<Batch *, Batch *>(
                    tbb::filter_mode::parallel,
                    [&](Batch *bt) -> Batch * {
                        for (size_t i = bt->begin; i < bt->end; i++)
                            bt->v[i - bt->begin] = bench_classify(c, recs[i].p, recs[i].len);
                        return bt;
                    }) &
                tbb::make_filter<Batch *, void>(tbb::filter_mode::serial_out_of_order,
                                                [&](Batch *bt) {
                                                    for (size_t i = bt->begin; i < bt->end; i++)
                                                        sum += bench_sum_add(
                                                            i, bt->v[i - bt->begin]);
                                                    delete bt;
                                                }));
    });
    r->seconds = bench_now() - t0;
    r->cpu_s = bench_cpu() - c0;
    r->checksum = sum;
    if (nomem) {
        std::strcpy(r->err, "tbb: out of memory");
        return BENCH_FAIL;
    }
    return 0;
}

#else

extern "C" int bench_run_tbb(struct bench_run *r)
{
    std::strcpy(r->err, "tbb: not available in this build (libtbb-dev or C++ missing)");
    return BENCH_NOTAV;
}

#endif
