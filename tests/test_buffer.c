/*
 * exec_buffer(): memory the workers read where it lies. Records (and their
 * exec_record_t array) placed there travel by reference: exec_run_records()
 * copies nothing, and exec_map_source() reads its input into a ring of it.
 * Checked on both backends: every result exact, where each record lay when
 * process() read it (in the buffer: not copied), EXEC_FORK workers unable to
 * write it, the edges (no records, a record of max_record bytes, one that
 * ends at the buffer's very end), a buffer reused chunk after chunk, a swap
 * and a cancel from another thread during runs, a source read on after exec_map_source() stopped, and
 * exec_map()'s reader asking for results first (EXEC_EAGAIN).
 */
#include "executor_records.h"
#include "testutil.h"

#include <fcntl.h>
#include <sys/mman.h>

/* Shared with forked workers (a MAP_SHARED page): where the buffer is. */
struct bshared {
    const char *base;
    size_t size;
    uint64_t salt;
    atomic_ullong in_place, copied;
};

static struct bshared *B;

static uint64_t b_expect(const void *rec, size_t len, uint64_t salt)
{
    uint64_t h = 0xcbf29ce484222325ull ^ salt;
    const unsigned char *p = rec;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* The result: the record's hash under the context's salt, and whether the
 * bytes lay in the buffer. A record that starts with "write!" writes into
 * the buffer (a worker may not: EXEC_FORK's crashes). */
static int b_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    const struct bshared *c = ctx;
    uintptr_t p = (uintptr_t)rec, b = (uintptr_t)c->base;
    bool in = b && p >= b && p - b <= c->size && len <= c->size - (p - b);
    atomic_fetch_add(in ? &B->in_place : &B->copied, 1);
    if (len >= 6 && memcmp(rec, "write!", 6) == 0)
        ((volatile char *)(uintptr_t)c->base)[0] = 'x';
    struct {
        uint64_t h;
        uint8_t in;
    } r = {b_expect(rec, len, c->salt), in};
    return exec_write(out, &r, 9);
}

static const exec_ops_t b_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "buffer",
    .process = b_process,
};

static struct bshared *b_shared(void)
{
    struct bshared *s =
        mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(s != MAP_FAILED);
    memset(s, 0, sizeof *s);
    return s;
}

/* Checks results against the records by tag (an index into recs). */
struct bcheck {
    const exec_record_t *recs;
    size_t n, got, bad, not_in;
    uint64_t salt;
    unsigned char *seen;
};

static void b_check_one(struct bcheck *c, const exec_result_t *r)
{
    struct {
        uint64_t h;
        uint8_t in;
    } v;
    if (r->status != 0 || r->len != 9 || r->tag >= c->n || c->seen[r->tag]) {
        c->bad++;
        return;
    }
    memcpy(&v, r->data, 9);
    const exec_record_t *x = &c->recs[r->tag];
    if (v.h != b_expect(x->data, x->len, c->salt))
        c->bad++;
    if (!v.in)
        c->not_in++;
    c->seen[r->tag] = 1;
    c->got++;
}

static int b_emit(void *arg, const exec_result_t *res, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b_check_one(arg, &res[i]);
    return 0;
}

static exec_t *b_create(exec_backend_t be, size_t buffer_size, unsigned flags, char **buf,
                        size_t *size)
{
    B = b_shared();
    exec_options_t o = {.workers = 2, .buffer_size = buffer_size, .flags = flags};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &b_ops, B, be, &o), 0);
    *buf = exec_buffer(ex, size);
    assert_non_null(*buf);
    B->base = *buf;
    B->size = *size;
    return ex;
}

static void b_destroy(exec_t *ex)
{
    exec_destroy(ex);
    munmap(B, sizeof *B);
    B = NULL;
}

/* n records of varied length, and their array, laid out in buf. */
static exec_record_t *b_fill(char *buf, size_t size, size_t n, unsigned seed)
{
    exec_record_t *recs = (exec_record_t *)(void *)buf;
    char *at = buf + n * sizeof *recs;
    for (size_t i = 0; i < n; i++) {
        size_t len = 1 + (i * 7 + seed) % 200;
        assert_true((size_t)(at - buf) + len <= size);
        for (size_t j = 0; j < len; j++)
            at[j] = (char)('a' + (i + j + seed) % 26);
        recs[i] = (exec_record_t){at, len, i};
        at += len;
    }
    return recs;
}

