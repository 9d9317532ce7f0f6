/*
 * executor-bench: libexecutor against the pools users would write instead.
 *
 * One run, side by side, over the same records and the same classify function
 * (bench.h): the sequential loop (ideal = workers x its rate), the hardware
 * ceiling (each worker over a fixed share, no queue), EXEC_THREADS and
 * EXEC_FORK through exec_map() (and EXEC_THREADS through per-record
 * exec_try_submit()/exec_next() at one weight), a mutex+condvar pool, GLib's
 * GThreadPool, OpenMP and oneTBB. Every executor's checksum must equal the
 * sequential loop's; a mismatch is an error (exit 1).
 *
 * Output: a table on stdout (also table.txt), results.csv and efficiency.png
 * (gnuplot) in --out. See --help.
 *
 * This file: the options and main. The data set is in dataset.c, the runners
 * in runners.c and peer_*.c, the modes in throughput.c (with report.c),
 * latency.c and swap.c, what they all use in harness.c.
 */
#include "harness.h"
#include "real.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const double default_weights[] = {100, 300, 1000, 5000, 20000, 50000};

static void usage(FILE *f)
{
    fprintf(f,
        "usage: executor-bench [options]\n"
        "\n"
        "Runs the same records through the same classify function on every executor\n"
        "and compares records/s with the ideal (workers x the sequential loop's rate).\n"
        "Without --file it uses a built-in data set: rows of 8 words, and a context\n"
        "that is a ~32 MB hash table of word -> class weights.\n"
        "\n"
        "  --file PATH       records are the lines of PATH (the context stays built in)\n"
        "  --weight LIST     record weights in ns of work, e.g. 100,300,1000,5000,20000,50000\n"
        "                    (the default); a calibrated loop is added to the lookups so a\n"
        "                    record costs about that much on this machine\n"
        "  --workers LIST    worker counts, e.g. 1,2 (default: 1, 2, 4... and the number of\n"
        "                    CPUs available)\n"
        "  --records N       at most N records per run (default 1000000)\n"
        "  --duration S      aim each run at about S seconds of sequential work (default\n"
        "                    0.12, and at least 3000 records); fewer records are used where\n"
        "                    that is enough\n"
        "  --ordered         libexecutor delivers results in input order (peers do not)\n"
        "  --executors LIST  which to run, from: static,threads,threads-map,threads-submit,\n"
        "                    fork,fork-map,fork-warm (a second pass),fork-buffer (records\n"
        "                    in exec_buffer(), second pass),\n"
        "                    mutex,glib,omp-for,omp-task,tbb (default: all); for the real\n"
        "                    workloads threads and fork mean every path of the backend,\n"
        "                    or name one: threads-run, -map, -submit, -source, -buffer,\n"
        "                    fork-run, -map, -submit, -source, -buffer, -recycled\n"
        "  --runs K          each figure is the median of K runs, with min and max (default 3)\n"
        "  --out DIR         where results.csv, table.txt and efficiency.png go\n"
        "                    (default ./bench-out)\n"
        "  --pages           what a page costs a new process the first time it reads it\n"
        "                    (a fork worker pays that once a page), and nothing else\n"
        "  --latency         latency mode: one record in flight at a time, p50/p99/p999\n"
        "                    submit-to-result per executor (default weights 300,5000)\n"
        "  --swap            swap mode: exec_swap_context() every few ms under full load;\n"
        "                    swap call latency and 10 ms throughput windows (default\n"
        "                    weights 300,5000)\n"
        "  --recycle N       fork workers are recycled every ~N records (one at a time,\n"
        "                    the successor ready first): compare with a run without\n"
        "  --init-ms N       libexecutor's worker_init sleeps N ms (a slow start, as\n"
        "                    when a model is loaded), e.g. with --recycle\n"
        "  --workloads LIST  which workloads, from: synthetic (the table above), regex\n"
        "                    (PCRE2), lua (an interpreter per record) (default: all). A\n"
        "                    real one's run is ~0.15 s (regex) or ~1.5 s (lua) of loop\n"
        "                    work; --records N makes it N lines\n"
        "  --full            the real workloads with 5 runs a path (the README's table)\n"
        "  --perf-ctl CTL,ACK[,EVENT]  under `perf record -D -1 -e dummy -e EVENT\n"
        "                    --control=fifo:CTL,ACK` (EVENT: cpu-clock by default): EVENT\n"
        "                    is sampled only in the timed part of the real paths that\n"
        "                    --executors names (\"loop\" too), not in the set-up, the\n"
        "                    other paths or the checks (scripts/perf-paths.sh)\n"
        "  --quick           a tiny data set and one short run: a sanity check\n"
        "  --help            this text\n"
        "\n"
        "Exit status: 0, or 1 when an executor's checksum differs from the sequential\n"
        "loop's or a run fails, 2 on bad usage.\n");
}

