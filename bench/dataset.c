/*
 * executor-bench: the data set. The context (a vocabulary and the hash table
 * word -> class weights), the records (built in, or the lines of a file), and
 * the calibration that turns a weight in ns into weight-loop iterations.
 */
#include "harness.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static uint64_t rng_next(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ull;
    return bench_mix64(*s);
}

/* Vocabulary of nwords random words and a table of 2 x nwords slots. */
int build_table(struct dataset *d, uint32_t nwords, uint64_t seed)
{
    uint64_t s = seed;
    d->nwords = nwords;
    d->vocab = malloc((size_t)nwords * 12);
    d->word_off = malloc((size_t)nwords * sizeof *d->word_off);
    uint64_t nslots = 1;
    while (nslots < 2ull * nwords)
        nslots <<= 1;
    d->table.mask = nslots - 1;
    d->table.bytes = nslots * sizeof *d->table.slots;
    /* Huge pages where the kernel allows them: a large read-only table is
     * what they are for, and without them TLB misses dominate the lookups. */
    size_t huge = (size_t)2 << 20;
    d->table.slots = aligned_alloc(huge, (d->table.bytes + huge - 1) & ~(huge - 1));
    if (d->table.slots) {
        madvise(d->table.slots, d->table.bytes, MADV_HUGEPAGE);
        memset(d->table.slots, 0, d->table.bytes);
    }
    if (!d->vocab || !d->word_off || !d->table.slots)
        return -1;
    size_t off = 0;
    for (uint32_t i = 0; i < nwords; i++) {
        uint64_t r = rng_next(&s);
        unsigned len = 3 + (unsigned)(r % 8);
        d->word_off[i] = (uint32_t)off;
        for (unsigned k = 0; k < len; k++) {
            d->vocab[off + k] = (char)('a' + (r >> 8) % 26);
            r = r * 6364136223846793005ull + 1;
        }
        d->vocab[off + len] = 0;
        uint64_t h = bench_word_hash(d->vocab + off, len);
        off += len + 1;
        uint64_t w = rng_next(&s);
        for (uint64_t j = h & d->table.mask;; j = (j + 1) & d->table.mask) {
            struct bench_slot *sl = &d->table.slots[j];
            if (sl->h == h)
                break; /* the same word again: keep the first */
            if (sl->h == 0) {
                sl->h = h;
                for (int k = 0; k < 4; k++)
                    sl->w[k] = (int16_t)((int)((w >> (16 * k)) % 201) - 100);
                break;
            }
        }
    }
    return 0;
}

/* n rows of 8 words. As in text, most words are common ones: seven in eight
 * come from the first 4096 (in cache), the rest from the whole vocabulary with
 * log-uniform ranks (often a cache miss). */
int build_records(struct dataset *d, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    d->arena = malloc(n * 8 * 12);
    d->recs = malloc(n * sizeof *d->recs);
    if (!d->arena || !d->recs)
        return -1;
    unsigned bits = 0;
    while ((1u << bits) < d->nwords)
        bits++;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        d->recs[i].p = d->arena + off;
        for (int w = 0; w < 8; w++) {
            uint64_t r = rng_next(&s);
            unsigned k = (r & 7) ? 12 : 1 + (unsigned)((r >> 3) % bits);
            uint32_t idx = (uint32_t)((r >> 8) & ((1ull << k) - 1)) % d->nwords;
            const char *word = d->vocab + d->word_off[idx];
            size_t len = strlen(word);
            memcpy(d->arena + off, word, len);
            off += len;
            d->arena[off++] = w == 7 ? '\n' : ',';
        }
        d->recs[i].len = (uint32_t)(d->arena + off - d->recs[i].p - 1);
    }
    d->nrecs = n;
    return 0;
}

/* Records are the non-empty lines of a file. */
int load_file(struct dataset *d, const char *path, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "executor-bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 20, len = 0;
    d->arena = malloc(cap);
    for (;;) {
        if (!d->arena)
            break;
        if (len == cap) {
            char *p = realloc(d->arena, cap * 2);
            if (!p) {
                free(d->arena);
                d->arena = NULL;
                break;
            }
            d->arena = p;
            cap *= 2;
        }
        size_t got = fread(d->arena + len, 1, cap - len, f);
        if (got == 0)
            break;
        len += got;
    }
    fclose(f);
    if (!d->arena)
        return -1;
    size_t n = 0, ncap = 1024;
    d->recs = malloc(ncap * sizeof *d->recs);
    for (size_t i = 0; i < len && n < max && d->recs;) {
        char *nl = memchr(d->arena + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - d->arena) : len;
        size_t l = e;
        if (l > i && d->arena[l - 1] == '\r')
            l--;
        if (l > i) {
            if (n == ncap) {
                struct bench_rec *p = realloc(d->recs, 2 * ncap * sizeof *p);
                if (!p)
                    break;
                d->recs = p;
                ncap *= 2;
            }
            d->recs[n].p = d->arena + i;
            d->recs[n].len = (uint32_t)(l - i);
            n++;
        }
        i = e + 1;
    }
    if (!d->recs)
        return -1;
    if (n == 0) {
        fprintf(stderr, "executor-bench: %s: no records (no non-empty line)\n", path);
        return -1;
    }
    d->nrecs = n;
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Calibration                                                               */
/* ------------------------------------------------------------------------- */

double ns_per_iter;
double base_ns;

/* CPU time of the calling thread: what a calibration pass cost, whatever else
 * ran on the machine meanwhile. */
static double thread_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Times the weight loop and the lookups alone, in CPU time, fastest of
 * several passes: a busy machine neither stretches nor shrinks the weights. */
void calibrate(const struct bench_table *t, const struct bench_rec *recs, size_t n)
{
    double best = 1e9;
    for (int k = 0; k < 9; k++) {
        double t0 = thread_cpu_now();
        uint64_t x = bench_spin(1u << 20, (uint64_t)k);
        double dt = thread_cpu_now() - t0;
        __asm__ volatile("" : : "r"(x));
        if (dt < best)
            best = dt;
    }
    ns_per_iter = best * 1e9 / (double)(1u << 20);

    struct bench_ctx c = {t, 0, 0, 0};
    struct bench_run r;
    memset(&r, 0, sizeof r);
    r.ctx = &c;
    r.recs = recs;
    r.n = n < 200000 ? n : 200000;
    run_seq(&r); /* warms the table */
    best = 1e9;
    for (int k = 0; k < 5; k++) {
        double t0 = thread_cpu_now();
        run_seq(&r);
        double dt = thread_cpu_now() - t0;
        if (dt < best)
            best = dt;
    }
    base_ns = best * 1e9 / (double)r.n;
}

uint64_t spin_for(double weight_ns)
{
    if (weight_ns <= base_ns)
        return 0;
    return (uint64_t)((weight_ns - base_ns) / ns_per_iter + 0.5);
}
