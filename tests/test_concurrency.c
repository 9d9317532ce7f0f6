/*
 * Many threads at once: 8 submitters with one consumer, four consumers taking
 * turns (each one's result bytes intact), a stats reader during a stream, two executors side by side.
 */
#include "testutil.h"

#include <sched.h>

#define SUBMITTERS 8u
#define PER (tu_sanitized() ? 20000u : 50000u) /* records per submitter */

struct sub {
    exec_t *ex;
    unsigned id;
    pthread_barrier_t *go;
};

/* Submitter id sends tags id*PER .. id*PER+PER-1 in order, by a call that
 * depends on id: blocking submit, submit_many, or try_submit with retries. */
static void *submitter(void *arg)
{
    struct sub *s = arg;
    unsigned char rec[TU_REC_MAX];
    uint64_t t0 = (uint64_t)s->id * PER;
    pthread_barrier_wait(s->go);
    switch (s->id % 3) {
    case 0:
        for (uint64_t t = t0; t < t0 + PER; t++)
            TU_WCHECK(exec_submit(s->ex, rec, tu_rec(t, rec), t) == 0);
        break;
    case 1: {
        enum { CHUNK = 64 };
        unsigned char bufs[CHUNK][TU_REC_MAX];
        exec_record_t recs[CHUNK];
        for (uint64_t t = t0; t < t0 + PER;) {
            size_t k = 0;
            for (; k < CHUNK && t < t0 + PER; k++, t++)
                recs[k] = (exec_record_t){bufs[k], tu_rec(t, bufs[k]), t};
            size_t acc = 0;
            TU_WCHECK(exec_submit_many(s->ex, recs, k, &acc) == 0 && acc == k);
        }
        break;
    }
    default:
        for (uint64_t t = t0; t < t0 + PER; t++) {
            int rc;
            while ((rc = exec_try_submit(s->ex, rec, tu_rec(t, rec), t)) == EXEC_EAGAIN)
                sched_yield();
            TU_WCHECK(rc == 0);
        }
        break;
    }
    return NULL;
}

/* Starts SUBMITTERS threads on ex; they begin together. */
static void start_submitters(exec_t *ex, pthread_t *th, struct sub *subs, pthread_barrier_t *go)
{
    pthread_barrier_init(go, NULL, SUBMITTERS);
    for (unsigned i = 0; i < SUBMITTERS; i++) {
        subs[i] = (struct sub){ex, i, go};
        assert_int_equal(pthread_create(&th[i], NULL, submitter, &subs[i]), 0);
    }
}

static void join_submitters(exec_t *ex, pthread_t *th, pthread_barrier_t *go)
{
    for (unsigned i = 0; i < SUBMITTERS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(go);
    assert_int_equal(exec_finish(ex), 0);
}

struct cons {
    exec_t *ex;
    bool ordered;
    tu_tags_t tags, seqs;
    uint64_t got, last[SUBMITTERS];
    bool any[SUBMITTERS];
};

/* The one consumer: every result correct, each tag and each seq exactly once;
 * in order mode seq counts up by one and each submitter's tags come in its
 * own submission order. */
static void *consumer(void *arg)
{
    struct cons *c = arg;
    exec_result_t r;
    int rc;
    while ((rc = exec_next(c->ex, &r, -1)) == 0) {
        TU_WCHECK(tu_rev_ok(&r));
        TU_WCHECK(tu_tags_mark(&c->tags, r.tag));
        TU_WCHECK(tu_tags_mark(&c->seqs, r.seq));
        if (c->ordered) {
            TU_WCHECK(r.seq == c->got);
            unsigned s = (unsigned)(r.tag / PER);
            if (s < SUBMITTERS) {
                TU_WCHECK(!c->any[s] || r.tag > c->last[s]);
                c->any[s] = true;
                c->last[s] = r.tag;
            }
        }
        c->got++;
    }
    TU_WCHECK(rc == EXEC_EOF);
    return NULL;
}

static void many_submitters(bool ordered)
{
    const uint64_t n = (uint64_t)SUBMITTERS * PER;
    exec_options_t o = {.workers = 3, .window = 2000, .flags = ordered ? EXEC_ORDERED : 0};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &tu_rev_ops, NULL, EXEC_THREADS, &o), 0);
    struct cons c = {.ex = ex, .ordered = ordered};
    tu_tags_init(&c.tags, n);
    tu_tags_init(&c.seqs, n);
    pthread_t cth, th[SUBMITTERS];
    struct sub subs[SUBMITTERS];
    pthread_barrier_t go;
    assert_int_equal(pthread_create(&cth, NULL, consumer, &c), 0);
    start_submitters(ex, th, subs, &go);
    join_submitters(ex, th, &go);
    assert_int_equal(pthread_join(cth, NULL), 0);
    tu_wfail_check();
    assert_int_equal(c.got, n);
    assert_true(tu_tags_complete(&c.tags));
    assert_true(tu_tags_complete(&c.seqs));
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    tu_stats_sane(&st);
    assert_int_equal(st.submitted, n);
    assert_int_equal(st.ok, n);
    tu_tags_free(&c.tags);
    tu_tags_free(&c.seqs);
    exec_destroy(ex);
}

