/*
 * A record source run through an executor: exec_map_source() and the
 * file-to-file exec_map_fd(), with a progress line for long inputs.
 *
 * Both are exec_map() with the source as reader, and everything runs in the
 * calling thread. The source reads into exec_buffer(), so records reach the
 * workers where they lie (no copy; see struct smap_ring), or where the
 * buffer is too small for it, from its own buffer into the executor's
 * batches (one copy). Records the executor cannot take (too
 * large) never reach it: they get an EXEC_E2BIG result of their own, kept in a
 * small FIFO until the results around them are emitted, so that in
 * EXEC_ORDERED mode they keep their place.
 */
#include "executor_records.h"
#include "rec_alloc.h"
#include "source.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SMAP_TICK 64u                    /* records between looks at the clock */
#define SMAP_PROGRESS_START 1000000000ull /* no line for runs shorter than 1 s */
#define SMAP_PROGRESS_EVERY 250000000ull

/*
 * Zero copy: the source reads into a ring of regions of exec_buffer(), and
 * records reach the workers where they lie (exec_map passes bytes in the
 * buffer by reference). A region is handed out again only once every record
 * read from it has its result: records are numbered in the order exec_map
 * submits them (each result's seq), region r holding [first[r], last[r]).
 */
#define SMAP_REGIONS 4
#define SMAP_REGION_MIN ((size_t)256 << 10)

struct smap_ring {
    char *base;
    size_t size;     /* of each region */
    unsigned n, cur; /* regions; the one the source reads into (n: none yet) */
    uint64_t first[SMAP_REGIONS], last[SMAP_REGIONS], done[SMAP_REGIONS];
};

struct smap {
    exec_source_t *src;
    const exec_map_options_t *o;
    exec_emit_fn emit;
    void *emit_arg;
    size_t max_record;
    bool ordered;
    /* Record numbers of too-large records not yet emitted, increasing. */
    uint64_t *pend;
    size_t pend_head, pend_n, pend_cap;
    int oom;
    int bad_stop;  /* on_bad's non-zero return */
    int emit_stop; /* emit's non-zero return */
    exec_map_report_t rep;
    struct smap_ring ring;
    uint64_t handed; /* records handed to exec_map (the next one's seq) */
    /* Progress. */
    bool progress;
    bool printed;
    unsigned tick;
    uint64_t t0, last;
};

/* Nanoseconds on CLOCK_MONOTONIC. */
static uint64_t smap_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int smap_pend_push(struct smap *m, uint64_t recno)
{
    if (m->pend_head == m->pend_n) {
        m->pend_head = m->pend_n = 0;
    }
    if (m->pend_n == m->pend_cap) {
        if (m->pend_head > 0) {
            memmove(m->pend, m->pend + m->pend_head, (m->pend_n - m->pend_head) * sizeof *m->pend);
            m->pend_n -= m->pend_head;
            m->pend_head = 0;
        } else {
            size_t ncap = m->pend_cap ? m->pend_cap * 2 : 64;
            uint64_t *np = rec_realloc(m->pend, ncap * sizeof *np);
            if (!np)
                return EXEC_ENOMEM;
            m->pend = np;
            m->pend_cap = ncap;
        }
    }
    m->pend[m->pend_n++] = recno;
    m->rep.too_big++;
    return 0;
}

static int smap_emit_user(struct smap *m, const exec_result_t *res)
{
    if (res->status == 0)
        m->rep.ok++;
    else
        m->rep.failed++;
    int r = m->emit(m->emit_arg, res);
    if (r)
        m->emit_stop = r;
    return r;
}

/* Emits the too-large results pending before record `upto` (all of them for
 * UINT64_MAX). */
static int smap_flush(struct smap *m, uint64_t upto)
{
    while (m->pend_head < m->pend_n && m->pend[m->pend_head] < upto) {
        exec_result_t r;
        memset(&r, 0, sizeof r);
        r.tag = m->pend[m->pend_head++];
        r.status = EXEC_E2BIG;
        r.seq = UINT64_MAX;
        r.worker = UINT32_MAX;
        int rc = smap_emit_user(m, &r);
        if (rc)
            return rc;
    }
    return 0;
}

/* A region for the source: the next one in the ring once all its records
 * are done; NULL when it is not yet (the source then says EXEC_EAGAIN). */
static char *smap_region(void *arg, size_t need, size_t *cap)
{
    struct smap *m = arg;
    struct smap_ring *g = &m->ring;
    if (need > g->size)
        return NULL; /* cannot happen: regions hold max_record and more */
    unsigned next = g->cur == g->n ? 0 : (g->cur + 1) % g->n;
    if (g->done[next] != g->last[next] - g->first[next])
        return NULL;
    if (g->cur != g->n)
        g->last[g->cur] = m->handed; /* what was read from it so far */
    g->first[next] = m->handed;
    g->last[next] = UINT64_MAX; /* open: records to come */
    g->done[next] = 0;
    g->cur = next;
    *cap = g->size;
    return g->base + (size_t)next * g->size;
}

