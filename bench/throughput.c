/*
 * executor-bench's default mode: throughput. Every selected executor over
 * each weight x workers cell, the K runs of each interleaved with the others'
 * and with the sequential loop's, every checksum checked; then the report.
 */
#include "harness.h"

#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cell *cells;
int ncells;

/* The --weight value nearest target, on a log scale. */
int nearest_weight(const struct opts *o, double target)
{
    int best = 0;
    for (int i = 1; i < o->nweights; i++)
        if (fabs(log(o->weights[i] / target)) < fabs(log(o->weights[best] / target)))
            best = i;
    return best;
}

static void run_cell(struct cell *c, const struct opts *o, const struct dataset *d, int wi,
                     int cellno, int ncell)
{
    struct bench_ctx ctx = {&d->table, spin_for(c->weight), 0, o->init_ms};
    double seq_rates[MAX_RUNS], rates[NEXEC][MAX_RUNS], rss[NEXEC][MAX_RUNS],
        add[NEXEC][MAX_RUNS], cpu[NEXEC][MAX_RUNS], seq_cpu[MAX_RUNS];
    int nr[NEXEC] = {0};
    uint64_t seq_sum = 0;
    int near300 = nearest_weight(o, 300);
    struct bench_run r;

    for (int k = 0; k < o->runs; k++) {
        memset(&r, 0, sizeof r);
        r.ctx = &ctx;
        r.recs = d->recs;
        r.n = c->n;
        r.workers = c->workers;
        progress("%d/%d: %.0f ns x %u workers, run %d/%d: seq", cellno, ncell, c->weight,
                 c->workers, k + 1, o->runs);
        if (k == 0) {
            run_seq(&r); /* the first pass only warms caches */
            seq_sum = r.checksum;
        }
        double scpu0 = cpu_seconds();
        run_seq(&r);
        seq_cpu[k] = (cpu_seconds() - scpu0) * 1e9 / (double)c->n;
        if (r.checksum != seq_sum) {
            progress_clear();
            fprintf(stderr, "executor-bench: the sequential loop is not deterministic\n");
            failures++;
        }
        seq_rates[k] = (double)c->n / r.seconds;
        for (int e = 0; e < NEXEC; e++) {
            struct executor *x = &executors[e];
            if (!x->selected || x->notav || (x->one_weight && wi != near300))
                continue;
            memset(&r, 0, sizeof r);
            r.ctx = &ctx;
            r.recs = d->recs;
            r.n = c->n;
            r.workers = c->workers;
            r.ordered = o->ordered && x->takes_order;
            r.recycle = o->recycle;
            r.cpu_s = -1;
            progress("%d/%d: %.0f ns x %u workers, run %d/%d: %s", cellno, ncell, c->weight,
                     c->workers, k + 1, o->runs, exec_label(e, o->ordered));
            malloc_trim(0); /* what the last executor freed is not this one's */
            rss_reset();
            long rss0 = proc_status_kb("/proc/self/status", "VmRSS:");
            memset(&last_mem, 0, sizeof last_mem);
            double cpu0 = cpu_seconds();
            wd_arm(60 + 50 * (double)c->n * (c->weight > base_ns ? c->weight : base_ns) * 1e-9,
                   "%s at %.0f ns, %u workers", exec_label(e, o->ordered), c->weight,
                   c->workers);
            int rc = x->run(&r);
            wd_disarm();
            double cpu1 = cpu_seconds();
            if (rc == BENCH_NOTAV) {
                x->notav = 1;
                snprintf(x->notav_msg, sizeof x->notav_msg, "%s", r.err);
                progress_clear();
                fprintf(stderr, "%s (going on without it)\n", r.err);
                continue;
            }
            if (rc != 0) {
                note_failure(x->name, &r, c->weight, c->workers);
                continue;
            }
            runs_checked++;
            if (r.checksum != seq_sum) {
                progress_clear();
                fprintf(stderr,
                        "executor-bench: CHECKSUM MISMATCH: %s at %.0f ns, %u workers: "
                        "%016llx, sequential %016llx\n",
                        exec_label(e, o->ordered), c->weight, c->workers,
                        (unsigned long long)r.checksum, (unsigned long long)seq_sum);
                failures++;
                continue;
            }
            rates[e][nr[e]] = (double)c->n / r.seconds;
            rss[e][nr[e]] = (double)rss_peak_kb();
            add[e][nr[e]] = rss[e][nr[e]] - (double)rss0;
            /* Over the timed part where the runner measured it (not its
             * set-up: an executor's create, an array of the records). */
            cpu[e][nr[e]] = (r.cpu_s >= 0 ? r.cpu_s : cpu1 - cpu0) * 1e9 / (double)c->n;
            nr[e]++;
            if (last_mem.workers)
                c->mem = last_mem;
            /* Let pools that spin before sleeping (libgomp, TBB) go quiet
             * before the next executor runs. */
            if (x->peer)
                usleep(10000);
        }
    }
    c->seq_rate = stat_of(seq_rates, o->runs);
    c->seq_ns = 1e9 / c->seq_rate.med;
    c->seq_cpu_ns = stat_of(seq_cpu, o->runs).med;
    for (int e = 0; e < NEXEC; e++) {
        c->ran[e] = nr[e] > 0;
        if (nr[e]) {
            c->rate[e] = stat_of(rates[e], nr[e]);
            c->rss_kb[e] = stat_of(rss[e], nr[e]).med;
            c->rss_add_kb[e] = stat_of(add[e], nr[e]).med;
            /* Fork workers are other processes: their CPU is not ours to see. */
            c->cpu_ns[e] = strncmp(executors[e].name, "fork", 4) == 0 ? -1
                                                                   : stat_of(cpu[e], nr[e]).med;
        }
    }
}

