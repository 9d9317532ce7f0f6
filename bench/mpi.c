/*
 * executor-bench-mpi: EXEC_MPI against EXEC_FORK on one machine, with
 * executor-bench's records, classify function and weights (dataset.c,
 * bench.h). Run it under mpirun (scripts/bench-mpi.sh does):
 *
 *     mpirun -np 3 --oversubscribe executor-bench-mpi [--quick] [--weight LIST]
 *
 * Rank 0 runs the sequential loop, EXEC_FORK with W workers, and EXEC_MPI
 * over the worker ranks (W in all: each rank runs --rank-workers EXEC_FORK
 * workers of its own), all through exec_run_records() on the same records,
 * and checks every checksum against the sequential loop's. Each worker rank
 * builds the context itself from the spec (words, seed, weight loop).
 * Then, at the lightest weight, EXEC_MPI again at two batch sizes: the
 * overhead per record (worker time) is a + b / batch, which gives the cost
 * per batch b and per record a; and one record at a time, for a batch's
 * round trip. Last, a paper estimate for N hosts (docs/mpi.md says how).
 */
#include "harness.h"
#include "executor_mpi.h"

#include <getopt.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define MB_MAXW 16

extern double base_ns, ns_per_iter;

/* dataset.c's calibration runs the sequential loop. */
int run_seq(struct bench_run *r)
{
    uint64_t sum = 0;
    double t0 = bench_now(), c0 = bench_cpu();
    for (size_t i = 0; i < r->n; i++)
        sum += bench_sum_add(i, bench_classify(r->ctx, r->recs[i].p, r->recs[i].len));
    r->seconds = bench_now() - t0;
    r->cpu_s = bench_cpu() - c0;
    r->checksum = sum;
    return 0;
}

/* ------------------------------------------------------------------------- */
/* The classifier, built from a spec on every rank                           */
/* ------------------------------------------------------------------------- */

/* The table is the same for every spec of a run: built once per process. */
static struct dataset mb_data;
static uint32_t mb_words;

static int mb_build(const char *spec, const exec_csv_header_t *h, void **ctx, char *err,
                    size_t errlen)
{
    (void)h;
    unsigned long long words, spin;
    if (sscanf(spec, "words=%llu,spin=%llu", &words, &spin) != 2 || !words) {
        snprintf(err, errlen, "expected words=N,spin=K, not '%s'", spec);
        return -1;
    }
    if (mb_words != words) {
        if (mb_words) {
            snprintf(err, errlen, "one table size per run");
            return -1;
        }
        if (build_table(&mb_data, (uint32_t)words, 42) != 0) {
            snprintf(err, errlen, "out of memory for the table");
            return -1;
        }
        mb_words = (uint32_t)words;
    }
    struct bench_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->t = &mb_data.table;
    c->spin = spin;
    *ctx = c;
    return 0;
}

static void mb_free(void *ctx) { free(ctx); }

static int mb_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    uint64_t v = bench_classify(ctx, rec, len);
    return exec_write(out, &v, sizeof v);
}

static const exec_ops_t mb_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "bench-classify",
    .process = mb_process,
};

static const exec_plugin_t mb_plugin = {.abi = EXEC_PLUGIN_ABI, .name = "bench-classify",
                                        .ops = &mb_ops, .ctx_build = mb_build,
                                        .ctx_free = mb_free};

/* ------------------------------------------------------------------------- */
/* Runs (rank 0)                                                             */
/* ------------------------------------------------------------------------- */

struct mb_opts {
    double weights[MAX_WEIGHTS];
    int nweights;
    size_t records;
    int runs;
    unsigned rank_workers;
    unsigned ranks;
    unsigned host_cores;
    double net_gbps;
    int quick;
};

struct mb_run {
    double seconds, host_cpu;
    uint64_t checksum, batches;
    int rc;
    char err[256];
};

static int mb_emit(void *arg, const exec_result_t *res, size_t n)
{
    uint64_t *sum = arg;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = UINT64_MAX;
        if (res[i].status == 0 && res[i].len == sizeof v)
            memcpy(&v, res[i].data, sizeof v);
        *sum += bench_sum_add(res[i].tag, v);
    }
    return 0;
}

static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) * 1e-6;
}

