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
 */
#include "bench.h"
#include "executor.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_WEIGHTS 32
#define MAX_WORKERS 64
#define MAX_RUNS 99

/* ------------------------------------------------------------------------- */
/* Options                                                                   */
/* ------------------------------------------------------------------------- */

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
    int swap;
    int quick;
    unsigned recycle;
    unsigned init_ms;
};

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
        "  --executors LIST  which to run, from: static,threads,threads-submit,fork,\n"
        "                    mutex,glib,omp-for,omp-task,tbb (default: all)\n"
        "  --runs K          each figure is the median of K runs, with min and max (default 3)\n"
        "  --out DIR         where results.csv, table.txt and efficiency.png go\n"
        "                    (default ./bench-out)\n"
        "  --latency         latency mode: one record in flight at a time, p50/p99/p999\n"
        "                    submit-to-result per executor (default weights 300,5000)\n"
        "  --swap            swap mode: exec_swap_context() every few ms under full load;\n"
        "                    swap call latency and 10 ms throughput windows (default\n"
        "                    weights 300,5000)\n"
        "  --recycle N       fork workers are recycled every ~N records (one at a time,\n"
        "                    the successor ready first): compare with a run without\n"
        "  --init-ms N       libexecutor's worker_init sleeps N ms (a slow start, as\n"
        "                    when a model is loaded), e.g. with --recycle\n"
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

/* The 1-minute load average: how busy the machine was around a run. */
static double loadavg1(void)
{
    double l[1];
    return getloadavg(l, 1) == 1 ? l[0] : -1;
}

static double load_start;

static unsigned ncpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1u;
}

/* ------------------------------------------------------------------------- */
/* Output helpers                                                            */
/* ------------------------------------------------------------------------- */

static FILE *table_file; /* copy of the stdout table */
static int progress_on;    /* stderr is a terminal */
static int progress_shown; /* a progress line is on it */

static void progress_clear(void);

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    progress_clear(); /* the table and the progress line share a terminal */
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (table_file) {
        va_start(ap, fmt);
        vfprintf(table_file, fmt, ap);
        va_end(ap);
    }
}

