/*
 * Fuzz target: the public API's validation of options and records, against a
 * model of what include/executor.h documents. The input draws a classifier
 * table, a backend, exec_options_t and exec_source_options_t (values around
 * each documented limit), then a sequence of calls: every kind of submit with
 * good, empty, oversized and NULL records, collects, cancels, finish, swaps,
 * and calls with bad arguments. Each call must return one of the codes the
 * documentation allows for it; every accepted record yields exactly one
 * result, and that result is the record's own.
 *
 * Executors are only created on EXEC_THREADS (forking per input would be too
 * slow); fork options are still validated through exec_create() when the
 * model says they are invalid (it then fails before starting anything).
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "executor_records.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* FUZZ_API_VERBOSE=1 in the environment: each call on stderr, to turn an
 * input into a reproduction. */
static int verbose = -1;
#define SAY(...)                                                                                   \
    do {                                                                                           \
        if (verbose)                                                                               \
            fprintf(stderr, __VA_ARGS__);                                                          \
    } while (0)

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_api: line %d: %s\n", __LINE__, #c);                              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Documented limits. */
#define MAX_WORKERS 1024u
#define MAX_WINDOW (1u << 24)
#define MAX_BATCH 4096u
#define MAX_SIZE ((size_t)64 << 20)

struct in {
    const uint8_t *p;
    size_t n;
};

static uint8_t u8(struct in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static uint32_t u32(struct in *in)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = v << 8 | u8(in);
    return v;
}

/* A value around limit: 0, 1, just under, at, just over, huge, or any. */
static uint64_t pick(struct in *in, uint64_t limit)
{
    switch (u8(in) % 8) {
    case 0: return 0;
    case 1: return 1;
    case 2: return limit - 1;
    case 3: return limit;
    case 4: return limit + 1;
    case 5: return UINT32_MAX;
    case 6: return u32(in);
    default: return u8(in);
    }
}

/* ------------------------------------------------------------------------- */
/* The classifier: echoes each record; one starting with 'U' is a user error */
/* ------------------------------------------------------------------------- */

static int echo(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ctx;
    (void)ws;
    exec_write(out, rec, len);
    return len && ((const char *)rec)[0] == 'U' ? 5 : 0;
}

static atomic_int released;
static void on_release(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&released, 1);
}

/* ------------------------------------------------------------------------- */
/* Record sources                                                            */
/* ------------------------------------------------------------------------- */

static void fuzz_source_options(struct in *in)
{
    static int fd = -1;
    if (fd < 0) {
        fd = memfd_create("fuzz-api", MFD_CLOEXEC);
        CHECK(fd >= 0);
        static const char text[] = "id,text\n1,\"a\"\"b\"\n2,x\n\n";
        CHECK(write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1));
    }
    static const int delims[] = {0, ',', ';', '"', '\n', '\r', -1, 256, 255, '\t'};
    exec_source_options_t o = {
        .format = (exec_source_format_t)(u8(in) % 6),
        .flags = (unsigned)pick(in, 4),
        .delim = delims[u8(in) % (sizeof delims / sizeof delims[0])],
        .max_record = (size_t)pick(in, MAX_SIZE),
        .read_size = (size_t)pick(in, MAX_SIZE),
    };
    bool valid = o.format <= EXEC_SOURCE_LEN32BE &&
                 !(o.flags & ~(EXEC_SOURCE_HEADER | EXEC_SOURCE_SKIP_EMPTY)) &&
                 o.max_record <= MAX_SIZE && o.read_size <= MAX_SIZE && o.delim >= 0 &&
                 o.delim <= 255 && o.delim != '"' && o.delim != '\n' && o.delim != '\r';
    if (valid && o.read_size > 4096)
        o.read_size = 4096; /* valid either way; spare the memory */
    exec_source_t *s = (exec_source_t *)1;
    CHECK(exec_source_open_fd(NULL, fd, &o) == EXEC_EINVAL);
    CHECK(exec_source_open_fd(&s, -1, &o) == EXEC_EINVAL && s == NULL);
    CHECK(lseek(fd, 0, SEEK_SET) == 0);
    int rc = exec_source_open_fd(&s, fd, &o);
    if (!valid) {
        CHECK(rc == EXEC_EINVAL && s == NULL);
        return;
    }
    /* The text is CSV with ',' (another delimiter makes its quotes stray); as
     * length-prefixed records it is cut short; a small max_record makes
     * records too long. */
    CHECK(rc == 0 || rc == EXEC_E2BIG || rc == EXEC_ETRUNCATED || rc == EXEC_EBADQUOTE);
    if (rc)
        return;
    const void *rec;
    size_t len;
    int got, guard = 0;
    while ((got = exec_source_next(s, &rec, &len, NULL)) != 0 && guard++ < 64) {
        CHECK(got == 1 || got == EXEC_E2BIG || got == EXEC_ETRUNCATED || got == EXEC_EBADQUOTE);
        if (got == 1)
            CHECK(o.max_record == 0 || len <= o.max_record);
    }
    CHECK(got == 0);
    exec_source_close(s);
}

