/*
 * --backend inline: the baseline the load test compares with. The same
 * server, but each record runs through process() right in the event loop,
 * as a server written without the library would do it: no workers, no
 * isolation, no timeouts, and a slow record stalls every connection.
 *
 * It stands in for exec_try_submit()/exec_next(): submitting runs the record
 * now (through a writer of its own, exec_writer_run()) and queues its
 * result, and the drain takes results from the queue.
 */
#include "serve.h"

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
    exec_writer_t *w; /* results of the queued records, back to back */
    struct done *q;
    size_t cap, head, n;
    uint64_t generation;
};

int inline_create(struct serve *s, void *ctx, char *err, size_t errlen)
{
    struct inline_run *in = calloc(1, sizeof *in);
    size_t cap = s->o.window ? s->o.window : 1024;
    if (in) {
        in->q = calloc(cap, sizeof *in->q);
        in->w = exec_writer_new(s->o.max_result);
    }
    if (!in || !in->q || !in->w) {
        if (in) {
            free(in->q);
            exec_writer_free(in->w);
        }
        free(in);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    in->s = s;
    in->ctx = ctx;
    in->cap = cap;
    if (s->ops.worker_init && s->ops.worker_init(ctx, &in->ws) != 0) {
        snprintf(err, errlen, "the plugin's worker_init refused to start");
        free(in->q);
        exec_writer_free(in->w);
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
        exec_writer_clear(in->w); /* every queued result was taken: reuse the area */
    struct done *d = &in->q[(in->head + in->n++) % in->cap];
    d->tag = tag;
    d->status = exec_writer_run(in->w, &in->s->ops, in->ctx, in->ws, rec, len, &d->off, &d->len,
                                &d->user_code);
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
    bool bytes = d->status == 0 || d->status == EXEC_EUSER;
    res->data = bytes ? (const char *)exec_writer_data(in->w) + d->off : NULL;
    res->len = bytes ? d->len : 0;
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
    exec_writer_free(in->w);
    free(in->q);
    free(in);
}