static double t_start;

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void progress(const char *fmt, ...)
{
    if (!progress_on)
        return;
    char line[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\r\033[K[%5.1f s] %s", bench_now() - t_start, line);
    fflush(stderr);
    progress_shown = 1;
}

static void progress_clear(void)
{
    if (progress_shown) {
        progress_shown = 0;
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
    }
}

/*
 * A watchdog: a run that goes on far longer than it should (an executor that
 * hangs) ends the program with a message and exit status 1, rather than never.
 */
static uint64_t wd_deadline_ns; /* 0: disarmed */
static char wd_what[160];

static void *wd_main(void *arg)
{
    (void)arg;
    for (;;) {
        sleep(1);
        uint64_t d = __atomic_load_n(&wd_deadline_ns, __ATOMIC_ACQUIRE);
        if (d && (uint64_t)(bench_now() * 1e9) > d) {
            fflush(stdout);
            fprintf(stderr, "\nexecutor-bench: %s: no end after far longer than expected; "
                            "giving up (hung?)\n", wd_what);
            _exit(1);
        }
    }
    return NULL;
}

static void wd_arm(double seconds, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wd_arm(double seconds, const char *fmt, ...)
{
    __atomic_store_n(&wd_deadline_ns, 0, __ATOMIC_RELEASE);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(wd_what, sizeof wd_what, fmt, ap);
    va_end(ap);
    __atomic_store_n(&wd_deadline_ns, (uint64_t)((bench_now() + seconds) * 1e9),
                     __ATOMIC_RELEASE);
}

static void wd_disarm(void)
{
    __atomic_store_n(&wd_deadline_ns, 0, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------------------- */
/* The data set                                                              */
/* ------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ull;
    return bench_mix64(*s);
}

struct dataset {
    struct bench_table table;
    char *vocab;       /* words, NUL-separated */
    uint32_t *word_off;
    uint32_t nwords;
    char *arena;       /* record bytes */
    struct bench_rec *recs;
    size_t nrecs;
};

/* Vocabulary of nwords random words and a table of 2 x nwords slots. */
static int build_table(struct dataset *d, uint32_t nwords, uint64_t seed)
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
static int build_records(struct dataset *d, size_t n, uint64_t seed)
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
static int load_file(struct dataset *d, const char *path, size_t max)
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
/* Measuring the process: peak RSS and fork workers' PSS                     */
/* ------------------------------------------------------------------------- */

/* Resets the peak RSS (VmHWM) so the next reading covers one run only. */
static void rss_reset(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

static long proc_status_kb(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0) {
            v = strtol(line + kl, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static long rss_peak_kb(void)
{
    return proc_status_kb("/proc/self/status", "VmHWM:");
}

/* CPU time of every thread of this process so far. */
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* Memory of the fork workers, in kB, summed over workers. */
struct fork_mem {
    int workers;
    long pss;     /* their shares of every page they map */
    long priv;    /* pages only they map: Private_Clean + Private_Dirty */
    long dirty;   /* Private_Dirty: what was copied or written */
    long parent;  /* our own RSS, for scale */
};

/*
 * Memory of this process's fork workers: its descendants that have no children
 * of their own (workers are children of a zygote, or of us), found through
 * /proc/PID/stat ppid links, read from /proc/PID/smaps_rollup. 0, or -1 when
 * there is none.
 */
static int workers_mem(struct fork_mem *m)
{
    enum { MAXP = 32768 };
    static int pid[MAXP], ppid[MAXP];
    int n = 0;
    memset(m, 0, sizeof *m);
    DIR *dir = opendir("/proc");
    if (!dir)
        return -1;
    struct dirent *e;
    while ((e = readdir(dir)) && n < MAXP) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t got = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[got] = 0;
        char *rp = strrchr(buf, ')');
        char state;
        int pp;
        if (!rp || sscanf(rp + 1, " %c %d", &state, &pp) != 2)
            continue;
        pid[n] = atoi(e->d_name);
        ppid[n] = pp;
        n++;
    }
    closedir(dir);

    static unsigned char desc[MAXP];
    memset(desc, 0, sizeof desc);
    int me = getpid(), changed = 1;
    while (changed) {
        changed = 0;
        for (int i = 0; i < n; i++) {
            if (desc[i])
                continue;
            int parent_is_desc = ppid[i] == me;
            for (int j = 0; j < n && !parent_is_desc; j++)
                if (desc[j] && pid[j] == ppid[i])
                    parent_is_desc = 1;
            if (parent_is_desc)
                desc[i] = changed = 1;
        }
    }
    for (int i = 0; i < n; i++) {
        if (!desc[i])
            continue;
        int leaf = 1;
        for (int j = 0; j < n && leaf; j++)
            if (desc[j] && ppid[j] == pid[i])
                leaf = 0;
        if (!leaf)
            continue;
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/smaps_rollup", pid[i]);
        long pss = proc_status_kb(path, "Pss:");
        if (pss < 0)
            continue;
        long pc = proc_status_kb(path, "Private_Clean:");
        long pd = proc_status_kb(path, "Private_Dirty:");
        m->pss += pss;
        m->priv += (pc > 0 ? pc : 0) + (pd > 0 ? pd : 0);
        m->dirty += pd > 0 ? pd : 0;
        m->workers++;
    }
    m->parent = proc_status_kb("/proc/self/status", "VmRSS:");
    return m->workers ? 0 : -1;
}

/* ------------------------------------------------------------------------- */
/* Runners                                                                   */
/* ------------------------------------------------------------------------- */

/* Set by the fork runner after each run (workers == 0: none measured). */
static struct fork_mem last_mem;

/* The library's own figures from the last run of each backend (threads, fork),
 * read while the pool is still up: utilisation, latency, per-worker counts. */
#define INS_MAX_WORKERS 64
struct insights {
    int valid;
    exec_stats_t st;
    unsigned nw;
    exec_worker_stats_t w[INS_MAX_WORKERS];
};
static struct insights last_ins[2];

static void insights_take(exec_t *ex, exec_backend_t backend)
{
    struct insights *in = &last_ins[backend == EXEC_FORK];
    if (exec_stats(ex, &in->st) != 0)
        return;
    in->nw = in->st.workers < INS_MAX_WORKERS ? in->st.workers : INS_MAX_WORKERS;
    for (unsigned i = 0; i < in->nw; i++)
        exec_worker_stats(ex, i, &in->w[i]);
    in->valid = 1;
}

static void insights_print(exec_backend_t backend)
{
    struct insights *in = &last_ins[backend == EXEC_FORK];
    if (!in->valid)
        return;
    say("insights %s (last run): utilisation %.2f; latency p50 %.0f us, p99 %.0f us, "
        "p999 %.0f us (%llu samples); respawns %llu\n",
        exec_backend_name(backend), in->st.utilisation, in->st.lat_p50_ns / 1e3,
        in->st.lat_p99_ns / 1e3, in->st.lat_p999_ns / 1e3,
        (unsigned long long)in->st.lat_samples, (unsigned long long)in->st.respawns);
    for (unsigned i = 0; i < in->nw; i++) {
        const exec_worker_stats_t *w = &in->w[i];
        char pid[32] = "";
        if (w->pid)
            snprintf(pid, sizeof pid, " pid %d", w->pid);
        char mem[96] = "";
        if (w->pss_kb || w->private_dirty_kb)
            snprintf(mem, sizeof mem, "; PSS %.1f MB, private dirty %.1f MB",
                     w->pss_kb / 1024.0, w->private_dirty_kb / 1024.0);
        say("  worker %u%s: %llu records in %llu batches; busy %.1f ms, idle %.1f ms, "
            "startup %.2f ms; respawns crash/timeout/recycle/cancel %llu/%llu/%llu/%llu%s\n",
            i, pid, (unsigned long long)w->records, (unsigned long long)w->batches,
            w->busy_ns / 1e6, w->idle_ns / 1e6, w->startup_ns / 1e6,
            (unsigned long long)w->respawns_crash, (unsigned long long)w->respawns_timeout,
            (unsigned long long)w->respawns_recycle, (unsigned long long)w->respawns_cancel, mem);
    }
    in->valid = 0;
}

static int run_seq(struct bench_run *r)
{
    const struct bench_rec *recs = r->recs;
    uint64_t sum = 0;
    double t0 = bench_now();
    for (size_t i = 0; i < r->n; i++)
        sum += bench_sum_add(i, bench_classify(r->ctx, recs[i].p, recs[i].len));
    r->seconds = bench_now() - t0;
    r->checksum = sum;
    return 0;
}

/* The hardware ceiling: each worker over a fixed share, no queue. */
struct static_arg {
    struct bench_run *r;
    size_t begin, end;
    uint64_t sum;
    pthread_barrier_t *bar;
};

static void *static_main(void *p)
{
    struct static_arg *a = p;
    pthread_barrier_wait(a->bar);
    uint64_t sum = 0;
    for (size_t i = a->begin; i < a->end; i++)
        sum += bench_sum_add(i, bench_classify(a->r->ctx, a->r->recs[i].p, a->r->recs[i].len));
    a->sum = sum;
    return NULL;
}

static int run_static(struct bench_run *r)
{
    unsigned p = r->workers;
    struct static_arg *a = calloc(p, sizeof *a);
    pthread_t *tid = calloc(p, sizeof *tid);
    pthread_barrier_t bar;
    if (!a || !tid) {
        free(a);
        free(tid);
        strcpy(r->err, "static: out of memory");
        return BENCH_FAIL;
    }
    pthread_barrier_init(&bar, NULL, p + 1);
    unsigned started = 0;
    for (unsigned i = 0; i < p; i++) {
        a[i].r = r;
        a[i].begin = r->n * i / p;
        a[i].end = r->n * (i + 1) / p;
        a[i].bar = &bar;
        if (pthread_create(&tid[i], NULL, static_main, &a[i]) != 0)
            break;
        started++;
    }
    if (started < p) {
        /* Cannot happen on a sane machine; the barrier would never open. */
        fprintf(stderr, "executor-bench: static: pthread_create failed\n");
        abort();
    }
    /* The clock starts before the barrier opens: no worker can start earlier. */
    double t0 = bench_now();
    pthread_barrier_wait(&bar);
    uint64_t sum = 0;
    for (unsigned i = 0; i < p; i++) {
        pthread_join(tid[i], NULL);
        sum += a[i].sum;
    }
    r->seconds = bench_now() - t0;
    r->checksum = sum;
    pthread_barrier_destroy(&bar);
    free(a);
    free(tid);
    return 0;
}

/* libexecutor: the classifier ops. The context is a struct bench_ctx. */
static int bx_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    uint64_t v = bench_classify(ctx, rec, len);
    return exec_write(out, &v, sizeof v);
}

/* A worker start as slow as asked (--init-ms): a model being loaded. */
static int bx_worker_init(void *ctx, void **ws)
{
    const struct bench_ctx *c = ctx;
    *ws = NULL;
    struct timespec ts = {(time_t)(c->init_ms / 1000), (long)(c->init_ms % 1000) * 1000000L};
    if (c->init_ms)
        nanosleep(&ts, NULL);
    return 0;
}

static const exec_ops_t bx_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "bench-classify",
    .process = bx_process,
    .worker_init = bx_worker_init,
};

struct xmap {
    const struct bench_run *r;
    size_t next, got, bad;
    uint64_t sum;
    int first_bad_status;
};

static int xm_read(void *arg, const void **rec, size_t *len, uint64_t *tag)
{
    struct xmap *m = arg;
    if (m->next >= m->r->n)
        return 0;
    const struct bench_rec *x = &m->r->recs[m->next];
    *rec = x->p;
    *len = x->len;
    *tag = m->next++;
    return 1;
}

static int xm_emit(void *arg, const exec_result_t *res)
{
    struct xmap *m = arg;
    uint64_t v;
    if (res->status != 0 || res->len != sizeof v || res->tag >= m->r->n) {
        if (!m->bad)
            m->first_bad_status = res->status;
        m->bad++;
    } else {
        memcpy(&v, res->data, sizeof v);
        m->sum += bench_sum_add(res->tag, v);
    }
    if (m->r->ordered && res->tag != m->got)
        m->bad++; /* out of order */
    m->got++;
    return 0;
}

/* An executor for run r: 0, or BENCH_NOTAV / BENCH_FAIL with r->err said. */
static int bench_exec_create(struct bench_run *r, exec_backend_t backend, unsigned flags,
                             exec_t **ex)
{
    exec_options_t o;
    memset(&o, 0, sizeof o);
    o.workers = r->workers;
    o.flags = flags;
    if (backend == EXEC_FORK)
        o.max_records_per_worker = r->recycle;
    int rc = exec_create(ex, &bx_ops, (void *)r->ctx, backend, &o);
    if (rc == EXEC_ENOTSUP) {
        snprintf(r->err, sizeof r->err, "%s: not available in this build",
                 exec_backend_name(backend));
        return BENCH_NOTAV;
    }
    if (rc) {
        snprintf(r->err, sizeof r->err, "%s: exec_create: %s", exec_backend_name(backend),
                 exec_strerror(rc));
        return BENCH_FAIL;
    }
    return 0;
}

static int exec_runner(struct bench_run *r, exec_backend_t backend, int per_record)
{
    exec_t *ex;
    int rc = bench_exec_create(r, backend, r->ordered ? EXEC_ORDERED : 0, &ex);
    if (rc)
        return rc;
    struct xmap m;
    memset(&m, 0, sizeof m);
    m.r = r;
    double t0 = bench_now();
    if (!per_record) {
        rc = exec_map(ex, xm_read, &m, xm_emit, &m);
    } else {
        /* The loop of the header's example: submit, and when the window is
         * full, collect what is ready. */
        exec_result_t res;
        for (size_t i = 0; i < r->n && rc == 0; i++) {
            while ((rc = exec_try_submit(ex, r->recs[i].p, r->recs[i].len, i)) == EXEC_EAGAIN) {
                rc = exec_next(ex, &res, -1);
                if (rc)
                    break;
                xm_emit(&m, &res);
                while (exec_next(ex, &res, 0) == 0)
                    xm_emit(&m, &res);
            }
        }
        if (rc == 0)
            rc = exec_finish(ex);
        while (rc == 0 && (rc = exec_next(ex, &res, -1)) == 0)
            xm_emit(&m, &res);
        if (rc == EXEC_EOF)
            rc = 0;
    }
    r->seconds = bench_now() - t0;
    r->checksum = m.sum;
    if (backend == EXEC_FORK)
        workers_mem(&last_mem);
    if (!per_record)
        insights_take(ex, backend);
    exec_destroy(ex);
    if (rc) {
        snprintf(r->err, sizeof r->err, "%s: %s", per_record ? "exec_next" : "exec_map",
                 exec_strerror(rc));
        return BENCH_FAIL;
    }
    if (m.bad || m.got != r->n) {
        snprintf(r->err, sizeof r->err,
                 "%s: %zu of %zu results bad or out of order, %zu delivered (first status %s)",
                 exec_backend_name(backend), m.bad, r->n, m.got,
                 exec_err_name(m.first_bad_status));
        return BENCH_FAIL;
    }
    return 0;
}

static int run_threads(struct bench_run *r)
{
    return exec_runner(r, EXEC_THREADS, 0);
}

static int run_threads_submit(struct bench_run *r)
{
    return exec_runner(r, EXEC_THREADS, 1);
}

static int run_fork(struct bench_run *r)
{
    return exec_runner(r, EXEC_FORK, 0);
}

/* Latency through libexecutor: one record in flight at a time. */
static int exec_latency(struct bench_run *r, exec_backend_t backend, double *samples, size_t n)
{
    exec_t *ex;
    int rc = bench_exec_create(r, backend, 0, &ex);
    if (rc)
        return rc;
    uint64_t sum = 0;
    exec_result_t res;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct bench_rec *x = &r->recs[i % r->n];
        double t0 = bench_now();
        rc = exec_submit(ex, x->p, x->len, i);
        if (rc == 0)
            rc = exec_next(ex, &res, -1);
        samples[i] = bench_now() - t0;
        if (rc == 0 && (res.status != 0 || res.tag != i)) {
            rc = res.status ? res.status : EXEC_EWORKER;
        } else if (rc == 0) {
            uint64_t v;
            memcpy(&v, res.data, sizeof v);
            sum += v;
        }
    }
    exec_destroy(ex);
    r->checksum = sum;
    if (rc) {
        snprintf(r->err, sizeof r->err, "%s latency: %s", exec_backend_name(backend),
                 exec_strerror(rc));
        return BENCH_FAIL;
    }
    return 0;
}

static int lat_threads(struct bench_run *r, double *s, size_t n)
{
    return exec_latency(r, EXEC_THREADS, s, n);
}

static int lat_fork(struct bench_run *r, double *s, size_t n)
{
    return exec_latency(r, EXEC_FORK, s, n);
}

static int lat_seq(struct bench_run *r, double *s, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        const struct bench_rec *x = &r->recs[i % r->n];
        double t0 = bench_now();
        sum += bench_classify(r->ctx, x->p, x->len);
        s[i] = bench_now() - t0;
    }
    r->checksum = sum;
    return 0;
}

/* ------------------------------------------------------------------------- */
/* The executors                                                             */
/* ------------------------------------------------------------------------- */

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

static struct executor executors[] = {
    {"static", "hardware ceiling: each worker over a fixed share, no queue", run_static, NULL,
     0, 0, 0, 0, 1, 0, ""},
    {"threads", "EXEC_THREADS via exec_map()", run_threads, lat_threads, 0, 1, 0, 1, 1, 0, ""},
    {"threads-submit", "EXEC_THREADS via exec_try_submit()/exec_next() per record",
     run_threads_submit, NULL, 0, 1, 1, 1, 1, 0, ""},
    {"fork", "EXEC_FORK via exec_map()", run_fork, lat_fork, 0, 1, 0, 1, 1, 0, ""},
    {"mutex", "mutex+condvar pool, one record per task (libuv threadpool.c style)",
     bench_run_mutex_pool, bench_lat_mutex_pool, 1, 0, 0, 0, 1, 0, ""},
    {"glib", "GLib GThreadPool, one record per task, results via GAsyncQueue", bench_run_glib,
     bench_lat_glib, 1, 0, 0, 0, 1, 0, ""},
    {"omp-for", "OpenMP parallel for schedule(dynamic,256)", bench_run_omp_for, NULL, 1, 0, 0,
     0, 1, 0, ""},
    {"omp-task", "OpenMP tasks over batches of 128", bench_run_omp_task, NULL, 1, 0, 0, 0, 1,
     0, ""},
    {"tbb", "oneTBB parallel_pipeline, batches of 128, 8 tokens", bench_run_tbb, NULL, 1, 0, 0,
     0, 1, 0, ""},
};
#define NEXEC ((int)(sizeof executors / sizeof executors[0]))

static int find_executor(const char *name, size_t len)
{
    for (int i = 0; i < NEXEC; i++)
        if (strlen(executors[i].name) == len && strncmp(executors[i].name, name, len) == 0)
            return i;
    return -1;
}

static int select_executors(const char *list)
{
    for (int i = 0; i < NEXEC; i++)
        executors[i].selected = 0;
    const char *s = list;
    while (*s) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        int i = find_executor(s, len);
        if (i < 0) {
            fprintf(stderr, "executor-bench: unknown executor '%.*s'\n", (int)len, s);
            return -1;
        }
        executors[i].selected = 1;
        s += len + (e ? 1 : 0);
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Statistics                                                                */
/* ------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct stat3 {
    double med, min, max;
};

static struct stat3 stat_of(const double *v, int n)
{
    double tmp[MAX_RUNS];
    struct stat3 s = {NAN, NAN, NAN};
    if (n <= 0)
        return s;
    memcpy(tmp, v, (size_t)n * sizeof *v);
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
    s.min = tmp[0];
    s.max = tmp[n - 1];
    s.med = n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
    return s;
}

static double percentile(const double *sorted, size_t n, double p)
{
    if (n == 0)
        return NAN;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

/* ------------------------------------------------------------------------- */
/* Calibration                                                               */
/* ------------------------------------------------------------------------- */

static double ns_per_iter;  /* the weight loop, per iteration */
static double base_ns;      /* classify without the weight loop, per record */

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
static void calibrate(const struct bench_table *t, const struct bench_rec *recs, size_t n)
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

static uint64_t spin_for(double weight_ns)
{
    if (weight_ns <= base_ns)
        return 0;
    return (uint64_t)((weight_ns - base_ns) / ns_per_iter + 0.5);
}

/* ------------------------------------------------------------------------- */
/* Throughput                                                                */
/* ------------------------------------------------------------------------- */

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

static struct cell *cells;
static int ncells;
static int failures;
static int runs_checked;

static const char *exec_label(int e, int ordered)
{
    static char buf[NEXEC][32];
    if (!ordered || !executors[e].takes_order)
        return executors[e].name;
    snprintf(buf[e], sizeof buf[e], "%s-ord", executors[e].name);
    return buf[e];
}

static void note_failure(const char *name, const struct bench_run *r, double weight,
                         unsigned workers)
{
    progress_clear();
    fprintf(stderr, "executor-bench: %s at %.0f ns, %u workers: %s\n", name, weight, workers,
            r->err);
    failures++;
}

static int nearest_weight(const struct opts *o, double target)
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
            cpu[e][nr[e]] = (cpu1 - cpu0) * 1e9 / (double)c->n;
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
            c->cpu_ns[e] = executors[e].run == run_fork ? -1 : stat_of(cpu[e], nr[e]).med;
        }
    }
}