/* ------------------------------------------------------------------------- */
/* Executors                                                                 */
/* ------------------------------------------------------------------------- */

#define MAXREC 64

struct run {
    exec_t *ex;
    exec_options_t o;
    bool finished;
    uint64_t ntags, collected, accepted, swaps;
    uint64_t due; /* EXEC_ORDERED: no result before this tag's is out */
    struct rec {
        uint8_t bytes[80];
        size_t len;
        bool accepted, collected, cancel_hit;
    } r[MAXREC];
};

/* The documented answer of exec_create() for these arguments: 0, or a set of
 * codes of which any may come (the order of the checks is not documented). */
static int create_errors(const exec_ops_t *ops, exec_backend_t be, const exec_options_t *o,
                         int *errs)
{
    int n = 0;
    if (!ops || !ops->process)
        errs[n++] = EXEC_EINVAL;
    if (ops && ops->version != EXEC_OPS_VERSION)
        errs[n++] = EXEC_EVERSION;
    if (ops && (ops->caps & ~(EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE)))
        errs[n++] = EXEC_EINVAL;
    if ((o->flags & ~(EXEC_ORDERED | EXEC_NO_REPLAY | EXEC_CLOSE_FDS)) ||
        o->workers > MAX_WORKERS || o->window > MAX_WINDOW || o->batch > MAX_BATCH ||
        o->max_record > MAX_SIZE || o->max_result > MAX_SIZE || (unsigned)be > EXEC_MPI)
        errs[n++] = EXEC_EINVAL;
    /* EXEC_MPI without options.plugin and spec: a classifier that cannot be
     * built from a spec cannot run there. */
    if (ops && be == EXEC_MPI)
        errs[n++] = EXEC_ECAPS;
    if (ops && (unsigned)be <= EXEC_FORK) {
        bool ts = ops->caps & EXEC_CAP_THREAD_SAFE, fs = ops->caps & EXEC_CAP_FORK_SAFE;
        if ((be == EXEC_AUTO && !ts && !fs) || (be == EXEC_THREADS && !ts) ||
            (be == EXEC_FORK && !fs))
            errs[n++] = EXEC_ECAPS;
    }
    return n;
}

static bool one_of(int rc, const int *errs, int n)
{
    for (int i = 0; i < n; i++)
        if (rc == errs[i])
            return true;
    return false;
}

static void check_result(struct run *r, const exec_result_t *res)
{
    CHECK(res->tag < r->ntags);
    struct rec *x = &r->r[res->tag];
    CHECK(x->accepted && !x->collected);
    if (r->o.flags & EXEC_ORDERED) {
        /* Every accepted record before it came out already. */
        while (r->due < res->tag && (!r->r[r->due].accepted || r->r[r->due].collected))
            r->due++;
        CHECK(r->due == res->tag);
    }
    x->collected = true;
    r->collected++;
    if (res->status == EXEC_ECANCELLED) {
        CHECK(x->cancel_hit);
        return;
    }
    if (x->len > r->o.max_result) {
        CHECK(res->status == EXEC_ERESULT2BIG);
        return;
    }
    bool user = x->len && x->bytes[0] == 'U';
    CHECK(res->status == (user ? EXEC_EUSER : 0));
    CHECK(!user || res->user_code == 5);
    CHECK(res->len == x->len && (x->len == 0 || memcmp(res->data, x->bytes, x->len) == 0));
}

/* Collects until at most `left` records are in flight. */
static void drain_to(struct run *r, uint64_t left)
{
    exec_result_t res;
    while (r->accepted - r->collected > left) {
        int rc = exec_next(r->ex, &res, 10000);
        CHECK(rc == 0);
        check_result(r, &res);
    }
}