/* One run of recs[0..n) on backend: EXEC_FORK with workers, or EXEC_MPI. */
static struct mb_run mb_one(exec_backend_t backend, const struct mb_opts *o, uint64_t spin,
                            unsigned batch, const exec_record_t *recs, size_t n)
{
    struct mb_run r = {0};
    char spec[64];
    snprintf(spec, sizeof spec, "words=%u,spin=%llu", mb_words, (unsigned long long)spin);
    exec_options_t eo = {.batch = batch, .err = r.err, .errlen = sizeof r.err};
    void *ctx = NULL;
    if (backend == EXEC_MPI) {
        eo.plugin = &mb_plugin;
        eo.spec = spec;
        eo.workers = o->ranks;
        eo.rank_workers = o->rank_workers;
        eo.rank_backend = EXEC_FORK;
    } else {
        eo.workers = o->ranks * o->rank_workers;
        mb_build(spec, NULL, &ctx, r.err, sizeof r.err);
    }
    exec_t *ex;
    r.rc = exec_create(&ex, &mb_ops, ctx, backend, &eo);
    if (r.rc) {
        mb_free(ctx);
        return r;
    }
    double c0 = cpu_now(), t0 = bench_now();
    r.rc = exec_run_records(ex, recs, n, mb_emit, &r.checksum);
    r.seconds = bench_now() - t0;
    r.host_cpu = cpu_now() - c0;
    exec_stats_t st;
    exec_stats(ex, &st);
    r.batches = st.batches;
    exec_destroy(ex);
    mb_free(ctx);
    return r;
}

/* The median of k runs (by time); every checksum must be the sequential
 * loop's. */
static int mb_median(exec_backend_t backend, const struct mb_opts *o, uint64_t spin,
                     unsigned batch, const exec_record_t *recs, size_t n, uint64_t want,
                     struct mb_run *out)
{
    struct mb_run runs[MAX_RUNS];
    int k = o->runs;
    for (int i = 0; i < k; i++) {
        runs[i] = mb_one(backend, o, spin, batch, recs, n);
        if (runs[i].rc || runs[i].checksum != want) {
            fprintf(stderr, "executor-bench-mpi: %s: %s%s\n", exec_backend_name(backend),
                    runs[i].rc ? exec_strerror(runs[i].rc) : "checksum differs from the "
                                                             "sequential loop's",
                    runs[i].err[0] ? runs[i].err : "");
            return -1;
        }
    }
    for (int i = 1; i < k; i++)
        for (int j = i; j > 0 && runs[j].seconds < runs[j - 1].seconds; j--) {
            struct mb_run t = runs[j];
            runs[j] = runs[j - 1];
            runs[j - 1] = t;
        }
    *out = runs[k / 2];
    return 0;
}

/* One record at a time: a batch's round trip, host to rank and back. */
static double mb_round_trip(const struct mb_opts *o, const exec_record_t *recs, size_t n)
{
    char spec[64], err[256] = "";
    snprintf(spec, sizeof spec, "words=%u,spin=0", mb_words);
    exec_options_t eo = {.plugin = &mb_plugin, .spec = spec, .workers = 1,
                         .rank_workers = 1, .rank_backend = EXEC_FORK, .err = err,
                         .errlen = sizeof err};
    exec_t *ex;
    if (exec_create(&ex, &mb_ops, NULL, EXEC_MPI, &eo) != 0)
        return -1;
    exec_result_t res;
    double t0 = 0;
    size_t k = n < 3000 ? n : 3000;
    for (size_t i = 0; i < k; i++) {
        if (i == 200)
            t0 = bench_now(); /* after a warm-up */
        exec_submit(ex, recs[i].data, recs[i].len, i);
        exec_next(ex, &res, -1);
    }
    double per = (bench_now() - t0) / (double)(k - 200);
    exec_destroy(ex);
    return per;
}

/* ------------------------------------------------------------------------- */
/* The report                                                                */
/* ------------------------------------------------------------------------- */

/* Worker time per record beyond the sequential loop's: (1/rate - 1/ideal) x W. */
static double mb_ovh_ns(double seconds, size_t n, unsigned w, double seq_ns)
{
    return (seconds * 1e9 / (double)n) * w - seq_ns;
}

