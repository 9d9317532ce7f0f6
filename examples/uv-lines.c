/*
 * The library in a libuv loop: a filter that reads numbers from stdin, one
 * per line, and writes "N,prime" or "N,composite" for each to stdout, in input
 * order, while the workers do the arithmetic.
 *
 *     seq 1 1000000 | uv-lines | grep -c ',prime$'
 *
 * The executor's descriptor (exec_fd) is watched by a uv_poll_t; records go in
 * with exec_try_submit(), which never blocks the loop. When the window is full
 * (EXEC_EAGAIN) the filter stops reading stdin, and starts again once results
 * made room; it also stops while much output waits for stdout. stdin and
 * stdout must be pipes or terminals (libuv streams).
 */
#include "executor.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* One record: a decimal number below 10^18. Non-zero for anything else. */
static int classify(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ctx;
    (void)ws;
    const char *s = rec;
    unsigned long long n = 0;
    if (len == 0 || len > 18)
        return 1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 1;
        n = n * 10 + (unsigned)(s[i] - '0');
    }
    bool prime = n >= 2;
    for (unsigned long long d = 2; prime && d * d <= n; d++)
        prime = n % d != 0;
    return exec_writef(out, "%llu,%s\n", n, prime ? "prime" : "composite");
}

static const exec_ops_t ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "primes",
    .process = classify,
};

#define OUT_HIGH (1u << 20) /* stop reading while this much output is queued */

static uv_loop_t *loop;
static uv_pipe_t in, out;
static uv_poll_t poll_ex;
static exec_t *ex;
static char *pending; /* input read and not yet submitted */
static size_t npending, cap;
static uint64_t lines; /* tag: the line's number */
static bool reading, eof, finished, closing;
static unsigned writes; /* uv_write()s not yet done */
static int status;

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p) {
        fprintf(stderr, "uv-lines: out of memory\n");
        exit(1);
    }
    return p;
}

