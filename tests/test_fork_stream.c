/* EXEC_FORK streaming: contexts that are not thread-safe, what workers inherit,
 * results that fill the shared area, backend choice. */
#include "forkutil.h"

#include <fcntl.h>
#include <sys/select.h>
#include <pthread.h>

static uint64_t scale(uint64_t n)
{
    return fu_light() ? n / 10 : n;
}

static void run_plain(exec_backend_t be, unsigned flags, uint64_t n)
{
    struct fu_ctx ctx = {.salt = 0x1234};
    exec_options_t o = {.workers = 2, .flags = flags};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &fu_ops, &ctx, be, &o), 0);
    assert_int_equal(exec_backend(ex), EXEC_FORK);
    struct fu_run r = {.n = n, .salt = ctx.salt, .ordered = flags & EXEC_ORDERED};
    assert_int_equal(fu_drive(ex, &r), 0);
    fu_assert_clean(&r);
    assert_int_equal(r.ok, n);
    exec_stats_t st;
    assert_int_equal(exec_stats(ex, &st), 0);
    assert_int_equal(st.backend, EXEC_FORK);
    assert_int_equal(st.ok, n);
    assert_int_equal(st.respawns, 0);
    exec_destroy(ex);
    /* The parent's ctx was never written by process(): workers have copies. */
    assert_int_equal(ctx.scratch[0], 0);
    assert_int_equal(ctx.released, 1);
}

/* A million records through a ctx that process() writes, on FORK and AUTO. */
static void test_not_thread_safe_fork(void **state)
{
    (void)state;
    run_plain(EXEC_FORK, 0, 1000000);
}

static void test_not_thread_safe_auto(void **state)
{
    (void)state;
    run_plain(EXEC_AUTO, 0, 1000000);
}

static void test_ordered(void **state)
{
    (void)state;
    run_plain(EXEC_FORK, EXEC_ORDERED, scale(200000));
}

static void test_threads_refused(void **state)
{
    (void)state;
    struct fu_ctx ctx = {0};
    exec_t *ex = (exec_t *)1;
    assert_int_equal(exec_create(&ex, &fu_ops, &ctx, EXEC_THREADS, NULL), EXEC_ECAPS);
    assert_null(ex);
    exec_ops_t none = fu_ops;
    none.caps = 0;
    assert_int_equal(exec_create(&ex, &none, &ctx, EXEC_FORK, NULL), EXEC_ECAPS);
    assert_int_equal(exec_create(&ex, &none, &ctx, EXEC_AUTO, NULL), EXEC_ECAPS);
}

/* ------------------------------------------------------------------------- */
/* A context with a pointer graph, a function pointer, a mutex and an fd.    */
/* ------------------------------------------------------------------------- */

struct node {
    struct node *next;
    uint64_t v;
};

struct rich {
    struct node *head; /* a ring of nodes */
    uint64_t (*fn)(uint64_t);
    pthread_mutex_t mu;
    int fd; /* a pipe's read end, with bytes waiting */
    uint64_t parent_pid;
};

static uint64_t rich_fn(uint64_t x)
{
    return x * 3 + 1;
}

struct rich_ws {
    uint64_t pid;
    char first[8]; /* read from the inherited fd in worker_init */
};

static int rich_init(void *ctx, void **ws)
{
    struct rich *c = ctx;
    struct rich_ws *w = calloc(1, sizeof *w);
    if (!w)
        return 1;
    w->pid = (uint64_t)getpid();
    if (read(c->fd, w->first, 1) != 1)
        return 2;
    *ws = w;
    return 0;
}

static void rich_fini(void *ctx, void *ws)
{
    (void)ctx;
    free(ws);
}

static int rich_process(void *ctx, void *wsp, const void *rec, size_t len, exec_writer_t *out)
{
    struct rich *c = ctx;
    struct rich_ws *ws = wsp;
    uint64_t k;
    if (len != sizeof k)
        return 1;
    memcpy(&k, rec, sizeof k);
    pthread_mutex_lock(&c->mu);
    struct node *p = c->head;
    for (uint64_t i = 0; i < k % 7; i++)
        p = p->next;
    uint64_t v[3] = {c->fn(p->v + k), ws->pid, (uint64_t)(unsigned char)ws->first[0]};
    pthread_mutex_unlock(&c->mu);
    return exec_write(out, v, sizeof v);
}

static const exec_ops_t rich_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_FORK_SAFE,
    .process = rich_process,
    .worker_init = rich_init,
    .worker_fini = rich_fini,
};

static void rich_check(const exec_result_t *res, const struct node *nodes, uint64_t parent)
{
    uint64_t v[3];
    assert_int_equal(res->status, 0);
    assert_int_equal(res->len, sizeof v);
    memcpy(v, res->data, sizeof v);
    assert_int_equal(v[0], rich_fn(nodes[res->tag % 7].v + res->tag));
    assert_int_not_equal(v[1], parent); /* ran in a child */
    assert_true(v[2] >= 'w' && v[2] <= 'z'); /* read from the inherited fd */
}