/* ------------------------------------------------------------------------- */

static void basics(exec_backend_t be)
{
    if (tu_fork_left_out(be == EXEC_FORK))
        return;
    char *buf;
    size_t size;
    exec_t *ex = b_create(be, 0, 0, &buf, &size);
    assert_int_equal(size, (size_t)16 << 20); /* the default */
    size_t again = 0;
    assert_ptr_equal(exec_buffer(ex, &again), buf);
    assert_int_equal(again, size);
    assert_ptr_equal(exec_buffer(ex, NULL), buf);
    buf[0] = 1;
    buf[size - 1] = 2; /* all of it the host's to write */
    b_destroy(ex);
    ex = b_create(be, 100000, 0, &buf, &size);
    assert_int_equal(size, 100000);
    b_destroy(ex);
    assert_null(exec_buffer(NULL, &size));
    assert_int_equal(size, 0);
    exec_options_t o = {.workers = 1, .buffer_size = ((size_t)1 << 30) + 1};
    assert_int_equal(exec_create(&ex, &b_ops, NULL, be, &o), EXEC_EINVAL);
}

static void test_basics_threads(void **s) { (void)s; basics(EXEC_THREADS); }
static void test_basics_fork(void **s) { (void)s; basics(EXEC_FORK); }

/* Chunks filled in the buffer, run, filled again with other bytes: every
 * result matches the bytes of its own chunk, every record read in place. */
static void run_views(exec_backend_t be, unsigned flags)
{
    if (tu_fork_left_out(be == EXEC_FORK))
        return;
    char *buf;
    size_t size;
    exec_t *ex = b_create(be, (size_t)2 << 20, flags, &buf, &size);
    const size_t n = 5000;
    for (unsigned round = 0; round < 3; round++) {
        exec_record_t *recs = b_fill(buf, size, n, round * 13);
        struct bcheck c = {.recs = recs, .n = n, .seen = calloc(n, 1)};
        assert_non_null(c.seen);
        assert_int_equal(exec_run_records(ex, recs, n, b_emit, &c), 0);
        assert_int_equal(c.got, n);
        assert_int_equal(c.bad, 0);
        assert_int_equal(c.not_in, 0); /* no record was copied */
        free(c.seen);
    }
    assert_int_equal(atomic_load(&B->copied), 0);
    /* No records, and a record of exactly max_record bytes. */
    struct bcheck c0 = {.recs = (exec_record_t *)(void *)buf, .n = 0};
    assert_int_equal(exec_run_records(ex, (exec_record_t *)(void *)buf, 0, b_emit, &c0), 0);
    assert_int_equal(c0.got, 0);
    exec_options_t eo;
    assert_int_equal(exec_get_options(ex, &eo), 0);
    exec_record_t *big = (exec_record_t *)(void *)buf;
    memset(buf + 64, 'q', eo.max_record);
    big[0] = (exec_record_t){buf + 64, eo.max_record, 0};
    struct bcheck c1 = {.recs = big, .n = 1, .seen = calloc(1, 1)};
    assert_int_equal(exec_run_records(ex, big, 1, b_emit, &c1), 0);
    assert_int_equal(c1.got, 1);
    assert_int_equal(c1.bad, 0);
    assert_int_equal(c1.not_in, 0);
    free(c1.seen);
    b_destroy(ex);
}

static void test_run_views_threads(void **s) { (void)s; run_views(EXEC_THREADS, 0); }
static void test_run_views_fork(void **s) { (void)s; run_views(EXEC_FORK, 0); }
static void test_run_views_fork_ordered(void **s) { (void)s; run_views(EXEC_FORK, EXEC_ORDERED); }

/* EXEC_FORK, the array outside the buffer: records in the buffer (one of
 * them ending at its very end) go by reference, the others are copied. */
struct bmixed {
    struct bcheck c;
    const unsigned char *want_in;
    size_t wrong_place;
};

static int b_emit_mixed(void *arg, const exec_result_t *res, size_t n)
{
    struct bmixed *m = arg;
    for (size_t i = 0; i < n; i++) {
        b_check_one(&m->c, &res[i]);
        if (res[i].tag < m->c.n && res[i].len == 9 &&
            ((const uint8_t *)res[i].data)[8] != m->want_in[res[i].tag])
            m->wrong_place++;
    }
    return 0;
}

