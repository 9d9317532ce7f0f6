/* The result writer handed to process(), and the per-batch loop every worker runs. */
#include "exec_internal.h"
#include "alloc.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Where this record's room ends: the area's end or max_result, the nearer. */
static inline void exec__writer_end(struct exec_writer *w)
{
    w->end = w->cap - w->start < w->max ? w->cap : w->start + w->max;
}

inline void exec__writer_begin(struct exec_writer *w)
{
    w->start = w->len;
    w->overflow = w->nomem = false;
    exec__writer_end(w);
}

/* Room for n more bytes of this record's result, or an error: the slow
 * path (an overflow to report, an area to grow). */
static __attribute__((noinline)) int exec__writer_room_slow(struct exec_writer *w, size_t n)
{
    if (w->overflow)
        return EXEC_ERESULT2BIG;
    if (n > w->max || w->len - w->start > w->max - n) {
        w->overflow = true;
        w->end = 0;
        return EXEC_ERESULT2BIG;
    }
    if (w->cap - w->len < n || !w->buf) {
        if (!w->grow || w->grow(w, w->len + n) != 0) {
            w->overflow = true;
            w->end = 0;
            w->nomem = w->grow != NULL;
            return w->nomem ? EXEC_ENOMEM : EXEC_ERESULT2BIG;
        }
        exec__writer_end(w);
    }
    return 0;
}

static inline __attribute__((always_inline)) int exec__writer_room(struct exec_writer *w, size_t n)
{
    /* The common case in one test: 0 < n <= the room left (end is 0 after an
     * overflow, and n == 0 takes the slow path, which reports one). */
    if (__builtin_expect(w->len <= w->end && n - 1 < w->end - w->len, 1))
        return 0;
    return exec__writer_room_slow(w, n);
}

/* Results are often a few bytes: copy those without a call. */
static inline __attribute__((always_inline)) void exec__copy(char *d, const char *s, size_t n)
{
    if (n >= 8 && n <= 16) {
        uint64_t a, b;
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
    } else if (n < 4) {
        for (size_t i = 0; i < n; i++)
            d[i] = s[i];
    } else {
        memcpy(d, s, n);
    }
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
    exec__copy(w->buf + w->len, data, n);
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
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): started on the line above */
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
        w->overflow = w->nomem = false;
        exec__writer_end(w);
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

/* ------------------------------------------------------------------------- */
/* A writer the host owns: process() in the host's own thread                  */
/* ------------------------------------------------------------------------- */

int exec__writer_grow(struct exec_writer *w, size_t need)
{
    size_t cap = w->cap ? w->cap : 4096;
    while (cap < need)
        cap *= 2;
    char *p = exec__realloc(w->buf, cap);
    if (!p)
        return EXEC_ENOMEM;
    w->buf = p;
    w->cap = cap;
    return 0;
}

exec_writer_t *exec_writer_new(size_t max_result)
{
    if (max_result == 0 || max_result > EXEC__MAX_SIZE)
        return NULL;
    struct exec_writer *w = exec__calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->max = max_result;
    w->grow = exec__writer_grow;
    return w;
}

void exec_writer_free(exec_writer_t *w)
{
    if (w) {
        free(w->buf);
        free(w);
    }
}

const void *exec_writer_data(const exec_writer_t *w)
{
    return w ? w->buf : NULL;
}

void exec_writer_clear(exec_writer_t *w)
{
    if (w)
        w->len = w->start = 0;
}

int exec_writer_run(exec_writer_t *w, const exec_ops_t *ops, void *ctx, void *worker_state,
                    const void *rec, size_t len, size_t *off, size_t *out_len, int *user_code)
{
    if (off)
        *off = 0;
    if (out_len)
        *out_len = 0;
    if (user_code)
        *user_code = 0;
    if (!w || !w->grow || !ops || !ops->process || (!rec && len) || !off || !out_len)
        return EXEC_EINVAL;
    exec__writer_begin(w);
    w->rflag = NULL;
    int rc = ops->process(ctx, worker_state, rec, len, w);
    int status = 0;
    if (w->overflow) {
        status = w->nomem ? EXEC_ENOMEM : EXEC_ERESULT2BIG;
        w->len = w->start;
    } else if (rc != 0) {
        status = EXEC_EUSER;
        if (user_code)
            *user_code = rc;
    }
    *off = w->start;
    *out_len = w->len - w->start;
    return status;
}