/* The code a submit of x must give (or 0), before room is considered. */
static int submit_error(const struct run *r, const struct rec *x, bool null_data, int *alt)
{
    *alt = 0;
    int e = 0;
    if (null_data && x->len)
        e = EXEC_EINVAL;
    else if (x->len > r->o.max_record)
        e = EXEC_E2BIG;
    if (r->finished) {
        *alt = e; /* "checked first", though EINVAL may come before it */
        return EXEC_ESTATE;
    }
    return e;
}

static void new_record(struct run *r, struct in *in, struct rec *x)
{
    size_t max = r->o.max_record < sizeof x->bytes ? r->o.max_record : sizeof x->bytes - 1;
    switch (u8(in) % 4) {
    case 0: x->len = 0; break;
    case 1: x->len = max; break;
    case 2: x->len = max + 1; break;
    default: x->len = u8(in) % (sizeof x->bytes + 1); break;
    }
    if (x->len > sizeof x->bytes)
        x->len = sizeof x->bytes;
    for (size_t i = 0; i < x->len; i++)
        x->bytes[i] = u8(in);
}

static void op_submit(struct run *r, struct in *in, unsigned kind)
{
    size_t k = kind < 2 ? 1 : 1 + u8(in) % 8;
    bool blocking = kind == 0 || kind == 2;
    if (blocking && k > r->o.window)
        k = r->o.window; /* more than the window never fits in one thread */
    if (r->ntags + k > MAXREC)
        return;
    exec_record_t recs[8];
    int err[8], alt[8];
    size_t bad = k;
    for (size_t i = 0; i < k; i++) {
        struct rec *x = &r->r[r->ntags + i];
        new_record(r, in, x);
        bool null_data = u8(in) % 8 == 0;
        recs[i] = (exec_record_t){null_data ? NULL : x->bytes, x->len, r->ntags + i};
        err[i] = submit_error(r, x, null_data, &alt[i]);
        if (err[i] && bad == k)
            bad = i;
    }
    /* A blocking submit waits for room that only a consumer makes: from one
     * thread it is called with nothing in flight (room is counted in whole
     * batches, so a partly collected window may have none). */
    if (blocking && !r->finished)
        drain_to(r, 0);
    SAY("%s of %zu record(s) (first bad: %zu), %llu in flight\n",
        kind == 0 ? "submit" : kind == 1 ? "try_submit" : kind == 2 ? "submit_many"
                                                                    : "try_submit_many",
        k, bad, (unsigned long long)(r->accepted - r->collected));
    size_t acc = 0;
    int rc;
    if (kind < 2) {
        rc = (kind == 0 ? exec_submit : exec_try_submit)(r->ex, recs[0].data, recs[0].len,
                                                          recs[0].tag);
        acc = rc == 0;
    } else {
        rc = (kind == 2 ? exec_submit_many : exec_try_submit_many)(r->ex, recs, k, &acc);
    }
    SAY("  -> %s, %zu accepted\n", exec_err_name(rc), acc);
    CHECK(acc <= k);
    if (rc == EXEC_EAGAIN) {
        CHECK(!blocking && acc < bad);
    } else if (bad < k) {
        /* Stopped at the first bad record (after finish, at once). */
        size_t at = r->finished ? 0 : bad;
        CHECK(acc == at);
        CHECK(rc == err[at] || (alt[at] && rc == alt[at]));
    } else {
        CHECK(rc == 0 && acc == k);
    }
    for (size_t i = 0; i < acc; i++)
        r->r[r->ntags + i].accepted = true;
    r->accepted += acc;
    r->ntags += k;
}

static void op_collect(struct run *r, struct in *in, bool many)
{
    exec_result_t res[4];
    size_t got = 0;
    size_t max = many ? u8(in) % 5 : 1;
    int rc = many ? exec_next_many(r->ex, res, max, &got, 0) : exec_next(r->ex, res, 0);
    if (many && max == 0) {
        CHECK(rc == EXEC_EINVAL);
        return;
    }
    if (rc == 0) {
        if (!many)
            got = 1;
        CHECK(got >= 1 && got <= max);
        for (size_t i = 0; i < got; i++)
            check_result(r, &res[i]);
        return;
    }
    if (rc == EXEC_EOF) {
        CHECK(r->finished && r->collected == r->accepted);
        return;
    }
    CHECK(rc == EXEC_EAGAIN);
    CHECK(r->collected < r->accepted || !r->finished);
}