static void test_run_mixed_fork(void **s)
{
    (void)s;
    if (tu_fork_left_out(true))
        return;
    char *buf;
    size_t size;
    exec_t *ex = b_create(EXEC_FORK, 65536, 0, &buf, &size);
    const size_t n = 2000;
    exec_record_t *recs = calloc(n, sizeof *recs);
    char *outside = malloc(n * 32);
    unsigned char *want_in = calloc(n, 1);
    assert_non_null(recs);
    assert_non_null(outside);
    assert_non_null(want_in);
    size_t at = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        char *p;
        size_t len = 1 + i % 31;
        if (i % 2 && at + len < size - 100) {
            p = buf + at;
            at += len;
            want_in[i] = 1;
        } else {
            p = outside + i * 32;
        }
        for (size_t j = 0; j < len; j++)
            p[j] = (char)('A' + (i * 3 + j) % 26);
        recs[i] = (exec_record_t){p, len, i};
    }
    memcpy(buf + size - 8, "lastrec!", 8);
    recs[n - 1] = (exec_record_t){buf + size - 8, 8, n - 1};
    want_in[n - 1] = 1;
    struct bmixed m = {.c = {.recs = recs, .n = n, .seen = calloc(n, 1)}, .want_in = want_in};
    assert_non_null(m.c.seen);
    assert_int_equal(exec_run_records(ex, recs, n, b_emit_mixed, &m), 0);
    assert_int_equal(m.c.got, n);
    assert_int_equal(m.c.bad, 0);
    assert_int_equal(m.wrong_place, 0);
    assert_true(m.c.not_in > 0 && m.c.not_in < n);
    free(m.c.seen);
    free(want_in);
    free(outside);
    free(recs);
    b_destroy(ex);
}

/* EXEC_FORK: a worker cannot write the buffer; the record that tries is
 * its own EXEC_ECRASHED and the others run. */
static int b_emit_crash(void *arg, const exec_result_t *res, size_t n)
{
    size_t *counts = arg;
    for (size_t i = 0; i < n; i++)
        counts[res[i].status == EXEC_ECRASHED ? 1 : res[i].status == 0 ? 0 : 2]++;
    return 0;
}

static void test_workers_read_only_fork(void **s)
{
    (void)s;
    if (tu_fork_left_out(true))
        return;
    char *buf;
    size_t size;
    exec_t *ex = b_create(EXEC_FORK, 65536, 0, &buf, &size);
    exec_record_t *recs = (exec_record_t *)(void *)buf;
    char *at = buf + 100 * sizeof *recs;
    for (size_t i = 0; i < 100; i++) {
        memcpy(at, i == 40 ? "write!" : "read..", 6);
        recs[i] = (exec_record_t){at, 6, i};
        at += 6;
    }
    const char first = buf[0];
    size_t counts[3] = {0};
    assert_int_equal(exec_run_records(ex, recs, 100, b_emit_crash, counts), 0);
    assert_int_equal(counts[0], 99);
    assert_int_equal(counts[1], 1);
    assert_int_equal(counts[2], 0);
    assert_int_equal(buf[0], first); /* unchanged */
    b_destroy(ex);
}

/* A swap during runs over the buffer: each result matches its generation. */
struct bswap {
    exec_t *ex;
    struct bshared *ctxs[4];
    atomic_int stop, swaps;
};