/* The loop, inlined twice: for a growable area without hooks (EXEC_THREADS:
 * nothing else to look at per record) and for the rest. */
static inline __attribute__((always_inline)) uint32_t
exec__run_loop(const exec_ops_t *ops, void *ctx, void *wstate, struct exec__batch *b,
               uint32_t from, struct exec_writer *w, size_t max_result,
               struct exec__run_hooks *hooks, const bool fixed)
{
    const uint32_t n = b->n;
    uint32_t i;
    if (hooks)
        hooks->good = w->len;
    for (i = from; i < n; i++) {
        /* A fixed area (shared memory) must hold a whole max_result before a
         * record starts, so a result never has to be cut; else stop here. */
        if (fixed && i > from && w->cap - w->len < max_result)
            break;
        const struct exec__rec *r = &b->recs[i];
        struct exec__res *res = &b->res[i];
        const uint8_t *rf = &b->rflags[i];
        /* The producer just wrote these on another core: ask early. */
        if (i + 4 < n) {
            __builtin_prefetch(b->recs[i + 4].p);
            __builtin_prefetch(&b->res[i + 4], 1);
        }
        if (hooks && hooks->on_record)
            hooks->on_record(hooks->arg, i);
        exec__writer_begin(w);
        int32_t status, code = 0;
        uint32_t flags = 0;
        if (__atomic_load_n(rf, __ATOMIC_RELAXED) & EXEC__RF_CANCEL) {
            /* Cancelled while queued: never processed. */
            status = EXEC_ECANCELLED;
            if (hooks && hooks->on_return)
                hooks->on_return(hooks->arg, i);
        } else {
            w->rflag = rf;
            w->saw_cancel = false;
            int rc = ops->process(ctx, wstate, r->p, r->len, w);
            if (hooks && hooks->on_return)
                hooks->on_return(hooks->arg, i);
            if (fixed && (w->len > w->cap || w->start > w->len)) {
                /* process() broke the writer (it can reach the struct): its
                 * result is lost and this worker is suspect; the pass ends. */
                *res = (struct exec__res){.status = EXEC_EWORKER};
                if (hooks)
                    hooks->broken = true;
                return i + 1;
            }
            uint8_t f = __atomic_load_n(rf, __ATOMIC_RELAXED);
            if (__builtin_expect(f & (EXEC__RF_CANCEL | EXEC__RF_SOFT), 0)) {
                /* Cancelled while running, or ran past its timeout and
                 * stopped within the grace: the result is dropped. */
                status = f & EXEC__RF_CANCEL ? EXEC_ECANCELLED : EXEC_ERECTIMEOUT;
                flags = w->saw_cancel ? EXEC_RESULT_EARLY : 0;
                w->len = w->start;
            } else if (w->overflow) {
                status = w->nomem ? EXEC_ENOMEM : EXEC_ERESULT2BIG;
                w->len = w->start;
            } else if (rc != 0) {
                status = EXEC_EUSER;
                code = rc;
            } else {
                status = 0;
            }
        }
        *res = (struct exec__res){.status = status,
                                  .user_code = code,
                                  .len = (uint32_t)(w->len - w->start),
                                  .flags = flags,
                                  .off = w->start};
        if (hooks)
            hooks->good = w->len;
        __atomic_store_n(&b->progress, i + 1, __ATOMIC_RELEASE);
    }
    return i;
}

uint32_t exec__run_batch(const exec_ops_t *ops, void *ctx, void *wstate,
                         struct exec__batch *b, uint32_t from, struct exec_writer *w,
                         size_t max_result, struct exec__run_hooks *hooks)
{
    if (!hooks && w->grow)
        return exec__run_loop(ops, ctx, wstate, b, from, w, max_result, NULL, false);
    return exec__run_loop(ops, ctx, wstate, b, from, w, max_result, hooks, !w->grow);
}
