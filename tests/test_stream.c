/*
 * Streams with exact accounting: 1,000,000 records (250,000 in a sanitized build)
 * ordered and unordered
 * through exec_submit/exec_next, exec_submit_many/exec_next_many and exec_map;
 * every tag exactly once, every result checked against an independent
 * computation. User errors and oversized results on chosen records while the
 * stream goes on; the result writer; stats that add up.
 */
#include "testutil.h"

#define N (tu_sanitized() ? 250000u : 1000000u)
#define WORKERS 4u

static exec_t *mk(const exec_ops_t *ops, unsigned flags, size_t max_result)
{
    exec_options_t o = {.workers = WORKERS, .flags = flags, .max_result = max_result};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, ops, NULL, EXEC_THREADS, &o), 0);
    return ex;
}

/* ------------------------------------------------------------------------- */
/* Producers                                                                 */
/* ------------------------------------------------------------------------- */

struct prod {
    exec_t *ex;
    uint64_t n;
    bool many;
};

/* Submits tags 0..n-1 in order (blocking), then finishes. */
static void *producer(void *arg)
{
    struct prod *p = arg;
    unsigned char rec[TU_REC_MAX];
    if (!p->many) {
        for (uint64_t t = 0; t < p->n; t++)
            TU_WCHECK(exec_submit(p->ex, rec, tu_rec(t, rec), t) == 0);
    } else {
        enum { CHUNK = 500 };
        static unsigned char bufs[CHUNK][TU_REC_MAX];
        exec_record_t recs[CHUNK];
        for (uint64_t t = 0; t < p->n;) {
            size_t k = 0;
            for (; k < CHUNK && t < p->n; k++, t++)
                recs[k] = (exec_record_t){bufs[k], tu_rec(t, bufs[k]), t};
            size_t acc = 0;
            TU_WCHECK(exec_submit_many(p->ex, recs, k, &acc) == 0);
            TU_WCHECK(acc == k);
        }
    }
    TU_WCHECK(exec_finish(p->ex) == 0);
    return NULL;
}

/* ------------------------------------------------------------------------- */
/* The consumer's checks                                                     */
/* ------------------------------------------------------------------------- */

struct check {
    tu_tags_t tags;
    uint64_t got;
    bool ordered;
    unsigned workers;
};

static void check_init(struct check *c, uint64_t n, bool ordered)
{
    memset(c, 0, sizeof *c);
    tu_tags_init(&c->tags, n);
    c->ordered = ordered;
    c->workers = WORKERS;
}

/* One result of tu_rev from a single producer that tagged records 0, 1, 2...
 * Returns false (and says why) on any mismatch; asserts nothing, so that it
 * may run inside exec_map's callback. */
static bool check_soft(struct check *c, const exec_result_t *r)
{
    const char *why = NULL;
    if (!tu_rev_ok(r))
        why = "wrong result";
    else if (!tu_tags_mark(&c->tags, r->tag))
        why = "tag out of range or seen twice";
    else if (r->seq != r->tag) /* one producer: seq is the submission index */
        why = "seq is not the submission index";
    else if (c->ordered && r->seq != c->got)
        why = "out of order";
    else if (r->generation != 0)
        why = "generation";
    else if (r->worker >= c->workers)
        why = "worker index";
    else if (r->signal || r->exit_status)
        why = "signal or exit status set";
    if (why) {
        print_error("result #%" PRIu64 " tag %" PRIu64 " seq %" PRIu64 " status %d len %zu: %s\n",
                    c->got, r->tag, r->seq, r->status, r->len, why);
        return false;
    }
    c->got++;
    return true;
}

static void check_one(struct check *c, const exec_result_t *r)
{
    assert_true(check_soft(c, r));
}

static void check_end(struct check *c, exec_t *ex, uint64_t n)
{
    exec_result_t r;
    assert_int_equal(exec_next(ex, &r, 0), EXEC_EOF);
    assert_int_equal(c->got, n);
    assert_true(tu_tags_complete(&c->tags));
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    tu_stats_sane(&st);
    assert_int_equal(st.submitted, n);
    assert_int_equal(st.delivered, n);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.ok, n);
    assert_int_equal(st.user_errors + st.crashed + st.timed_out + st.too_big + st.cancelled +
                         st.worker_errors,
                     0);
    assert_true(st.batches >= (n + 127) / 128);
    assert_true(st.batches <= n);
    assert_int_equal(st.swaps, 0);
    assert_int_equal(st.generation, 0);
    tu_tags_free(&c->tags);
    tu_wfail_check();
}

