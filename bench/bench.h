/*
 * executor-bench: what every executor in the comparison shares. The same
 * records, the same classify function and the same checksum for all of them,
 * so that a difference in rate is a difference in the executor alone.
 *
 * Included from C and from C++ (the oneTBB peer), hence the plain inline code.
 */
#ifndef BENCH_H
#define BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <sys/resource.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One slot of the classifier's open-addressing table: word hash -> weights. */
struct bench_slot {
    uint64_t h; /* 0: empty */
    int16_t w[4];
};

/* The classifier context: a large read-only table, built once. */
struct bench_table {
    struct bench_slot *slots;
    uint64_t mask;
    size_t bytes;
};

/*
 * What process() is given: the table, the record weight (extra loop
 * iterations on top of the lookups) and a salt that tells contexts apart in
 * swap mode (0 otherwise).
 */
struct bench_ctx {
    const struct bench_table *t;
    uint64_t spin;
    uint64_t salt;
    unsigned init_ms; /* libexecutor runs: each worker_init sleeps this long */
};

/* One record: bytes somewhere in the record arena. */
struct bench_rec {
    const char *p;
    uint32_t len;
};

/*
 * One timed run of one executor. The runner sets up (threads, pools) outside
 * the timed part, processes recs[0..n) with bench_classify(), and fills
 * checksum (bench_sum_add over every record) and seconds (the timed part).
 */
struct bench_run {
    const struct bench_ctx *ctx;
    const struct bench_rec *recs;
    size_t n;
    unsigned workers;
    int ordered;
    unsigned recycle; /* EXEC_FORK: max_records_per_worker (0: none) */
    uint64_t checksum;
    double seconds;
    double cpu_s;  /* this process's CPU time over `seconds` (< 0: not measured) */
    char err[128]; /* why a runner returned non-zero */
};

/* Runner results besides 0. */
#define BENCH_FAIL (-1)  /* the run went wrong: err says why */
#define BENCH_NOTAV (-2) /* executor not available in this build: err says why */

typedef int (*bench_run_fn)(struct bench_run *r);

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time of every thread of this process so far, in s. */
static inline double bench_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static inline uint64_t bench_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* A record's share of the checksum: ties the result to the record's index,
 * and a sum of them does not depend on the order results come in. */
static inline uint64_t bench_sum_add(uint64_t idx, uint64_t v)
{
    return bench_mix64(idx * 0x9e3779b97f4a7c15ull + v);
}

/* The record weight: a dependent chain the compiler cannot shorten. */
static inline uint64_t bench_spin(uint64_t iters, uint64_t x)
{
    for (uint64_t i = 0; i < iters; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        __asm__ volatile("" : "+r"(x));
    }
    return x;
}

static inline int bench_is_sep(char c)
{
    return c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ';';
}

static inline uint64_t bench_word_hash(const char *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    return h | 1; /* never 0: 0 marks an empty slot */
}

/*
 * The classify function every executor runs: splits the record into words,
 * looks each up in the table, sums the class weights, picks the best class,
 * then runs the weight loop. Returns a value that depends on all of it.
 */
static inline uint64_t bench_classify(const struct bench_ctx *c, const char *p, size_t len)
{
    const struct bench_slot *slots = c->t->slots;
    uint64_t mask = c->t->mask;
    int32_t score[4] = {0, 0, 0, 0};
    uint64_t acc = 0;
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && !bench_is_sep(p[j]))
            j++;
        if (j > i) {
            uint64_t h = bench_word_hash(p + i, j - i);
            for (uint64_t s = h & mask;; s = (s + 1) & mask) {
                if (slots[s].h == h) {
                    for (int k = 0; k < 4; k++)
                        score[k] += slots[s].w[k];
                    break;
                }
                if (slots[s].h == 0) {
                    acc += h >> 60; /* an unknown word */
                    break;
                }
            }
        }
        i = j + 1;
    }
    int best = 0;
    for (int k = 1; k < 4; k++)
        if (score[k] > score[best])
            best = k;
    uint64_t v = (uint64_t)best | ((uint64_t)(uint32_t)score[best] << 8) | (acc << 40);
    return bench_spin(c->spin, v) ^ c->salt;
}

/* Peers in their own files; each returns 0, BENCH_FAIL or BENCH_NOTAV. */
int bench_run_mutex_pool(struct bench_run *r);
int bench_lat_mutex_pool(struct bench_run *r, double *samples, size_t n);
int bench_run_glib(struct bench_run *r);
int bench_lat_glib(struct bench_run *r, double *samples, size_t n);
int bench_run_omp_for(struct bench_run *r);
int bench_run_omp_task(struct bench_run *r);
int bench_run_tbb(struct bench_run *r);

#ifdef __cplusplus
}
#endif

#endif /* BENCH_H */
