/*
 * executor-bench: the real workloads (real.h). Each workload runs over the
 * same lines, each held in a string of its own, on every path:
 *
 *   loop          the plain loop, one thread
 *   omp-for       OpenMP parallel for, schedule(dynamic, 256), results in an
 *                 array the caller then reads
 *   run           exec_run_records(): the lines where they are
 *   buffer        exec_run_records() on the lines and their array placed in
 *                 exec_buffer() (a program reading its input straight there),
 *                 the second pass over it (a program reuses its buffer)
 *   map           exec_map(): lines from a callback, results one by one
 *   submit        exec_try_submit_many()/exec_next_many() from one thread
 *   source        exec_map_source(): the lines from a file, read by the library
 *   run-recycled  (fork, where the workload asks) exec_run_records() with
 *                 workers recycled every ~N records
 *
 * on both backends, interleaved run by run (each figure a median), every
 * checksum compared with the loop's. Per record: the CPU time of this process,
 * and on fork of the workers as well, and what an executor's create and
 * destroy cost (a short job pays them).
 */
#include "executor_records.h"
#include "real.h"
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef BENCH_HAVE_OPENMP
#include <omp.h>
#endif

#define REAL_CHUNK 256 /* OpenMP's chunk; records per submit/next call */

/* ------------------------------------------------------------------------- */
/* The lines                                                                  */
/* ------------------------------------------------------------------------- */

static const char *const rl_words[] = {
    "the", "user", "order", "paid", "for", "with", "from", "failed", "password", "accepted",
    "client", "error", "denied", "request", "mail", "server", "session", "opened", "closed",
    "invalid", "connection", "reset", "timeout", "device", "sector", "kernel", "root",
    "admin", "guest", "alice", "bob", "carol", "dave", "erin", "frank", "grace", "index",
    "images", "api", "login", "logout", "cart", "checkout", "search", "Queue", "Backup",
};
#define RL_NWORDS (sizeof rl_words / sizeof rl_words[0])

static uint64_t rl_next(uint64_t *s)
{
    return bench_mix64(*s += 0x9e3779b97f4a7c15ull);
}

static const char *rl_word(uint64_t *s)
{
    return rl_words[rl_next(s) % RL_NWORDS];
}

