/*
 * csv-bench: how fast a CSV file goes through the record source and an
 * executor, against a plain sequential program doing the same work.
 *
 *     csv-bench [--file PATH] [--mb N] [--workers N] [--work N]... [--table FILE]
 *
 * Generates PATH (default /tmp/exec-csv-bench.csv, N MB, default 300) unless
 * it exists: rows "id,text,n" with 8 words of text, 5% quoted fields (commas
 * and "" inside), 0.5% of rows with a newline inside quotes. Reads it once so
 * the page cache is warm, then prints:
 *   - the boundary scan alone (exec_source_next), MB/s and records/s, with a
 *     newline-only memchr split for scale (fast and wrong on this file);
 *   - for each --work level (extra hashing per word; 0 is the light record):
 *     sequential records/s (read, find boundaries, split, classify, in one
 *     loop; and the same with libcsv parsing every field when it is built in),
 *     records/s of exec_map_fd() to /dev/null on EXEC_THREADS, the same
 *     records from memory through exec_map(), the efficiency of each against
 *     workers x sequential, and how much of their time the workers were off
 *     the CPU (waiting for records or for a core).
 */

#include "wordtable.h"

#include <ck_pr.h>

#include <fcntl.h>
#include <getopt.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef EXEC_HAVE_LIBCSV
#include <csv.h>
#endif

static const exec_ops_t *bench_ops(void);
static const exec_ops_t *noop_ops(void);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *const bench_words[] = {
    "apple", "cat", "saw", "river", "pear", "owl", "hammer", "plum", "blue", "dog",
    "drill", "stone", "cherry", "horse", "wrench", "cloud", "green", "quick", "lamp", "road"};

static int generate(const char *path, size_t mb)
{
    FILE *f = fopen(path, "we");
    if (!f)
        return -1;
    fputs("id,text,n\n", f);
    uint64_t s = 88172645463325252ull;
    size_t target = mb << 20, written = 10;
    char row[512];
    for (unsigned long i = 0; written < target; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        bool quoted = s % 20 == 0, nl = s % 200 == 1;
        int n = snprintf(row, sizeof row, "%lu,%s", i, quoted || nl ? "\"" : "");
        for (int k = 0; k < 8; k++)
            n += snprintf(row + n, sizeof row - (size_t)n, "%s%s",
                          k == 0 ? "" : (quoted && k == 3 ? ", " : (nl && k == 5 ? "\n" : " ")),
                          bench_words[(s >> (3 * k + 5)) % 20]);
        n += snprintf(row + n, sizeof row - (size_t)n, "%s,%lu\n",
                      quoted ? " \"\"x\"\"\"" : (nl ? "\"" : ""), (unsigned long)(s % 1000));
        fwrite(row, 1, (size_t)n, f);
        written += (size_t)n;
    }
    return fclose(f);
}

static void warm(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    static char buf[1 << 20];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
}

/* The boundary scan alone. */
static void bench_scan(const char *path, double *mbs, double *rps, uint64_t *records)
{
    *mbs = 0;
    for (int rep = 0; rep < 3; rep++) {
        exec_source_t *s;
        exec_source_options_t o = {.flags = EXEC_SOURCE_HEADER};
        if (exec_source_open(&s, path, &o))
            exit(1);
        const void *rec;
        size_t len;
        uint64_t n = 0;
        double t = now_s();
        while (exec_source_next(s, &rec, &len, NULL) == 1)
            n++;
        t = now_s() - t;
        double m = (double)exec_source_offset(s) / 1e6 / t;
        if (m > *mbs) {
            *mbs = m;
            *rps = (double)n / t;
        }
        *records = n;
        exec_source_close(s);
    }
}

/* Splitting at every newline with memchr: the speed limit, and wrong here. */
static void bench_memchr(const char *path, double *mbs, uint64_t *lines)
{
    *mbs = 0;
    static char buf[1 << 20];
    for (int rep = 0; rep < 3; rep++) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        uint64_t n = 0, bytes = 0;
        double t = now_s();
        ssize_t r;
        while ((r = read(fd, buf, sizeof buf)) > 0) {
            bytes += (uint64_t)r;
            for (char *p = buf, *e = buf + r; (p = memchr(p, '\n', (size_t)(e - p))); p++)
                n++;
        }
        t = now_s() - t;
        close(fd);
        if (bytes / 1e6 / t > *mbs)
            *mbs = (double)bytes / 1e6 / t;
        *lines = n;
    }
}