static double ideal_of(const struct cell *c)
{
    return c->seq_rate.med * c->workers;
}

static const char *fmt_rate(char *buf, size_t len, double r)
{
    if (r >= 1e6)
        snprintf(buf, len, "%.2fM", r / 1e6);
    else if (r >= 1e3)
        snprintf(buf, len, "%.1fk", r / 1e3);
    else
        snprintf(buf, len, "%.0f", r);
    return buf;
}

static int find_peer(const char *name)
{
    int i = find_executor(name, strlen(name));
    return i;
}

static void print_cell(const struct opts *o, const struct dataset *d, int ci)
{
    int imutex = find_peer("mutex"), iglib = find_peer("glib");
    {
        const struct cell *c = &cells[ci];
        char b1[32], b2[32];
        say("\n== weight %.0f ns (measured %.0f ns/record sequential, CPU %.0f ns), %u worker%s, "
            "%zu records; ideal %s rec/s = %u x sequential %s\n",
            c->weight, c->seq_ns, c->seq_cpu_ns, c->workers, c->workers > 1 ? "s" : "", c->n,
            fmt_rate(b1, sizeof b1, ideal_of(c)), c->workers,
            fmt_rate(b2, sizeof b2, c->seq_rate.med));
        say("%-18s %9s  %5s  %-13s %7s %7s %7s %7s %7s  %s\n", "executor", "rec/s", "eff",
            "[min-max]", "ovh ns", "CPU ns", "+RSS MB", "x mutex", "x glib", "x best peer");
        for (int e = 0; e < NEXEC; e++) {
            if (!c->ran[e])
                continue;
            const struct stat3 *s = &c->rate[e];
            double ideal = ideal_of(c);
            double ovh = (1.0 / s->med - 1.0 / ideal) * c->workers * 1e9;
            char xm[16] = "-", xg[16] = "-", xb[40] = "-";
            if (imutex >= 0 && c->ran[imutex] && e != imutex)
                snprintf(xm, sizeof xm, "%.2f", s->med / c->rate[imutex].med);
            if (iglib >= 0 && c->ran[iglib] && e != iglib)
                snprintf(xg, sizeof xg, "%.2f", s->med / c->rate[iglib].med);
            int best = -1;
            for (int p = 0; p < NEXEC; p++)
                if (executors[p].peer && c->ran[p] && p != e &&
                    (best < 0 || c->rate[p].med > c->rate[best].med))
                    best = p;
            if (best >= 0 && !executors[e].peer)
                snprintf(xb, sizeof xb, "%.2f %s", s->med / c->rate[best].med,
                         executors[best].name);
            char cpu[16] = "-";
            if (c->cpu_ns[e] >= 0)
                snprintf(cpu, sizeof cpu, "%.0f", c->cpu_ns[e]);
            say("%-18s %9s  %5.3f  [%.3f-%.3f] %7.0f %7s %7.1f %7s %7s  %s\n",
                exec_label(e, o->ordered), fmt_rate(b1, sizeof b1, s->med), s->med / ideal,
                s->min / ideal, s->max / ideal, ovh, cpu, c->rss_add_kb[e] / 1024, xm, xg, xb);
        }
        insights_print(EXEC_THREADS);
        insights_print(EXEC_FORK);
        if (c->mem.workers)
            say("fork workers: %d; PSS %.1f MB in all (%.2f x the %.1f MB context; it also "
                "counts their shares of our %.0f MB, records included); private %.1f MB, of "
                "which dirty %.1f MB\n",
                c->mem.workers, c->mem.pss / 1024.0,
                c->mem.pss * 1024.0 / (double)d->table.bytes, (double)d->table.bytes / (1 << 20),
                c->mem.parent / 1024.0, c->mem.priv / 1024.0, c->mem.dirty / 1024.0);
    }
}

