/*
 * executor-bench --swap: exec_swap_context() to a new context every few ms
 * under full load; swap call latency, and throughput in 10 ms windows counted
 * at the workers and at the consumer (swap.csv). Every result is checked
 * against the context generation it reports.
 */
#include "harness.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SWAP_WINDOW_S 0.010
#define SWAP_MAX_GEN 1000000u
#define SWAP_SLOTS 4096u

/*
 * Progress counters the workers bump, one cache line each, in a MAP_SHARED
 * mapping so that fork workers' counts are seen too. A worker takes a slot in
 * worker_init (EXEC_FORK's later generations take new ones).
 */
struct sw_shared {
    uint32_t nslots;
    char pad[60];
    struct {
        uint64_t n;
        char pad[56];
    } slot[SWAP_SLOTS];
};

static struct sw_shared *sw_sh;
static uint64_t swap_released; /* contexts handed back by ctx_release */

static int sw_worker_init(void *ctx, void **ws)
{
    (void)ctx;
    uint32_t i = __atomic_fetch_add(&sw_sh->nslots, 1, __ATOMIC_RELAXED);
    *ws = &sw_sh->slot[i < SWAP_SLOTS ? i : SWAP_SLOTS - 1].n;
    return 0;
}

static int sw_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    uint64_t v = bench_classify(ctx, rec, len);
    __atomic_fetch_add((uint64_t *)ws, 1, __ATOMIC_RELAXED);
    return exec_write(out, &v, sizeof v);
}

static void sw_release(void *ctx)
{
    __atomic_fetch_add(&swap_released, 1, __ATOMIC_RELAXED);
    free(ctx);
}

static const exec_ops_t sw_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "bench-classify-swap",
    .process = sw_process,
    .worker_init = sw_worker_init,
    .ctx_release = sw_release,
};

struct swapper {
    exec_t *ex;
    const struct bench_table *t;
    uint64_t spin;
    uint64_t *salts; /* salts[g]: the salt of generation g */
    unsigned period_us;
    int stop; /* atomic */
    size_t nswaps;
    double *lat; /* swap call latency, seconds */
    size_t lat_cap;
    int err;
};

/* Swaps to a freshly built context every period_us until stopped. */
static void *swapper_main(void *arg)
{
    struct swapper *s = arg;
    while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE) && s->nswaps + 1 < SWAP_MAX_GEN &&
           s->nswaps < s->lat_cap) {
        usleep(s->period_us);
        struct bench_ctx *c = malloc(sizeof *c);
        if (!c) {
            s->err = EXEC_ENOMEM;
            break;
        }
        uint64_t g = s->nswaps + 1;
        c->t = s->t;
        c->spin = s->spin;
        c->salt = bench_mix64(g + 12345);
        s->salts[g] = c->salt;
        double t0 = bench_now();
        int rc = exec_swap_context(s->ex, c);
        s->lat[s->nswaps] = bench_now() - t0;
        if (rc) {
            free(c);
            s->err = rc;
            break;
        }
        s->nswaps++;
    }
    return NULL;
}

struct swmap {
    const struct dataset *d;
    const uint64_t *vals; /* the sequential loop's value of each record */
    const uint64_t *salts;
    size_t n, next, bad;
    size_t done; /* atomic: the sampler reads it */
    int ordered;
};

static int sw_read(void *arg, const void **rec, size_t *len, uint64_t *tag)
{
    struct swmap *m = arg;
    if (m->next >= m->n)
        return 0;
    const struct bench_rec *x = &m->d->recs[m->next % m->d->nrecs];
    *rec = x->p;
    *len = x->len;
    *tag = m->next++;
    return 1;
}