/* The classifier as process(): worker_state is its scratch buffer. */
static int cb_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    return wt_classify(ctx, rec, len, ws, out);
}

static const exec_ops_t cb_ops = {.version = EXEC_OPS_VERSION, .process = cb_process};

/* One record through a writer of the host's, as the loops below run it. */
static size_t cb_run(exec_writer_t *w, struct wt_table *t, const void *rec, size_t len, char *buf)
{
    size_t off, n;
    exec_writer_clear(w);
    exec_writer_run(w, &cb_ops, t, buf, rec, len, &off, &n, NULL);
    return n;
}

/* Read, find boundaries, split, classify: one loop, one thread. */
static double bench_sequential(const char *path, struct wt_table *t, uint64_t *sink)
{
    exec_source_t *s;
    exec_source_options_t o = {.flags = EXEC_SOURCE_HEADER};
    if (exec_source_open(&s, path, &o))
        exit(1);
    exec_writer_t *w = exec_writer_new(1 << 16);
    char *buf = malloc(1 << 16);
    if (!w || !buf)
        exit(1);
    const void *rec;
    size_t len;
    uint64_t n = 0;
    double tm = now_s();
    while (exec_source_next(s, &rec, &len, NULL) == 1) {
        *sink += cb_run(w, t, rec, len, buf);
        n++;
    }
    tm = now_s() - tm;
    exec_source_close(s);
    free(buf);
    exec_writer_free(w);
    return (double)n / tm;
}

#ifdef EXEC_HAVE_LIBCSV
/* The same with libcsv parsing every field (what a user might write). */
struct lc {
    struct wt_table *t;
    exec_writer_t *w;
    size_t field;
    char row[4096];
    size_t rlen;
    uint64_t n, *sink;
    char *buf;
};

static void lc_field(void *data, size_t len, void *arg)
{
    struct lc *c = arg;
    /* Rebuild a one-field record for the classifier's text column. */
    if (c->field == c->t->text_col && len < sizeof c->row - 8) {
        memcpy(c->row, "0,", 2);
        memcpy(c->row + 2, data, len);
        c->rlen = len + 2;
    }
    c->field++;
}

static void lc_row(int term, void *arg)
{
    (void)term;
    struct lc *c = arg;
    if (c->n++ > 0) { /* not the header */
        size_t tc = c->t->text_col;
        c->t->text_col = 1;
        *c->sink += cb_run(c->w, c->t, c->row, c->rlen, c->buf);
        c->t->text_col = tc;
    }
    c->field = 0;
    c->rlen = 0;
}

static double bench_libcsv(const char *path, struct wt_table *t, uint64_t *sink)
{
    struct csv_parser p;
    csv_init(&p, CSV_STRICT | CSV_APPEND_NULL);
    exec_writer_t *w = exec_writer_new(1 << 16);
    struct lc c = {.t = t, .w = w, .sink = sink, .buf = malloc(1 << 16)};
    static char buf[1 << 20];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    double tm = now_s();
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0)
        csv_parse(&p, buf, (size_t)r, lc_field, lc_row, &c);
    csv_fini(&p, lc_field, lc_row, &c);
    tm = now_s() - tm;
    close(fd);
    csv_free(&p);
    exec_writer_free(w);
    free(c.buf);
    return (double)(c.n - 1) / tm;
}
#endif

/* The plugin's ops, wrapped to measure each worker's CPU time. */
struct meter {
    uint64_t cpu_ns; /* summed over workers, ck_pr */
};
static struct meter *g_meter;
static const exec_ops_t *g_inner;

struct mstate {
    double t0;
    void *inner;
};