static void test_8_submitters_unordered(void **s) { (void)s; many_submitters(false); }
static void test_8_submitters_ordered(void **s) { (void)s; many_submitters(true); }

/* ------------------------------------------------------------------------- */

/* Several consumers call exec_next/exec_next_many at once: they take turns,
 * every result goes to exactly one of them, and the bytes each one got stay
 * valid until its own next call, whatever the others do meanwhile. */
struct turn {
    exec_t *ex;
    tu_tags_t *tags;
    uint64_t got;
    bool many;
};

static void *turn_consumer(void *arg)
{
    struct turn *t = arg;
    exec_result_t rs[16];
    size_t k;
    int rc;
    for (;;) {
        if (t->many) {
            rc = exec_next_many(t->ex, rs, 16, &k, 5);
        } else {
            k = 1;
            rc = exec_next(t->ex, rs, 5);
        }
        if (rc == EXEC_ETIMEDOUT)
            continue;
        if (rc)
            break;
        /* Let the other consumers run before the bytes are read. */
        sched_yield();
        for (size_t i = 0; i < k; i++) {
            TU_WCHECK(tu_tags_mark(t->tags, rs[i].tag));
            TU_WCHECK(tu_rev_ok(&rs[i]));
        }
        t->got += k;
    }
    TU_WCHECK(rc == EXEC_EOF);
    return NULL;
}

static const exec_ops_t rev_any_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "rev",
    .process = tu_rev_process,
};

static void consumers_take_turns(exec_backend_t be, unsigned flags)
{
    if (tu_fork_left_out(be == EXEC_FORK))
        return;
    const uint64_t n = (uint64_t)SUBMITTERS * PER;
    exec_options_t o = {.workers = 2, .flags = flags};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &rev_any_ops, NULL, be, &o), 0);
    tu_tags_t tags;
    tu_tags_init(&tags, n);
    struct turn turns[4] = {{ex, &tags, 0, false}, {ex, &tags, 0, true}, {ex, &tags, 0, false},
                            {ex, &tags, 0, true}};
    pthread_t cth[4], th[SUBMITTERS];
    struct sub subs[SUBMITTERS];
    pthread_barrier_t go;
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&cth[i], NULL, turn_consumer, &turns[i]), 0);
    start_submitters(ex, th, subs, &go);
    join_submitters(ex, th, &go);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(cth[i], NULL), 0);
    tu_wfail_check();
    assert_int_equal(turns[0].got + turns[1].got + turns[2].got + turns[3].got, n);
    assert_true(tu_tags_complete(&tags));
    tu_tags_free(&tags);
    exec_destroy(ex);
}

static void test_consumers_threads_unordered(void **s) { (void)s; consumers_take_turns(EXEC_THREADS, 0); }
static void test_consumers_threads_ordered(void **s) { (void)s; consumers_take_turns(EXEC_THREADS, EXEC_ORDERED); }
static void test_consumers_fork_unordered(void **s) { (void)s; consumers_take_turns(EXEC_FORK, 0); }
static void test_consumers_fork_ordered(void **s) { (void)s; consumers_take_turns(EXEC_FORK, EXEC_ORDERED); }

/* ------------------------------------------------------------------------- */

struct watcher {
    exec_t *ex;
    atomic_bool stop;
    uint64_t reads;
};