/* A result came: its region is one record nearer to free. */
static void smap_done(struct smap *m, uint64_t seq)
{
    struct smap_ring *g = &m->ring;
    for (unsigned r = 0; r < g->n; r++)
        if (seq >= g->first[r] && seq < g->last[r]) {
            g->done[r]++;
            return;
        }
}

/* Sets up the ring over ex's buffer, if it holds two regions or more. */
static void smap_ring(struct smap *m, exec_t *ex, size_t max_record)
{
    size_t bsize = 0;
    char *base = exec_buffer(ex, &bsize);
    size_t rsize = max_record + ((size_t)16 << 10);
    if (rsize < SMAP_REGION_MIN)
        rsize = SMAP_REGION_MIN;
    rsize = (rsize + 4095) & ~(size_t)4095;
    unsigned n = base && rsize ? (unsigned)(bsize / rsize) : 0;
    if (n > SMAP_REGIONS)
        n = SMAP_REGIONS;
    if (n < 2 || exec__source_regions(m->src, smap_region, m, max_record) != 0)
        return;
    m->ring = (struct smap_ring){.base = base, .size = rsize, .n = n, .cur = n};
}

static int smap_emit(void *arg, const exec_result_t *res)
{
    struct smap *m = arg;
    if (m->ring.n && res->seq != UINT64_MAX)
        smap_done(m, res->seq);
    int rc = smap_flush(m, m->ordered ? res->tag : UINT64_MAX);
    if (rc)
        return rc;
    return smap_emit_user(m, res);
}

