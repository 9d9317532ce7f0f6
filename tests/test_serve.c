/*
 * executor-serve's endpoints, run as a program on every backend (threads,
 * fork, and the inline baseline): a record and its result, documents streamed
 * in input order, keep-alive and pipelined requests, routes and methods, the
 * status code of each outcome (a record the plugin refuses, too large, a
 * crashed or hung worker), the window's 503, /metrics and /healthz.
 * test_serve_ops.c has reload, shutdown, start-up errors and the access log.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "serveutil.h"

static int setup(void **state)
{
    (void)state;
    serve_paths(__FILE__);
    return 0;
}

/* The word table's spec with spec_extra after it (NULL: none). */
static void start(struct server *sv, const char *backend, const char *spec_extra,
                  const char *const *more)
{
    static char s[PATH_MAX + 128];
    snprintf(s, sizeof s, "%s%s", spec, spec_extra ? spec_extra : "");
    serve_start(sv, s, backend, NULL, more);
}

/* POST /classify body: assert the code and the body (exactly, or a part). */
static void classify(int port, const char *body, int code, const char *want, const char *part)
{
    expect_reply(port, "POST", "/classify", body, code, want, part);
}

static const char *const backends[] = {"threads", "fork", "inline"};

/* ------------------------------------------------------------------------- */

static void test_records_and_documents(void **state)
{
    need_server(state);
    for (size_t b = 0; b < 3; b++) {
        struct server sv;
        start(&sv, backends[b], NULL, NULL);
        struct reply r;
        char v[64];
        http(sv.port, "POST", "/classify", "1,an apple and a pear", NULL, &r);
        check_reply(&r, 200, "1,fruit\n", NULL);
        assert_string_equal(reply_header(&r, "x-context-generation", v, sizeof v), "0");
        assert_non_null(strstr(reply_header(&r, "content-type", v, sizeof v), "text/csv"));
        reply_free(&r);
        /* The line end closes the record; quotes keep a comma and a newline in. */
        classify(sv.port, "2,the dog\r\n", 200, "2,animal\n", NULL);
        classify(sv.port, "3,\"saw,\nand drill\"", 200, "3,tool\n", NULL);
        classify(sv.port, "\"4,\"\"x\"\"\",owl", 200, "\"4,\"\"x\"\"\",animal\n", NULL);
        /* A document: the header row first, or several records. */
        http(sv.port, "POST", "/classify", "id,text\n1,apple\n2,\"dog\ncat\"\n3,nothing\n", NULL,
             &r);
        check_reply(&r, 200, "1,fruit\n2,animal\n3,unknown\n", NULL);
        assert_string_equal(reply_header(&r, "x-records", v, sizeof v), "3");
        assert_non_null(strstr(reply_header(&r, "transfer-encoding", v, sizeof v), "chunked"));
        reply_free(&r);
        classify(sv.port, "4,owl\n5,pear\n", 200, "4,animal\n5,fruit\n", NULL);
        classify(sv.port, "id,text\n", 200, "", NULL);
        classify(sv.port, "id,text\n1,cat\n", 200, "1,animal\n", NULL);
        /* A record the plugin refuses (no text column): 422 alone, a line in a document. */
        classify(sv.port, "9", 422, "EXEC_EUSER: process() reported an error (code 1)\n", NULL);
        classify(sv.port, "id,text\n1,apple\n7\n2,dog\n", 200, NULL,
                 "1,fruit\n!error 422 record 2 EXEC_EUSER");
        http(sv.port, "POST", "/classify", "id,text\n1,apple\n7\n2,dog\n", NULL, &r);
        assert_non_null(strstr(r.body, "(code 1)\n2,animal\n"));
        reply_free(&r);
        /* A long document comes back whole and in order. */
        size_t cap = 64 * 2000 + 16, len = 0;
        char *doc = malloc(cap), *want = malloc(cap);
        size_t wl = 0;
        len += (size_t)sprintf(doc, "id,text\n");
        static const char *const t[4][2] = {{"apple", "fruit"}, {"owl", "animal"},
                                            {"drill", "tool"}, {"zzz", "unknown"}};
        for (int i = 0; i < 2000; i++) {
            len += (size_t)sprintf(doc + len, "%d,%s\n", i, t[i % 4][0]);
            wl += (size_t)sprintf(want + wl, "%d,%s\n", i, t[i % 4][1]);
        }
        classify(sv.port, doc, 200, want, NULL);
        free(doc);
        free(want);
        assert_int_equal(server_stop(&sv), 0);
    }
}