static int sw_emit(void *arg, const exec_result_t *res)
{
    struct swmap *m = arg;
    uint64_t v;
    if (res->status != 0 || res->len != sizeof v || res->generation >= SWAP_MAX_GEN ||
        res->tag >= m->n) {
        m->bad++;
    } else {
        memcpy(&v, res->data, sizeof v);
        /* Unsalted with its own generation's salt, it must be the sequential
         * value: one record saw one whole context. */
        if ((v ^ m->salts[res->generation]) != m->vals[res->tag % m->d->nrecs])
            m->bad++;
    }
    if (m->ordered && res->tag != m->done)
        m->bad++;
    __atomic_store_n(&m->done, m->done + 1, __ATOMIC_RELAXED);
    return 0;
}

/* Every 10 ms: records done by the workers (all, and the slowest of the first
 * `fixed` slots) and records delivered to the consumer. */
struct sampler {
    struct swmap *m;
    unsigned fixed; /* EXEC_THREADS: workers keep their slots for the whole run */
    int stop;       /* atomic */
    size_t cap, n;
    size_t *total, *slowest, *delivered;
};

static uint64_t sw_slot(unsigned i)
{
    return __atomic_load_n(&sw_sh->slot[i].n, __ATOMIC_RELAXED);
}

static void *sampler_main(void *arg)
{
    struct sampler *s = arg;
    uint64_t last_total = 0, last_del = 0, last[MAX_WORKERS] = {0};
    double t0 = bench_now();
    for (uint64_t k = 1; !__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE) && s->n < s->cap; k++) {
        double until = t0 + (double)k * SWAP_WINDOW_S, now = bench_now();
        if (until > now)
            usleep((useconds_t)((until - now) * 1e6));
        uint32_t ns = __atomic_load_n(&sw_sh->nslots, __ATOMIC_RELAXED);
        uint64_t total = 0, slowest = UINT64_MAX;
        for (uint32_t i = 0; i < ns && i < SWAP_SLOTS; i++)
            total += sw_slot(i);
        for (unsigned i = 0; i < s->fixed; i++) {
            uint64_t c = sw_slot(i);
            if (c - last[i] < slowest)
                slowest = c - last[i];
            last[i] = c;
        }
        uint64_t del = __atomic_load_n(&s->m->done, __ATOMIC_RELAXED);
        s->total[s->n] = total - last_total;
        s->slowest[s->n] = s->fixed ? slowest : 0;
        s->delivered[s->n] = del - last_del;
        s->n++;
        last_total = total;
        last_del = del;
    }
    return NULL;
}

static size_t count_zero(const size_t *v, size_t n)
{
    size_t z = 0;
    for (size_t i = 0; i < n; i++)
        z += v[i] == 0;
    return z;
}

/* Seconds n records should take on pw workers. */
static double secs_of(size_t n, double weight, unsigned pw)
{
    return (double)n * (weight > base_ns ? weight : base_ns) * 1e-9 / pw;
}

/*
 * One swap-mode run (with swaps or without): checks every result against the
 * sequential values and prints a line. Returns records/s, or -1 when the
 * backend is not available.
 */