/* Reads stats in a loop during a stream: no counter ever goes back. */
static void *stats_watcher(void *arg)
{
    struct watcher *w = arg;
    exec_stats_t prev = {0}, st;
    while (!atomic_load(&w->stop)) {
        TU_WCHECK(exec_stats(w->ex, &st) == 0);
        TU_WCHECK(st.backend == EXEC_THREADS);
        TU_WCHECK(st.submitted >= prev.submitted);
        TU_WCHECK(st.delivered >= prev.delivered);
        TU_WCHECK(st.ok >= prev.ok);
        TU_WCHECK(st.batches >= prev.batches);
        TU_WCHECK(st.delivered == st.ok); /* this stream has no failures */
        prev = st;
        w->reads++;
    }
    return NULL;
}

static void test_stats_during_stream(void **s)
{
    (void)s;
    const uint64_t n = (uint64_t)SUBMITTERS * PER;
    exec_options_t o = {.workers = 2};
    exec_t *ex = NULL;
    assert_int_equal(exec_create(&ex, &tu_rev_ops, NULL, EXEC_THREADS, &o), 0);
    struct watcher w = {.ex = ex};
    struct cons c = {.ex = ex};
    tu_tags_init(&c.tags, n);
    tu_tags_init(&c.seqs, n);
    pthread_t wth, cth, th[SUBMITTERS];
    struct sub subs[SUBMITTERS];
    pthread_barrier_t go;
    assert_int_equal(pthread_create(&wth, NULL, stats_watcher, &w), 0);
    assert_int_equal(pthread_create(&cth, NULL, consumer, &c), 0);
    start_submitters(ex, th, subs, &go);
    join_submitters(ex, th, &go);
    assert_int_equal(pthread_join(cth, NULL), 0);
    atomic_store(&w.stop, true);
    assert_int_equal(pthread_join(wth, NULL), 0);
    tu_wfail_check();
    assert_true(w.reads > 0);
    assert_true(tu_tags_complete(&c.tags));
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    tu_stats_sane(&st);
    assert_int_equal(st.delivered, n);
    tu_tags_free(&c.tags);
    tu_tags_free(&c.seqs);
    exec_destroy(ex);
}

/* ------------------------------------------------------------------------- */
/* Two executors side by side                                                */
/* ------------------------------------------------------------------------- */

/* A second classifier with a context of its own: the record's byte sum,
 * multiplied by the context's key, and the record's length. */
struct key {
    uint64_t key;
};

static int sum_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    const struct key *k = ctx;
    const unsigned char *p = rec;
    uint64_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum += p[i];
    return exec_writef(out, "%" PRIu64 "/%zu", sum * k->key, len);
}

static const exec_ops_t sum_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "sum",
    .process = sum_process,
};

static bool sum_ok(const exec_result_t *r, uint64_t key)
{
    unsigned char rec[TU_REC_MAX];
    size_t len = tu_rec(r->tag, rec);
    uint64_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum += rec[i];
    char want[64];
    int n = snprintf(want, sizeof want, "%" PRIu64 "/%zu", sum * key, len);
    return r->status == 0 && r->len == (size_t)n && memcmp(r->data, want, (size_t)n) == 0;
}

struct side {
    exec_t *ex;
    uint64_t key; /* 0: the rev classifier */
    uint64_t n, got;
    bool ordered;
    pthread_barrier_t *go;
};

/* Drives one executor from one thread with try_submit and next. */
static void *side_run(void *arg)
{
    struct side *sd = arg;
    unsigned char rec[TU_REC_MAX];
    tu_tags_t tags;
    tags.seen = calloc(sd->n, 1);
    tags.n = sd->n;
    atomic_store(&tags.count, 0);
    atomic_store(&tags.bad, 0);
    TU_WCHECK(tags.seen != NULL);
    if (!tags.seen)
        return NULL;
    pthread_barrier_wait(sd->go);
    exec_result_t r;
    uint64_t t = 0;
    bool finished = false;
    for (;;) {
        int rc;
        if (t < sd->n) {
            rc = exec_try_submit(sd->ex, rec, tu_rec(t, rec), t);
            if (rc == 0) {
                t++;
                continue;
            }
            TU_WCHECK(rc == EXEC_EAGAIN);
        } else if (!finished) {
            TU_WCHECK(exec_finish(sd->ex) == 0);
            finished = true;
        }
        rc = exec_next(sd->ex, &r, -1);
        if (rc == EXEC_EOF)
            break;
        TU_WCHECK(rc == 0);
        if (rc)
            break;
        TU_WCHECK(sd->key ? sum_ok(&r, sd->key) : tu_rev_ok(&r));
        TU_WCHECK(tu_tags_mark(&tags, r.tag));
        TU_WCHECK(!sd->ordered || r.seq == sd->got);
        sd->got++;
    }
    TU_WCHECK(tu_tags_complete(&tags));
    free(tags.seen);
    return NULL;
}