static void test_keepalive_and_pipelining(void **state)
{
    need_server(state);
    for (size_t b = 0; b < 3; b++) {
        struct server sv;
        start(&sv, backends[b], NULL, NULL);
        struct hc c;
        assert_int_equal(hc_connect(&c, sv.port), 0);
        /* Three requests in one write; three replies, in order. */
        char buf[1024];
        int n = 0;
        static const char *const bodies[3] = {"1,apple", "id,text\n2,dog\n3,saw\n", "4,nothing"};
        for (int i = 0; i < 3; i++)
            n += snprintf(buf + n, sizeof buf - (size_t)n,
                          "POST /classify HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n%s",
                          strlen(bodies[i]), bodies[i]);
        hc_send(&c, buf, (size_t)n);
        static const char *const want[3] = {"1,fruit\n", "2,animal\n3,tool\n", "4,unknown\n"};
        for (int i = 0; i < 3; i++) {
            struct reply r;
            assert_true(hc_reply(&c, &r, 30000));
            check_reply(&r, 200, want[i], NULL);
            reply_free(&r);
        }
        /* The same connection again, then one that asks to close. */
        hc_request(&c, "GET", "/healthz", NULL, 0, NULL);
        struct reply r;
        char v[32];
        assert_true(hc_reply(&c, &r, 30000));
        check_reply(&r, 200, NULL, "ok: backend ");
        reply_free(&r);
        hc_request(&c, "POST", "/classify", "5,pear", 6, "Connection: close\r\n");
        assert_true(hc_reply(&c, &r, 30000));
        check_reply(&r, 200, "5,fruit\n", NULL);
        reply_free(&r);
        assert_true(hc_closed(&c, 5000));
        hc_close(&c);
        /* HTTP/1.0 has no chunks: a single record keeps the connection
         * alive; a document streams to the end of the connection. */
        assert_int_equal(hc_connect(&c, sv.port), 0);
        static const char one10[] = "POST /classify HTTP/1.0\r\nConnection: keep-alive\r\n"
                                    "Content-Length: 7\r\n\r\n1,apple";
        static const char v10[] = "POST /classify HTTP/1.0\r\nConnection: keep-alive\r\n"
                                  "Content-Length: 22\r\n\r\nid,text\n1,apple\n2,owl\n";
        hc_send(&c, one10, sizeof one10 - 1);
        assert_true(hc_reply(&c, &r, 30000));
        check_reply(&r, 200, "1,fruit\n", NULL);
        reply_free(&r);
        hc_send(&c, v10, sizeof v10 - 1);
        assert_true(hc_reply(&c, &r, 30000));
        check_reply(&r, 200, "1,fruit\n2,animal\n", NULL);
        assert_string_equal(reply_header(&r, "connection", v, sizeof v), "close");
        reply_free(&r);
        assert_true(hc_closed(&c, 5000));
        hc_close(&c);
        assert_int_equal(server_stop(&sv), 0);
    }
}

static void test_routes_and_limits(void **state)
{
    need_server(state);
    struct server sv;
    const char *more[] = {"--max-record", "100", "--max-body", "4000", NULL};
    start(&sv, "threads", NULL, more);
    struct reply r;
    char v[64];
    http(sv.port, "GET", "/classify", NULL, NULL, &r);
    check_reply(&r, 405, NULL, "method not allowed");
    assert_string_equal(reply_header(&r, "allow", v, sizeof v), "POST");
    reply_free(&r);
    http(sv.port, "DELETE", "/metrics", NULL, NULL, &r);
    check_reply(&r, 405, NULL, NULL);
    assert_string_equal(reply_header(&r, "allow", v, sizeof v), "GET, HEAD");
    reply_free(&r);
    http(sv.port, "POST", "/admin/reload", NULL, NULL, &r);
    check_reply(&r, 404, NULL, NULL); /* no admin path on the public listener */
    reply_free(&r);
    http(sv.port, "GET", "/nope", NULL, NULL, &r);
    check_reply(&r, 404, NULL, "not found: /nope");
    reply_free(&r);
    /* Bad bodies. */
    classify(sv.port, "", 400, NULL, "empty body");
    classify(sv.port, "1,\"never closed", 400, NULL, "EXEC_EUNTERMINATED");
    char big[200];
    memset(big, 'a', sizeof big - 1);
    big[0] = '1';
    big[1] = ',';
    big[sizeof big - 1] = '\0';
    classify(sv.port, big, 413, NULL, "EXEC_E2BIG: ");
    classify(sv.port, big, 413, NULL, "(199 bytes; --max-record is 100)");
    char doc[400];
    snprintf(doc, sizeof doc, "id,text\n1,apple\n%s\n2,owl\n", big);
    classify(sv.port, doc, 200, NULL, "1,fruit\n!error 413 record 2 EXEC_E2BIG");
    classify(sv.port, doc, 200, NULL, "--max-record is 100)\n2,animal\n");
    char *huge = malloc(5000);
    memset(huge, 'x', 4999);
    huge[4999] = '\0';
    classify(sv.port, huge, 413, NULL, "larger than --max-body"); /* from its header */
    free(huge);
    classify(sv.port, "1,apple", 200, "1,fruit\n", NULL); /* and it goes on */
    assert_int_equal(server_stop(&sv), 0);
}

