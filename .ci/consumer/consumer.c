/*
 * An outside program built against an installed libexecutor: runs records through
 * EXEC_THREADS, once with exec_map() (ordered) and once with submit/next (unordered),
 * and checks every result. Exits 1 on any mismatch.
 */
#include <executor.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define NREC 20000

struct table {
    uint64_t mul; /* the context: read-only once built */
};

/* The result of a record: the sum of its bytes times ctx->mul. */
static uint64_t expected(const struct table *t, uint64_t i)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "record-%" PRIu64, i);
    uint64_t sum = 0;
    for (int k = 0; k < n; k++)
        sum += (unsigned char)buf[k];
    return sum * t->mul;
}

static int process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    const struct table *t = ctx;
    const unsigned char *p = rec;
    uint64_t sum = 0;
    (void)ws;
    for (size_t k = 0; k < len; k++)
        sum += p[k];
    sum *= t->mul;
    return exec_write(out, &sum, sizeof sum);
}

static const exec_ops_t ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE,
    .name = "consumer",
    .process = process,
};

struct run {
    const struct table *t;
    uint64_t next_in;  /* next record to read */
    uint64_t next_out; /* next result expected (ordered) */
    unsigned char seen[NREC];
    char buf[32];
    int bad;
};

static int check(struct run *r, const exec_result_t *res)
{
    uint64_t v;
    if (res->tag >= NREC || res->status != 0 || res->len != sizeof v || r->seen[res->tag]) {
        fprintf(stderr, "consumer: bad result for tag %" PRIu64 " (status %s)\n", res->tag,
                exec_err_name(res->status));
        return 1;
    }
    memcpy(&v, res->data, sizeof v);
    if (v != expected(r->t, res->tag)) {
        fprintf(stderr, "consumer: tag %" PRIu64 ": %" PRIu64 " != %" PRIu64 "\n", res->tag, v,
                expected(r->t, res->tag));
        return 1;
    }
    r->seen[res->tag] = 1;
    return 0;
}

static int read_cb(void *arg, const void **rec, size_t *len, uint64_t *tag)
{
    struct run *r = arg;
    if (r->next_in == NREC)
        return 0;
    *len = (size_t)snprintf(r->buf, sizeof r->buf, "record-%" PRIu64, r->next_in);
    *rec = r->buf;
    *tag = r->next_in++;
    return 1;
}

static int emit_cb(void *arg, const exec_result_t *res)
{
    struct run *r = arg;
    if (res->tag != r->next_out++) {
        fprintf(stderr, "consumer: out of order: tag %" PRIu64 "\n", res->tag);
        r->bad = 1;
        return 1;
    }
    if (check(r, res)) {
        r->bad = 1;
        return 1;
    }
    return 0;
}

static int run_map(const struct table *t)
{
    static struct run r;
    exec_options_t o = {.workers = 2, .flags = EXEC_ORDERED};
    exec_t *ex;
    int rc;

    memset(&r, 0, sizeof r);
    r.t = t;
    if ((rc = exec_create(&ex, &ops, (void *)t, EXEC_THREADS, &o)) != 0) {
        fprintf(stderr, "consumer: exec_create: %s\n", exec_strerror(rc));
        return 1;
    }
    rc = exec_map(ex, read_cb, &r, emit_cb, &r);
    exec_destroy(ex);
    if (rc != 0 || r.bad || r.next_out != NREC) {
        fprintf(stderr, "consumer: exec_map returned %d after %" PRIu64 " results\n", rc,
                r.next_out);
        return 1;
    }
    return 0;
}

static int run_stream(const struct table *t)
{
    static struct run r;
    exec_options_t o = {.workers = 2, .window = 256};
    exec_result_t res;
    exec_t *ex;
    uint64_t got = 0;
    int rc;

    memset(&r, 0, sizeof r);
    r.t = t;
    if ((rc = exec_create(&ex, &ops, (void *)t, EXEC_THREADS, &o)) != 0) {
        fprintf(stderr, "consumer: exec_create: %s\n", exec_strerror(rc));
        return 1;
    }
    for (uint64_t i = 0; i < NREC; i++) {
        int n = snprintf(r.buf, sizeof r.buf, "record-%" PRIu64, i);
        while ((rc = exec_try_submit(ex, r.buf, (size_t)n, i)) == EXEC_EAGAIN) {
            if ((rc = exec_next(ex, &res, -1)) != 0 || check(&r, &res))
                goto fail;
            got++;
        }
        if (rc != 0)
            goto fail;
    }
    if ((rc = exec_finish(ex)) != 0)
        goto fail;
    while ((rc = exec_next(ex, &res, -1)) == 0) {
        if (check(&r, &res))
            goto fail;
        got++;
    }
    if (rc != EXEC_EOF || got != NREC)
        goto fail;
    exec_destroy(ex);
    return 0;
fail:
    fprintf(stderr, "consumer: stream stopped (%d) after %" PRIu64 " results\n", rc, got);
    exec_destroy(ex);
    return 1;
}

int main(void)
{
    struct table t = {.mul = 7};
    if (run_map(&t) || run_stream(&t))
        return 1;
    printf("consumer: %d records twice, every result checked (libexecutor %s)\n", NREC,
           EXEC_VERSION_STRING);
    return 0;
}