static int m_init(void *ctx, void **ws)
{
    struct mstate *m = calloc(1, sizeof *m);
    m->t0 = thread_cpu_s();
    *ws = m;
    return g_inner->worker_init ? g_inner->worker_init(ctx, &m->inner) : 0;
}

static void m_fini(void *ctx, void *ws)
{
    struct mstate *m = ws;
    if (g_inner->worker_fini)
        g_inner->worker_fini(ctx, m->inner);
    ck_pr_add_64(&g_meter->cpu_ns, (uint64_t)((thread_cpu_s() - m->t0) * 1e9));
    free(m);
}

static int m_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    struct mstate *m = ws;
    return g_inner->process(ctx, m->inner, rec, len, out);
}

static int null_emit(void *arg, const exec_result_t *res)
{
    *(uint64_t *)arg += res->len;
    return 0;
}

/* Records from memory: the in-memory figure the file run is compared with. */
struct memsrc {
    char *data;
    size_t *off, *len, n, i;
};

static int mem_read(void *arg, const void **rec, size_t *len, uint64_t *tag)
{
    struct memsrc *m = arg;
    if (m->i == m->n)
        return 0;
    *rec = m->data + m->off[m->i];
    *len = m->len[m->i];
    *tag = m->i++;
    return 1;
}

static void load(const char *path, struct memsrc *m)
{
    exec_source_t *s;
    exec_source_options_t o = {.flags = EXEC_SOURCE_HEADER};
    if (exec_source_open(&s, path, &o))
        exit(1);
    size_t cap = 1 << 20, dcap = (size_t)exec_source_size(s) + 1;
    m->data = malloc(dcap);
    m->off = malloc(cap * sizeof *m->off);
    m->len = malloc(cap * sizeof *m->len);
    size_t used = 0;
    const void *rec;
    size_t len;
    while (exec_source_next(s, &rec, &len, NULL) == 1) {
        if (m->n == cap) {
            cap *= 2;
            m->off = realloc(m->off, cap * sizeof *m->off);
            m->len = realloc(m->len, cap * sizeof *m->len);
        }
        memcpy(m->data + used, rec, len);
        m->off[m->n] = used;
        m->len[m->n++] = len;
        used += len;
    }
    exec_source_close(s);
}

struct par {
    double rps, off_cpu, main_cpu;
};

static struct par bench_parallel(const char *path, struct memsrc *mem, const exec_ops_t *ops,
                                 void *ctx, unsigned workers, unsigned flags, exec_backend_t be)
{
    struct meter meter = {0};
    g_meter = &meter;
    g_inner = ops;
    exec_ops_t wrapped = *ops;
    wrapped.worker_init = m_init;
    wrapped.worker_fini = m_fini;
    wrapped.process = m_process;
    exec_options_t eo = {.workers = workers, .flags = flags};
    exec_t *ex;
    int rc = exec_create(&ex, &wrapped, ctx, be, &eo);
    if (rc == EXEC_ENOTSUP)
        return (struct par){0, 0, 0};
    if (rc) {
        fprintf(stderr, "csv-bench: exec_create: %s\n", exec_strerror(rc));
        exit(1);
    }
    double t = now_s(), c0 = thread_cpu_s();
    uint64_t n;
    if (mem) {
        uint64_t sink = 0;
        mem->i = 0;
        rc = exec_map(ex, mem_read, mem, null_emit, &sink);
        n = mem->n;
    } else {
        exec_source_t *s;
        exec_source_options_t o = {.flags = EXEC_SOURCE_HEADER};
        if (exec_source_open(&s, path, &o))
            exit(1);
        int out = open("/dev/null", O_WRONLY | O_CLOEXEC);
        exec_map_options_t mo = {.flags = EXEC_MAPS_QUIET};
        exec_map_report_t rep;
        rc = exec_map_fd(ex, s, out, &mo, &rep);
        n = rep.records;
        close(out);
        exec_source_close(s);
    }
    double wall = now_s() - t, main_cpu = thread_cpu_s() - c0;
    if (rc) {
        fprintf(stderr, "csv-bench: map: %s\n", exec_strerror(rc));
        exit(1);
    }
    exec_destroy(ex); /* runs worker_fini: the meter is complete after this */
    struct par p;
    p.rps = (double)n / wall;
    /* Forked workers add to their own copy of the meter: not measured there. */
    p.off_cpu = be == EXEC_FORK ? -1 : 1.0 - (double)meter.cpu_ns / 1e9 / (workers * wall);
    p.main_cpu = main_cpu / wall;
    return p;
}