static int mb_host(const struct mb_opts *o)
{
    struct dataset d;
    memset(&d, 0, sizeof d);
    uint32_t words = o->quick ? 1u << 14 : 1u << 20;
    char spec[64], err[256];
    snprintf(spec, sizeof spec, "words=%u,spin=0", words);
    void *probe;
    if (mb_build(spec, NULL, &probe, err, sizeof err) != 0) { /* the shared table */
        fprintf(stderr, "executor-bench-mpi: %s\n", err);
        return 1;
    }
    mb_free(probe);
    d.table = mb_data.table;
    d.vocab = mb_data.vocab;
    d.word_off = mb_data.word_off;
    d.nwords = mb_data.nwords;
    if (build_records(&d, o->records, 7) != 0) {
        fprintf(stderr, "executor-bench-mpi: out of memory for the records\n");
        return 1;
    }
    calibrate(&d.table, d.recs, d.nrecs);
    exec_record_t *recs = malloc(d.nrecs * sizeof *recs);
    if (!recs)
        return 1;
    double avg_len = 0;
    for (size_t i = 0; i < d.nrecs; i++) {
        recs[i] = (exec_record_t){d.recs[i].p, d.recs[i].len, i};
        avg_len += d.recs[i].len;
    }
    avg_len /= (double)d.nrecs;
    unsigned w = o->ranks * o->rank_workers;
    printf("executor-bench-mpi: %zu records (%.1f bytes on average), table of %u words; "
           "lookups %.0f ns/record, weight loop %.2f ns/iteration\n",
           d.nrecs, avg_len, d.nwords, base_ns, ns_per_iter);
    printf("EXEC_FORK: %u workers in rank 0. EXEC_MPI: %u worker ranks x %u EXEC_FORK "
           "workers; rank 0 hosts. Median of %d runs, exec_run_records(), each backend's\n"
           "default batch (EXEC_FORK 128; EXEC_MPI up to 1024, about 1 ms of a rank's work).\n\n",
           w, o->ranks, o->rank_workers, o->runs);
    printf("%9s %9s | %11s %6s | %11s %6s %9s %9s | %9s %7s %8s\n", "weight", "seq ns",
           "fork rec/s", "eff", "mpi rec/s", "eff", "ovh ns", "vs fork", "host ns", "batch",
           "mpi/fork");
    double light_host = 0, light_batch = 1000;
    for (int k = 0; k < o->nweights; k++) {
        uint64_t spin = spin_for(o->weights[k]);
        struct bench_ctx c = {&d.table, spin, 0, 0};
        /* About a second of work per run on W workers, within [20000, records]. */
        struct bench_run sr = {.ctx = &c, .recs = d.recs, .n = d.nrecs};
        sr.n = d.nrecs < 20000 ? d.nrecs : 20000;
        run_seq(&sr);
        double seq_ns = sr.seconds * 1e9 / (double)sr.n;
        size_t n = (size_t)(1e9 * w / seq_ns);
        n = n < 20000 ? 20000 : n > d.nrecs ? d.nrecs : n;
        if (o->quick)
            n = d.nrecs;
        sr.n = n;
        run_seq(&sr);
        seq_ns = sr.seconds * 1e9 / (double)n;
        struct mb_run f, m;
        if (mb_median(EXEC_FORK, o, spin, 0, recs, n, sr.checksum, &f) ||
            mb_median(EXEC_MPI, o, spin, 0, recs, n, sr.checksum, &m))
            return 1;
        double fr = (double)n / f.seconds, mr = (double)n / m.seconds;
        double ideal = 1e9 / seq_ns * w;
        printf("%7.0f ns %9.0f | %11.0f %6.2f | %11.0f %6.2f %9.0f %+9.0f | %9.0f %7.0f %8.2f\n",
               o->weights[k], seq_ns, fr, fr / ideal, mr, mr / ideal,
               mb_ovh_ns(m.seconds, n, w, seq_ns),
               mb_ovh_ns(m.seconds, n, w, seq_ns) - mb_ovh_ns(f.seconds, n, w, seq_ns),
               m.host_cpu * 1e9 / (double)n, (double)n / (double)m.batches, mr / fr);
        if (k == 0) {
            light_host = m.host_cpu * 1e9 / (double)n;
            light_batch = (double)n / (double)m.batches;
        }
    }
    printf("\n  ovh ns: worker time per record beyond the sequential loop's, (1/rate - "
           "1/ideal) x %u;\n  vs fork: the same less EXEC_FORK's; host ns: rank 0's CPU "
           "time per record (the executor's\n  progress thread and the caller); batch: "
           "records per EXEC_MPI batch, on average.\n\n", w);

    /* Per batch and per record, at the lightest weight: overhead(B) = a + b / B. */
    uint64_t spin = spin_for(o->weights[0]);
    struct bench_ctx c = {&d.table, spin, 0, 0};
    size_t n = d.nrecs;
    struct bench_run sr = {.ctx = &c, .recs = d.recs, .n = n};
    run_seq(&sr);
    double seq_ns = sr.seconds * 1e9 / (double)n;
    const unsigned b1 = 16, b2 = 512;
    struct mb_run m1, m2;
    if (mb_median(EXEC_MPI, o, spin, b1, recs, n, sr.checksum, &m1) ||
        mb_median(EXEC_MPI, o, spin, b2, recs, n, sr.checksum, &m2))
        return 1;
    double o1 = mb_ovh_ns(m1.seconds, n, w, seq_ns), o2 = mb_ovh_ns(m2.seconds, n, w, seq_ns);
    double per_batch = (o1 - o2) / (1.0 / b1 - 1.0 / b2), per_rec = o2 - per_batch / b2;
    double h1 = m1.host_cpu * 1e9 / (double)n, h2 = m2.host_cpu * 1e9 / (double)n;
    double host_batch = (h1 - h2) / (1.0 / b1 - 1.0 / b2), host_rec = h2 - host_batch / b2;
    double rt = mb_round_trip(o, recs, n);
    printf("EXEC_MPI at %.0f ns (batch %u: %.0f rec/s, overhead %.0f ns/record; batch %u: "
           "%.0f rec/s, %.0f ns/record):\n", o->weights[0], b1, n / m1.seconds, o1, b2,
           n / m2.seconds, o2);
    printf("  worker time: %.1f us per batch + %.0f ns per record\n", per_batch / 1e3, per_rec);
    printf("  rank 0 CPU:  %.1f us per batch + %.0f ns per record\n", host_batch / 1e3,
           host_rec);
    printf("  one record at a time: %.0f us a round trip (host, rank, back)\n\n", rt * 1e6);

    /* On paper: N hosts of P cores, one rank each, behind rank 0 (docs/mpi.md).
     * Out of rank 0 go each record's bytes, its length and flag (5) and a share
     * of the BATCH header (40) and framing; back come a result entry (32), the
     * result (8) and a share of the RESULT header (72). Full duplex: the
     * busier direction is the limit. */
    double out = avg_len + 5 + 40 / light_batch, back = 32 + 8 + 72 / light_batch;
    double wire = out > back ? out : back;
    double host_cap = 1e9 / (light_host > 0 ? light_host : 1);
    double net_cap = o->net_gbps * 1e9 / 8 / wire;
    double rank_ns = per_rec + per_batch / light_batch;
    printf("On paper, N hosts x %u cores, one rank each, %.0f Gb/s to rank 0: per record "
           "%.0f bytes out, %.0f back;\nrank 0 carries at most %.3g rec/s (its CPU, %.0f "
           "ns/record) and its link %.3g rec/s; a rank\nadds %.0f ns of worker time per "
           "record (%.0f + %.1f us per batch of %.0f)\n",
           o->host_cores, o->net_gbps, out, back, host_cap, light_host, net_cap, rank_ns,
           per_rec, per_batch / 1e3, light_batch);
    printf("%9s", "weight");
    static const unsigned ns_[] = {1, 2, 4, 8, 16, 32, 64};
    for (size_t i = 0; i < sizeof ns_ / sizeof ns_[0]; i++)
        printf(" %9s%-3u", "N=", ns_[i]);
    printf("\n");
    for (int k = 0; k < o->nweights; k++) {
        double t = o->weights[k] > base_ns ? o->weights[k] : base_ns;
        /* A host's P cores at the record's cost plus what EXEC_MPI adds per
         * record, capped by rank 0's CPU and link. */
        double per_host = o->host_cores * 1e9 / (t + rank_ns);
        printf("%7.0f ns", o->weights[k]);
        for (size_t i = 0; i < sizeof ns_ / sizeof ns_[0]; i++) {
            double r = per_host * ns_[i];
            r = r < host_cap ? r : host_cap;
            r = r < net_cap ? r : net_cap;
            printf(" %12.3g", r);
        }
        printf("\n");
    }
    free(recs);
    return 0;
}