static void write_csv(const struct opts *o, const struct dataset *d, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "executor-bench: %s: %s\n", path, strerror(errno));
        failures++;
        return;
    }
    fprintf(f, "weight_ns,seq_ns_per_record,workers,records,executor,ordered,rate,rate_min,"
               "rate_max,ideal,efficiency,eff_min,eff_max,overhead_ns,cpu_ns_per_record,"
               "peak_rss_kb,rss_added_kb,"
               "fork_pss_kb,fork_private_kb,fork_private_dirty_kb,context_kb");
    for (int p = 0; p < NEXEC; p++)
        if (executors[p].peer || p == 0)
            fprintf(f, ",x_%s", executors[p].name);
    fprintf(f, "\n");
    for (int ci = 0; ci < ncells; ci++) {
        const struct cell *c = &cells[ci];
        double ideal = ideal_of(c);
        fprintf(f, "%.0f,%.1f,%u,%zu,seq,0,%.0f,%.0f,%.0f,%.0f,,,,,%.1f,,,,,,%zu", c->weight,
                c->seq_ns, c->workers, c->n, c->seq_rate.med, c->seq_rate.min, c->seq_rate.max,
                ideal, c->seq_cpu_ns, d->table.bytes / 1024);
        for (int p = 0; p < NEXEC; p++)
            if (executors[p].peer || p == 0)
                fprintf(f, ",");
        fprintf(f, "\n");
        for (int e = 0; e < NEXEC; e++) {
            if (!c->ran[e])
                continue;
            const struct stat3 *s = &c->rate[e];
            fprintf(f, "%.0f,%.1f,%u,%zu,%s,%d,%.0f,%.0f,%.0f,%.0f,%.4f,%.4f,%.4f,%.1f,",
                    c->weight, c->seq_ns, c->workers, c->n, executors[e].name,
                    o->ordered && executors[e].takes_order, s->med, s->min, s->max, ideal,
                    s->med / ideal, s->min / ideal, s->max / ideal,
                    (1.0 / s->med - 1.0 / ideal) * c->workers * 1e9);
            if (c->cpu_ns[e] >= 0)
                fprintf(f, "%.1f", c->cpu_ns[e]);
            fprintf(f, ",%.0f,%.0f,", c->rss_kb[e], c->rss_add_kb[e]);
            if (executors[e].run == run_fork && c->mem.workers)
                fprintf(f, "%ld,%ld,%ld", c->mem.pss, c->mem.priv, c->mem.dirty);
            else
                fprintf(f, ",,");
            fprintf(f, ",%zu", d->table.bytes / 1024);
            for (int p = 0; p < NEXEC; p++) {
                if (!(executors[p].peer || p == 0))
                    continue;
                if (c->ran[p] && p != e)
                    fprintf(f, ",%.4f", s->med / c->rate[p].med);
                else
                    fprintf(f, ",");
            }
            fprintf(f, "\n");
        }
    }
    fclose(f);
}