size_t real_line(uint64_t i, char *buf, size_t cap)
{
    uint64_t s = i * 0x2545f4914f6cdd1dull + 17;
    unsigned a = rl_next(&s) % 256, b = rl_next(&s) % 256, c = rl_next(&s) % 256,
             d = rl_next(&s) % 256;
    unsigned day = 1 + rl_next(&s) % 28, hh = rl_next(&s) % 24, mm = rl_next(&s) % 60,
             ss = rl_next(&s) % 60;
    int n;
    switch (rl_next(&s) % 6) {
    case 0:
        n = snprintf(buf, cap, "2024-03-%02u %02u:%02u:%02u host%u sshd[%u]: %s password for %s "
                     "from %u.%u.%u.%u port %u ssh2",
                     day, hh, mm, ss, a % 16, 1000 + b * 7, rl_next(&s) % 3 ? "Failed" : "Accepted",
                     rl_word(&s), a, b, c, d, 1024 + (unsigned)(rl_next(&s) % 60000));
        break;
    case 1:
        n = snprintf(buf, cap, "%u.%u.%u.%u - - [%02u/Mar/2024:%02u:%02u:%02u] \"%s /%s/%s.html "
                     "HTTP/1.1\" %u %u \"https://%s.example.com/%s\"",
                     a, b, c, d, day, hh, mm, ss, rl_next(&s) % 4 ? "GET" : "POST", rl_word(&s),
                     rl_word(&s), rl_next(&s) % 5 ? 200u : 404u, (unsigned)(rl_next(&s) % 90000),
                     rl_word(&s), rl_word(&s));
        break;
    case 2:
        n = snprintf(buf, cap, "Mar %2u %02u:%02u:%02u mx%u postfix/smtpd[%u]: %05X%u: client=%s"
                     "[%u.%u.%u.%u], sasl_username=%s@%s.org",
                     day, hh, mm, ss, a % 4, 2000 + c, b, d, rl_word(&s), a, b, c, d, rl_word(&s),
                     rl_word(&s));
        break;
    case 3:
        n = snprintf(buf, cap, "kernel: [%u.%06u] %s: I/O error %u on device sd%c, sector %u",
                     a * 997 + b, (unsigned)(rl_next(&s) % 1000000), rl_word(&s), c,
                     'a' + (char)(d % 8), (unsigned)(rl_next(&s) % 100000000));
        break;
    case 4:
        n = snprintf(buf, cap, "the %s %s paid $%u.%02u for order #%06x with %s at %02u:%02u:%02u",
                     rl_word(&s), rl_word(&s), a + b, c % 100, (unsigned)(rl_next(&s) & 0xffffff),
                     rl_word(&s), hh, mm, ss);
        break;
    default: {
        /* Free text: a few to a dozen words. */
        size_t len = 0;
        unsigned k = 3 + (unsigned)(rl_next(&s) % 10);
        buf[0] = 0;
        for (unsigned w = 0; w < k && len + 16 < cap; w++)
            len += (size_t)snprintf(buf + len, cap - len, w ? " %s" : "%s", rl_word(&s));
        n = (int)len;
        break;
    }
    }
    if (n < 0)
        n = 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

/* The lines, each in its own allocation, and the same lines in a file. */
struct rl_data {
    char **p;
    uint32_t *len;
    size_t n;
    char path[4096]; /* the file, removed at the end */
};

static void rl_free(struct rl_data *d)
{
    if (d->p)
        for (size_t i = 0; i < d->n; i++)
            free(d->p[i]);
    free(d->p);
    free(d->len);
    if (d->path[0])
        unlink(d->path);
}

static int rl_build(struct rl_data *d, size_t n, const char *dir)
{
    memset(d, 0, sizeof *d);
    d->p = calloc(n, sizeof *d->p);
    d->len = calloc(n, sizeof *d->len);
    if (!d->p || !d->len)
        return -1;
    snprintf(d->path, sizeof d->path, "%s/real-lines.XXXXXX", dir);
    int fd = mkstemp(d->path);
    if (fd < 0) {
        d->path[0] = 0;
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return -1;
    }
    char buf[512];
    for (size_t i = 0; i < n; i++) {
        size_t len = real_line(i, buf, sizeof buf);
        d->p[i] = malloc(len + 1);
        if (!d->p[i]) {
            fclose(f);
            return -1;
        }
        memcpy(d->p[i], buf, len + 1);
        d->len[i] = (uint32_t)len;
        d->n = i + 1;
        buf[len] = '\n';
        fwrite(buf, 1, len + 1, f);
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------- */
/* The paths                                                                  */
/* ------------------------------------------------------------------------- */

enum { RP_LOOP, RP_OMP, RP_RUN, RP_BUFFER, RP_MAP, RP_SUBMIT, RP_SOURCE, RP_RECYCLE };

struct rpath {
    const char *name;
    int how;
    exec_backend_t backend; /* library paths */
    const char *what;
};

static const struct rpath rpaths[] = {
    {"loop", RP_LOOP, 0, "the plain loop, one thread"},
    {"omp-for", RP_OMP, 0, "OpenMP parallel for, schedule(dynamic, 256)"},
    {"threads-run", RP_RUN, EXEC_THREADS, "exec_run_records()"},
    {"threads-buffer", RP_BUFFER, EXEC_THREADS, "exec_run_records(), lines in exec_buffer"},
    {"threads-map", RP_MAP, EXEC_THREADS, "exec_map(), results one by one"},
    {"threads-submit", RP_SUBMIT, EXEC_THREADS, "exec_try_submit_many()/exec_next_many()"},
    {"threads-source", RP_SOURCE, EXEC_THREADS, "exec_map_source() on a file of the lines"},
    {"fork-run", RP_RUN, EXEC_FORK, "exec_run_records()"},
    {"fork-buffer", RP_BUFFER, EXEC_FORK, "exec_run_records(), lines in exec_buffer"},
    {"fork-map", RP_MAP, EXEC_FORK, "exec_map(), results one by one"},
    {"fork-submit", RP_SUBMIT, EXEC_FORK, "exec_try_submit_many()/exec_next_many()"},
    {"fork-source", RP_SOURCE, EXEC_FORK, "exec_map_source() on a file of the lines"},
    {"fork-recycled", RP_RECYCLE, EXEC_FORK, "exec_run_records(), workers recycled"},
};
#define RP_N (sizeof rpaths / sizeof rpaths[0])

/* One timed run of one path. */
struct rrun {
    struct real_load *l;
    const struct rl_data *d;
    unsigned workers;
    unsigned recycle;
    uint64_t sum;
    size_t got, bad;
    double seconds, create_s, destroy_s;
    double cpu_self_s, cpu_workers_s; /* cpu_workers_s < 0: not known */
    int perf;                         /* perf samples its timed part */
    exec_stats_t st;
    char err[160];
};

static int rr_emit(void *arg, const exec_result_t *res)
{
    struct rrun *r = arg;
    uint64_t v, i = res->tag;
    if (res->status != 0 || res->len != sizeof v || i >= r->d->n) {
        r->bad++;
    } else {
        memcpy(&v, res->data, sizeof v);
        r->sum += bench_sum_add(i, v);
    }
    r->got++;
    return 0;
}

static int rr_emit_many(void *arg, const exec_result_t *res, size_t n)
{
    for (size_t i = 0; i < n; i++)
        rr_emit(arg, &res[i]);
    return 0;
}

/* exec_map_source's records are numbered from 1. */
static int rr_emit_source(void *arg, const exec_result_t *res)
{
    exec_result_t x = *res;
    x.tag--;
    return rr_emit(arg, &x);
}

struct rr_reader {
    const struct rl_data *d;
    size_t next;
};

static int rr_read(void *arg, const void **rec, size_t *len, uint64_t *tag)
{
    struct rr_reader *rd = arg;
    if (rd->next >= rd->d->n)
        return 0;
    *rec = rd->d->p[rd->next];
    *len = rd->d->len[rd->next];
    *tag = rd->next++;
    return 1;
}

/* CPU time of ex's worker processes (schedstat: ns, exact), or -1 when one
 * cannot be read. *pids gets their pids, to tell a recycled one. */
static double rr_workers_cpu(exec_t *ex, unsigned nw, int *pids)
{
    double sum = 0;
    for (unsigned i = 0; i < nw; i++) {
        exec_worker_stats_t ws;
        if (exec_worker_stats(ex, i, &ws) != 0 || ws.pid <= 0)
            return -1;
        pids[i] = ws.pid;
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/schedstat", ws.pid);
        FILE *f = fopen(path, "r");
        unsigned long long ns;
        int ok = f && fscanf(f, "%llu", &ns) == 1;
        if (f)
            fclose(f);
        if (!ok)
            return -1;
        sum += (double)ns * 1e-9;
    }
    return sum;
}

/* ------------------------------------------------------------------------- */
/* perf record's switch (--perf-ctl)                                          */
/* ------------------------------------------------------------------------- */

/* The FIFOs of `perf record -D -1 -e dummy -e EVENT --control=fifo:CTL,ACK`
 * (every event off at the start): -1 when not asked for. EVENT is switched
 * on for the timed parts only; the dummy event from the start on, so perf
 * knows the fork workers (their forks and mappings) when they come into the
 * samples. */
static int perf_ctl = -1, perf_ack = -1;
static char perf_event[64];
static unsigned perf_windows; /* timed parts sampled */

static void perf_close(void)
{
    if (perf_ctl >= 0)
        close(perf_ctl);
    if (perf_ack >= 0)
        close(perf_ack);
    perf_ctl = perf_ack = -1;
}

/* Sends "enable EV" or "disable EV" (ev, or else perf_event) and waits for
 * perf's "ack\n" (perf writes a NUL after it: skipped). A perf that went
 * away ends the sampling, as an error. */
static void perf_cmd(const char *verb, const char *ev)
{
    if (perf_ctl < 0)
        return;
    char cmd[96], line[16];
    int len = snprintf(cmd, sizeof cmd, "%s %s\n", verb, ev ? ev : perf_event);
    size_t n = 0;
    int ok = write(perf_ctl, cmd, (size_t)len) == len;
    while (ok && n < sizeof line - 1) {
        ssize_t k = read(perf_ack, line + n, 1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            ok = 0;
        else if (line[n] && line[n++] == '\n')
            break;
    }
    line[n] = 0;
    if (!ok || strcmp(line, "ack\n") != 0) {
        fprintf(stderr, "executor-bench: --perf-ctl: no ack from perf for %s", cmd);
        failures++;
        perf_close();
    }
}

/* spec: CTL,ACK[,EVENT]. The dummy event goes on, EVENT off (where perf
 * started without -D -1). */
static int perf_open(const char *spec)
{
    const char *comma = strchr(spec, ','), *ev = strchr(comma + 1, ',');
    char ctl[4096], ack[4096];
    snprintf(ctl, sizeof ctl, "%.*s", (int)(comma - spec), spec);
    snprintf(ack, sizeof ack, "%.*s", (int)(ev ? ev - comma - 1 : (ptrdiff_t)strlen(comma + 1)),
             comma + 1);
    snprintf(perf_event, sizeof perf_event, "%s", ev && ev[1] ? ev + 1 : "cpu-clock");
    /* Non-blocking opens: with nobody reading CTL this fails (ENXIO) at
     * once instead of waiting for a reader; then blocking, to wait for acks. */
    perf_ctl = open(ctl, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (perf_ctl >= 0)
        perf_ack = open(ack, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (perf_ctl < 0 || perf_ack < 0 || fcntl(perf_ctl, F_SETFL, 0) != 0 ||
        fcntl(perf_ack, F_SETFL, 0) != 0) {
        fprintf(stderr, "executor-bench: --perf-ctl %s: %s (run under perf record -D -1 -e "
                        "dummy -e %s --control=fifo:CTL,ACK)\n", spec, strerror(errno),
                perf_event);
        perf_close();
        return -1;
    }
    perf_cmd("enable", "dummy");
    perf_cmd("disable", NULL);
    return perf_ctl >= 0 ? 0 : -1;
}

static void perf_on(const struct rrun *r)
{
    if (r->perf)
        perf_cmd("enable", NULL);
}

static void perf_off(const struct rrun *r)
{
    if (r->perf && perf_ctl >= 0) {
        perf_cmd("disable", NULL);
        perf_windows++;
    }
}

static int rr_loop(struct rrun *r, int omp)
{
    struct real_load *l = r->l;
    const struct rl_data *d = r->d;
    size_t n = d->n;
    uint64_t *res = malloc(n * sizeof *res);
    if (!res) {
        snprintf(r->err, sizeof r->err, "out of memory");
        return BENCH_FAIL;
    }
    memset(res, 0, n * sizeof *res);
    int rc = 0;
    if (!omp) {
        void *ws = NULL;
        if (l->state_new && l->state_new(l->ctx, &ws) != 0) {
            free(res);
            snprintf(r->err, sizeof r->err, "%s: no state", l->name);
            return BENCH_FAIL;
        }
        perf_on(r);
        double c0 = cpu_seconds(), t0 = bench_now();
        for (size_t i = 0; i < n; i++)
            res[i] = l->run(l->ctx, ws, d->p[i], d->len[i]);
        for (size_t i = 0; i < n; i++)
            r->sum += bench_sum_add(i, res[i]);
        r->seconds = bench_now() - t0;
        r->cpu_self_s = cpu_seconds() - c0;
        perf_off(r);
        if (l->state_free)
            l->state_free(l->ctx, ws);
    } else {
#ifdef BENCH_HAVE_OPENMP
        int nt = (int)r->workers;
        void *ws[MAX_WORKERS] = {0};
        int fails = 0;
        /* Each thread's state, made by that thread, before the clock (the
         * team stays up: a long-running program's would). */
#pragma omp parallel num_threads(nt) reduction(+ : fails)
        {
            int t = omp_get_thread_num();
            if (l->state_new && l->state_new(l->ctx, &ws[t]) != 0)
                fails++;
        }
        if (fails) {
            rc = BENCH_FAIL;
            snprintf(r->err, sizeof r->err, "%s: no state", l->name);
        } else {
            long nl = (long)n;
            perf_on(r);
            double c0 = cpu_seconds(), t0 = bench_now();
#pragma omp parallel for num_threads(nt) schedule(dynamic, REAL_CHUNK)
            for (long i = 0; i < nl; i++)
                res[i] = l->run(l->ctx, ws[omp_get_thread_num()], d->p[i], d->len[i]);
            for (size_t i = 0; i < n; i++)
                r->sum += bench_sum_add(i, res[i]);
            r->seconds = bench_now() - t0;
            r->cpu_self_s = cpu_seconds() - c0;
            perf_off(r);
        }
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num();
            if (l->state_free && ws[t])
                l->state_free(l->ctx, ws[t]);
        }
#else
        rc = BENCH_NOTAV;
        snprintf(r->err, sizeof r->err, "openmp: not available in this build");
#endif
    }
    r->got = n;
    r->cpu_workers_s = 0;
    free(res);
    return rc;
}

static int rr_submit(exec_t *ex, struct rrun *r, const exec_record_t *recs)
{
    exec_result_t res[REAL_CHUNK];
    size_t n = r->d->n, i = 0, got;
    int rc = 0;
    while (i < n) {
        size_t k = n - i < REAL_CHUNK ? n - i : REAL_CHUNK, acc = 0;
        rc = exec_try_submit_many(ex, recs + i, k, &acc);
        i += acc;
        if (rc == EXEC_EAGAIN) {
            /* The window is full: collect what is ready (at least one). */
            rc = exec_next_many(ex, res, REAL_CHUNK, &got, -1);
            while (rc == 0) {
                rr_emit_many(r, res, got);
                rc = exec_next_many(ex, res, REAL_CHUNK, &got, 0);
            }
            if (rc == EXEC_EAGAIN)
                rc = 0;
        }
        if (rc)
            return rc;
    }
    rc = exec_finish(ex);
    while (rc == 0 && (rc = exec_next_many(ex, res, REAL_CHUNK, &got, -1)) == 0)
        rr_emit_many(r, res, got);
    return rc == EXEC_EOF ? 0 : rc;
}

static int rr_exec(struct rrun *r, const struct rpath *p)
{
    struct real_load *l = r->l;
    const struct rl_data *d = r->d;
    exec_options_t o;
    memset(&o, 0, sizeof o);
    o.workers = r->workers;
    if (p->how == RP_RECYCLE)
        o.max_records_per_worker = r->recycle;
    exec_record_t *recs = NULL;
    if (p->how == RP_RUN || p->how == RP_RECYCLE || p->how == RP_SUBMIT) {
        /* The caller's array of records, made before the clock. */
        recs = malloc(d->n * sizeof *recs);
        if (!recs) {
            snprintf(r->err, sizeof r->err, "out of memory");
            return BENCH_FAIL;
        }
        for (size_t i = 0; i < d->n; i++)
            recs[i] = (exec_record_t){d->p[i], d->len[i], i};
    }
    size_t bytes = 0;
    if (p->how == RP_BUFFER) {
        /* The lines and their array in the buffer: sized for them. */
        for (size_t i = 0; i < d->n; i++)
            bytes += d->len[i];
        o.buffer_size = d->n * sizeof *recs + bytes + 4096;
    }
    exec_source_t *src = NULL;
    if (p->how == RP_SOURCE) {
        exec_source_options_t so = {.format = EXEC_SOURCE_LINES};
        int rc = exec_source_open(&src, d->path, &so);
        if (rc) {
            free(recs);
            snprintf(r->err, sizeof r->err, "exec_source_open: %s", exec_strerror(rc));
            return BENCH_FAIL;
        }
    }
    const int fork_be = p->backend == EXEC_FORK;
    exec_t *ex;
    double t0 = bench_now();
    int rc = exec_create(&ex, fork_be ? l->ops_fork : l->ops_threads,
                         fork_be ? l->ctx_fork : l->ctx_threads, p->backend, &o);
    r->create_s = bench_now() - t0;
    if (rc) {
        free(recs);
        exec_source_close(src);
        snprintf(r->err, sizeof r->err, "exec_create: %s", exec_strerror(rc));
        return rc == EXEC_ENOTSUP ? BENCH_NOTAV : BENCH_FAIL;
    }
    if (p->how == RP_BUFFER) {
        /* Filled before the clock, as the other paths' arrays are. */
        size_t size;
        char *buf = exec_buffer(ex, &size);
        if (!buf) {
            exec_destroy(ex);
            exec_source_close(src);
            snprintf(r->err, sizeof r->err, "exec_buffer: none");
            return BENCH_FAIL;
        }
        recs = (exec_record_t *)buf;
        char *at = buf + d->n * sizeof *recs;
        for (size_t i = 0; i < d->n; i++) {
            memcpy(at, d->p[i], d->len[i]);
            recs[i] = (exec_record_t){at, d->len[i], i};
            at += d->len[i];
        }
        /* A program reuses its buffer: a worker's first look at a page of it
         * is a page fault (see docs/fork.md), paid here, before the clock. */
        struct rrun warm = *r;
        rc = exec_run_records(ex, recs, d->n, rr_emit_many, &warm);
        if (rc) {
            exec_destroy(ex);
            snprintf(r->err, sizeof r->err, "%s (warm-up): %s", p->name, exec_strerror(rc));
            return BENCH_FAIL;
        }
    }
    int pids0[MAX_WORKERS] = {0}, pids1[MAX_WORKERS] = {0};
    double w0 = fork_be ? rr_workers_cpu(ex, r->workers, pids0) : 0;
    perf_on(r);
    double c0 = cpu_seconds();
    t0 = bench_now();
    if (p->how == RP_RUN || p->how == RP_BUFFER || p->how == RP_RECYCLE) {
        rc = exec_run_records(ex, recs, d->n, rr_emit_many, r);
    } else if (p->how == RP_MAP) {
        struct rr_reader rd = {d, 0};
        rc = exec_map(ex, rr_read, &rd, rr_emit, r);
    } else if (p->how == RP_SUBMIT) {
        rc = rr_submit(ex, r, recs);
    } else {
        exec_map_options_t mo = {.flags = EXEC_MAPS_QUIET};
        rc = exec_map_source(ex, src, rr_emit_source, r, &mo, NULL);
    }
    r->seconds = bench_now() - t0;
    r->cpu_self_s = cpu_seconds() - c0;
    perf_off(r);
    double w1 = fork_be ? rr_workers_cpu(ex, r->workers, pids1) : 0;
    r->cpu_workers_s = w0 >= 0 && w1 >= 0 && !memcmp(pids0, pids1, sizeof pids0) ? w1 - w0 : -1;
    exec_stats(ex, &r->st);
    t0 = bench_now();
    exec_destroy(ex);
    r->destroy_s = bench_now() - t0;
    exec_source_close(src);
    if (p->how != RP_BUFFER)
        free(recs);
    if (rc) {
        snprintf(r->err, sizeof r->err, "%s: %s", p->name, exec_strerror(rc));
        return BENCH_FAIL;
    }
    if (r->bad || r->got != d->n) {
        snprintf(r->err, sizeof r->err, "%s: %zu of %zu results bad, %zu delivered", p->name,
                 r->bad, d->n, r->got);
        return BENCH_FAIL;
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* One workload                                                               */
/* ------------------------------------------------------------------------- */

struct rstat {
    int nr;
    double rate[MAX_RUNS], cpu_self[MAX_RUNS], cpu_all[MAX_RUNS], create[MAX_RUNS],
        destroy[MAX_RUNS];
    int cpu_all_known;
    double busy[MAX_RUNS], respawns[MAX_RUNS]; /* workers' busy ns per record; respawns */
    exec_stats_t st; /* the last run's */
};

static double rs_med(const double *v, int n)
{
    return stat_of(v, n).med;
}

int real_path_known(const char *name, size_t len)
{
    for (unsigned i = 0; i < RP_N; i++)
        if (strlen(rpaths[i].name) == len && !strncmp(rpaths[i].name, name, len))
            return 1;
    return 0;
}

/* Does --executors name p, or its family (omp-for; threads and fork: every
 * path of the backend)? The loop only by its name. */
static int path_named(const struct opts *o, const struct rpath *p)
{
    if (!o->executors)
        return 0;
    const char *family = p->how == RP_LOOP ? "loop"
                         : p->how == RP_OMP ? "omp-for"
                         : p->backend == EXEC_THREADS ? "threads"
                                                        : "fork";
    for (const char *s = o->executors; *s;) {
        size_t len = strcspn(s, ",");
        if ((len == strlen(family) && !strncmp(s, family, len)) ||
            (len == strlen(p->name) && !strncmp(s, p->name, len)))
            return 1;
        s += len + (s[len] == ',');
    }
    return 0;
}

/* --executors names the synthetic bench's executors and the real paths: a
 * path runs when it is named (path_named). The loop always runs. */
static int path_selected(const struct opts *o, const struct rpath *p)
{
    return !o->executors || p->how == RP_LOOP || path_named(o, p);
}

static void real_report(const struct opts *o, struct real_load *l, const struct rl_data *d,
                        struct rstat *rs, FILE *csv)
{
    double loop = rs_med(rs[RP_LOOP].rate, rs[RP_LOOP].nr);
    double omp = rs[RP_OMP].nr ? rs_med(rs[RP_OMP].rate, rs[RP_OMP].nr) / loop : 0;
    say("\n%s: %s; %zu lines, %u workers; the loop: %.0f ns a line\n", l->name, l->what, d->n,
        o->workers[o->nworkers - 1], 1e9 / loop);
    say("%-16s %-44s %11s %7s %8s %9s %9s %9s %9s %8s\n", "path", "", "records/s", "x loop",
        "x OpenMP", "CPU ns", "all CPU", "create", "destroy", "est");
    for (unsigned pi = 0; pi < RP_N; pi++) {
        const struct rpath *p = &rpaths[pi];
        struct rstat *s = &rs[pi];
        if (!s->nr)
            continue;
        double rate = rs_med(s->rate, s->nr), sp = rate / loop;
        char what[64], ompx[16] = "", cself[16], call[16] = "", cr[16] = "", de[16] = "";
        if (p->how == RP_RECYCLE)
            snprintf(what, sizeof what, "%s every %u", p->what,
                     o->quick ? l->recycle_quick : l->recycle);
        else
            snprintf(what, sizeof what, "%s", p->what);
        if (omp > 0 && p->how != RP_LOOP)
            snprintf(ompx, sizeof ompx, "%.2f", sp / omp);
        snprintf(cself, sizeof cself, "%.0f", rs_med(s->cpu_self, s->nr));
        if (s->cpu_all_known == s->nr)
            snprintf(call, sizeof call, "%.0f", rs_med(s->cpu_all, s->nr));
        if (p->how >= RP_RUN) {
            snprintf(cr, sizeof cr, "%.1f ms", rs_med(s->create, s->nr) * 1e3);
            snprintf(de, sizeof de, "%.1f ms", rs_med(s->destroy, s->nr) * 1e3);
        }
        char rbuf[32], est[16] = "";
        if (p->how >= RP_RUN && s->st.speedup_est > 0)
            snprintf(est, sizeof est, "%.2f%s", s->st.speedup_est,
                     s->st.hints & EXEC_HINT_SLOWER ? " !" : "");
        say("%-16s %-44s %11s %7.2f %8s %9s %9s %9s %9s %8s\n", p->name, what,
            fmt_rate(rbuf, sizeof rbuf, rate), sp, ompx, cself, call, cr, de, est);
        if (csv)
            fprintf(csv, "%s,%s,%zu,%u,%.1f,%.4f,%.4f,%.1f,%.1f,%.3f,%.3f,%.3f,%u\n", l->name,
                    p->name, d->n, o->workers[o->nworkers - 1], rate, sp,
                    omp > 0 && p->how != RP_LOOP ? sp / omp : 0, rs_med(s->cpu_self, s->nr),
                    s->cpu_all_known == s->nr ? rs_med(s->cpu_all, s->nr) : -1,
                    rs_med(s->create, s->nr) * 1e3, rs_med(s->destroy, s->nr) * 1e3,
                    s->st.speedup_est, s->st.hints);
    }
    /* Where a path ran slower than the loop, what its own figures show: the
     * CPU it spent a record in all (the loop's is its weight), how many of
     * the cores that kept busy, and on fork who spent it. */
    const double loop_ns = 1e9 / loop;
    const unsigned nw = o->workers[o->nworkers - 1];
    int head = 0;
    for (unsigned pi = 0; pi < RP_N; pi++) {
        const struct rpath *p = &rpaths[pi];
        const struct rstat *s = &rs[pi];
        if (!s->nr || p->how == RP_LOOP || p->how == RP_OMP)
            continue;
        double rate = rs_med(s->rate, s->nr);
        if (rate >= loop)
            continue;
        const int fork_be = p->backend == EXEC_FORK;
        double self = rs_med(s->cpu_self, s->nr);
        double all = fork_be ? (s->cpu_all_known == s->nr ? rs_med(s->cpu_all, s->nr) : -1) : self;
        if (all < 0)
            continue;
        if (!head) {
            say("below the loop, from their figures (a run of %.0f ms of loop work):\n",
                (double)d->n * loop_ns / 1e6);
            head = 1;
        }
        say("  %-14s %.2fx: %.0f ns of CPU a record in all against the loop's %.0f, %.1f of "
            "%u cores busy", p->name, rate / loop, all, loop_ns, all * rate / 1e9,
            nw < 2 ? 2 : nw);
        if (fork_be) {
            double wk = all - self;
            say("; the parent %.0f, the workers %.0f", self, wk);
            if (wk > 1.15 * loop_ns && p->how != RP_BUFFER)
                say(" (a fresh executor's processes pay a first touch of each page they "
                    "read, and a copy of each they write: --pages)");
        }
        say("\n");
    }
    /* What a recycle costs: the recycled run's worker time and wall time
     * over the same run without recycling, per respawn. */
    const struct rstat *a = NULL, *b = NULL;
    for (unsigned pi = 0; pi < RP_N; pi++) {
        if (rpaths[pi].how == RP_RUN && rpaths[pi].backend == EXEC_FORK && rs[pi].nr)
            a = &rs[pi];
        if (rpaths[pi].how == RP_RECYCLE && rs[pi].nr)
            b = &rs[pi];
    }
    double resp = b ? rs_med(b->respawns, b->nr) : 0;
    if (a && b && resp > 0) {
        double n = (double)d->n;
        double busy = (rs_med(b->busy, b->nr) - rs_med(a->busy, a->nr)) * n / resp;
        double wall = (1 / rs_med(b->rate, b->nr) - 1 / rs_med(a->rate, a->nr)) * n / resp;
        say("  a recycle (%.0f in the run): %.1f ms of worker time, %.1f ms of wall time "
            "(against fork-run)\n", resp, busy / 1e6, wall * 1e3);
    }
}

static int real_one(const struct opts *o, struct real_load *l, FILE *csv)
{
    /* As long as the workload asks (regex: ~0.15 s of loop work, ~500,000
     * lines at 0.3 us; lua ~1.5 s); --records makes it shorter. */
    double secs = o->quick ? 0.004 : l->run_s;
    size_t n = (size_t)(secs * 1e9 / l->per_rec_ns);
    if (n < 1000)
        n = 1000;
    if (o->records_set && o->records < n)
        n = o->records;
    int runs = o->real_full && !o->runs_set ? 5 : o->runs;
    unsigned workers = o->workers[o->nworkers - 1];
    struct rl_data d;
    progress("%s: generating %zu lines", l->name, n);
    if (rl_build(&d, n, o->out) != 0) {
        rl_free(&d);
        fprintf(stderr, "executor-bench: %s: could not make the lines (%s)\n", l->name,
                strerror(errno));
        failures++;
        return -1;
    }
    struct rstat *rs = calloc(RP_N, sizeof *rs);
    if (!rs) {
        rl_free(&d);
        return -1;
    }
    uint64_t loop_sum = 0;
    int have_sum = 0;
    for (int k = 0; k < runs; k++) {
        for (unsigned pi = 0; pi < RP_N; pi++) {
            const struct rpath *p = &rpaths[pi];
            if (!path_selected(o, p) || (p->how == RP_RECYCLE && !l->recycle))
                continue;
            struct rrun r;
            memset(&r, 0, sizeof r);
            r.l = l;
            r.d = &d;
            r.workers = workers;
            r.recycle = o->quick ? l->recycle_quick : l->recycle;
            progress("%s, run %d/%d: %s", l->name, k + 1, runs, p->name);
            malloc_trim(0);
            wd_arm(120 + 100 * (double)n * l->per_rec_ns * 1e-9, "%s: %s", l->name, p->name);
            if (k == 0 && p->how == RP_LOOP) {
                rr_loop(&r, 0); /* warms the caches */
                memset(&r.sum, 0, sizeof r.sum);
            }
            r.perf = perf_ctl >= 0 && path_named(o, p);
            int rc = p->how == RP_LOOP ? rr_loop(&r, 0)
                     : p->how == RP_OMP ? rr_loop(&r, 1)
                                        : rr_exec(&r, p);
            wd_disarm();
            if (rc == BENCH_NOTAV)
                continue;
            if (rc) {
                progress_clear();
                fprintf(stderr, "executor-bench: %s: %s\n", l->name, r.err);
                failures++;
                continue;
            }
            if (p->how == RP_LOOP && !have_sum) {
                loop_sum = r.sum;
                have_sum = 1;
            }
            if (r.sum != loop_sum) {
                progress_clear();
                fprintf(stderr, "executor-bench: CHECKSUM MISMATCH: %s: %s: %016llx, loop "
                        "%016llx\n", l->name, p->name, (unsigned long long)r.sum,
                        (unsigned long long)loop_sum);
                failures++;
                continue;
            }
            if (p->how != RP_LOOP)
                runs_checked++;
            struct rstat *s = &rs[pi];
            s->rate[s->nr] = (double)n / r.seconds;
            s->cpu_self[s->nr] = r.cpu_self_s * 1e9 / (double)n;
            if (r.cpu_workers_s >= 0) {
                s->cpu_all[s->nr] = (r.cpu_self_s + r.cpu_workers_s) * 1e9 / (double)n;
                s->cpu_all_known++;
            }
            s->create[s->nr] = r.create_s;
            s->destroy[s->nr] = r.destroy_s;
            s->st = r.st;
            s->busy[s->nr] = (double)r.st.busy_ns / (double)n;
            s->respawns[s->nr] = (double)r.st.respawns;
            s->nr++;
            if (p->how == RP_OMP)
                usleep(10000); /* libgomp spins a while before its threads sleep */
        }
    }
    progress_clear();
    if (rs[RP_LOOP].nr)
        real_report(o, l, &d, rs, csv);
    free(rs);
    rl_free(&d);
    return 0;
}

int run_real(const struct opts *o)
{
    static int (*const opens[])(struct real_load *, char *, size_t) = {real_regex_open,
                                                                        real_lua_open};
    static const char *const names[] = {"regex", "lua"};
    char path[4096];
    snprintf(path, sizeof path, "%s/real.csv", o->out);
    FILE *csv = fopen(path, "w");
    if (csv)
        fprintf(csv, "workload,path,records,workers,rate,x_loop,x_openmp,cpu_ns,all_cpu_ns,"
                     "create_ms,destroy_ms,speedup_est,hints\n");
    say("\nreal workloads: lines of text, each in a string of its own; x loop = records/s "
        "over the plain loop's;\nx OpenMP = x loop over OpenMP's; CPU ns = this process's "
        "CPU time per record (fork: the parent's),\nall CPU = with the fork workers'; create "
        "and destroy: exec_create() and exec_destroy() (not in the rate);\nest = the library's own "
        "estimate of the best speedup over one thread (exec_stats' speedup_est), ! where it\n"
        "says the plain loop would be faster (EXEC_HINT_SLOWER)\n");
    if (o->perf_ctl && perf_open(o->perf_ctl) != 0) {
        failures++;
        if (csv)
            fclose(csv);
        return 0;
    }
    int ran = 0;
    for (size_t i = 0; i < sizeof opens / sizeof opens[0]; i++) {
        struct real_load l;
        char err[160];
        memset(&l, 0, sizeof l);
        if (o->workloads && !strstr(o->workloads, names[i]))
            continue;
        if (opens[i](&l, err, sizeof err) != 0) {
            say("not run: %s\n", err);
            continue;
        }
        real_one(o, &l, csv);
        ran++;
        l.destroy(&l);
    }
    if (o->perf_ctl)
        say("perf: %s sampled in %u timed runs (process %ld)\n", perf_event, perf_windows,
            (long)getpid());
    perf_close();
    if (csv) {
        fclose(csv);
        if (ran)
            say("wrote %s\n", path);
    }
    return 0;
}