static double swap_run(const struct opts *o, const struct dataset *d, exec_backend_t be,
                       unsigned pw, double weight, size_t n, const uint64_t *vals, int swaps,
                       FILE *csv)
{
    const char *name = exec_backend_name(be);
    uint64_t spin = spin_for(weight);
    size_t lat_cap = 200000, wcap = 100000;
    uint64_t *salts = calloc(SWAP_MAX_GEN, sizeof *salts);
    double *lat = malloc(lat_cap * sizeof *lat);
    size_t *win = malloc(3 * wcap * sizeof *win);
    struct bench_ctx *c0 = malloc(sizeof *c0);
    double rate = -1;
    exec_t *ex = NULL;
    if (!salts || !lat || !win || !c0) {
        fprintf(stderr, "executor-bench: swap: out of memory\n");
        failures++;
        goto out;
    }
    memset(sw_sh, 0, sizeof *sw_sh);
    c0->t = &d->table;
    c0->spin = spin;
    c0->salt = 0;
    exec_options_t opt;
    memset(&opt, 0, sizeof opt);
    opt.workers = pw;
    opt.flags = o->ordered ? EXEC_ORDERED : 0;
    swap_released = 0;
    int rc = exec_create(&ex, &sw_ops, c0, be, &opt);
    if (rc) {
        if (rc == EXEC_ENOTSUP) {
            say("%s: not available in this build\n", name);
        } else {
            fprintf(stderr, "executor-bench: swap: %s: exec_create: %s\n", name,
                    exec_strerror(rc));
            failures++;
        }
        goto out;
    }
    c0 = NULL; /* the executor releases it */
    struct swmap m;
    memset(&m, 0, sizeof m);
    m.d = d;
    m.vals = vals;
    m.salts = salts;
    m.n = n;
    m.ordered = o->ordered;
    struct swapper sw;
    memset(&sw, 0, sizeof sw);
    sw.ex = ex;
    sw.t = &d->table;
    sw.spin = spin;
    sw.salts = salts;
    sw.period_us = be == EXEC_FORK ? 50000 : 2000;
    sw.lat = lat;
    sw.lat_cap = lat_cap;
    struct sampler sa;
    memset(&sa, 0, sizeof sa);
    sa.m = &m;
    sa.fixed = be == EXEC_THREADS && pw <= MAX_WORKERS ? pw : 0;
    sa.cap = wcap;
    sa.total = win;
    sa.slowest = win + wcap;
    sa.delivered = win + 2 * wcap;
    pthread_t tsw, tsa;
    wd_arm(120 + 50 * secs_of(n, weight, pw), "swap: %s at %.0f ns", name, weight);
    pthread_create(&tsa, NULL, sampler_main, &sa);
    if (swaps)
        pthread_create(&tsw, NULL, swapper_main, &sw);
    double t0 = bench_now();
    rc = exec_map(ex, sw_read, &m, sw_emit, &m);
    double dt = bench_now() - t0;
    __atomic_store_n(&sw.stop, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&sa.stop, 1, __ATOMIC_RELEASE);
    if (swaps)
        pthread_join(tsw, NULL);
    pthread_join(tsa, NULL);
    exec_destroy(ex);
    wd_disarm();
    rate = (double)n / dt;
    if (rc || m.bad || m.done != n) {
        fprintf(stderr, "executor-bench: swap: %s: %s, %zu bad results, %zu of %zu delivered\n",
                name, rc ? exec_strerror(rc) : "ok", m.bad, (size_t)m.done, n);
        failures++;
    }
    if (sw.err && sw.err != EXEC_ENOTSUP) {
        fprintf(stderr, "executor-bench: swap: %s: exec_swap_context: %s\n", name,
                exec_strerror(sw.err));
        failures++;
    }
    if (swap_released != sw.nswaps + 1) {
        fprintf(stderr,
                "executor-bench: swap: %s: %llu contexts released for %zu swaps (want %zu)\n",
                name, (unsigned long long)swap_released, sw.nswaps, sw.nswaps + 1);
        failures++;
    }
    /* The last window is partial: leave it out. */
    size_t nw = sa.n > 1 ? sa.n - 1 : 0;
    size_t ztot = count_zero(sa.total, nw), zslow = sa.fixed ? count_zero(sa.slowest, nw) : 0,
           zdel = count_zero(sa.delivered, nw);
    char b[32];
    if (swaps && sw.err == EXEC_ENOTSUP) {
        say("%-8s %6.0f ns  exec_swap_context: not supported by this backend yet\n", name,
            weight);
    } else {
        qsort(lat, sw.nswaps, sizeof *lat, cmp_double);
        double p50 = percentile(lat, sw.nswaps, 0.5) * 1e6,
               p99 = percentile(lat, sw.nswaps, 0.99) * 1e6,
               mx = sw.nswaps ? lat[sw.nswaps - 1] * 1e6 : NAN;
        if (swaps)
            say("%-8s %6.0f ns  %6zu swaps  call us p50 %6.1f p99 %7.1f max %7.1f", name, weight,
                sw.nswaps, p50, p99, mx);
        else
            say("%-8s %6.0f ns  %6s swaps  %39s", name, weight, "no", "");
        say("  %9s rec/s  %4zu windows: empty %zu",
            fmt_rate(b, sizeof b, rate), nw, ztot);
        if (sa.fixed)
            say(", a worker idle %zu", zslow);
        say(", none delivered %zu%s\n", zdel, ztot ? "  STALLED" : "");
        char idle[24] = "";
        if (sa.fixed)
            snprintf(idle, sizeof idle, "%zu", zslow);
        fprintf(csv, "%s,%.0f,%u,%d,%zu,%.3f,%.3f,%.3f,%.0f,%zu,%zu,%s,%zu\n", name, weight, pw,
                swaps, sw.nswaps, p50, p99, mx, rate, nw, ztot, idle, zdel);
    }
out:
    free(c0);
    free(salts);
    free(lat);
    free(win);
    return rate;
}