/* gnuplot script, written next to the data so it can be re-run by hand. */
static const char plot_head[] =
    "# Efficiency vs record weight; re-run with: gnuplot plot.gp\n"
    "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
    "  set terminal pngcairo size 1100,650 font 'Sans,11'\n"
    "} else {\n"
    "  set terminal png size 1100,650\n"
    "}\n"
    "set output 'efficiency.png'\n"
    "set datafile missing '?'\n"
    "set logscale x 10\n"
    "set format x '%g'\n"
    "set xlabel 'record weight: CPU ns per record in the sequential loop (log scale)'\n"
    "set ylabel 'efficiency = rate / (workers x sequential rate)'\n"
    "set yrange [0:1.15]\n"
    "set ytics 0.1\n"
    "set grid xtics ytics mxtics\n"
    "set key outside right top box\n";

/* Line style per executor: ours bold, the ceiling dashed black, peers thin. */
static const char *plot_style(const char *name)
{
    static const struct {
        const char *name, *style;
    } st[] = {
        {"static", "lc rgb 'black' dt 2 lw 2 pt 6"},
        {"threads", "lc rgb '#0050c8' lw 4 pt 7 ps 1.4"},
        {"fork", "lc rgb '#d01c1c' lw 4 pt 5 ps 1.4"},
        {"mutex", "lc rgb '#8c564b' lw 1.5 pt 9"},
        {"glib", "lc rgb '#9467bd' lw 1.5 pt 11"},
        {"omp-for", "lc rgb '#2ca02c' lw 1.5 pt 13"},
        {"omp-task", "lc rgb '#17becf' lw 1.5 pt 4"},
        {"tbb", "lc rgb '#ff7f0e' lw 1.5 pt 8"},
    };
    for (size_t i = 0; i < sizeof st / sizeof st[0]; i++)
        if (strcmp(st[i].name, name) == 0)
            return st[i].style;
    return "lw 1.5";
}