static void stream_next(bool ordered, bool many)
{
    exec_t *ex = mk(&tu_rev_ops, ordered ? EXEC_ORDERED : 0, 0);
    struct check c;
    check_init(&c, N, ordered);
    struct prod p = {ex, N, many};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, producer, &p), 0);
    int rc;
    if (!many) {
        exec_result_t r;
        while ((rc = exec_next(ex, &r, -1)) == 0)
            check_one(&c, &r);
    } else {
        exec_result_t rs[300];
        size_t got;
        while ((rc = exec_next_many(ex, rs, 300, &got, -1)) == 0) {
            assert_in_range(got, 1, 300);
            for (size_t i = 0; i < got; i++) /* all of them still valid */
                check_one(&c, &rs[i]);
        }
        assert_int_equal(got, 0);
    }
    assert_int_equal(rc, EXEC_EOF);
    assert_int_equal(pthread_join(th, NULL), 0);
    check_end(&c, ex, N);
    exec_destroy(ex);
}

static void test_unordered_submit_next(void **s) { (void)s; stream_next(false, false); }
static void test_ordered_submit_next(void **s) { (void)s; stream_next(true, false); }
static void test_unordered_many(void **s) { (void)s; stream_next(false, true); }
static void test_ordered_many(void **s) { (void)s; stream_next(true, true); }

/* ------------------------------------------------------------------------- */
/* exec_map                                                                  */
/* ------------------------------------------------------------------------- */

struct gen {
    uint64_t next, n;
    unsigned char buf[TU_REC_MAX];
};

static int gen_read(void *arg, const void **rec, size_t *len, uint64_t *tag)
{
    struct gen *g = arg;
    if (g->next == g->n)
        return 0;
    *tag = g->next;
    *len = tu_rec(g->next, g->buf);
    *rec = g->buf;
    g->next++;
    return 1;
}

static int map_emit(void *arg, const exec_result_t *r)
{
    /* Stops the map on the first bad result (no assert inside exec_map). */
    return check_soft(arg, r) ? 0 : 1;
}

static void stream_map(bool ordered)
{
    exec_t *ex = mk(&tu_rev_ops, ordered ? EXEC_ORDERED : 0, 0);
    struct check c;
    check_init(&c, N, ordered);
    struct gen g = {.n = N};
    assert_int_equal(exec_map(ex, gen_read, &g, map_emit, &c), 0);
    check_end(&c, ex, N);
    exec_destroy(ex);
}

static void test_unordered_map(void **s) { (void)s; stream_map(false); }
static void test_ordered_map(void **s) { (void)s; stream_map(true); }

/* ------------------------------------------------------------------------- */
/* User errors, oversized results and the writer, on chosen records          */
/* ------------------------------------------------------------------------- */

#define MAXRES 256u
#define LONGTEXT 300 /* longer than exec_writef's small buffer */

enum kind { K_OK, K_USER, K_BIG, K_EXACT, K_WRITEF, K_BIGF, K_BIGLONGF, K_RESERVE };

static enum kind kind_of(uint64_t tag)
{
    if (tag % 97 == 5)
        return K_USER;
    if (tag % 101 == 7)
        return K_BIG;
    if (tag % 103 == 9)
        return K_EXACT;
    if (tag % 107 == 11)
        return K_WRITEF;
    if (tag % 109 == 13)
        return K_BIGF;
    if (tag % 113 == 17)
        return K_BIGLONGF;
    if (tag % 127 == 19)
        return K_RESERVE;
    return K_OK;
}

static int user_code_of(uint64_t tag)
{
    int c = (int)(tag % 1000) + 1;
    return tag % 2 ? -c : c; /* negative codes are the user's too */
}

static char long_text[LONGTEXT + 1];