/* A sample's value in a /metrics page (-1 when absent). */
static long metric(const char *page, const char *name)
{
    const char *p = strstr(page, name);
    return p ? strtol(p + strlen(name), NULL, 10) : -1;
}

/* Waits until every worker process is up (none replaced, or being replaced). */
static void await_workers(int port)
{
    await_body(port, "/metrics", "executor_worker_pss_bytes{", "pid=\"0\"",
               "a replaced worker");
}

/* A crashed worker is a 500 naming the signal, a hung one a 504; the server,
 * and the connections beside them, go on. */
static void test_worker_faults(void **state)
{
    need_server(state);
    struct server sv;
    const char *more[] = {"--timeout", "400", NULL};
    start(&sv, "fork", ",crash=boom,hang=sleepy", more);
    classify(sv.port, "1,boom apple", 500, NULL,
             "EXEC_ECRASHED: worker crashed (killed by signal 6, SIGABRT)");
    classify(sv.port, "2,sleepy", 504, NULL, "EXEC_ERECTIMEOUT: record timed out (ran past 400 ms)");
    /* While a record hangs on one connection, another is served (by the
     * other worker, once the one that timed out is replaced). */
    await_workers(sv.port);
    struct hc slow;
    assert_int_equal(hc_connect(&slow, sv.port), 0);
    hc_request(&slow, "POST", "/classify", "3,sleepy", 8, NULL);
    uint64_t t0 = ms_now();
    classify(sv.port, "4,apple", 200, "4,fruit\n", NULL);
    assert_true(ms_now() - t0 < 350);
    struct reply r;
    assert_true(hc_reply(&slow, &r, 30000));
    check_reply(&r, 504, NULL, "EXEC_ERECTIMEOUT");
    reply_free(&r);
    hc_close(&slow);
    classify(sv.port, "id,text\n1,apple\n2,boom\n3,sleepy\n4,pear\n", 200, NULL,
             "1,fruit\n!error 500 record 2 EXEC_ECRASHED: worker crashed (killed by signal 6, "
             "SIGABRT)\n!error 504 record 3 EXEC_ERECTIMEOUT");
    /* A respawn is counted when the replacement is asked for, just after the
     * record's result: wait for all five, each by its cause (a crash right
     * after a timed-out record is a crash). */
    uint64_t end = ms_now() + 20000;
    long crash = 0, timeout = 0;
    for (;;) {
        http(sv.port, "GET", "/metrics", NULL, NULL, &r);
        crash = metric(r.body, "executor_worker_respawns_total{cause=\"crash\"}");
        timeout = metric(r.body, "executor_worker_respawns_total{cause=\"timeout\"}");
        if (crash + timeout == 5 || ms_now() > end)
            break;
        reply_free(&r);
        usleep(20000);
    }
    if (crash != 2 || timeout != 3)
        fail_msg("respawns: %ld crash, %ld timeout; /metrics said:\n%s", crash, timeout, r.body);
    reply_free(&r);
    http(sv.port, "GET", "/metrics", NULL, NULL, &r);
    check_reply(&r, 200, NULL, "executor_serve_records_total{outcome=\"crashed\"} 2\n");
    check_reply(&r, 200, NULL, "executor_serve_records_total{outcome=\"timeout\"} 3\n");
    check_reply(&r, 200, NULL, "executor_serve_requests_total{code=\"504\"} 2\n");
    reply_free(&r);
    assert_int_equal(server_stop(&sv), 0);
}

