/*
 * --backend inline: the baseline the load test compares with. The same
 * server, but each record runs through process() right in the event loop,
 * as a server written without the library would do it: no workers, no
 * isolation, no timeouts, and a slow record stalls every connection.
 *
 * It stands in for exec_try_submit()/exec_next(): submitting runs the record
 * now and queues its result, and the drain takes results from the queue.
 *
 * The public API has no way for a host to call process() with a writer of
 * its own, so this file (and only this one) takes struct exec_writer from
 * core/exec_internal.h, as the library's benchmarks do; the exec_write*()
 * calls that fill it are the library's own.
 */
#include "serve.h"

#include "exec_internal.h"

#include <stdlib.h>
#include <string.h>

struct done {
    uint64_t tag;
    int status, user_code;
    size_t off, len;
};

struct inline_run {
    struct serve *s;
    void *ctx, *ws;
    struct exec_writer w; /* results of the queued records, back to back */
    struct done *q;
    size_t cap, head, n;
    uint64_t generation;
};

static int grow(struct exec_writer *w, size_t need)
{
    size_t cap = w->cap ? w->cap : 4096;
    while (cap < need)
        cap *= 2;
    char *nb = realloc(w->buf, cap);
    if (!nb)
        return EXEC_ENOMEM;
    w->buf = nb;
    w->cap = cap;
    return 0;
}

int inline_create(struct serve *s, void *ctx, char *err, size_t errlen)
{
    struct inline_run *in = calloc(1, sizeof *in);
    size_t cap = s->o.window ? s->o.window : 1024;
    if (in)
        in->q = calloc(cap, sizeof *in->q);
    if (!in || !in->q) {
        free(in);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    in->s = s;
    in->ctx = ctx;
    in->cap = cap;
    in->w.max = s->o.max_result;
    in->w.grow = grow;
    if (s->ops.worker_init && s->ops.worker_init(ctx, &in->ws) != 0) {
        snprintf(err, errlen, "the plugin's worker_init refused to start");
        free(in->q);
        free(in);
        return -1;
    }
    s->inl = in;
    return 0;
}

int inline_try_submit(struct inline_run *in, const void *rec, size_t len, uint64_t tag)
{
    if (len > in->s->o.max_record)
        return EXEC_E2BIG;
    if (in->n == in->cap)
        return EXEC_EAGAIN;
    if (in->n == 0)
        in->w.len = 0; /* every queued result was taken: reuse the area */
    /* What exec__writer_begin() does for a worker. */
    in->w.start = in->w.len;
    in->w.overflow = false;
    in->w.rflag = NULL;
    struct done *d = &in->q[(in->head + in->n++) % in->cap];
    d->tag = tag;
    d->user_code = 0;
    int rc = in->s->ops.process(in->ctx, in->ws, rec, len, &in->w);
    if (in->w.overflow) {
        d->status = EXEC_ERESULT2BIG;
        in->w.len = in->w.start;
    } else if (rc) {
        d->status = EXEC_EUSER;
        d->user_code = rc;
    } else {
        d->status = 0;
    }
    d->off = in->w.start;
    d->len = in->w.len - in->w.start;
    return 0;
}

int inline_next(struct inline_run *in, exec_result_t *res)
{
    if (in->n == 0)
        return EXEC_EAGAIN;
    const struct done *d = &in->q[in->head];
    in->head = (in->head + 1) % in->cap;
    in->n--;
    memset(res, 0, sizeof *res);
    res->tag = d->tag;
    res->status = d->status;
    res->user_code = d->user_code;
    res->data = d->status == EXEC_ERESULT2BIG ? NULL : in->w.buf + d->off;
    res->len = d->status == EXEC_ERESULT2BIG ? 0 : d->len;
    res->generation = in->generation;
    return 0;
}

/* A reload: the new context serves from the next record on. */
void inline_swap(struct inline_run *in, void *ctx)
{
    void *old = in->ctx;
    in->ctx = ctx;
    in->generation++;
    in->s->pl->ctx_free(old);
}

void inline_destroy(struct inline_run *in)
{
    if (!in)
        return;
    if (in->s->ops.worker_fini)
        in->s->ops.worker_fini(in->ctx, in->ws);
    in->s->pl->ctx_free(in->ctx);
    free(in->w.buf);
    free(in->q);
    free(in);
}