/* Runs every cell, prints it as it ends, then the targets, results.csv and
 * the plot. -1 when out of memory. */
int run_throughput(const struct opts *o, const struct dataset *d)
{
    char path[4096];
    ncells = o->nweights * o->nworkers;
    cells = calloc((size_t)ncells, sizeof *cells);
    if (!cells)
        return -1;
    int ci = 0;
    for (int wi = 0; wi < o->nweights; wi++) {
        double per_ns = o->weights[wi] > base_ns ? o->weights[wi] : base_ns;
        double want = o->duration * 1e9 / per_ns;
        size_t n = want > (double)d->nrecs ? d->nrecs : (size_t)want;
        /* Enough batches that the last one's imbalance stays small. */
        size_t nmin = d->nrecs < 3000 ? d->nrecs : 3000;
        if (n < nmin)
            n = nmin;
        for (int pi = 0; pi < o->nworkers; pi++, ci++) {
            cells[ci].weight = o->weights[wi];
            cells[ci].workers = o->workers[pi];
            cells[ci].n = n;
            run_cell(&cells[ci], o, d, wi, ci + 1, ncells);
            progress_clear();
            print_cell(o, d, ci);
            fflush(stdout);
        }
    }
    unsigned pw = o->workers[o->nworkers - 1];
    print_targets(o, d, pw);
    for (int e = 0; e < NEXEC; e++)
        if (executors[e].notav)
            say("not run: %s\n", executors[e].notav_msg);
    snprintf(path, sizeof path, "%s/results.csv", o->out);
    write_csv(o, d, path);
    write_plot(o, o->out, pw);
    progress("plotting");
    int g = run_gnuplot(o->out);
    progress_clear();
    say("\nwrote %s/results.csv, %s/table.txt", o->out, o->out);
    if (g == 0)
        say(", %s/efficiency.png (efficiency vs weight at %u workers)\n", o->out, pw);
    else if (g == 127)
        say("; no plot: gnuplot not found (apt-get install gnuplot-nox), data in "
            "%s/plot.dat\n", o->out);
    else
        say("; no plot: gnuplot failed on %s/plot.gp (see %s/gnuplot.log)\n", o->out,
            o->out);
    return 0;
}