/* ------------------------------------------------------------------------- */

static void mb_usage(FILE *f)
{
    fprintf(f, "usage: mpirun -np 1+R executor-bench-mpi [--quick] [--weight NS,...] "
               "[--records N]\n"
               "         [--runs K] [--rank-workers N] [--host-cores P] [--net-gbps G]\n"
               "EXEC_MPI over R worker ranks against EXEC_FORK, both with R x N workers\n"
               "(default N = 1), on the same records; then a paper estimate for hosts of P\n"
               "cores (default 32) with G Gb/s to rank 0 (default 10).\n");
}

static int mb_parse(int argc, char **argv, struct mb_opts *o)
{
    static const double dflt[] = {100, 300, 1000, 5000, 20000};
    *o = (struct mb_opts){.records = 1000000, .runs = 3, .rank_workers = 1, .host_cores = 32,
                          .net_gbps = 10};
    static const struct option lo[] = {
        {"quick", no_argument, NULL, 'q'},        {"weight", required_argument, NULL, 'w'},
        {"records", required_argument, NULL, 'n'}, {"runs", required_argument, NULL, 'r'},
        {"rank-workers", required_argument, NULL, 'k'},
        {"host-cores", required_argument, NULL, 'p'},
        {"net-gbps", required_argument, NULL, 'g'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'q': o->quick = 1; break;
        case 'w':
            o->nweights = 0;
            for (char *s = optarg, *e; *s && o->nweights < MAX_WEIGHTS; s = *e ? e + 1 : e) {
                o->weights[o->nweights++] = strtod(s, &e);
                if (e == s)
                    return 2;
            }
            break;
        case 'n': o->records = strtoul(optarg, NULL, 10); break;
        case 'r': o->runs = atoi(optarg); break;
        case 'k': o->rank_workers = (unsigned)atoi(optarg); break;
        case 'p': o->host_cores = (unsigned)atoi(optarg); break;
        case 'g': o->net_gbps = strtod(optarg, NULL); break;
        case 'h': mb_usage(stdout); return 1;
        default: mb_usage(stderr); return 2;
        }
    }
    if (!o->nweights) {
        o->nweights = (int)(sizeof dflt / sizeof dflt[0]);
        memcpy(o->weights, dflt, sizeof dflt);
    }
    if (o->quick) {
        o->records = 20000;
        o->runs = 1;
        o->nweights = o->nweights > 2 ? 2 : o->nweights;
    }
    if (o->records < 1000 || o->runs < 1 || o->runs > MAX_RUNS || o->rank_workers < 1 ||
        o->rank_workers > MB_MAXW || o->host_cores < 1 || o->net_gbps <= 0)
        return 2;
    return 0;
}

int main(int argc, char **argv)
{
    int provided, rank, size;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    struct mb_opts o;
    int rc = mb_parse(argc, argv, &o);
    if (rc) { /* every rank parsed the same line; --help needs no mpirun */
        MPI_Finalize();
        return rc == 1 ? 0 : 2;
    }
    if (exec_mpi_check(&rank, &size) != 0 || size < 2) {
        fprintf(stderr, "executor-bench-mpi: run under mpirun with 2 ranks or more and "
                        "MPI_THREAD_SERIALIZED\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    o.ranks = (unsigned)size - 1;
    if (rank == 0) {
        rc = mb_host(&o);
        exec_mpi_dismiss();
    } else {
        char err[256];
        int s;
        while ((s = exec_mpi_serve(&mb_plugin, err, sizeof err)) != EXEC_EOF)
            if (s) {
                fprintf(stderr, "executor-bench-mpi: rank %d: %s\n", rank, err);
                rc = 1;
            }
    }
    MPI_Finalize();
    return rc;
}