static int mixed_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ctx;
    (void)ws;
    uint64_t tag = tu_rec_tag(rec, len);
    TU_WCHECK(exec_write_len(out) == 0);
    switch (kind_of(tag)) {
    case K_OK:
        return tu_rev_write(rec, len, out);
    case K_USER:
        TU_WCHECK(tu_rev_write(rec, len, out) == 0);
        return user_code_of(tag); /* its bytes are still delivered */
    case K_BIG: {
        /* Past max_result in 64-byte steps; whatever process() then returns,
         * the record reports EXEC_ERESULT2BIG. */
        char chunk[64];
        memset(chunk, 'x', sizeof chunk);
        size_t total = 0;
        int rc;
        while ((rc = exec_write(out, chunk, sizeof chunk)) == 0)
            total += sizeof chunk;
        TU_WCHECK(rc == EXEC_ERESULT2BIG);
        TU_WCHECK(total == MAXRES);
        TU_WCHECK(exec_write(out, chunk, 1) == EXEC_ERESULT2BIG); /* stays refused */
        return 3;
    }
    case K_EXACT: {
        unsigned char *p = exec_write_reserve(out, MAXRES);
        TU_WCHECK(p != NULL);
        if (!p)
            return -1;
        for (size_t i = 0; i < MAXRES; i++)
            p[i] = (unsigned char)(tag + i);
        TU_WCHECK(exec_write_len(out) == MAXRES);
        TU_WCHECK(exec_write(out, NULL, 0) == 0); /* zero bytes always fit */
        return 0;
    }
    case K_WRITEF: {
        /* A long draft, dropped, then the real answer. */
        TU_WCHECK(exec_writef(out, "%s/%" PRIu64, long_text, tag) == EXEC_ERESULT2BIG);
        exec_write_reset(out);
        TU_WCHECK(exec_write_len(out) == 0);
        TU_WCHECK(exec_writef(out, "%.*s", 150, long_text) == 0);
        TU_WCHECK(exec_write_len(out) == 150);
        exec_write_reset(out);
        TU_WCHECK(exec_write_len(out) == 0);
        TU_WCHECK(exec_writef(out, "T%" PRIu64 ":", tag) == 0);
        size_t at = exec_write_len(out);
        TU_WCHECK(exec_writef(out, "%s", "") == 0);
        TU_WCHECK(exec_write_len(out) == at);
        return exec_write(out, "!", 1);
    }
    case K_BIGF:
        /* Short formats that add up past max_result. */
        for (int i = 0; i < 100; i++)
            if (exec_writef(out, "%08d", i) != 0)
                return 0;
        TU_WCHECK(0);
        return 0;
    case K_BIGLONGF:
        TU_WCHECK(exec_writef(out, "%.*s", MAXRES - 10, long_text) == 0);
        TU_WCHECK(exec_writef(out, "%s", long_text) == EXEC_ERESULT2BIG);
        return 0;
    case K_RESERVE: {
        TU_WCHECK(exec_write_reserve(out, MAXRES + 1) == NULL);
        return 0; /* nothing written: still too big */
    }
    }
    return 0;
}

static const exec_ops_t mixed_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE,
    .name = "mixed",
    .process = mixed_process,
};

struct tally {
    uint64_t ok, user, big;
};

/* Checks one result of mixed_process against what its tag asks for. */
static void check_mixed(const exec_result_t *r, struct tally *t)
{
    unsigned char want[MAXRES + 32];
    size_t n = 0;
    int status = 0, code = 0;
    switch (kind_of(r->tag)) {
    case K_OK:
        n = tu_rev_expect(r->tag, want);
        break;
    case K_USER:
        n = tu_rev_expect(r->tag, want);
        status = EXEC_EUSER;
        code = user_code_of(r->tag);
        break;
    case K_BIG:
    case K_BIGF:
    case K_BIGLONGF:
    case K_RESERVE:
        status = EXEC_ERESULT2BIG;
        break;
    case K_EXACT:
        for (n = 0; n < MAXRES; n++)
            want[n] = (unsigned char)(r->tag + n);
        break;
    case K_WRITEF:
        n = (size_t)snprintf((char *)want, sizeof want, "T%" PRIu64 ":!", r->tag);
        break;
    }
    if (r->status != status || r->user_code != code) {
        print_error("tag %" PRIu64 " kind %d: status %d (%s) code %d, want %d code %d\n", r->tag,
                    kind_of(r->tag), r->status, exec_err_name(r->status), r->user_code, status,
                    code);
        fail();
    }
    if (status == EXEC_ERESULT2BIG) {
        assert_null(r->data);
        assert_int_equal(r->len, 0);
        t->big++;
    } else {
        assert_int_equal(r->len, n);
        assert_non_null(r->data);
        assert_memory_equal(r->data, want, n);
        if (status)
            t->user++;
        else
            t->ok++;
    }
}

