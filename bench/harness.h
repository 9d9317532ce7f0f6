/*
 * executor-bench: what the program's own files share, beyond bench.h (which
 * the peers see too): the options, the data set, the executor table, the
 * throughput cells, and the helpers every mode uses (harness.c).
 */
#ifndef BENCH_HARNESS_H
#define BENCH_HARNESS_H

#include "bench.h"
#include "executor.h"

#include <stdint.h>
#include <stdio.h>

/* The most --weight values, --workers counts and --runs. */
#define MAX_WEIGHTS 32
#define MAX_WORKERS 64
#define MAX_RUNS 99

/* The command line, after defaults are filled in. */
struct opts {
    const char *file;
    double weights[MAX_WEIGHTS];
    int nweights;
    unsigned workers[MAX_WORKERS];
    int nworkers;
    size_t records;
    double duration;
    int ordered;
    const char *executors;
    int runs;
    const char *out;
    int latency;
    int pages; /* --pages */
    int swap;
    int quick;
    unsigned recycle;
    unsigned init_ms;
    const char *workloads; /* synthetic,regex,lua: which to run (NULL: all) */
    int real_full;         /* the real workloads at full size */
    int records_set, runs_set;
    const char *perf_ctl; /* --perf-ctl CTL,ACK: perf record's control FIFOs */
};

/* The data set: the context's table and the records (dataset.c). */
struct dataset {
    struct bench_table table;
    char *vocab;       /* words, NUL-separated */
    uint32_t *word_off;
    uint32_t nwords;
    char *arena;       /* record bytes */
    struct bench_rec *recs;
    size_t nrecs;
};

int build_table(struct dataset *d, uint32_t nwords, uint64_t seed);
int build_records(struct dataset *d, size_t n, uint64_t seed);
int load_file(struct dataset *d, const char *path, size_t max);

/* Calibration (dataset.c): what the weight loop and the lookups cost here. */
extern double ns_per_iter; /* the weight loop, per iteration */
extern double base_ns;     /* classify without the weight loop, per record */
void calibrate(const struct bench_table *t, const struct bench_rec *recs, size_t n);
uint64_t spin_for(double weight_ns);

/* Memory of the fork workers, in kB, summed over workers. */
struct fork_mem {
    int workers;
    long pss;     /* their shares of every page they map */
    long priv;    /* pages only they map: Private_Clean + Private_Dirty */
    long dirty;   /* Private_Dirty: what was copied or written */
    long parent;  /* our own RSS, for scale */
};

/* harness.c: the table on stdout (and table.txt), the progress line on stderr,
 * the watchdog, process measurements and statistics. */
extern FILE *table_file;  /* copy of the stdout table */
extern int progress_on;   /* stderr is a terminal */
extern double t_start;    /* when the program started */
extern double load_start; /* the load average then */
extern int failures;      /* errors so far: the exit status is 1 when any */
extern int runs_checked;  /* executor runs whose checksum matched */

double loadavg1(void);
unsigned ncpus(void);
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void progress_clear(void);
void *wd_main(void *arg);
void wd_arm(double seconds, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void wd_disarm(void);
void note_failure(const char *name, const struct bench_run *r, double weight, unsigned workers);
void rss_reset(void);
long proc_status_kb(const char *path, const char *key);
long rss_peak_kb(void);
double cpu_seconds(void);
int workers_mem(struct fork_mem *m);

/* Median, min and max of a run's figures. */
struct stat3 {
    double med, min, max;
};

int cmp_double(const void *a, const void *b);
struct stat3 stat_of(const double *v, int n);
double percentile(const double *sorted, size_t n, double p);

/* The executors (runners.c; latency runners in latency.c). */
typedef int (*bench_lat_fn)(struct bench_run *r, double *samples, size_t n);

struct executor {
    const char *name;
    const char *what;
    bench_run_fn run;
    bench_lat_fn lat;
    int peer;        /* someone else's pool: a ratio column in the table */
    int ours;        /* libexecutor: checked against the targets */
    int one_weight;  /* run only at the weight nearest 300 ns */
    int takes_order; /* honours --ordered */
    int selected;
    int notav;       /* said "not available" once; skipped from then on */
    char notav_msg[128];
};

#define NEXEC 13 /* entries in executors[] */
extern struct executor executors[NEXEC];
extern struct fork_mem last_mem; /* set by the fork runner after each run */

int run_seq(struct bench_run *r);
int run_fork(struct bench_run *r);
int bench_exec_create(struct bench_run *r, exec_backend_t backend, unsigned flags, exec_t **ex);
/* The same with options.buffer_size (0: the default). */
int bench_exec_create_buf(struct bench_run *r, exec_backend_t backend, unsigned flags,
                          size_t buffer_size, exec_t **ex);
void insights_print(exec_backend_t backend);
int find_executor(const char *name, size_t len);
int find_peer(const char *name);
int select_executors(const char *list);
const char *exec_label(int e, int ordered);

int lat_threads(struct bench_run *r, double *s, size_t n);
int lat_fork(struct bench_run *r, double *s, size_t n);

/* Throughput mode (throughput.c): one cell per weight x workers. */
struct cell {
    double weight;      /* asked for */
    unsigned workers;
    size_t n;
    struct stat3 seq_rate;
    double seq_ns;      /* measured, per record */
    int ran[NEXEC];
    struct stat3 rate[NEXEC];
    double rss_kb[NEXEC];     /* peak RSS of this process during a run */
    double rss_add_kb[NEXEC]; /* the peak less what it was before the run */
    double cpu_ns[NEXEC];     /* CPU time of this process per record; -1: not known */
    double seq_cpu_ns;
    struct fork_mem mem; /* EXEC_FORK's workers after the last run */
};

extern struct cell *cells;
extern int ncells;
int nearest_weight(const struct opts *o, double target);
int run_throughput(const struct opts *o, const struct dataset *d);

/* report.c: the throughput table, results.csv, the plot and the targets. */
const char *fmt_rate(char *buf, size_t len, double r);
void print_cell(const struct opts *o, const struct dataset *d, int ci);
void write_csv(const struct opts *o, const struct dataset *d, const char *path);
void write_plot(const struct opts *o, const char *dir, unsigned pw);
int run_gnuplot(const char *dir);
void print_targets(const struct opts *o, const struct dataset *d, unsigned pw);

/* The other modes. */
void run_latency(const struct opts *o, const struct dataset *d, const char *dir);
void run_swap_mode(const struct opts *o, const struct dataset *d, const char *dir);
/* --pages: what a page costs a process the first time it touches it (pages.c). */
int run_pages(void);

#endif /* BENCH_HARNESS_H */