static void op_cancel(struct run *r, struct in *in)
{
    uint64_t tag = u8(in);
    int rc = exec_cancel(r->ex, tag);
    if (tag >= r->ntags || !r->r[tag].accepted || r->r[tag].collected) {
        CHECK(rc == EXEC_ENOENT);
        return;
    }
    CHECK(rc == 1 || rc == EXEC_ENOENT);
    if (rc == 1)
        r->r[tag].cancel_hit = true;
}

static void op_bad_args(struct run *r, struct in *in)
{
    exec_result_t res;
    size_t got = 7, acc = 7;
    exec_stats_t st;
    exec_worker_stats_t ws;
    exec_record_t one = {"x", 1, 0};
    switch (u8(in) % 10) {
    case 0: CHECK(exec_submit(NULL, "x", 1, 0) == EXEC_EINVAL); break;
    case 1: CHECK(exec_next(r->ex, NULL, 0) == EXEC_EINVAL); break;
    case 2: CHECK(exec_next_many(r->ex, &res, 1, NULL, 0) == EXEC_EINVAL); break;
    case 3:
        CHECK(exec_submit_many(r->ex, NULL, 1, &acc) == EXEC_EINVAL && acc == 0);
        break;
    case 4: CHECK(exec_try_submit_many(r->ex, &one, 1, NULL) == EXEC_EINVAL); break;
    case 5: CHECK(exec_cancel(NULL, 0) == EXEC_EINVAL); break;
    case 6:
        CHECK(exec_stats(NULL, &st) == EXEC_EINVAL);
        CHECK(exec_stats(r->ex, NULL) == EXEC_EINVAL);
        break;
    case 7:
        CHECK(exec_worker_stats(r->ex, r->o.workers, &ws) == EXEC_EINVAL);
        CHECK(exec_worker_stats(r->ex, 0, NULL) == EXEC_EINVAL);
        break;
    case 8: CHECK(exec_swap_context(NULL, NULL) == EXEC_EINVAL); break;
    default:
        CHECK(exec_next_many(NULL, &res, 1, &got, 0) == EXEC_EINVAL);
        CHECK(exec_finish(NULL) == EXEC_EINVAL && exec_fd(NULL) == EXEC_EINVAL);
        break;
    }
}