void run_swap_mode(const struct opts *o, const struct dataset *d, const char *dir)
{
    unsigned pw = o->workers[o->nworkers - 1];
    char path[4096];
    snprintf(path, sizeof path, "%s/swap.csv", dir);
    FILE *csv = fopen(path, "w");
    uint64_t *vals = malloc(d->nrecs * sizeof *vals);
    sw_sh = mmap(NULL, sizeof *sw_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!csv || !vals || sw_sh == MAP_FAILED) {
        fprintf(stderr, "executor-bench: swap: cannot write %s or out of memory\n", path);
        failures++;
        free(vals);
        if (csv)
            fclose(csv);
        return;
    }
    fprintf(csv, "backend,weight_ns,workers,swapping,swaps,swap_p50_us,swap_p99_us,swap_max_us,"
                 "rate,windows,empty_windows,worker_idle_windows,undelivered_windows\n");
    double secs = o->quick ? 0.2 : 1.0;
    say("\n== swap: exec_swap_context() to a new context every 2 ms (fork: 50 ms) under full "
        "load; a new context\n   is a fresh object with its own salt over the same table. %u "
        "workers, about %.1f s a run, each run also\n   without swaps. In 10 ms windows: empty = "
        "no record done by any worker (a stall), a worker idle =\n   one worker did none, none "
        "delivered = the consumer got none\n",
        pw, secs);
    for (int wi = 0; wi < o->nweights; wi++) {
        double w = o->weights[wi];
        double per_ns = w > base_ns ? w : base_ns;
        size_t n = (size_t)(secs * pw * 1e9 / per_ns);
        if (n < 1000)
            n = 1000;
        size_t uniq = n < d->nrecs ? n : d->nrecs;
        struct bench_ctx ctx = {&d->table, spin_for(w), 0, o->init_ms};
        progress("swap: %.0f ns: sequential values of %zu records", w, uniq);
        for (size_t i = 0; i < uniq; i++)
            vals[i] = bench_classify(&ctx, d->recs[i].p, d->recs[i].len);
        exec_backend_t bes[2] = {EXEC_THREADS, EXEC_FORK};
        for (int b = 0; b < 2; b++) {
            int e = find_peer(exec_backend_name(bes[b]));
            if (e < 0 || !executors[e].selected || executors[e].notav)
                continue;
            progress("swap: %.0f ns: %s without swaps", w, exec_backend_name(bes[b]));
            double base = swap_run(o, d, bes[b], pw, w, n, vals, 0, csv);
            if (base < 0) {
                executors[e].notav = 1;
                continue;
            }
            progress("swap: %.0f ns: %s with swaps", w, exec_backend_name(bes[b]));
            double with = swap_run(o, d, bes[b], pw, w, n, vals, 1, csv);
            progress_clear();
            if (with > 0)
                say("%-8s %6.0f ns  rate with swaps / without: %.3f\n", exec_backend_name(bes[b]),
                    w, with / base);
        }
    }
    progress_clear();
    munmap(sw_sh, sizeof *sw_sh);
    free(vals);
    fclose(csv);
}

/* ------------------------------------------------------------------------- */
/* main                                                                      */
