/*
 * executor-bench: what every mode uses. The table on stdout (copied to
 * table.txt) and the progress line on stderr, the watchdog, the failure
 * count, measurements of this process and its fork workers, and statistics.
 */
#include "harness.h"

#include <dirent.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

FILE *table_file;
int progress_on;
static int progress_shown; /* a progress line is on it */
double t_start;
double load_start;
int failures;
int runs_checked;

/* The 1-minute load average: how busy the machine was around a run. */
double loadavg1(void)
{
    double l[1];
    return getloadavg(l, 1) == 1 ? l[0] : -1;
}

unsigned ncpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1u;
}

void say(const char *fmt, ...)
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

void progress(const char *fmt, ...)
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

void progress_clear(void)
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

void *wd_main(void *arg)
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

void wd_arm(double seconds, const char *fmt, ...)
{
    __atomic_store_n(&wd_deadline_ns, 0, __ATOMIC_RELEASE);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(wd_what, sizeof wd_what, fmt, ap);
    va_end(ap);
    __atomic_store_n(&wd_deadline_ns, (uint64_t)((bench_now() + seconds) * 1e9),
                     __ATOMIC_RELEASE);
}

void wd_disarm(void)
{
    __atomic_store_n(&wd_deadline_ns, 0, __ATOMIC_RELEASE);
}

/* A run that went wrong: said on stderr, counted, and the program goes on. */
void note_failure(const char *name, const struct bench_run *r, double weight, unsigned workers)
{
    progress_clear();
    fprintf(stderr, "executor-bench: %s at %.0f ns, %u workers: %s\n", name, weight, workers,
            r->err);
    failures++;
}

/* ------------------------------------------------------------------------- */
/* Measuring the process: peak RSS and fork workers' PSS                     */
/* ------------------------------------------------------------------------- */

/* Resets the peak RSS (VmHWM) so the next reading covers one run only. */
void rss_reset(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

long proc_status_kb(const char *path, const char *key)
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

long rss_peak_kb(void)
{
    return proc_status_kb("/proc/self/status", "VmHWM:");
}

/* CPU time of every thread of this process so far. */
double cpu_seconds(void) { return bench_cpu(); }

/*
 * Memory of this process's fork workers: its descendants that have no children
 * of their own (workers are children of a zygote, or of us), found through
 * /proc/PID/stat ppid links, read from /proc/PID/smaps_rollup. 0, or -1 when
 * there is none.
 */
int workers_mem(struct fork_mem *m)
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
/* Statistics                                                                */
/* ------------------------------------------------------------------------- */

int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct stat3 stat_of(const double *v, int n)
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

double percentile(const double *sorted, size_t n, double p)
{
    if (n == 0)
        return NAN;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}