static void test_two_executors(void **s)
{
    (void)s;
    struct key k = {.key = 7919};
    exec_options_t o1 = {.workers = 2, .flags = EXEC_ORDERED, .window = 500};
    exec_options_t o2 = {.workers = 3, .batch = 16};
    exec_t *a = NULL, *b = NULL;
    assert_int_equal(exec_create(&a, &tu_rev_ops, NULL, EXEC_THREADS, &o1), 0);
    assert_int_equal(exec_create(&b, &sum_ops, &k, EXEC_AUTO, &o2), 0);
    assert_int_equal(exec_backend(b), EXEC_THREADS);
    assert_int_not_equal(exec_fd(a), exec_fd(b));
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    struct side sa = {.ex = a, .key = 0, .n = 300000, .ordered = true, .go = &go};
    struct side sb = {.ex = b, .key = k.key, .n = 300000, .go = &go};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, side_run, &sa), 0);
    assert_int_equal(pthread_create(&tb, NULL, side_run, &sb), 0);
    assert_int_equal(pthread_join(ta, NULL), 0);
    assert_int_equal(pthread_join(tb, NULL), 0);
    pthread_barrier_destroy(&go);
    tu_wfail_check();
    assert_int_equal(sa.got, sa.n);
    assert_int_equal(sb.got, sb.n);
    exec_stats_t st;
    assert_int_equal(exec_stats(a, &st), 0);
    assert_int_equal(st.workers, 2);
    assert_int_equal(st.ok, sa.n);
    assert_int_equal(exec_stats(b, &st), 0);
    assert_int_equal(st.workers, 3);
    assert_int_equal(st.ok, sb.n);
    exec_destroy(b);
    exec_destroy(a);
}

/* Many executors created and destroyed from several threads at once. */
static void *churn(void *arg)
{
    struct key *k = arg;
    for (int i = 0; i < 20; i++) {
        exec_options_t o = {.workers = 1 + (unsigned)(i % 3), .flags = (unsigned)(i % 2)};
        exec_t *ex = NULL;
        TU_WCHECK(exec_create(&ex, &sum_ops, k, EXEC_THREADS, &o) == 0);
        if (!ex)
            return NULL;
        unsigned char rec[TU_REC_MAX];
        for (uint64_t t = 0; t < 50; t++)
            TU_WCHECK(exec_try_submit(ex, rec, tu_rec(t, rec), t) == 0);
        TU_WCHECK(exec_finish(ex) == 0);
        exec_result_t r;
        int n = 0, rc;
        while ((rc = exec_next(ex, &r, -1)) == 0) {
            TU_WCHECK(sum_ok(&r, k->key));
            n++;
        }
        TU_WCHECK(rc == EXEC_EOF && n == 50);
        exec_destroy(ex);
    }
    return NULL;
}

static void test_create_destroy_concurrently(void **s)
{
    (void)s;
    int threads = tu_threads(), fds = tu_fds();
    struct key keys[4] = {{1}, {3}, {5}, {7}};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, churn, &keys[i]), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    tu_wfail_check();
    assert_int_equal(tu_threads_settled(threads), threads);
    assert_int_equal(tu_fds(), fds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_8_submitters_unordered),
        cmocka_unit_test(test_8_submitters_ordered),
        cmocka_unit_test(test_consumers_threads_unordered),
        cmocka_unit_test(test_consumers_threads_ordered),
        cmocka_unit_test(test_consumers_fork_unordered),
        cmocka_unit_test(test_consumers_fork_ordered),
        cmocka_unit_test(test_stats_during_stream),
        cmocka_unit_test(test_two_executors),
        cmocka_unit_test(test_create_destroy_concurrently),
    };
    return tu_run_group_tests(tests, tu_warm_up, NULL);
}
