/* The result writer handed to process(), and the per-batch loop every worker runs. */
#include "exec_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void exec__writer_begin(struct exec_writer *w)
{
    w->start = w->len;
    w->overflow = false;
}

/* Room for n more bytes of this record's result, or an error. */
static inline __attribute__((always_inline)) int exec__writer_room(struct exec_writer *w, size_t n)
{
    if (w->overflow)
        return EXEC_ERESULT2BIG;
    if (n > w->max || w->len - w->start > w->max - n) {
        w->overflow = true;
        return EXEC_ERESULT2BIG;
    }
    if (w->cap - w->len < n || !w->buf) {
        if (!w->grow || w->grow(w, w->len + n) != 0) {
            w->overflow = true;
            return EXEC_ERESULT2BIG;
        }
    }
    return 0;
}

void *exec_write_reserve(exec_writer_t *w, size_t n)
{
    if (!w || exec__writer_room(w, n) != 0)
        return NULL;
    void *p = w->buf + w->len;
    w->len += n;
    return p;
}

int exec_write(exec_writer_t *w, const void *data, size_t n)
{
    if (!w || (!data && n))
        return EXEC_EINVAL;
    int rc = exec__writer_room(w, n);
    if (rc)
        return rc;
    if (n)
        memcpy(w->buf + w->len, data, n);
    w->len += n;
    return 0;
}

int exec_writef(exec_writer_t *w, const char *fmt, ...)
{
    if (!w || !fmt)
        return EXEC_EINVAL;
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return EXEC_EINVAL;
    if ((size_t)n < sizeof small)
        return exec_write(w, small, (size_t)n);
    /* Long text: format straight into the result area (+1 for vsnprintf's NUL). */
    int rc = exec__writer_room(w, (size_t)n + 1);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(w->buf + w->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    w->len += (size_t)n;
    return 0;
}

void exec_write_reset(exec_writer_t *w)
{
    if (w) {
        w->len = w->start;
        w->overflow = false;
    }
}

size_t exec_write_len(const exec_writer_t *w)
{
    return w ? w->len - w->start : 0;
}

int exec_cancelled(exec_writer_t *w)
{
    if (!w || !w->rflag ||
        !(__atomic_load_n(w->rflag, __ATOMIC_RELAXED) & (EXEC__RF_CANCEL | EXEC__RF_SOFT)))
        return 0;
    w->saw_cancel = true;
    return 1;
}

uint32_t exec__run_batch(const exec_ops_t *ops, void *ctx, void *wstate,
                         struct exec__batch *b, uint32_t from, struct exec_writer *w,
                         size_t max_result, struct exec__run_hooks *hooks)
{
    uint32_t i;
    if (hooks)
        hooks->good = w->len;
    for (i = from; i < b->n; i++) {
        /* A fixed area (shared memory) must hold a whole max_result before a
         * record starts, so a result never has to be cut; else stop here. */
        if (!w->grow && w->cap - w->len < max_result && i > from)
            break;
        const struct exec__rec *r = &b->recs[i];
        struct exec__res *res = &b->res[i];
        const uint8_t *rf = b->rflags ? &b->rflags[i] : NULL;
        /* The producer just wrote these bytes on another core: ask early. */
        if (i + 4 < b->n) {
            const struct exec__rec *ahead = &b->recs[i + 4];
            __builtin_prefetch(b->data + ahead->off);
            __builtin_prefetch(b->data + ahead->off + ahead->len - 1);
            __builtin_prefetch(&b->res[i + 4], 1);
        }
        if (hooks && hooks->on_record)
            hooks->on_record(hooks->arg, i);
        exec__writer_begin(w);
        res->user_code = 0;
        res->signal = 0;
        res->exit_status = 0;
        res->flags = 0;
        if (rf && (__atomic_load_n(rf, __ATOMIC_RELAXED) & EXEC__RF_CANCEL)) {
            /* Cancelled while queued: never processed. */
            res->status = EXEC_ECANCELLED;
            res->off = w->start;
            res->len = 0;
            __atomic_store_n(&b->progress, i + 1, __ATOMIC_RELEASE);
            continue;
        }
        w->rflag = rf;
        w->saw_cancel = false;
        int rc = ops->process(ctx, wstate, b->data + r->off, r->len, w);
        if (!w->grow && (w->len > w->cap || w->start > w->len)) {
            /* process() broke the writer (it can reach the struct): its
             * result is lost and this worker is suspect; the pass ends. */
            res->status = EXEC_EWORKER;
            res->off = 0;
            res->len = 0;
            if (hooks)
                hooks->broken = true;
            return i + 1;
        }
        if (rf && (__atomic_load_n(rf, __ATOMIC_RELAXED) & EXEC__RF_CANCEL)) {
            /* Cancelled while running: the result is dropped. */
            res->status = EXEC_ECANCELLED;
            res->flags = w->saw_cancel ? EXEC_RESULT_EARLY : 0;
            w->len = w->start;
        } else if (rf && (__atomic_load_n(rf, __ATOMIC_RELAXED) & EXEC__RF_SOFT)) {
            /* Ran past its timeout and stopped within the grace. */
            res->status = EXEC_ERECTIMEOUT;
            res->flags = w->saw_cancel ? EXEC_RESULT_EARLY : 0;
            w->len = w->start;
        } else if (w->overflow) {
            res->status = EXEC_ERESULT2BIG;
            w->len = w->start;
        } else if (rc != 0) {
            res->status = EXEC_EUSER;
            res->user_code = rc;
        } else {
            res->status = 0;
        }
        res->off = w->start;
        res->len = (uint32_t)(w->len - w->start);
        if (hooks)
            hooks->good = w->len;
        if (rf)
            __atomic_store_n(&b->progress, i + 1, __ATOMIC_RELEASE);
    }
    return i;
}