/* The window full: 503 with Retry-After, at once, and the server goes on. */
static void test_window_full(void **state)
{
    need_server(state);
    struct server sv;
    const char *more[] = {"--window", "1", "--timeout", "1500", "--retry-after", "3", NULL};
    start(&sv, "fork", ",hang=sleepy", more);
    struct hc slow;
    assert_int_equal(hc_connect(&slow, sv.port), 0);
    hc_request(&slow, "POST", "/classify", "1,sleepy", 8, NULL);
    usleep(300000);
    struct reply r;
    uint64_t t0 = ms_now();
    http(sv.port, "POST", "/classify", "2,apple", NULL, &r);
    check_reply(&r, 503, NULL, "EXEC_EAGAIN: the window of 1 records is full");
    char v[16];
    assert_string_equal(reply_header(&r, "retry-after", v, sizeof v), "3");
    assert_true(ms_now() - t0 < 1000);
    reply_free(&r);
    assert_true(hc_reply(&slow, &r, 30000));
    check_reply(&r, 504, NULL, NULL);
    reply_free(&r);
    hc_close(&slow);
    classify(sv.port, "3,apple", 200, "3,fruit\n", NULL);
    http(sv.port, "GET", "/metrics", NULL, NULL, &r);
    check_reply(&r, 200, NULL, "executor_serve_records_total{outcome=\"rejected\"} 1\n");
    reply_free(&r);
    assert_int_equal(server_stop(&sv), 0);

    /* Below the window, requests wait rather than fail, also where the
     * executor runs out of room first (one worker process has 32 slots, and
     * single records travel one to a slot). */
    const char *one[] = {"--workers", "1", "--window", "200", NULL};
    start(&sv, "fork", ",cost_us=2000", one);
    enum { NC = 80 };
    struct hc *c = calloc(NC, sizeof *c);
    for (int i = 0; i < NC; i++) {
        assert_int_equal(hc_connect(&c[i], sv.port), 0);
        char body[32];
        int n = snprintf(body, sizeof body, "%d,saw", i);
        hc_request(&c[i], "POST", "/classify", body, (size_t)n, NULL);
    }
    for (int i = 0; i < NC; i++) {
        char want[32];
        snprintf(want, sizeof want, "%d,tool\n", i);
        assert_true(hc_reply(&c[i], &r, 30000));
        check_reply(&r, 200, want, NULL);
        reply_free(&r);
        hc_close(&c[i]);
    }
    free(c);
    assert_int_equal(server_stop(&sv), 0);

    /* A document larger than the window waits for room, in order. */
    const char *small[] = {"--window", "4", NULL};
    start(&sv, "threads", NULL, small);
    char doc[8192], want[8192];
    size_t dl = (size_t)sprintf(doc, "id,text\n"), wl = 0;
    for (int i = 0; i < 300; i++) {
        dl += (size_t)sprintf(doc + dl, "%d,%s\n", i, i % 2 ? "owl" : "pear");
        wl += (size_t)sprintf(want + wl, "%d,%s\n", i, i % 2 ? "animal" : "fruit");
    }
    classify(sv.port, doc, 200, want, NULL);
    assert_int_equal(server_stop(&sv), 0);
}

/* Every line of /metrics is a comment or "name{labels} value". */
static void check_exposition(const char *page)
{
    const char *p = page;
    while (*p) {
        const char *e = strchr(p, '\n');
        assert_non_null(e);
        if (strncmp(p, "# HELP ", 7) != 0 && strncmp(p, "# TYPE ", 7) != 0) {
            const char *q = p;
            while ((*q >= 'a' && *q <= 'z') || *q == '_')
                q++;
            assert_true(q > p);
            if (*q == '{') {
                q = memchr(q, '}', (size_t)(e - q));
                assert_non_null(q);
                q++;
            }
            assert_true(*q == ' ');
            char *end;
            strtod(q + 1, &end);
            if (end != e)
                fail_msg("not a sample: %.*s", (int)(e - p), p);
        }
        p = e + 1;
    }
}