static int parse_list_d(const char *s, double *v, int max)
{
    int n = 0;
    char *end;
    while (*s) {
        if (n == max)
            return -1;
        double x = strtod(s, &end);
        if (end == s || !(x > 0) || x > 1e9)
            return -1;
        v[n++] = x;
        s = end;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return n;
}

static int parse_list_u(const char *s, unsigned *v, int max)
{
    int n = 0;
    char *end;
    while (*s) {
        if (n == max)
            return -1;
        unsigned long x = strtoul(s, &end, 10);
        if (end == s || x == 0 || x > 1024)
            return -1;
        v[n++] = (unsigned)x;
        s = end;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return n;
}

/* ------------------------------------------------------------------------- */
/* main                                                                      */
/* ------------------------------------------------------------------------- */

static int mkdir_p(const char *dir)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    memset(&o, 0, sizeof o);
    o.duration = -1;
    o.runs = -1;
    o.out = "bench-out";
    int records_set = 0, weights_set = 0;
    static const struct option lo[] = {
        {"file", required_argument, NULL, 'f'},     {"weight", required_argument, NULL, 'w'},
        {"workers", required_argument, NULL, 'p'},  {"records", required_argument, NULL, 'n'},
        {"duration", required_argument, NULL, 'd'}, {"ordered", no_argument, NULL, 'O'},
        {"executors", required_argument, NULL, 'e'}, {"runs", required_argument, NULL, 'k'},
        {"out", required_argument, NULL, 'o'},      {"latency", no_argument, NULL, 'L'},
        {"swap", no_argument, NULL, 'S'},           {"quick", no_argument, NULL, 'q'},
        {"recycle", required_argument, NULL, 'R'},  {"init-ms", required_argument, NULL, 'I'},
        {"workloads", required_argument, NULL, 'W'}, {"full", no_argument, NULL, 'F'},
        {"pages", no_argument, NULL, 'P'},           {"help", no_argument, NULL, 'h'},
        {"perf-ctl", required_argument, NULL, 'C'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': o.file = optarg; break;
        case 'w':
            o.nweights = parse_list_d(optarg, o.weights, MAX_WEIGHTS);
            if (o.nweights <= 0) {
                fprintf(stderr, "executor-bench: --weight wants ns values, e.g. 100,300,5000\n");
                return 2;
            }
            weights_set = 1;
            break;
        case 'p':
            o.nworkers = parse_list_u(optarg, o.workers, MAX_WORKERS);
            if (o.nworkers <= 0) {
                fprintf(stderr, "executor-bench: --workers wants counts 1..1024, e.g. 1,2\n");
                return 2;
            }
            break;
        case 'n':
            o.records = strtoul(optarg, &end, 10);
            if (*end || o.records == 0 || o.records > 100000000) {
                fprintf(stderr, "executor-bench: --records wants 1..100000000\n");
                return 2;
            }
            records_set = 1;
            break;
        case 'd':
            o.duration = strtod(optarg, &end);
            if (*end || !(o.duration > 0) || o.duration > 3600) {
                fprintf(stderr, "executor-bench: --duration wants seconds, e.g. 0.2\n");
                return 2;
            }
            break;
        case 'O': o.ordered = 1; break;
        case 'e': o.executors = optarg; break;
        case 'k':
            o.runs = (int)strtol(optarg, &end, 10);
            if (*end || o.runs < 1 || o.runs > MAX_RUNS) {
                fprintf(stderr, "executor-bench: --runs wants 1..%d\n", MAX_RUNS);
                return 2;
            }
            break;
        case 'o': o.out = optarg; break;
        case 'L': o.latency = 1; break;
        case 'S': o.swap = 1; break;
        case 'q': o.quick = 1; break;
        case 'I':
            o.init_ms = (unsigned)strtoul(optarg, &end, 10);
            if (*end || o.init_ms > 60000) {
                fprintf(stderr, "executor-bench: --init-ms wants 0..60000\n");
                return 2;
            }
            break;
        case 'R':
            o.recycle = (unsigned)strtoul(optarg, &end, 10);
            if (*end || o.recycle == 0) {
                fprintf(stderr, "executor-bench: --recycle wants a record count, e.g. 20000\n");
                return 2;
            }
            break;
        case 'W': o.workloads = optarg; break;
        case 'F': o.real_full = 1; break;
        case 'P': o.pages = 1; break;
        case 'C': o.perf_ctl = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "executor-bench: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (o.pages)
        return run_pages();
    if (o.executors && select_executors(o.executors) != 0)
        return 2;
    if (o.perf_ctl && (!o.executors || !strchr(o.perf_ctl, ','))) {
        fprintf(stderr, "executor-bench: --perf-ctl wants CTL,ACK[,EVENT] (two FIFOs) and "
                        "--executors naming the paths to sample\n");
        return 2;
    }
    if (o.workloads) {
        for (const char *s = o.workloads; *s;) {
            size_t len = strcspn(s, ",");
            if (!((len == 9 && !strncmp(s, "synthetic", 9)) || (len == 5 && !strncmp(s, "regex", 5)) ||
                  (len == 3 && !strncmp(s, "lua", 3)))) {
                fprintf(stderr, "executor-bench: unknown workload '%.*s' (synthetic, regex, lua)\n",
                        (int)len, s);
                return 2;
            }
            s += len + (s[len] == ',');
        }
    }
    o.records_set = records_set;
    o.runs_set = o.runs > 0;

    unsigned cpus = ncpus();
    if (!weights_set) {
        if (o.quick) {
            o.weights[0] = 100;
            o.weights[1] = 2000;
            o.nweights = 2;
        } else if (o.latency || o.swap) {
            o.weights[0] = 300;
            o.weights[1] = 5000;
            o.nweights = 2;
        } else {
            o.nweights = (int)(sizeof default_weights / sizeof default_weights[0]);
            memcpy(o.weights, default_weights, sizeof default_weights);
        }
    }
    if (o.nworkers == 0) {
        if (o.quick) {
            o.workers[0] = cpus >= 2 ? cpus : 2;
            o.nworkers = 1;
        } else {
            /* 1, 2, 4, ... and the number of CPUs. */
            for (unsigned i = 1; i < cpus && o.nworkers < MAX_WORKERS - 1; i *= 2)
                o.workers[o.nworkers++] = i;
            o.workers[o.nworkers++] = cpus;
        }
    }
    if (!records_set)
        o.records = o.quick ? 20000 : 1000000;
    if (o.duration < 0)
        o.duration = o.quick ? 0.01 : 0.12;
    if (o.runs < 0)
        o.runs = o.quick ? 1 : 3;
    progress_on = isatty(2);
    t_start = bench_now();
    pthread_t wd;
    pthread_create(&wd, NULL, wd_main, NULL);
    pthread_detach(wd);

    if (mkdir_p(o.out) != 0) {
        fprintf(stderr, "executor-bench: cannot create %s: %s\n", o.out, strerror(errno));
        return 1;
    }
    /* Say where the files went in full, wherever the program was started. */
    static char outdir[4096];
    if (realpath(o.out, outdir))
        o.out = outdir;
    char path[4096];
    snprintf(path, sizeof path, "%s/table.txt", o.out);
    table_file = fopen(path, "w");

    /* The data set and the context. */
    struct dataset d;
    memset(&d, 0, sizeof d);
    /* The synthetic data set: only where something runs on it. */
    const int synthetic = o.latency || o.swap || !o.workloads || strstr(o.workloads, "synthetic");
    if (synthetic) {
        progress("building the context");
        if (build_table(&d, o.quick ? 1u << 14 : 1u << 20, 42) != 0) {
            fprintf(stderr, "executor-bench: out of memory building the context\n");
            return 1;
        }
        progress("building the records");
        if (o.file ? load_file(&d, o.file, o.records) != 0 : build_records(&d, o.records, 7) != 0) {
            if (!o.file)
                fprintf(stderr, "executor-bench: out of memory building the records\n");
            return 1;
        }
        progress("calibrating");
        calibrate(&d.table, d.recs, d.nrecs);
    }

    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    load_start = loadavg1();
    say("executor-bench: libexecutor %s on %s, %u CPUs available, load average %.2f\n",
        EXEC_VERSION_STRING, host, cpus, load_start);
    if (load_start > 0.5 * cpus)
        say("warning: the machine is busy (load average %.1f on %u CPUs): other programs take "
            "CPU time, so the\nfigures will be low and noisy; the CPU ns column is the steadier "
            "one\n", load_start, cpus);
    if (synthetic) {
        say("records: %zu %s; context: %.1f MB hash table (%u words); classify without weight "
            "%.0f ns/record, weight loop %.3f ns/iteration\n",
            d.nrecs, o.file ? o.file : "built-in rows of 8 words", (double)d.table.bytes / (1 << 20),
            d.nwords, base_ns, ns_per_iter);
        say("each figure: median of %d run%s [min-max]; eff = rate / (workers x sequential rate); "
            "ovh ns = (1/rate - 1/ideal) x workers;\nCPU ns = CPU time of the whole process per "
            "record (not for fork: its workers are other processes); +RSS MB = peak RSS during "
            "a run less RSS before it%s\n",
            o.runs, o.runs > 1 ? "s" : "",
            o.ordered ? "; libexecutor in ordered mode, peers unordered" : "");
    }

    if (o.quick)
        say("--quick: a sanity check of the checksums; its figures mean nothing\n");
    fflush(stdout);
    if (o.latency)
        run_latency(&o, &d, o.out);
    if (o.swap)
        run_swap_mode(&o, &d, o.out);
    if (!o.latency && !o.swap) {
        if (synthetic && run_throughput(&o, &d) != 0)
            return 1;
        run_real(&o);
    } else {
        say("\nwrote %s/table.txt", o.out);
        if (o.latency)
            say(", %s/latency.csv", o.out);
        if (o.swap)
            say(", %s/swap.csv", o.out);
        say("\n");
    }
    if (failures) {
        say("FAILED: %d error%s (see above)\n", failures, failures > 1 ? "s" : "");
    } else if (runs_checked) {
        say("checksums: all %d executor runs match the sequential loop\n", runs_checked);
    }
    say("total %.1f s, load average %.2f at the end (this run included)\n",
        bench_now() - t_start, loadavg1());
    if (table_file)
        fclose(table_file);
    free(cells);
    free(d.vocab);
    free(d.word_off);
    free(d.table.slots);
    free(d.arena);
    free(d.recs);
    return failures ? 1 : 0;
}