static void stream_mixed(bool ordered)
{
    const uint64_t n = 200000;
    memset(long_text, 'a', LONGTEXT);
    exec_t *ex = mk(&mixed_ops, ordered ? EXEC_ORDERED : 0, MAXRES);
    struct prod p = {ex, n, false};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, producer, &p), 0);
    tu_tags_t tags;
    tu_tags_init(&tags, n);
    struct tally t = {0}, want = {0};
    for (uint64_t i = 0; i < n; i++) {
        enum kind k = kind_of(i);
        if (k == K_USER)
            want.user++;
        else if (k == K_BIG || k == K_BIGF || k == K_BIGLONGF || k == K_RESERVE)
            want.big++;
        else
            want.ok++;
    }
    exec_result_t r;
    uint64_t got = 0;
    int rc;
    while ((rc = exec_next(ex, &r, -1)) == 0) {
        if (ordered)
            assert_int_equal(r.seq, got); /* failed records keep their place */
        assert_int_equal(r.seq, r.tag);
        assert_true(tu_tags_mark(&tags, r.tag));
        check_mixed(&r, &t);
        got++;
    }
    assert_int_equal(rc, EXEC_EOF);
    assert_int_equal(pthread_join(th, NULL), 0);
    tu_wfail_check();
    assert_true(tu_tags_complete(&tags));
    assert_true(want.user > 1000 && want.big > 4000);
    assert_int_equal(t.ok, want.ok);
    assert_int_equal(t.user, want.user);
    assert_int_equal(t.big, want.big);

    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    tu_stats_sane(&st);
    assert_int_equal(st.submitted, n);
    assert_int_equal(st.delivered, n);
    assert_int_equal(st.ok, want.ok);
    assert_int_equal(st.user_errors, want.user);
    assert_int_equal(st.too_big, want.big);
    assert_int_equal(st.crashed + st.timed_out + st.cancelled + st.worker_errors, 0);
    tu_tags_free(&tags);
    exec_destroy(ex);
}

static void test_errors_unordered(void **s) { (void)s; stream_mixed(false); }
static void test_errors_ordered(void **s) { (void)s; stream_mixed(true); }

/* ------------------------------------------------------------------------- */
/* The writer on an executor's very first record                             */
/* ------------------------------------------------------------------------- */

static int first_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ctx;
    (void)ws;
    (void)rec;
    (void)len;
    /* Nothing written yet anywhere: zero-length writes are within max_result. */
    TU_WCHECK(exec_write_len(out) == 0);
    TU_WCHECK(exec_write_reserve(out, 0) != NULL);
    TU_WCHECK(exec_write(out, NULL, 0) == 0);
    TU_WCHECK(exec_write(out, "", 0) == 0);
    TU_WCHECK(exec_writef(out, "%s", "") == 0);
    TU_WCHECK(exec_write_len(out) == 0);
    TU_WCHECK(exec_write(out, NULL, 1) == EXEC_EINVAL);
    TU_WCHECK(exec_writef(out, NULL) == EXEC_EINVAL);
    TU_WCHECK(exec_write_len(out) == 0);
    return 0;
}

static void test_writer_first_record(void **s)
{
    (void)s;
    static const exec_ops_t ops = {
        .version = EXEC_OPS_VERSION, .caps = EXEC_CAP_THREAD_SAFE, .process = first_process};
    for (int round = 0; round < 20; round++) {
        exec_t *ex = mk(&ops, 0, 0);
        assert_int_equal(exec_submit(ex, "r", 1, 7), 0);
        assert_int_equal(exec_finish(ex), 0);
        exec_result_t r;
        assert_int_equal(exec_next(ex, &r, -1), 0);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.len, 0);
        assert_int_equal(r.tag, 7);
        assert_int_equal(exec_next(ex, &r, -1), EXEC_EOF);
        exec_destroy(ex);
        tu_wfail_check();
    }
}