static void run_stream(struct run *r, struct in *in)
{
    static int ctxs[4096];
    while (in->n) {
        unsigned op = u8(in) % 10;
        switch (op) {
        case 0:
        case 1:
        case 2:
        case 3: op_submit(r, in, op); break;
        case 4: op_collect(r, in, false); break;
        case 5: op_collect(r, in, true); break;
        case 6: op_cancel(r, in); break;
        case 7: {
            int rc = exec_finish(r->ex);
            CHECK(rc == (r->finished ? EXEC_ESTATE : 0));
            r->finished = true;
            break;
        }
        case 8: op_bad_args(r, in); break;
        default:
            CHECK(exec_swap_context(r->ex, &ctxs[r->swaps % 4096]) == 0);
            r->swaps++;
            break;
        }
    }
    if (!r->finished)
        CHECK(exec_finish(r->ex) == 0);
    r->finished = true;
    drain_to(r, 0);
    exec_result_t res;
    CHECK(exec_next(r->ex, &res, 1000) == EXEC_EOF);
    exec_stats_t st;
    CHECK(exec_stats(r->ex, &st) == 0);
    CHECK(st.submitted == r->accepted && st.delivered == r->collected && st.in_flight == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in in = {data, size};
    if (verbose < 0)
        verbose = getenv("FUZZ_API_VERBOSE") != NULL;
    fuzz_source_options(&in);

    static const unsigned caps[] = {EXEC_CAP_THREAD_SAFE, EXEC_CAP_FORK_SAFE,
                                    EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE, 0, 0x4, 0x80000001};
    exec_ops_t ops = {
        .version = u8(&in) % 8 ? EXEC_OPS_VERSION : (unsigned)pick(&in, EXEC_OPS_VERSION),
        .caps = caps[u8(&in) % 6],
        .process = u8(&in) % 16 ? echo : NULL,
        .ctx_release = on_release,
    };
    bool null_ops = u8(&in) % 32 == 0;
    exec_backend_t be = (exec_backend_t)(u8(&in) % 5); /* 4: none such */
    exec_options_t o = {
        .workers = (unsigned)pick(&in, MAX_WORKERS),
        .window = (unsigned)pick(&in, MAX_WINDOW),
        .batch = (unsigned)pick(&in, MAX_BATCH),
        .flags = (unsigned)pick(&in, EXEC_ORDERED | EXEC_NO_REPLAY | EXEC_CLOSE_FDS),
        .max_record = (size_t)pick(&in, MAX_SIZE),
        .max_result = (size_t)pick(&in, MAX_SIZE),
        .timeout_ms = (unsigned)pick(&in, 1000),
        .max_records_per_worker = (unsigned)pick(&in, 1000),
        .grace_ms = (unsigned)pick(&in, 1000),
        .slow_ms = (unsigned)pick(&in, 1000),
        .start_timeout_ms = (unsigned)pick(&in, 10000),
        .max_worker_growth_kb = (unsigned)pick(&in, 1000),
    };
    int errs[8];
    const exec_ops_t *opp = null_ops ? NULL : &ops;
    int nerr = create_errors(opp, be, &o, errs);
    exec_t *ex = (exec_t *)1;
    CHECK(exec_create(NULL, opp, NULL, be, &o) == EXEC_EINVAL);
    bool threads = be == EXEC_THREADS ||
                   (be == EXEC_AUTO && opp && (ops.caps & EXEC_CAP_THREAD_SAFE));
    if (nerr) {
        int rc = exec_create(&ex, opp, NULL, be, &o);
        if (!one_of(rc, errs, nerr))
            fprintf(stderr,
                    "fuzz_api: exec_create on backend %d returned %s (caps %#x version %u "
                    "workers %u window %u batch %u flags %#x max_record %zu max_result %zu; "
                    "expected %s...)\n",
                    (int)be, exec_err_name(rc), opp ? opp->caps : 0, opp ? opp->version : 0,
                    o.workers, o.window, o.batch, o.flags, o.max_record, o.max_result,
                    exec_err_name(errs[0]));
        CHECK(one_of(rc, errs, nerr) && ex == NULL);
        return 0;
    }
    if (!threads)
        return 0; /* a valid EXEC_FORK executor: not started here */
    /* Valid either way; small, so that a run costs little. */
    if (o.workers > 4)
        o.workers = 1 + o.workers % 4;
    if (o.window > 4096)
        o.window = 1 + o.window % 4096;
    if (o.max_record > 4096)
        o.max_record = 4096;
    if (o.max_result > 4096)
        o.max_result = 4096;

    SAY("exec_create: workers %u window %u batch %u flags %#x max_record %zu max_result %zu\n",
        o.workers, o.window, o.batch, o.flags, o.max_record, o.max_result);
    struct run *r = calloc(1, sizeof *r);
    CHECK(r != NULL);
    atomic_store(&released, 0);
    int rc = exec_create(&r->ex, &ops, NULL, be, &o);
    CHECK(rc == 0);
    CHECK(exec_backend(r->ex) == EXEC_THREADS);
    CHECK(exec_get_options(r->ex, &r->o) == 0);
    const exec_options_t *g = &r->o;
    CHECK(g->workers == (o.workers ? o.workers : g->workers) && g->workers >= 1 &&
          g->workers <= MAX_WORKERS);
    uint64_t wdef = 4096ull * g->workers;
    CHECK(g->window == (o.window ? o.window : (wdef > MAX_WINDOW ? MAX_WINDOW : wdef)));
    CHECK(g->batch == (o.batch ? o.batch : 128));
    CHECK(g->max_record == (o.max_record ? o.max_record : 64 * 1024));
    CHECK(g->max_result == (o.max_result ? o.max_result : 64 * 1024));
    CHECK(g->flags == o.flags);
    CHECK(g->grace_ms == (o.grace_ms ? o.grace_ms : 1000));
    CHECK(g->start_timeout_ms == (o.start_timeout_ms ? o.start_timeout_ms : 10000));
    run_stream(r, &in);
    exec_destroy(r->ex);
    CHECK(atomic_load(&released) == (int)r->swaps + 1); /* each context once */
    free(r);
    return 0;
}