static void on_alloc(uv_handle_t *h, size_t want, uv_buf_t *buf)
{
    (void)h;
    buf->base = xrealloc(NULL, want);
    buf->len = want;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void drain(void);

static void on_written(uv_write_t *w, int rc)
{
    if (rc < 0) {
        fprintf(stderr, "uv-lines: stdout: %s\n", uv_strerror(rc));
        status = 1;
    }
    free(w->data);
    free(w);
    if (--writes == 0 && closing)
        uv_close((uv_handle_t *)&out, NULL); /* closing cancels what is queued: not before */
    else if (!closing)
        drain(); /* stdout caught up: reading may resume */
}

/* Submits the whole lines in pending: false when the window is full. */
static bool submit(void)
{
    size_t at = 0;
    bool room = true;
    for (;;) {
        char *nl = npending > at ? memchr(pending + at, '\n', npending - at) : NULL;
        size_t len = nl ? (size_t)(nl - pending - at) : npending - at;
        if (!nl && !(eof && len))
            break; /* a line still being read */
        int rc = exec_try_submit(ex, pending + at, len, lines + 1);
        if (rc == EXEC_EAGAIN) {
            room = false;
            break;
        }
        lines++;
        if (rc) {
            fprintf(stderr, "uv-lines: line %llu: %s\n", (unsigned long long)lines,
                    exec_strerror(rc));
            status = 1;
        }
        at += len + (nl != NULL);
    }
    if (at) {
        memmove(pending, pending + at, npending - at);
        npending -= at;
    }
    if (eof && npending == 0 && !finished) {
        exec_finish(ex);
        finished = true;
    }
    return room;
}

/* Submits what fits, and reads stdin only while the window has room and
 * stdout keeps up. True if a record went in. */
static bool feed(void)
{
    uint64_t before = lines;
    bool room = submit();
    bool go = room && !eof && !closing &&
              uv_stream_get_write_queue_size((uv_stream_t *)&out) < OUT_HIGH;
    if (reading && !go)
        uv_read_stop((uv_stream_t *)&in);
    else if (!reading && go)
        uv_read_start((uv_stream_t *)&in, on_alloc, on_read);
    reading = go;
    return lines != before;
}

/* Collects every result ready and writes them in one go. */
static int collect(void)
{
    uv_buf_t b = {.base = NULL, .len = 0};
    size_t bcap = 0;
    exec_result_t res;
    int rc;
    while ((rc = exec_next(ex, &res, 0)) == 0) {
        char err[64];
        const char *p = res.data;
        size_t len = res.len;
        if (res.status) {
            len = (size_t)snprintf(err, sizeof err, "line %llu: not a number\n",
                                   (unsigned long long)res.tag);
            p = err;
        }
        if (b.len + len > bcap) {
            bcap = 2 * (b.len + len) + 4096;
            b.base = xrealloc(b.base, bcap);
        }
        memcpy(b.base + b.len, p, len);
        b.len += len;
    }
    if (b.len) {
        uv_write_t *w = xrealloc(NULL, sizeof *w);
        w->data = b.base;
        writes++;
        uv_write(w, (uv_stream_t *)&out, &b, 1, on_written);
    } else {
        free(b.base);
    }
    return rc;
}

/*
 * Results out, records in, until neither moves. exec_next() answers
 * EXEC_EAGAIN only after it sent out the records waiting in the open batch
 * and armed exec_fd(): so records submitted here are followed by one more
 * exec_next().
 */
static void drain(void)
{
    int rc;
    do {
        rc = collect();
        if (rc == EXEC_EOF) {
            closing = true;
            uv_close((uv_handle_t *)&poll_ex, NULL);
            uv_close((uv_handle_t *)&in, NULL);
            if (writes == 0)
                uv_close((uv_handle_t *)&out, NULL);
            return;
        }
        if (rc != EXEC_EAGAIN) {
            fprintf(stderr, "uv-lines: %s\n", exec_strerror(rc));
            exit(1);
        }
    } while (feed());
}

static void on_exec(uv_poll_t *p, int rc, int events)
{
    (void)p;
    (void)rc;
    (void)events;
    drain();
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)s;
    if (n > 0) {
        if (npending + (size_t)n > cap) {
            cap = 2 * (npending + (size_t)n);
            pending = xrealloc(pending, cap);
        }
        memcpy(pending + npending, buf->base, (size_t)n);
        npending += (size_t)n;
    } else if (n < 0) {
        if (n != UV_EOF) {
            fprintf(stderr, "uv-lines: stdin: %s\n", uv_strerror((int)n));
            status = 1;
        }
        eof = true;
    }
    free(buf->base);
    if (n != 0)
        drain(); /* which submits the new lines */
}

static int open_stream(uv_pipe_t *p, int fd)
{
    uv_handle_type t = uv_guess_handle(fd);
    if (t != UV_NAMED_PIPE && t != UV_TTY) {
        fprintf(stderr, "uv-lines: fd %d must be a pipe or a terminal: cat FILE | uv-lines | cat\n",
                fd);
        return -1;
    }
    return uv_pipe_init(loop, p, 0) || uv_pipe_open(p, fd) ? -1 : 0;
}

int main(void)
{
    loop = uv_default_loop();
    exec_options_t o = {.flags = EXEC_ORDERED, .window = 8192};
    int rc = exec_create(&ex, &ops, NULL, EXEC_AUTO, &o);
    if (rc) {
        fprintf(stderr, "uv-lines: %s\n", exec_strerror(rc));
        return 1;
    }
    if (open_stream(&in, 0) || open_stream(&out, 1) ||
        uv_poll_init(loop, &poll_ex, exec_fd(ex)) ||
        uv_poll_start(&poll_ex, UV_READABLE, on_exec)) {
        exec_destroy(ex);
        return 1;
    }
    feed(); /* starts reading */
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    exec_destroy(ex);
    free(pending);
    return status;
}