static void smap_fmt_time(char *out, size_t n, double s)
{
    unsigned long t = s > 0 && s < 3.6e6 ? (unsigned long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(out, n, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(out, n, "%lu:%02lu", t / 60, t % 60);
}

static void smap_progress(struct smap *m, bool final)
{
    uint64_t now = smap_now_ns();
    if (!final && (now - m->t0 < SMAP_PROGRESS_START || now - m->last < SMAP_PROGRESS_EVERY))
        return;
    if (final && !m->printed)
        return;
    m->last = now;
    double secs = (double)(now - m->t0) / 1e9;
    uint64_t bytes = exec_source_offset(m->src);
    double mbs = secs > 0 ? (double)bytes / 1e6 / secs : 0;
    double rps = secs > 0 ? (double)m->rep.records / secs : 0;
    char line[160];
    int n = snprintf(line, sizeof line, "\r%llu records  %.1f MB/s  %.0f records/s",
                     (unsigned long long)m->rep.records, mbs, rps);
    int64_t size = exec_source_size(m->src);
    if (size > 0 && n > 0 && (size_t)n < sizeof line) {
        double frac = (double)bytes / (double)size;
        if (frac > 1)
            frac = 1;
        char eta[32];
        smap_fmt_time(eta, sizeof eta, mbs > 0 ? ((double)size - (double)bytes) / 1e6 / mbs : 0);
        n += snprintf(line + n, sizeof line - (size_t)n, "  %3.0f%%  ETA %s", frac * 100,
                      final ? "0:00" : eta);
    }
    if (n > 0 && (size_t)n < sizeof line - 8) {
        memcpy(line + n, final ? "\033[K\n" : "\033[K", final ? 5 : 4);
        n += final ? 4 : 3;
        ssize_t w = write(STDERR_FILENO, line, (size_t)n);
        (void)w; /* a progress line is best effort */
        m->printed = true;
    }
}

static int smap_read(void *arg, const void **rec, size_t *len, uint64_t *tag)
{
    struct smap *m = arg;
    for (;;) {
        uint64_t n = 0;
        int r = exec_source_next(m->src, rec, len, &n);
        if (r == 0)
            return 0;
        if (r == EXEC_EAGAIN)
            return r; /* the next region is not free yet: exec_map collects */
        if (m->progress && ++m->tick % SMAP_TICK == 0)
            smap_progress(m, false);
        m->rep.records++;
        if (r == 1) {
            if (*len <= m->max_record) {
                *tag = n;
                m->handed++;
                return 1;
            }
            r = EXEC_E2BIG;
        }
        if (r == EXEC_E2BIG) {
            int rc = smap_pend_push(m, n);
            if (rc)
                return m->oom = rc;
            continue;
        }
        if (r == EXEC_EUNTERMINATED || r == EXEC_EBADQUOTE || r == EXEC_ETRUNCATED) {
            m->rep.bad++;
            if (m->o->on_bad) {
                int u = m->o->on_bad(m->o->bad_arg, exec_source_error(m->src));
                if (u) {
                    m->bad_stop = u;
                    return EXEC_ECANCELLED;
                }
            }
            if (m->o->flags & EXEC_MAPS_SKIP_BAD)
                continue;
            return r;
        }
        m->rep.records--;
        return r; /* an I/O error */
    }
}

int exec_map_source(exec_t *ex, exec_source_t *src, exec_emit_fn emit_cb, void *emit_arg,
                    const exec_map_options_t *opts, exec_map_report_t *rep)
{
    if (rep)
        memset(rep, 0, sizeof *rep);
    exec_map_options_t none;
    memset(&none, 0, sizeof none);
    if (!opts)
        opts = &none;
    if (!ex || !src || !emit_cb ||
        (opts->flags & ~(EXEC_MAPS_SKIP_BAD | EXEC_MAPS_PROGRESS | EXEC_MAPS_QUIET)))
        return EXEC_EINVAL;
    exec_options_t eo;
    int rc = exec_get_options(ex, &eo);
    if (rc)
        return rc;
    struct smap m;
    memset(&m, 0, sizeof m);
    m.src = src;
    m.o = opts;
    m.emit = emit_cb;
    m.emit_arg = emit_arg;
    m.max_record = eo.max_record;
    m.ordered = (eo.flags & EXEC_ORDERED) != 0;
    m.progress = !(opts->flags & EXEC_MAPS_QUIET) &&
                 ((opts->flags & EXEC_MAPS_PROGRESS) || isatty(STDERR_FILENO));
    m.t0 = m.last = smap_now_ns();
    uint64_t off0 = exec_source_offset(src);
    smap_ring(&m, ex, eo.max_record);

    rc = exec_map(ex, smap_read, &m, smap_emit, &m);
    if (m.ring.n) {
        /* The source may be read on after us: off the executor's buffer. */
        int o = exec__source_own(src);
        if (o && !rc)
            rc = o;
    }
    if (m.emit_stop)
        rc = m.emit_stop;
    else if (m.bad_stop)
        rc = m.bad_stop;
    else if (m.oom)
        rc = m.oom;
    if (!m.emit_stop) {
        /* Too-large records after the last result (or with none at all). */
        int f = smap_flush(&m, UINT64_MAX);
        if (f)
            rc = f;
    }
    if (m.progress)
        smap_progress(&m, true);
    free(m.pend);
    m.rep.bytes = exec_source_offset(src) - off0;
    m.rep.seconds = (double)(smap_now_ns() - m.t0) / 1e9;
    if (rep)
        *rep = m.rep;
    return rc;
}

/* ------------------------------------------------------------------------- */
/* File to file                                                              */
/* ------------------------------------------------------------------------- */

#define SMAP_OUT_BUF ((size_t)256 << 10)

struct smap_out {
    int fd;
    char *buf;
    size_t len;
    const exec_map_options_t *o;
};

static int smap_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int smap_out_flush(struct smap_out *w)
{
    int rc = smap_write_all(w->fd, w->buf, w->len);
    w->len = 0;
    return rc;
}

static int smap_out_emit(void *arg, const exec_result_t *res)
{
    struct smap_out *w = arg;
    if (res->status != 0)
        return w->o->on_failed ? w->o->on_failed(w->o->failed_arg, res) : 0;
    size_t need = res->len + 1;
    if (SMAP_OUT_BUF - w->len < need) {
        int rc = smap_out_flush(w);
        if (rc)
            return rc;
        if (need > SMAP_OUT_BUF) {
            rc = smap_write_all(w->fd, res->data, res->len);
            if (rc == 0 && (res->len == 0 || ((const char *)res->data)[res->len - 1] != '\n'))
                rc = smap_write_all(w->fd, "\n", 1);
            return rc;
        }
    }
    if (res->len) {
        memcpy(w->buf + w->len, res->data, res->len);
        w->len += res->len;
    }
    if (res->len == 0 || ((const char *)res->data)[res->len - 1] != '\n')
        w->buf[w->len++] = '\n';
    return 0;
}

int exec_map_fd(exec_t *ex, exec_source_t *src, int out_fd, const exec_map_options_t *opts,
                exec_map_report_t *rep)
{
    if (rep)
        memset(rep, 0, sizeof *rep);
    if (!ex || !src || out_fd < 0)
        return EXEC_EINVAL;
    exec_map_options_t none;
    memset(&none, 0, sizeof none);
    struct smap_out w = {.fd = out_fd, .o = opts ? opts : &none};
    w.buf = rec_malloc(SMAP_OUT_BUF);
    if (!w.buf)
        return EXEC_ENOMEM;
    int rc = exec_map_source(ex, src, smap_out_emit, &w, opts, rep);
    int f = smap_out_flush(&w);
    if (!rc)
        rc = f;
    free(w.buf);
    return rc;
}