static void test_metrics_and_health(void **state)
{
    need_server(state);
    for (size_t b = 0; b < 3; b++) {
        struct server sv;
        start(&sv, backends[b], NULL, NULL);
        classify(sv.port, "1,apple", 200, "1,fruit\n", NULL);
        classify(sv.port, "id,text\n1,apple\n2,x\n", 200, "1,fruit\n2,unknown\n", NULL);
        classify(sv.port, "9", 422, NULL, NULL);
        struct reply r;
        char v[64];
        http(sv.port, "GET", "/metrics", NULL, NULL, &r);
        assert_int_equal(r.code, 200);
        assert_non_null(strstr(reply_header(&r, "content-type", v, sizeof v), "version=0.0.4"));
        check_exposition(r.body);
        char want[128];
        snprintf(want, sizeof want, "backend=\"%s\",workers=\"%s\"", backends[b],
                 b == 2 ? "1" : "2");
        check_reply(&r, 200, NULL, want);
        check_reply(&r, 200, NULL, "executor_serve_records_total{outcome=\"ok\"} 3\n");
        check_reply(&r, 200, NULL, "executor_serve_records_total{outcome=\"user_error\"} 1\n");
        check_reply(&r, 200, NULL, "executor_serve_requests_total{code=\"200\"} 2\n");
        check_reply(&r, 200, NULL, "executor_serve_requests_total{code=\"422\"} 1\n");
        check_reply(&r, 200, NULL, "executor_serve_request_duration_seconds_count 3\n");
        check_reply(&r, 200, NULL, "executor_context_generation 0\n");
        if (b < 2) {
            check_reply(&r, 200, NULL, "executor_utilisation ");
            check_reply(&r, 200, NULL, "executor_record_latency_seconds_bucket{le=\"+Inf\"} ");
        }
        if (b == 1) {
            check_reply(&r, 200, NULL, "executor_worker_pss_bytes{worker=\"1\",pid=\"");
            check_reply(&r, 200, NULL, "executor_worker_private_dirty_bytes{worker=\"0\",pid=\"");
        }
        reply_free(&r);
        http(sv.port, "GET", "/healthz", NULL, NULL, &r);
        snprintf(want, sizeof want, "ok: backend %s, generation 0, 0 records in flight\n",
                 backends[b]);
        check_reply(&r, 200, want, NULL);
        reply_free(&r);
        assert_int_equal(server_stop(&sv), 0);
    }
}

/* Workers (threads of the server, or children of its zygote) at nice want. */
static int workers_at_nice(pid_t server, int want)
{
    char path[384];
    int count = 0, ppid, nice;
    /* threads: the server's own tasks */
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)server);
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        snprintf(path, sizeof path, "%s/%s/stat", dir, e->d_name);
        if (e->d_name[0] >= '0' && e->d_name[0] <= '9' && stat_of(path, &ppid, &nice) &&
            nice == want)
            count++;
    }
    if (d)
        closedir(d);
    /* fork: the zygote's children */
    pid_t w[64];
    int n = fork_workers_of(server, w, 64);
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "/proc/%d/stat", (int)w[i]);
        if (stat_of(path, &ppid, &nice) && nice == want)
            count++;
    }
    return count;
}

/* --worker-nice lowers the workers, and only them, so the loop goes first. */
static void test_worker_nice(void **state)
{
    need_server(state);
    /* Relative to where the server starts (it inherits ours). */
    errno = 0;
    int base = getpriority(PRIO_PROCESS, 0);
    assert_false(base == -1 && errno);
    const int want = base + 5 > 19 ? 19 : base + 5;
    for (size_t b = 0; b < 2; b++) {
        struct server sv;
        const char *more[] = {"--worker-nice", "5", NULL};
        start(&sv, backends[b], NULL, more);
        classify(sv.port, "1,apple", 200, "1,fruit\n", NULL);
        assert_int_equal(workers_at_nice(sv.pid, want), 2);
        char path[64];
        int ppid, nice;
        snprintf(path, sizeof path, "/proc/%d/stat", (int)sv.pid);
        assert_true(stat_of(path, &ppid, &nice));
        assert_int_equal(nice, base); /* the loop's thread */
        assert_int_equal(server_stop(&sv), 0);
    }
}

/* --batch 1: every record travels alone (a document's too). */
static void test_batch_option(void **state)
{
    need_server(state);
    struct server sv;
    const char *more[] = {"--batch", "1", NULL};
    start(&sv, "threads", NULL, more);
    char doc[1024], want[1024];
    size_t dl = (size_t)sprintf(doc, "id,text\n"), wl = 0;
    for (int i = 0; i < 40; i++) {
        dl += (size_t)sprintf(doc + dl, "%d,saw\n", i);
        wl += (size_t)sprintf(want + wl, "%d,tool\n", i);
    }
    classify(sv.port, doc, 200, want, NULL);
    struct reply r;
    http(sv.port, "GET", "/metrics", NULL, NULL, &r);
    check_reply(&r, 200, NULL, "executor_batches_total 40\n");
    reply_free(&r);
    assert_int_equal(server_stop(&sv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_records_and_documents, kill_servers),
        cmocka_unit_test_teardown(test_keepalive_and_pipelining, kill_servers),
        cmocka_unit_test_teardown(test_routes_and_limits, kill_servers),
        cmocka_unit_test_teardown(test_worker_faults, kill_servers),
        cmocka_unit_test_teardown(test_window_full, kill_servers),
        cmocka_unit_test_teardown(test_metrics_and_health, kill_servers),
        cmocka_unit_test_teardown(test_worker_nice, kill_servers),
        cmocka_unit_test_teardown(test_batch_option, kill_servers),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