static void *b_swapper(void *arg)
{
    struct bswap *w = arg;
    for (unsigned k = 1; !atomic_load(&w->stop); k++) {
        TU_WCHECK(exec_swap_context(w->ex, w->ctxs[k % 4]) == 0);
        atomic_fetch_add(&w->swaps, 1);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

struct bgen {
    struct bswap *w;
    const exec_record_t *recs;
    size_t n, got, bad;
};

static int b_emit_gen(void *arg, const exec_result_t *res, size_t n)
{
    struct bgen *g = arg;
    for (size_t i = 0; i < n; i++) {
        uint64_t h;
        const exec_record_t *x = &g->recs[res[i].tag];
        memcpy(&h, res[i].data, 8);
        if (res[i].status || h != b_expect(x->data, x->len, g->w->ctxs[res[i].generation % 4]->salt))
            g->bad++;
        g->got++;
    }
    return 0;
}

static void swap_during(exec_backend_t be)
{
    if (tu_fork_left_out(be == EXEC_FORK))
        return;
    char *buf;
    size_t size;
    exec_t *ex = b_create(be, (size_t)1 << 20, 0, &buf, &size);
    struct bswap w = {.ex = ex};
    for (unsigned k = 0; k < 4; k++) {
        w.ctxs[k] = k ? b_shared() : B;
        w.ctxs[k]->base = buf;
        w.ctxs[k]->size = size;
        w.ctxs[k]->salt = k * 1000003u;
    }
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, b_swapper, &w), 0);
    const size_t n = 3000;
    /* At least 6 rounds and 2 swaps; a fork swap forks a generation, which a
     * loaded machine may take seconds to do: rounds go on for up to 60 s. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned round = 0; round < 6 || atomic_load(&w.swaps) < 2; round++) {
        exec_record_t *recs = b_fill(buf, size, n, round);
        struct bgen g = {.w = &w, .recs = recs, .n = n};
        assert_int_equal(exec_run_records(ex, recs, n, b_emit_gen, &g), 0);
        assert_int_equal(g.got, n);
        assert_int_equal(g.bad, 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec > 60)
            break;
    }
    atomic_store(&w.stop, 1);
    pthread_join(t, NULL);
    tu_wfail_check();
    assert_true(atomic_load(&w.swaps) >= 2);
    exec_destroy(ex);
    for (unsigned k = 1; k < 4; k++)
        munmap(w.ctxs[k], sizeof *w.ctxs[k]);
    munmap(B, sizeof *B);
    B = NULL;
}

/* exec_cancel_all from another thread while a run over buffer records goes
 * on: each record still gets exactly one result, its own or EXEC_ECANCELLED. */
struct bcancel {
    exec_t *ex;
    atomic_int stop, cancels;
};

static void *b_canceller(void *arg)
{
    struct bcancel *c = arg;
    while (!atomic_load(&c->stop)) {
        int rc = exec_cancel_all(c->ex);
        TU_WCHECK(rc >= 0);
        atomic_fetch_add(&c->cancels, 1);
        struct timespec ts = {0, 300000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

struct bcounts {
    const exec_record_t *recs;
    size_t n, ok, cancelled, bad;
    unsigned char *seen;
    uint64_t salt;
};

static int b_emit_cancel(void *arg, const exec_result_t *res, size_t n)
{
    struct bcounts *c = arg;
    for (size_t i = 0; i < n; i++) {
        const exec_result_t *r = &res[i];
        if (r->tag >= c->n || c->seen[r->tag]++) {
            c->bad++;
            continue;
        }
        uint64_t h;
        if (r->status == EXEC_ECANCELLED) {
            c->cancelled++;
        } else if (r->status == 0 && r->len == 9 && (memcpy(&h, r->data, 8), 1) &&
                   h == b_expect(c->recs[r->tag].data, c->recs[r->tag].len, c->salt)) {
            c->ok++;
        } else {
            c->bad++;
        }
    }
    return 0;
}

static void cancel_during(exec_backend_t be)
{
    if (tu_fork_left_out(be == EXEC_FORK))
        return;
    char *buf;
    size_t size;
    exec_t *ex = b_create(be, (size_t)1 << 20, 0, &buf, &size);
    struct bcancel c = {.ex = ex};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, b_canceller, &c), 0);
    const size_t n = 4000;
    size_t cancelled = 0;
    for (unsigned round = 0; round < 8; round++) {
        exec_record_t *recs = b_fill(buf, size, n, round);
        struct bcounts k = {.recs = recs, .n = n, .seen = calloc(n, 1)};
        assert_non_null(k.seen);
        assert_int_equal(exec_run_records(ex, recs, n, b_emit_cancel, &k), 0);
        assert_int_equal(k.ok + k.cancelled, n);
        assert_int_equal(k.bad, 0);
        cancelled += k.cancelled;
        free(k.seen);
    }
    atomic_store(&c.stop, 1);
    pthread_join(t, NULL);
    tu_wfail_check();
    print_message("%s: %zu of %zu records cancelled by %d exec_cancel_all calls\n",
                  exec_backend_name(be), cancelled, 8 * n, atomic_load(&c.cancels));
    b_destroy(ex);
}

static void test_cancel_during_threads(void **s) { (void)s; cancel_during(EXEC_THREADS); }
static void test_cancel_during_fork(void **s) { (void)s; cancel_during(EXEC_FORK); }

static void test_swap_during_threads(void **s) { (void)s; swap_during(EXEC_THREADS); }
static void test_swap_during_fork(void **s) { (void)s; swap_during(EXEC_FORK); }

/* ------------------------------------------------------------------------- */
/* exec_map_source: the source reads into the buffer                          */
/* ------------------------------------------------------------------------- */

/* A file of n lines (line i: its number, then filler to a varied length;
 * every `big`-th one longer than max, when big). Returns its path. */
static char *b_file(size_t n, size_t big, size_t max, size_t *bytes)
{
    char *path = strdup("/tmp/exec-test-buffer-XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    *bytes = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = big && i % big == big - 1 ? max + 10 : 10 + (i * 37) % 300;
        int k = fprintf(f, "%zu ", i);
        for (size_t j = (size_t)k; j < len; j++)
            fputc('a' + (int)((i + j) % 26), f);
        fputc('\n', f);
        *bytes += len + 1;
    }
    assert_int_equal(fclose(f), 0);
    return path;
}

struct bsrc {
    size_t got, bad, not_in, too_big, stop_at;
    uint64_t next_tag;
    bool ordered;
};

/* Records are numbered from 1: line i is record i + 1. The result must be
 * the hash of that line, which begins with its number. */
static int b_emit_src(void *arg, const exec_result_t *r)
{
    struct bsrc *c = arg;
    if (c->ordered && r->tag != c->next_tag)
        c->bad++;
    c->next_tag = r->tag + 1;
    if (r->status == EXEC_E2BIG) {
        c->too_big++;
    } else if (r->status != 0 || r->len != 9) {
        c->bad++;
    } else {
        uint8_t in = ((const uint8_t *)r->data)[8];
        if (!in)
            c->not_in++;
    }
    c->got++;
    return c->stop_at && c->got == c->stop_at ? 7 : 0;
}

static void map_source(exec_backend_t be, unsigned flags)
{
    if (tu_fork_left_out(be == EXEC_FORK))
        return;
    char *buf;
    size_t size;
    exec_t *ex = b_create(be, 0, flags, &buf, &size);
    size_t bytes;
    const size_t n = 30000; /* ~5 MB: several turns of the ring */
    exec_options_t eo;
    assert_int_equal(exec_get_options(ex, &eo), 0);
    char *path = b_file(n, 997, eo.max_record, &bytes);
    assert_true(bytes > 4 * ((size_t)256 << 10));
    exec_source_t *src;
    exec_source_options_t so = {.format = EXEC_SOURCE_LINES, .read_size = 65536};
    assert_int_equal(exec_source_open(&src, path, &so), 0);
    struct bsrc c = {.ordered = flags & EXEC_ORDERED, .next_tag = 1};
    exec_map_options_t mo = {.flags = EXEC_MAPS_QUIET};
    exec_map_report_t rep;
    assert_int_equal(exec_map_source(ex, src, b_emit_src, &c, &mo, &rep), 0);
    assert_int_equal(c.got, n);
    assert_int_equal(c.bad, 0);
    assert_int_equal(c.too_big, n / 997);
    assert_int_equal(c.not_in, 0); /* every record read where the source put it */
    assert_int_equal(rep.records, n);
    exec_source_close(src);
    b_destroy(ex);
    unlink(path);
    free(path);
}

static void test_source_threads(void **s) { (void)s; map_source(EXEC_THREADS, 0); }
static void test_source_fork(void **s) { (void)s; map_source(EXEC_FORK, 0); }
static void test_source_fork_ordered(void **s) { (void)s; map_source(EXEC_FORK, EXEC_ORDERED); }

/* A map stopped mid-way: the source goes on from where the map left it,
 * off the executor's buffer (which may then go). */
static void source_stop(exec_backend_t be)
{
    if (tu_fork_left_out(be == EXEC_FORK))
        return;
    char *buf;
    size_t size;
    exec_t *ex = b_create(be, 0, EXEC_ORDERED, &buf, &size);
    size_t bytes;
    const size_t n = 20000;
    char *path = b_file(n, 0, 0, &bytes);
    exec_source_t *src;
    exec_source_options_t so = {.format = EXEC_SOURCE_LINES, .read_size = 65536};
    assert_int_equal(exec_source_open(&src, path, &so), 0);
    struct bsrc c = {.ordered = true, .next_tag = 1, .stop_at = 12345};
    exec_map_options_t mo = {.flags = EXEC_MAPS_QUIET};
    assert_int_equal(exec_map_source(ex, src, b_emit_src, &c, &mo, NULL), 7);
    assert_int_equal(c.bad, 0);
    b_destroy(ex);
    /* The executor and its buffer are gone: the source reads on. */
    const void *rec;
    size_t len;
    uint64_t recno, prev = 0;
    size_t left = 0;
    int r;
    while ((r = exec_source_next(src, &rec, &len, &recno)) == 1) {
        char want[32];
        int k = snprintf(want, sizeof want, "%" PRIu64 " ", recno - 1);
        assert_true(len >= (size_t)k && memcmp(rec, want, (size_t)k) == 0);
        assert_true(prev == 0 || recno == prev + 1);
        prev = recno;
        left++;
    }
    assert_int_equal(r, 0);
    assert_true(left > 0 && prev == n);
    exec_source_close(src);
    unlink(path);
    free(path);
}

static void test_source_stop_threads(void **s) { (void)s; source_stop(EXEC_THREADS); }
static void test_source_stop_fork(void **s) { (void)s; source_stop(EXEC_FORK); }

/* ------------------------------------------------------------------------- */
/* exec_map: a reader that needs results first                                */
/* ------------------------------------------------------------------------- */

struct bread {
    size_t n, next, calls, eagain;
    char rec[16];
};

static int b_read_eagain(void *arg, const void **rec, size_t *len, uint64_t *tag)
{
    struct bread *r = arg;
    if (r->next == r->n)
        return 0;
    if (r->next > 0 && ++r->calls % 3 == 0) {
        r->eagain++;
        return EXEC_EAGAIN;
    }
    int k = snprintf(r->rec, sizeof r->rec, "%zu", r->next);
    *rec = r->rec;
    *len = (size_t)k;
    *tag = r->next++;
    return 1;
}

static int b_emit_count(void *arg, const exec_result_t *res)
{
    size_t *got = arg;
    if (res->status == 0)
        ++*got;
    return 0;
}

static void map_eagain(exec_backend_t be)
{
    if (tu_fork_left_out(be == EXEC_FORK))
        return;
    char *buf;
    size_t size;
    exec_t *ex = b_create(be, 0, 0, &buf, &size);
    struct bread r = {.n = 3000};
    size_t got = 0;
    assert_int_equal(exec_map(ex, b_read_eagain, &r, b_emit_count, &got), 0);
    assert_int_equal(got, 3000);
    assert_true(r.eagain > 0);
    b_destroy(ex);
    /* With nothing in flight, EXEC_EAGAIN cannot be waited out: it ends the map. */
    ex = b_create(be, 0, 0, &buf, &size);
    struct bread r0 = {.n = 10, .calls = 0};
    r0.next = 1; /* asks for results before its first record */
    r0.calls = 2;
    got = 0;
    assert_int_equal(exec_map(ex, b_read_eagain, &r0, b_emit_count, &got), EXEC_EAGAIN);
    assert_int_equal(got, 0);
    b_destroy(ex);
}

static void test_map_eagain_threads(void **s) { (void)s; map_eagain(EXEC_THREADS); }
static void test_map_eagain_fork(void **s) { (void)s; map_eagain(EXEC_FORK); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basics_threads),
        cmocka_unit_test(test_basics_fork),
        cmocka_unit_test(test_run_views_threads),
        cmocka_unit_test(test_run_views_fork),
        cmocka_unit_test(test_run_views_fork_ordered),
        cmocka_unit_test(test_run_mixed_fork),
        cmocka_unit_test(test_workers_read_only_fork),
        cmocka_unit_test(test_swap_during_threads),
        cmocka_unit_test(test_swap_during_fork),
        cmocka_unit_test(test_cancel_during_threads),
        cmocka_unit_test(test_cancel_during_fork),
        cmocka_unit_test(test_source_threads),
        cmocka_unit_test(test_source_fork),
        cmocka_unit_test(test_source_fork_ordered),
        cmocka_unit_test(test_source_stop_threads),
        cmocka_unit_test(test_source_stop_fork),
        cmocka_unit_test(test_map_eagain_threads),
        cmocka_unit_test(test_map_eagain_fork),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