static void test_rich_context(void **state)
{
    (void)state;
    struct node nodes[7];
    for (int i = 0; i < 7; i++) {
        nodes[i].v = (uint64_t)i * 100;
        nodes[i].next = &nodes[(i + 1) % 7];
    }
    struct rich c = {.head = nodes, .fn = rich_fn, .parent_pid = (uint64_t)getpid()};
    pthread_mutex_init(&c.mu, NULL);
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "xyzw", 4), 4);
    c.fd = p[0];
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &rich_ops, &c, EXEC_AUTO, &o), 0);
    const uint64_t n = 20000;
    uint64_t got = 0;
    exec_result_t res;
    for (uint64_t k = 0; k < n; k++) {
        while (exec_try_submit(ex, &k, sizeof k, k) == EXEC_EAGAIN) {
            assert_int_equal(exec_next(ex, &res, -1), 0);
            got++;
            rich_check(&res, nodes, c.parent_pid);
        }
    }
    assert_int_equal(exec_finish(ex), 0);
    while (exec_next(ex, &res, -1) == 0) {
        got++;
        rich_check(&res, nodes, c.parent_pid);
    }
    assert_int_equal(got, n);
    exec_destroy(ex);
    /* The mutex and the graph are untouched in the parent. */
    assert_int_equal(pthread_mutex_trylock(&c.mu), 0);
    pthread_mutex_unlock(&c.mu);
    pthread_mutex_destroy(&c.mu);
    close(p[0]);
    close(p[1]);
}

/* worker_init refusing makes create fail cleanly. */
static int refuse_init(void *ctx, void **ws)
{
    (void)ctx;
    (void)ws;
    return 1;
}

static void test_init_fails(void **state)
{
    (void)state;
    exec_ops_t ops = fu_ops;
    ops.worker_init = refuse_init;
    struct fu_ctx ctx = {0};
    int fds = fu_count_fds();
    exec_t *ex = (exec_t *)1;
    exec_options_t o = {.workers = 2};
    assert_int_equal(exec_create(&ex, &ops, &ctx, EXEC_FORK, &o), EXEC_EINIT);
    assert_null(ex);
    assert_int_equal(ctx.released, 0);
    assert_int_equal(fu_count_fds(), fds);
    assert_int_equal(fu_memfd_maps(), 0);
    pid_t kids[16];
    assert_int_equal(fu_descendants(kids, 16), 0);
}

static void big_check(const exec_result_t *res)
{
    uint32_t t = (uint32_t)res->tag;
    if (t % 10 == 9) {
        assert_int_equal(res->status, EXEC_ERESULT2BIG);
        return;
    }
    assert_int_equal(res->status, 0);
    assert_int_equal(res->len, (t * 7919u) % 60000);
    const unsigned char *d = res->data;
    for (size_t k = 0; k < res->len; k += 997)
        assert_int_equal(d[k], t & 0xff);
    if (res->len)
        assert_int_equal(d[res->len - 1], t & 0xff);
}

/* Results larger than the room left in a slot: the batch runs in passes. */
static void test_big_results(void **state)
{
    (void)state;
    struct fu_ctx ctx = {.salt = 7};
    exec_options_t o = {.workers = 2, .max_result = 100000};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &fu_ops, &ctx, EXEC_FORK, &o), 0);
    const uint32_t n = 3000;
    uint32_t got = 0;
    exec_result_t res;
    for (uint32_t i = 0; i < n; i++) {
        struct fu_rec r = {.action = FU_BIG, .value = i};
        r.big = i % 10 == 9 ? 100001 : (i * 7919u) % 60000;
        int rc;
        while ((rc = exec_try_submit(ex, &r, sizeof r, i)) == EXEC_EAGAIN) {
            assert_int_equal(exec_next(ex, &res, -1), 0);
            got++;
            big_check(&res);
        }
        assert_int_equal(rc, 0);
    }
    assert_int_equal(exec_finish(ex), 0);
    while (exec_next(ex, &res, -1) == 0) {
        got++;
        big_check(&res);
    }
    assert_int_equal(got, n);
    exec_destroy(ex);
}

/* User errors come back as EXEC_EUSER with the code. */
static uint8_t plan_user(uint64_t i, void *arg)
{
    (void)arg;
    return i % 3 == 0 ? FU_USER : FU_OK;
}

static void test_user_errors(void **state)
{
    (void)state;
    struct fu_ctx ctx = {.salt = 99};
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &fu_ops, &ctx, EXEC_FORK, &o), 0);
    struct fu_run r = {.n = 30000, .salt = ctx.salt, .plan = plan_user};
    assert_int_equal(fu_drive(ex, &r), 0);
    fu_assert_clean(&r);
    assert_int_equal(r.user, 10000);
    exec_destroy(ex);
}

/* The pollable fd turns readable when results wait. */
static void test_pollable(void **state)
{
    (void)state;
    struct fu_ctx ctx = {.salt = 5};
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &fu_ops, &ctx, EXEC_FORK, &o), 0);
    exec_result_t res;
    assert_int_equal(exec_next(ex, &res, 0), EXEC_EAGAIN);
    struct fu_rec r = {.value = 3};
    assert_int_equal(exec_submit(ex, &r, sizeof r, 3), 0);
    int rc;
    while ((rc = exec_next(ex, &res, 0)) == EXEC_EAGAIN) {
        fd_set set;
        FD_ZERO(&set);
        FD_SET(exec_fd(ex), &set);
        struct timeval tv = {5, 0};
        assert_int_equal(select(exec_fd(ex) + 1, &set, NULL, NULL, &tv), 1);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(res.tag, 3);
    exec_destroy(ex);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_refused),
        cmocka_unit_test(test_not_thread_safe_fork),
        cmocka_unit_test(test_not_thread_safe_auto),
        cmocka_unit_test(test_ordered),
        cmocka_unit_test(test_rich_context),
        cmocka_unit_test(test_init_fails),
        cmocka_unit_test(test_big_results),
        cmocka_unit_test(test_user_errors),
        cmocka_unit_test(test_pollable),
    };
    if (getenv("FU_ONLY"))
        cmocka_set_test_filter(getenv("FU_ONLY"));
    return tu_run_group_tests(tests, NULL, NULL);
}