static void write_plot(const struct opts *o, const char *dir, unsigned pw)
{
    char path[4096];
    int cols[NEXEC], nc = 0;
    for (int e = 0; e < NEXEC; e++) {
        int any = 0;
        for (int ci = 0; ci < ncells; ci++)
            if (cells[ci].workers == pw && cells[ci].ran[e])
                any = 1;
        if (any && !executors[e].one_weight)
            cols[nc++] = e;
    }
    snprintf(path, sizeof path, "%s/plot.dat", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    fprintf(f, "weight_ns");
    for (int i = 0; i < nc; i++)
        fprintf(f, " %s", exec_label(cols[i], o->ordered));
    fprintf(f, "\n");
    for (int ci = 0; ci < ncells; ci++) {
        const struct cell *c = &cells[ci];
        if (c->workers != pw)
            continue;
        fprintf(f, "%.0f", c->seq_cpu_ns);
        for (int i = 0; i < nc; i++) {
            if (c->ran[cols[i]])
                fprintf(f, " %.4f", c->rate[cols[i]].med / ideal_of(c));
            else
                fprintf(f, " ?");
        }
        fprintf(f, "\n");
    }
    fclose(f);

    snprintf(path, sizeof path, "%s/plot.gp", dir);
    f = fopen(path, "w");
    if (!f)
        return;
    char host[256] = "this machine";
    gethostname(host, sizeof host - 1);
    fputs(plot_head, f);
    fprintf(f,
            "set title \"executor-bench: efficiency at %u workers on %s (%u CPUs)%s\\n"
            "{/*0.8 median of %d run%s; 1.0 = workers x the sequential loop's rate; "
            "load average %.1f before, %.1f after (this run included)}\"\n",
            pw, host, ncpus(), o->ordered ? ", libexecutor ordered" : "", o->runs,
            o->runs > 1 ? "s" : "", load_start, loadavg1());
    fprintf(f, "plot ");
    for (int i = 0; i < nc; i++)
        fprintf(f, "'plot.dat' using 1:%d title columnheader(%d) with linespoints %s, \\\n     ",
                i + 2, i + 2, plot_style(executors[cols[i]].name));
    fprintf(f, "1 title 'ideal' lc rgb 'gray40' dt 2 lw 1.5\n");
    fclose(f);
}

/* Runs gnuplot in dir. 0 when the PNG was made. */
static int run_gnuplot(const char *dir)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (chdir(dir) != 0)
            _exit(126);
        int fd = open("gnuplot.log", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execlp("gnuplot", "gnuplot", "plot.gp", (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        return 127;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* The targets of DESIGN.md section 4, at the largest worker count. */
static void print_targets(const struct opts *o, const struct dataset *d, unsigned pw)
{
    int ith = find_peer("threads"), ifk = find_peer("fork"), imu = find_peer("mutex"),
        igl = find_peer("glib");
    const struct cell *light = NULL, *heavy = NULL;
    int wl = nearest_weight(o, 300), wh = nearest_weight(o, 5000);
    for (int ci = 0; ci < ncells; ci++) {
        if (cells[ci].workers != pw)
            continue;
        double w = cells[ci].weight;
        if (w == o->weights[wl] && w >= 150 && w <= 600)
            light = &cells[ci];
        if (w == o->weights[wh] && w >= 2500 && w <= 10000)
            heavy = &cells[ci];
    }
    say("\n== targets (DESIGN.md section 4), %u worker%s\n", pw, pw > 1 ? "s" : "");
    struct {
        int e;
        const struct cell *c;
        double want;
    } eff[] = {{ith, heavy, 0.95}, {ith, light, 0.85}, {ifk, heavy, 0.90}, {ifk, light, 0.75}};
    for (size_t i = 0; i < sizeof eff / sizeof eff[0]; i++) {
        const struct cell *c = eff[i].c;
        if (!c || eff[i].e < 0 || !c->ran[eff[i].e])
            continue;
        double v = c->rate[eff[i].e].med / ideal_of(c);
        say("%-5s %-8s efficiency at %5.0f ns: %.3f (target >= %.2f)\n",
            v >= eff[i].want ? "ok" : "MISS", exec_label(eff[i].e, o->ordered), c->seq_cpu_ns, v,
            eff[i].want);
    }
    int ours[2] = {ith, ifk};
    for (int k = 0; k < 2 && light; k++) {
        int e = ours[k];
        if (e < 0 || !light->ran[e])
            continue;
        if (imu >= 0 && light->ran[imu]) {
            double x = light->rate[e].med / light->rate[imu].med;
            say("%-5s %-8s vs mutex pool at %5.0f ns: %.2fx (target >= 1.6x)\n",
                x >= 1.6 ? "ok" : "MISS", exec_label(e, o->ordered), light->seq_cpu_ns, x);
        }
        if (igl >= 0 && light->ran[igl]) {
            double x = light->rate[e].med / light->rate[igl].med;
            say("%-5s %-8s vs GThreadPool at %5.0f ns: %.2fx (target >= 3x)\n",
                x >= 3 ? "ok" : "MISS", exec_label(e, o->ordered), light->seq_cpu_ns, x);
        }
    }
    /* Ahead of every peer at every weight; where not, say so. */
    for (int ci = 0; ci < ncells; ci++) {
        const struct cell *c = &cells[ci];
        if (c->workers != pw || ith < 0 || !c->ran[ith])
            continue;
        int best = -1;
        for (int p = 0; p < NEXEC; p++)
            if (executors[p].peer && c->ran[p] &&
                (best < 0 || c->rate[p].med > c->rate[best].med))
                best = p;
        if (best < 0)
            continue;
        double x = c->rate[ith].med / c->rate[best].med;
        say("%-5s %-8s vs best peer at %5.0f ns: %.2fx %s\n", x >= 0.98 ? "ok" : "BEHIND",
            exec_label(ith, o->ordered), c->seq_cpu_ns, x, executors[best].name);
    }
    const struct cell *worst = NULL;
    for (int ci = 0; ci < ncells; ci++)
        if (cells[ci].workers == pw && cells[ci].mem.workers &&
            (!worst || cells[ci].mem.priv > worst->mem.priv))
            worst = &cells[ci];
    if (worst) {
        const struct cell *c = worst;
        /* PSS <= 1.1 x context + a few MB per worker, where the context is all
         * the parent holds; here the parent also holds the records, so the
         * check is on what is not shared: the workers' private pages. */
        double limit = 0.1 * (double)d->table.bytes / 1024 + 4096.0 * c->mem.workers;
        say("%-5s fork     workers' private memory %.1f MB (PSS %.1f MB) at %.0f ns (target: "
            "pages stay shared, private <= 0.1 x %.1f MB + 4 MB/worker)\n",
            c->mem.priv <= limit ? "ok" : "MISS", c->mem.priv / 1024.0, c->mem.pss / 1024.0,
            c->seq_cpu_ns, (double)d->table.bytes / (1 << 20));
    }
}

/* ------------------------------------------------------------------------- */
/* Latency mode                                                              */
/* ------------------------------------------------------------------------- */

static void run_latency(const struct opts *o, const struct dataset *d, const char *dir)
{
    unsigned pw = o->workers[o->nworkers - 1];
    size_t ns = o->quick ? 300 : 20000;
    double *s = malloc(ns * sizeof *s);
    char path[4096];
    snprintf(path, sizeof path, "%s/latency.csv", dir);
    FILE *f = fopen(path, "w");
    if (!s || !f) {
        fprintf(stderr, "executor-bench: latency: cannot write %s\n", path);
        failures++;
        free(s);
        if (f)
            fclose(f);
        return;
    }
    fprintf(f, "weight_ns,workers,executor,samples,p50_us,p99_us,p999_us,max_us\n");
    say("\n== latency: one record in flight at a time, %u workers, %zu records each; "
        "submit-to-result in us\n",
        pw, ns);
    struct {
        const char *name;
        bench_lat_fn fn;
        int e;
    } lat[NEXEC + 1];
    int nl = 0;
    lat[nl].name = "seq (the call)";
    lat[nl].fn = lat_seq;
    lat[nl++].e = -1;
    for (int e = 0; e < NEXEC; e++)
        if (executors[e].selected && executors[e].lat) {
            lat[nl].name = executors[e].name;
            lat[nl].fn = executors[e].lat;
            lat[nl++].e = e;
        }
    for (int wi = 0; wi < o->nweights; wi++) {
        struct bench_ctx ctx = {&d->table, spin_for(o->weights[wi]), 0, o->init_ms};
        say("weight %.0f ns\n%-16s %9s %9s %9s %9s\n", o->weights[wi], "executor", "p50",
            "p99", "p99.9", "max");
        for (int i = 0; i < nl; i++) {
            if (lat[i].e >= 0 && executors[lat[i].e].notav)
                continue;
            struct bench_run r;
            memset(&r, 0, sizeof r);
            r.ctx = &ctx;
            r.recs = d->recs;
            r.n = d->nrecs;
            r.workers = pw;
            progress("latency: %.0f ns: %s", o->weights[wi], lat[i].name);
            wd_arm(120, "latency: %s at %.0f ns", lat[i].name, o->weights[wi]);
            int rc = lat[i].fn(&r, s, ns);
            wd_disarm();
            if (rc == BENCH_NOTAV) {
                progress_clear();
                fprintf(stderr, "%s (going on without it)\n", r.err);
                executors[lat[i].e].notav = 1;
                continue;
            }
            if (rc) {
                note_failure(lat[i].name, &r, o->weights[wi], pw);
                continue;
            }
            qsort(s, ns, sizeof *s, cmp_double);
            double p50 = percentile(s, ns, 0.5) * 1e6, p99 = percentile(s, ns, 0.99) * 1e6,
                   p999 = percentile(s, ns, 0.999) * 1e6, mx = s[ns - 1] * 1e6;
            say("%-16s %9.2f %9.2f %9.2f %9.2f\n", lat[i].name, p50, p99, p999, mx);
            fprintf(f, "%.0f,%u,%s,%zu,%.3f,%.3f,%.3f,%.3f\n", o->weights[wi], pw,
                    lat[i].e < 0 ? "seq" : lat[i].name, ns, p50, p99, p999, mx);
        }
    }
    fclose(f);
    free(s);
    progress_clear();
}

/* ------------------------------------------------------------------------- */
/* Swap mode                                                                 */
/* ------------------------------------------------------------------------- */

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

static void run_swap_mode(const struct opts *o, const struct dataset *d, const char *dir)
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
        {"help", no_argument, NULL, 'h'},
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
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "executor-bench: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (o.executors && select_executors(o.executors) != 0)
        return 2;

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

    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    load_start = loadavg1();
    say("executor-bench: libexecutor %s on %s, %u CPUs available, load average %.2f\n",
        EXEC_VERSION_STRING, host, cpus, load_start);
    if (load_start > 0.5 * cpus)
        say("warning: the machine is busy (load average %.1f on %u CPUs): other programs take "
            "CPU time, so the\nfigures will be low and noisy; the CPU ns column is the steadier "
            "one\n", load_start, cpus);
    say("records: %zu %s; context: %.1f MB hash table (%u words); classify without weight "
        "%.0f ns/record, weight loop %.3f ns/iteration\n",
        d.nrecs, o.file ? o.file : "built-in rows of 8 words", (double)d.table.bytes / (1 << 20),
        d.nwords, base_ns, ns_per_iter);
    say("each figure: median of %d run%s [min-max]; eff = rate / (workers x sequential rate); "
        "ovh ns = (1/rate - 1/ideal) x workers;\nCPU ns = CPU time of the whole process per "
        "record (fork workers not counted); +RSS MB = peak RSS during a run less RSS before "
        "it%s\n",
        o.runs, o.runs > 1 ? "s" : "",
        o.ordered ? "; libexecutor in ordered mode, peers unordered" : "");

    if (o.quick)
        say("--quick: a sanity check of the checksums; its figures mean nothing\n");
    fflush(stdout);
    if (o.latency)
        run_latency(&o, &d, o.out);
    if (o.swap)
        run_swap_mode(&o, &d, o.out);
    if (!o.latency && !o.swap) {
        ncells = o.nweights * o.nworkers;
        cells = calloc((size_t)ncells, sizeof *cells);
        if (!cells)
            return 1;
        int ci = 0;
        for (int wi = 0; wi < o.nweights; wi++) {
            double per_ns = o.weights[wi] > base_ns ? o.weights[wi] : base_ns;
            double want = o.duration * 1e9 / per_ns;
            size_t n = want > (double)d.nrecs ? d.nrecs : (size_t)want;
            /* Enough batches that the last one's imbalance stays small. */
            size_t nmin = d.nrecs < 3000 ? d.nrecs : 3000;
            if (n < nmin)
                n = nmin;
            for (int pi = 0; pi < o.nworkers; pi++, ci++) {
                cells[ci].weight = o.weights[wi];
                cells[ci].workers = o.workers[pi];
                cells[ci].n = n;
                run_cell(&cells[ci], &o, &d, wi, ci + 1, ncells);
                progress_clear();
                print_cell(&o, &d, ci);
                fflush(stdout);
            }
        }
        unsigned pw = o.workers[o.nworkers - 1];
        print_targets(&o, &d, pw);
        for (int e = 0; e < NEXEC; e++)
            if (executors[e].notav)
                say("not run: %s\n", executors[e].notav_msg);
        snprintf(path, sizeof path, "%s/results.csv", o.out);
        write_csv(&o, &d, path);
        write_plot(&o, o.out, pw);
        progress("plotting");
        int g = run_gnuplot(o.out);
        progress_clear();
        say("\nwrote %s/results.csv, %s/table.txt", o.out, o.out);
        if (g == 0)
            say(", %s/efficiency.png (efficiency vs weight at %u workers)\n", o.out, pw);
        else if (g == 127)
            say("; no plot: gnuplot not found (apt-get install gnuplot-nox), data in "
                "%s/plot.dat\n", o.out);
        else
            say("; no plot: gnuplot failed on %s/plot.gp (see %s/gnuplot.log)\n", o.out,
                o.out);
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