int main(int argc, char **argv)
{
    const char *path = "/tmp/exec-csv-bench.csv";
    char table[4096] = "";
    size_t mb = 300;
    unsigned workers = 2, works[8], nworks = 0;
    static const struct option longopts[] = {
        {"file", required_argument, NULL, 'f'},   {"mb", required_argument, NULL, 'm'},
        {"workers", required_argument, NULL, 'w'}, {"work", required_argument, NULL, 'k'},
        {"table", required_argument, NULL, 't'},  {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'f': path = optarg; break;
        case 'm': mb = strtoul(optarg, NULL, 10); break;
        case 'w': workers = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'k':
            if (nworks < 8)
                works[nworks++] = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 't': snprintf(table, sizeof table, "%s", optarg); break;
        default:
            fprintf(stderr, "usage: csv-bench [--file PATH] [--mb N] [--workers N] [--work N]... "
                            "[--table FILE]\n");
            return 2;
        }
    }
    if (nworks == 0) {
        works[nworks++] = 0;
        works[nworks++] = 4;
        works[nworks++] = 80;
    }
    if (!table[0]) {
        /* A table of the generator's words, written next to the data. */
        snprintf(table, sizeof table, "%s.words", path);
        FILE *f = fopen(table, "we");
        for (int i = 0; i < 20; i++)
            fprintf(f, "%s l%d\n", bench_words[i], i % 5);
        fclose(f);
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "csv-bench: writing %zu MB to %s\n", mb, path);
        if (generate(path, mb) != 0) {
            perror(path);
            return 1;
        }
        stat(path, &st);
    }
    warm(path);
    printf("file %s: %.0f MB; %u workers; %ld CPUs online\n", path, (double)st.st_size / 1e6,
           workers, sysconf(_SC_NPROCESSORS_ONLN));

    double mbs, rps = 0, mmbs;
    uint64_t records, lines;
    bench_scan(path, &mbs, &rps, &records);
    bench_memchr(path, &mmbs, &lines);
    printf("boundary scan (exec_source_next): %.0f MB/s, %.2f M records/s, %llu records, "
           "%.1f ns/record\n",
           mbs, rps / 1e6, (unsigned long long)records, 1e9 / rps);
    printf("newline-only memchr split:        %.0f MB/s (%llu lines: wrong by %llu)\n", mmbs,
           (unsigned long long)lines, (unsigned long long)(lines - records - 1));

    struct memsrc mem = {0};
    load(path, &mem);

    /* With a process() that does nothing, the caller's thread (read, scan,
     * submit, collect, write) is all there is: its ceiling in records/s. */
    for (int be = EXEC_THREADS; be <= EXEC_FORK; be++) {
        struct par f = bench_parallel(path, NULL, noop_ops(), NULL, workers, 0, be);
        struct par m = bench_parallel(NULL, &mem, noop_ops(), NULL, workers, 0, be);
        if (f.rps > 0)
            printf("empty process(), %-7s: file exec_map_fd %.2f M records/s (%.0f ns each), "
                   "memory exec_map %.2f M records/s\n",
                   exec_backend_name(be), f.rps / 1e6, 1e9 / f.rps, m.rps / 1e6);
    }
    for (unsigned k = 0; k < nworks; k++) {
        char spec[4200];
        snprintf(spec, sizeof spec, "table=%s,column=text,id=id,work=%u", table, works[k]);
        exec_source_t *s;
        exec_source_options_t o = {.flags = EXEC_SOURCE_HEADER};
        if (exec_source_open(&s, path, &o))
            return 1;
        const void *h;
        size_t hl;
        exec_csv_header_t *hdr = NULL;
        exec_source_header(s, &h, &hl);
        exec_csv_header_create(&hdr, h, hl, 0);
        exec_source_close(s);
        void *ctx;
        char err[256];
        if (wt_build(spec, hdr, &ctx, err, sizeof err)) {
            fprintf(stderr, "csv-bench: %s\n", err);
            return 1;
        }
        exec_csv_header_free(hdr);
        uint64_t sink = 0;
        double seq = bench_sequential(path, ctx, &sink);
        double seq2 = bench_sequential(path, ctx, &sink);
        if (seq2 > seq)
            seq = seq2;
        printf("\nwork=%u: %.2f us/record sequential\n", works[k], 1e6 / seq);
        printf("  sequential (read, scan, split, classify): %8.0f records/s\n", seq);
#ifdef EXEC_HAVE_LIBCSV
        double lc = bench_libcsv(path, ctx, &sink);
        printf("  sequential with libcsv parsing:           %8.0f records/s\n", lc);
#endif
        for (int be = EXEC_THREADS; be <= EXEC_FORK; be++) {
            for (int ord = 0; ord < 2; ord++) {
                unsigned fl = ord ? EXEC_ORDERED : 0;
                struct par f = bench_parallel(path, NULL, bench_ops(), ctx, workers, fl, be);
                if (f.rps == 0) {
                    printf("  %s: not built\n", exec_backend_name(be));
                    break;
                }
                struct par m = bench_parallel(NULL, &mem, bench_ops(), ctx, workers, fl, be);
                char off[2][32];
                for (int i = 0; i < 2; i++) {
                    double v = i ? m.off_cpu : f.off_cpu;
                    if (v < 0)
                        snprintf(off[i], sizeof off[i], " n/a");
                    else
                        snprintf(off[i], sizeof off[i], "%4.1f%%", 100 * v);
                }
                printf("  %-7s %-9s file   exec_map_fd: %8.0f records/s  efficiency %.2f  "
                       "workers off CPU %s  caller busy %4.1f%%\n",
                       exec_backend_name(be), ord ? "ordered" : "unordered", f.rps,
                       f.rps / (workers * seq), off[0], 100 * f.main_cpu);
                printf("  %-7s %-9s memory exec_map:    %8.0f records/s  efficiency %.2f  "
                       "workers off CPU %s  caller busy %4.1f%%  file/memory %.2f\n",
                       exec_backend_name(be), ord ? "ordered" : "unordered", m.rps,
                       m.rps / (workers * seq), off[1], 100 * m.main_cpu, f.rps / m.rps);
            }
        }
        wt_free(ctx);
        (void)sink;
    }
    free(mem.data);
    free(mem.off);
    free(mem.len);
    return 0;
}