/* ------------------------------------------------------------------------- */
/* Large records and results, up to max_record and max_result                */
/* ------------------------------------------------------------------------- */

#define BIGREC 70000u /* above the 64 KiB a batch holds by default */

static size_t big_len(uint64_t tag)
{
    switch (tag % 5) {
    case 0: return BIGREC;       /* exactly max_record */
    case 1: return 0;
    case 2: return 65536;
    default: return (size_t)(tag * 7919 % BIGREC);
    }
}

static void big_fill(uint64_t tag, unsigned char *buf, size_t len)
{
    uint64_t x = tag * 0x9e3779b97f4a7c15ull + 7;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
}

/* Checks a result of tu_rev for a big_fill record; buf and want are scratch. */
static void check_big(const exec_result_t *r, unsigned char *buf, unsigned char *want)
{
    size_t len = big_len(r->tag);
    big_fill(r->tag, buf, len);
    for (size_t i = 0; i < len; i++)
        want[i] = buf[len - 1 - i];
    uint64_t h = tu_fnv64(buf, len);
    memcpy(want + len, &h, 8);
    assert_int_equal(r->status, 0);
    assert_int_equal(r->len, len + 8);
    assert_memory_equal(r->data, want, len + 8);
}

static void big_records(unsigned flags)
{
    const uint64_t n = 600;
    exec_options_t o = {.workers = 3, .flags = flags, .max_record = BIGREC,
                        .max_result = BIGREC + 8, .window = 200};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &tu_rev_ops, NULL, EXEC_THREADS, &o), 0);
    unsigned char *rec = malloc(BIGREC + 1), *buf = malloc(BIGREC), *want = malloc(BIGREC + 8);
    assert_non_null(rec);
    assert_non_null(buf);
    assert_non_null(want);
    tu_tags_t tags;
    tu_tags_init(&tags, n);
    exec_result_t r;
    uint64_t got = 0;
    for (uint64_t t = 0; t < n; t++) {
        size_t len = big_len(t);
        big_fill(t, rec, len);
        int rc;
        while ((rc = exec_try_submit(ex, rec, len, t)) == EXEC_EAGAIN) {
            assert_int_equal(exec_next(ex, &r, -1), 0);
            check_big(&r, buf, want);
            assert_true(tu_tags_mark(&tags, r.tag));
            assert_true(!(flags & EXEC_ORDERED) || r.seq == got);
            got++;
        }
        assert_int_equal(rc, 0);
        memset(rec, 0xee, len); /* the library has its own copy */
    }
    assert_int_equal(exec_finish(ex), 0);
    int rc;
    while ((rc = exec_next(ex, &r, -1)) == 0) {
        check_big(&r, buf, want);
        assert_true(tu_tags_mark(&tags, r.tag));
        assert_true(!(flags & EXEC_ORDERED) || r.seq == got);
        got++;
    }
    assert_int_equal(rc, EXEC_EOF);
    assert_true(tu_tags_complete(&tags));
    assert_int_equal(exec_try_submit(ex, rec, BIGREC, 0), EXEC_ESTATE);
    exec_destroy(ex);
    ex = NULL;
    assert_int_equal(exec_create(&ex, &tu_rev_ops, NULL, EXEC_THREADS, &o), 0);
    assert_int_equal(exec_try_submit(ex, rec, BIGREC + 1, 0), EXEC_E2BIG);
    exec_destroy(ex);
    tu_tags_free(&tags);
    free(rec);
    free(buf);
    free(want);
}

static void test_big_records_unordered(void **s) { (void)s; big_records(0); }
static void test_big_records_ordered(void **s) { (void)s; big_records(EXEC_ORDERED); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unordered_submit_next),
        cmocka_unit_test(test_ordered_submit_next),
        cmocka_unit_test(test_unordered_many),
        cmocka_unit_test(test_ordered_many),
        cmocka_unit_test(test_unordered_map),
        cmocka_unit_test(test_ordered_map),
        cmocka_unit_test(test_errors_unordered),
        cmocka_unit_test(test_errors_ordered),
        cmocka_unit_test(test_writer_first_record),
        cmocka_unit_test(test_big_records_unordered),
        cmocka_unit_test(test_big_records_ordered),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