/* The wordtable plugin's ops, compiled in (the thread-safe one). */
struct wt_worker {
    char *buf;
    size_t cap;
};

static int b_init(void *ctx, void **state)
{
    (void)ctx;
    *state = calloc(1, sizeof(struct wt_worker));
    return *state ? 0 : -1;
}

static void b_fini(void *ctx, void *state)
{
    (void)ctx;
    struct wt_worker *w = state;
    free(w->buf);
    free(w);
}

static int b_process(void *ctx, void *state, const void *rec, size_t len, exec_writer_t *out)
{
    struct wt_worker *w = state;
    if (w->cap < len + 1) {
        w->buf = realloc(w->buf, len + 1);
        w->cap = len + 1;
    }
    return wt_classify(ctx, rec, len, w->buf, out);
}

static const exec_ops_t *bench_ops(void)
{
    static const exec_ops_t ops = {
        .version = EXEC_OPS_VERSION,
        .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
        .name = "wordtable",
        .process = b_process,
        .worker_init = b_init,
        .worker_fini = b_fini,
    };
    return &ops;
}

static int noop_process(void *ctx, void *state, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ctx, (void)state, (void)rec, (void)len, (void)out;
    return 0;
}

static const exec_ops_t *noop_ops(void)
{
    static const exec_ops_t ops = {
        .version = EXEC_OPS_VERSION,
        .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
        .name = "noop",
        .process = noop_process,
    };
    return &ops;
}
