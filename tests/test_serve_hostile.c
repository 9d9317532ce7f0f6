/*
 * executor-serve against hostile clients, on loopback: bodies that cost the
 * loop (a body of quotes), clients that do not read their reply, requests
 * framed to be read two ways (smuggling), clients that send a byte at a
 * time or open too many connections, clients that leave hanging records
 * behind, and every way into the admin side. Each case checks the status
 * the hostile client gets, that another client is served meanwhile within a
 * latency bound (generous: the machine is shared), and the server's memory
 * and descriptors afterwards. Sizes are small enough to keep the suite
 * short; scripts/serve-hostile.sh runs the full-size cases and prints
 * figures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "serveutil.h"

#include <sys/stat.h>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

/* A sanitized server, or this client under valgrind, runs several times
 * slower: smaller bodies, a looser bound. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#else
#define SANITIZED (RUNNING_ON_VALGRIND != 0)
#endif

/* Another client's request while a hostile one runs: within this. */
#define LATENCY_MS (SANITIZED ? 1500 : 500)
/* Memory the server may keep after a case, over what it had before it. */
#define RSS_SLACK_KB ((SANITIZED ? 96 : 32) * 1024)

static char secret[64], sock_path[64];

static int setup(void **state)
{
    (void)state;
    serve_paths(__FILE__);
    snprintf(secret, sizeof secret, "/tmp/exec-serve-secret-%d", (int)getpid());
    snprintf(sock_path, sizeof sock_path, "/tmp/exec-serve-admin-%d.sock", (int)getpid());
    FILE *f = fopen(secret, "w");
    assert_non_null(f);
    fputs("password hunter2\n", f);
    fclose(f);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(secret);
    unlink(sock_path);
    return 0;
}

static void start(struct server *sv, const char *backend, const char *const *more)
{
    serve_start(sv, spec, backend, NULL, more);
}

/* ------------------------------------------------------------------------- */
/* What the server holds, what another client sees                           */
/* ------------------------------------------------------------------------- */

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}

static int fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    if (d)
        closedir(d);
    return n;
}

/* One GET /healthz on a connection of its own: its latency in ms (-1: no
 * answer within 10 s), and its status in *code. */
static long probe(int port, int *code)
{
    uint64_t t0 = ms_now();
    struct hc c;
    *code = 0;
    if (hc_connect(&c, port) != 0) {
        close(c.fd);
        return -1;
    }
    hc_request(&c, "GET", "/healthz", NULL, 0, NULL);
    struct reply r;
    bool ok = hc_reply(&c, &r, 10000);
    *code = ok ? r.code : 0;
    reply_free(&r);
    hc_close(&c);
    return ok ? (long)(ms_now() - t0) : -1;
}

/* Probes for ms milliseconds, every 20 ms: the worst latency (-1: one got no
 * answer). */
static long probe_for(int port, int ms)
{
    uint64_t end = ms_now() + (uint64_t)ms;
    long worst = 0;
    do {
        int code;
        long l = probe(port, &code);
        if (l < 0)
            return -1;
        if (l > worst)
            worst = l;
        usleep(20000);
    } while (ms_now() < end);
    return worst;
}

#define assert_served(sv, ms)                                                                 \
    do {                                                                                       \
        long worst_ = probe_for((sv)->port, ms);                                               \
        if (worst_ < 0 || worst_ > LATENCY_MS) {                                               \
            server_read_err(sv);                                                               \
            fail_msg("another client waited %ld ms (bound %d ms); the server said: %s",        \
                     worst_, LATENCY_MS, (sv)->err);                                           \
        }                                                                                      \
    } while (0)

/* The server's memory and descriptors, to compare with after a case. */
struct baseline {
    long rss;
    int fds;
};

static struct baseline baseline(struct server *sv)
{
    for (int i = 0; i < 20; i++) {
        int code;
        assert_true(probe(sv->port, &code) >= 0);
    }
    struct baseline b = {rss_kb(sv->pid), fd_count(sv->pid)};
    return b;
}

/* After a case: descriptors back to the baseline (closes linger up to 2 s;
 * extra: what the case leaves open on purpose), memory within RSS_SLACK_KB
 * of it. */
static void check_after_extra(struct server *sv, const struct baseline *b, int extra)
{
    uint64_t end = ms_now() + 10000;
    int fds;
    while ((fds = fd_count(sv->pid)) > b->fds + extra && ms_now() < end)
        usleep(50000);
    if (fds > b->fds + extra)
        fail_msg("the server holds %d descriptors, %d before", fds, b->fds);
    long rss = rss_kb(sv->pid);
    if (rss > b->rss + RSS_SLACK_KB)
        fail_msg("the server's RSS is %ld kB, %ld kB before", rss, b->rss);
}

static void check_after(struct server *sv, const struct baseline *b)
{
    check_after_extra(sv, b, 0);
}

/* A sample's value in a /metrics page, name at the start of its line (-1
 * when absent). */
static long metric(int port, const char *name)
{
    struct reply r;
    http(port, "GET", "/metrics", NULL, NULL, &r);
    char key[256];
    snprintf(key, sizeof key, "\n%s", name);
    const char *p = strstr(r.body, key);
    long v = p ? strtol(p + strlen(key), NULL, 10) : -1;
    reply_free(&r);
    return v;
}

/* Sends a request's bytes on a connection of its own. */
static void send_raw(struct hc *c, int port, const void *req, size_t len)
{
    assert_int_equal(hc_connect(c, port), 0);
    hc_send(c, req, len);
}

/* POST /classify head with a Content-Length of n. */
static void send_head(struct hc *c, size_t n)
{
    char head[256];
    int k = snprintf(head, sizeof head,
                     "POST /classify HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", n);
    hc_send(c, head, (size_t)k);
}

/* ------------------------------------------------------------------------- */
/* 1. A body that costs the loop                                             */
/* ------------------------------------------------------------------------- */

/*
 * A body of quotes: every record end is found in one pass, a slice per loop
 * turn, so other clients are served while it is cut; an odd count never
 * closes (400), an even one is one record over --max-record (413).
 */
static void test_quote_body(void **state)
{
    need_server(state);
    struct server sv;
    const char *more[] = {"--max-body", "8388608", NULL};
    start(&sv, "threads", more);
    struct baseline b = baseline(&sv);
    size_t n = (SANITIZED ? 1u : 4u) << 20;
    char *body = malloc(n + 1);
    memset(body, '"', n + 1);
    for (int odd = 1; odd >= 0; odd--) {
        struct hc c;
        assert_int_equal(hc_connect(&c, sv.port), 0);
        send_head(&c, n + (size_t)odd);
        hc_send(&c, body, n + (size_t)odd);
        assert_served(&sv, 1000);
        struct reply r;
        assert_true(hc_reply(&c, &r, 60000));
        if (odd)
            check_reply(&r, 400, NULL, "EXEC_EUNTERMINATED");
        else
            check_reply(&r, 413, NULL, "EXEC_E2BIG");
        reply_free(&r);
        hc_close(&c);
    }
    /* Quotes and line ends mixed: many records, each found once. */
    for (size_t i = 0; i < n; i++)
        body[i] = i % 4 == 3 ? '\n' : '"';
    struct hc c;
    assert_int_equal(hc_connect(&c, sv.port), 0);
    send_head(&c, n);
    hc_send(&c, body, n);
    assert_served(&sv, 500);
    struct reply r;
    assert_true(hc_reply(&c, &r, 60000));
    check_reply(&r, 200, NULL, "!error 422 record 1 EXEC_EUSER");
    reply_free(&r);
    hc_close(&c);
    free(body);
    check_after(&sv, &b);
    assert_int_equal(server_stop(&sv), 0);
}

/* ------------------------------------------------------------------------- */
/* 2. Memory per connection                                                  */
/* ------------------------------------------------------------------------- */

/*
 * A client that sends a large document and reads nothing: its records stop
 * going in once --max-pending bytes of its reply wait, so the server's
 * memory stays put while it waits; other clients are served; when the
 * client goes, everything it held goes.
 */
static void test_reader_that_never_reads(void **state)
{
    need_server(state);
    struct server sv;
    const char *more[] = {"--max-records", "20000000", "--max-pending", "262144",
                          "--idle-timeout", "3", NULL};
    start(&sv, "threads", more);
    struct baseline b = baseline(&sv);
    size_t n = (SANITIZED ? 1u : 2u) << 20;
    char *body = malloc(n);
    memset(body, '\n', n); /* n empty records: each a 422 line of ~70 bytes */
    struct hc c;
    assert_int_equal(hc_connect(&c, sv.port), 0);
    int small = 4096;
    setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    send_head(&c, n);
    hc_send(&c, body, n);
    free(body);
    assert_served(&sv, 800);
    /* Once the document is paused (its body cut: the records array is the body's
     * size again, more under a sanitizer's shadow), memory stays put. */
    uint64_t until = ms_now() + 10000;
    while (metric(sv.port, "executor_serve_documents_paused_total ") < 1) {
        if (ms_now() > until)
            fail_msg("a document whose client reads nothing was never paused");
        usleep(20000);
    }
    long rss0 = rss_kb(sv.pid);
    assert_served(&sv, 2000);
    long rss1 = rss_kb(sv.pid);
    /* Unbounded, the reply (~140 MB) would be queued at tens of MB/s. */
    if (rss1 > rss0 + 8 * 1024)
        fail_msg("the server grew from %ld to %ld kB while its client read nothing", rss0, rss1);
    /* Reading nothing for --idle-timeout, it is cut off (499 in the log). */
    uint64_t end = ms_now() + 10000;
    while (metric(sv.port, "executor_serve_documents_unread_total ") != 1) {
        if (ms_now() > end)
            fail_msg("a client that reads nothing was never cut off");
        usleep(100000);
    }
    assert_true(metric(sv.port, "executor_serve_requests_total{code=\"499\"} ") == 1);
    /* What it got is a document, streamed. */
    struct reply r;
    char line[256];
    assert_true(hc_line(&c, line, sizeof line, ms_now() + 10000));
    assert_string_equal(line, "HTTP/1.1 200 OK");
    hc_close(&c);
    /* Too many records: 413 before any runs. */
    struct server sv2;
    const char *few[] = {"--max-records", "1000", NULL};
    start(&sv2, "threads", few);
    char doc[4096];
    size_t k = 0;
    for (int i = 0; i < 1001; i++)
        doc[k++] = '\n';
    doc[k] = '\0';
    http(sv2.port, "POST", "/classify", doc, NULL, &r);
    check_reply(&r, 413, NULL, "more than 1000 records in one request (--max-records)");
    reply_free(&r);
    doc[1000] = '\0';
    http(sv2.port, "POST", "/classify", doc, NULL, &r);
    check_reply(&r, 200, NULL, "!error 422 record 1000 ");
    reply_free(&r);
    assert_int_equal(metric(sv2.port, "executor_serve_requests_refused_total{reason=\"too_many_records\"} "), 1);
    assert_int_equal(server_stop(&sv2), 0);
    check_after(&sv, &b);
    assert_int_equal(server_stop(&sv), 0);
}

/* ------------------------------------------------------------------------- */
/* 3. The admin side                                                         */
/* ------------------------------------------------------------------------- */

/* A request on the admin Unix socket. */
static void admin_unix(const char *body, struct reply *r)
{
    struct hc c;
    if (hc_connect_unix(&c, sock_path) != 0)
        fail_msg("connect to %s: %s", sock_path, strerror(errno));
    hc_request(&c, "POST", "/admin/reload", body, body ? strlen(body) : 0, NULL);
    if (!hc_reply(&c, r, 30000))
        fail_msg("no reply on the admin socket");
    hc_close(&c);
}

/*
 * The public listener has no admin path; the admin listener (a Unix socket
 * here) reloads the operator's spec, takes a spec only with --admin-spec,
 * and says the same whether a path exists or not.
 */
static void test_admin_off_public(void **state)
{
    need_server(state);
    struct server sv;
    char admin[96];
    snprintf(admin, sizeof admin, "unix:%s", sock_path);
    const char *more[] = {"--admin", admin, NULL};
    start(&sv, "threads", more);
    struct baseline b = baseline(&sv);
    char evil[PATH_MAX + 64];
    snprintf(evil, sizeof evil, "table=%s,column=text,id=id", secret);
    /* Through the public port: no admin side at all. */
    expect(sv.port, "POST", "/admin/reload", evil, 404, NULL);
    expect(sv.port, "POST", "/admin/reload", NULL, 404, NULL);
    expect(sv.port, "POST", "/classify", "1,password", 200, "1,unknown\n");
    /* The socket is ours only. */
    struct stat st;
    assert_int_equal(stat(sock_path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    struct reply r;
    admin_unix(NULL, &r);
    check_reply(&r, 200, "reloaded: generation 1\n", NULL);
    reply_free(&r);
    admin_unix(evil, &r); /* a spec needs --admin-spec */
    check_reply(&r, 403, NULL, "needs --admin-spec");
    reply_free(&r);
    expect(sv.port, "POST", "/classify", "2,password", 200, "2,unknown\n");
    assert_served(&sv, 100);
    check_after(&sv, &b);
    assert_int_equal(server_stop(&sv), 0);
    assert_int_equal(access(sock_path, F_OK), -1); /* removed at exit */

    /* With --admin-spec: errors name no file; log lines are escaped. */
    const char *more2[] = {"--admin", "127.0.0.1:0", "--admin-spec", NULL};
    start(&sv, "threads", more2);
    char a[256], c2[256];
    struct reply ra, rc;
    http(sv.admin_port, "POST", "/admin/reload", "table=/nonexistent/x", NULL, &ra);
    snprintf(a, sizeof a, "%s", ra.body);
    http(sv.admin_port, "POST", "/admin/reload", "table=/proc/self/nonexistent-dir/x", NULL, &rc);
    snprintf(c2, sizeof c2, "%s", rc.body);
    assert_int_equal(ra.code, 400);
    assert_int_equal(rc.code, 400);
    assert_string_equal(a, c2);
    reply_free(&ra);
    reply_free(&rc);
    http(sv.admin_port, "POST", "/admin/reload", "table=/etc/passwd", NULL, &ra);
    assert_int_equal(ra.code, 400);
    assert_string_equal(ra.body, a); /* a file that exists: the same words */
    reply_free(&ra);
    expect(sv.admin_port, "POST", "/admin/reload", "colour=red\nexecutor-serve: forged line", 400,
           "control character");
    expect(sv.admin_port, "POST", "/admin/reload", "colour=\x1b[2Jred", 400, "control character");
    expect(sv.admin_port, "POST", "/admin/reload", "colour=red\\nexecutor-serve: forged", 400,
           "bad spec");
    server_read_err(&sv);
    assert_null(strstr(sv.err, "\nexecutor-serve: forged"));
    assert_int_equal(server_stop(&sv), 0);
}

/*
 * One reload at a time: another while one runs is 409; SIGHUPs meanwhile
 * become one more reload after it. A reload whose build never returns is
 * abandoned at --reload-timeout (504), /healthz says so, reloads are refused
 * (503), and SIGTERM still exits 0.
 */
static void test_admin_reload_limits(void **state)
{
    need_server(state);
    struct server sv;
    const char *more[] = {"--admin", "127.0.0.1:0", "--admin-spec", "--reload-timeout", "2",
                          "--start-timeout", "1500", NULL};
    start(&sv, "fork", more);
    struct baseline b = baseline(&sv);
    /* A reload in progress: a context whose canary hangs (refused after
     * --start-timeout). */
    char slow[PATH_MAX + 128];
    snprintf(slow, sizeof slow, "%s,init=hang", spec);
    struct hc c;
    assert_int_equal(hc_connect(&c, sv.admin_port), 0);
    hc_request(&c, "POST", "/admin/reload", slow, strlen(slow), NULL);
    usleep(200000);
    expect(sv.admin_port, "POST", "/admin/reload", NULL, 409, "a reload is running");
    for (int i = 0; i < 3; i++)
        kill(sv.pid, SIGHUP);
    assert_served(&sv, 200);
    struct reply r;
    assert_true(hc_reply(&c, &r, 10000));
    check_reply(&r, 422, NULL, "refused: EXEC_EINIT");
    reply_free(&r);
    hc_close(&c);
    /* The SIGHUPs: one reload, of --spec. */
    assert_true(server_said(&sv, "reloaded on SIGHUP: generation 1", 10000));
    usleep(300000);
    expect(sv.port, "GET", "/healthz", NULL, 200, "generation 1,");
    expect(sv.port, "POST", "/classify", "1,apple", 200, "1,fruit\n");

    /* A build that never returns. */
    uint64_t t0 = ms_now();
    expect(sv.admin_port, "POST", "/admin/reload", "table=/dev/zero", 504,
           "still running after --reload-timeout");
    assert_true(ms_now() - t0 < 6000);
    expect(sv.port, "GET", "/healthz", NULL, 503, "unhealthy: a reload has run");
    expect(sv.admin_port, "POST", "/admin/reload", NULL, 503, "a reload is stuck");
    kill(sv.pid, SIGHUP);
    assert_served(&sv, 300); /* /healthz answers (503) at once */
    expect(sv.port, "POST", "/classify", "2,apple", 200, "2,fruit\n");
    assert_true(metric(sv.port, "executor_serve_reloads_total{result=\"timeout\"} ") == 1);
    assert_true(metric(sv.port, "executor_serve_healthy ") == 0);
    check_after_extra(&sv, &b, 1); /* the abandoned build holds /dev/zero open */
    t0 = ms_now();
    assert_int_equal(server_stop(&sv), 0);
    assert_true(ms_now() - t0 < 5000);
}

/* ------------------------------------------------------------------------- */
/* 4. Framing                                                                */
/* ------------------------------------------------------------------------- */

struct framing_case {
    const char *name, *req;
    int code;
};

static const struct framing_case framing[] = {
    {"two Content-Length, different",
     "POST /classify HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\nContent-Length: 60\r\n\r\n"
     "1,appleGET /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
     400},
    {"two Content-Length, equal",
     "POST /classify HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n1,apple",
     400},
    {"a list of lengths", "POST /classify HTTP/1.1\r\nHost: t\r\nContent-Length: 7, 7\r\n\r\n1,apple",
     400},
    {"Content-Length +7", "POST /classify HTTP/1.1\r\nHost: t\r\nContent-Length: +7\r\n\r\n1,apple",
     400},
    {"bare LF", "POST /classify HTTP/1.1\nHost: t\nContent-Length: 7\n\n1,apple", 400},
    {"bare LF in one line", "POST /classify HTTP/1.1\r\nHost: t\nContent-Length: 7\r\n\r\n1,apple",
     400},
    {"obs-fold",
     "POST /classify HTTP/1.1\r\nHost: t\r\nX-A: b\r\n c\r\nContent-Length: 7\r\n\r\n1,apple", 400},
    {"NUL in a value",
     "POST /classify HTTP/1.1\r\nHost: t\r\nX-A: b\0c\r\nContent-Length: 7\r\n\r\n1,apple", 400},
    {"ESC in a value",
     "POST /classify HTTP/1.1\r\nHost: t\r\nX-A: b\x1b\r\nContent-Length: 7\r\n\r\n1,apple", 400},
    {"space before colon",
     "POST /classify HTTP/1.1\r\nHost: t\r\nContent-Length : 7\r\n\r\n1,apple", 400},
    {"no Host", "POST /classify HTTP/1.1\r\nContent-Length: 7\r\n\r\n1,apple", 400},
    {"TE and CL",
     "POST /classify HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n"
     "7\r\n1,apple\r\n0\r\n\r\n",
     400},
    {"TE gzip", "POST /classify HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
    {"bad chunk size",
     "POST /classify HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n1,apple\r\n0\r\n\r\n",
     400},
    {"chunk size +7",
     "POST /classify HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n+7\r\n1,apple\r\n0\r\n\r\n",
     400},
    {"chunk without CRLF",
     "POST /classify HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n1,appleX\r\n0\r\n\r\n",
     400},
    {"HEAD with a body", "HEAD /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nGET /", 400},
    {"HTTP/2.0", "GET /healthz HTTP/2.0\r\nHost: t\r\n\r\n", 505},
    {"unknown method", "BREW /classify HTTP/1.1\r\nHost: t\r\n\r\n", 501},
};

/*
 * Requests that could be read two ways are refused with their status, the
 * connection closed after it: nothing after them is read as a request.
 */
static void test_framing(void **state)
{
    need_server(state);
    struct server sv;
    const char *more[] = {"--max-body", "100000", NULL};
    start(&sv, "threads", more);
    struct baseline b = baseline(&sv);
    for (size_t i = 0; i < sizeof framing / sizeof framing[0]; i++) {
        const struct framing_case *fc = &framing[i];
        size_t len = strlen(fc->req);
        if (strstr(fc->name, "NUL"))
            len = strlen(fc->req) + 1 + strlen(fc->req + strlen(fc->req) + 1);
        struct hc c;
        send_raw(&c, sv.port, fc->req, len);
        struct reply r;
        if (!hc_reply(&c, &r, 5000))
            fail_msg("%s: no reply", fc->name);
        if (r.code != fc->code)
            fail_msg("%s: got %d '%s', want %d", fc->name, r.code, r.body, fc->code);
        reply_free(&r);
        if (!hc_closed(&c, 5000))
            fail_msg("%s: the connection stayed open (or a second reply came)", fc->name);
        hc_close(&c);
    }
    /* A length over --max-body: 413 from the header, the body never sent. */
    struct hc c;
    static const char huge[] = "POST /classify HTTP/1.1\r\nHost: t\r\n"
                               "Content-Length: 4611686018427387904\r\n\r\n";
    uint64_t t0 = ms_now();
    send_raw(&c, sv.port, huge, sizeof huge - 1);
    struct reply r;
    assert_true(hc_reply(&c, &r, 5000));
    check_reply(&r, 413, NULL, "larger than --max-body");
    reply_free(&r);
    assert_true(ms_now() - t0 < LATENCY_MS);
    hc_close(&c);
    /* Pipelined: a good request, then a bad one; the good one is answered. */
    static const char two[] = "POST /classify HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\n1,apple"
                              "POST /classify HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc";
    send_raw(&c, sv.port, two, sizeof two - 1);
    assert_true(hc_reply(&c, &r, 5000));
    check_reply(&r, 200, "1,fruit\n", NULL);
    reply_free(&r);
    assert_true(hc_reply(&c, &r, 5000));
    check_reply(&r, 400, NULL, "Content-Length is not a number");
    reply_free(&r);
    assert_true(hc_closed(&c, 5000));
    hc_close(&c);
    /* Chunked, done right, with a trailer. */
    static const char chunked[] = "POST /classify HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  "3\r\n1,a\r\n4\r\npple\r\n0\r\nX-T: 1\r\n\r\n";
    send_raw(&c, sv.port, chunked, sizeof chunked - 1);
    assert_true(hc_reply(&c, &r, 5000));
    check_reply(&r, 200, "1,fruit\n", NULL);
    reply_free(&r);
    hc_close(&c);
    assert_served(&sv, 100);
    assert_true(metric(sv.port, "executor_serve_requests_refused_total{reason=\"framing\"} ") >= 17);
    assert_true(metric(sv.port, "executor_serve_requests_refused_total{reason=\"body_too_large\"} ") == 1);
    check_after(&sv, &b);
    assert_int_equal(server_stop(&sv), 0);
}

/* ------------------------------------------------------------------------- */
/* 5. Slow clients, too many clients                                         */
/* ------------------------------------------------------------------------- */

/* Sends req a byte every gap_ms until the connection ends or for at most
 * max_ms; how long it lasted (ms). */
static long drip(struct hc *c, const char *req, int gap_ms, int max_ms)
{
    uint64_t t0 = ms_now(), end = t0 + (uint64_t)max_ms;
    for (size_t i = 0; req[i] && ms_now() < end; i++) {
        if (send(c->fd, req + i, 1, MSG_NOSIGNAL) != 1)
            break;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, gap_ms) > 0)
            break; /* a reply, or the end */
    }
    return (long)(ms_now() - t0);
}

/*
 * A byte at a time does not keep a request alive past its deadline
 * (408, closed); connections over --max-connections are refused at once.
 */
static void test_slow_and_many(void **state)
{
    need_server(state);
    struct server sv;
    const char *more[] = {"--header-timeout", "1", "--body-timeout", "2", "--idle-timeout",
                          "3", NULL};
    start(&sv, "threads", more);
    struct baseline b = baseline(&sv);
    static const char slow_head[] = "POST /classify HTTP/1.1\r\nHost: t\r\nX-Pad: "
                                    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    struct hc c;
    assert_int_equal(hc_connect(&c, sv.port), 0);
    long lasted = drip(&c, slow_head, 200, 8000);
    if (lasted > 2500)
        fail_msg("a client sending a byte every 200 ms lasted %ld ms (--header-timeout 1)", lasted);
    struct reply r;
    assert_true(hc_reply(&c, &r, 3000));
    check_reply(&r, 408, NULL, "--header-timeout");
    reply_free(&r);
    assert_true(hc_closed(&c, 5000));
    hc_close(&c);
    /* The body too. */
    assert_int_equal(hc_connect(&c, sv.port), 0);
    send_head(&c, 100);
    char body[101];
    memset(body, 'x', 100);
    body[100] = '\0';
    lasted = drip(&c, body, 200, 8000);
    if (lasted > 3500)
        fail_msg("a body a byte every 200 ms lasted %ld ms (--body-timeout 2)", lasted);
    assert_true(hc_reply(&c, &r, 3000));
    check_reply(&r, 408, NULL, "--body-timeout");
    reply_free(&r);
    hc_close(&c);
    /* A connection that says nothing. */
    assert_int_equal(hc_connect(&c, sv.port), 0);
    assert_true(hc_reply(&c, &r, 3000));
    check_reply(&r, 408, NULL, NULL);
    reply_free(&r);
    hc_close(&c);
    assert_served(&sv, 100);
    assert_true(metric(sv.port, "executor_serve_deadlines_total{phase=\"header\"} ") >= 2);
    assert_int_equal(metric(sv.port, "executor_serve_deadlines_total{phase=\"body\"} "), 1);
    check_after(&sv, &b);
    assert_int_equal(server_stop(&sv), 0);

    /* The cap: the public listener's; the admin one keeps room of its own. */
    const char *cap[] = {"--max-connections", "8", "--admin", "127.0.0.1:0", NULL};
    start(&sv, "threads", cap);
    b = baseline(&sv);
    struct hc idle[8];
    for (int i = 0; i < 7; i++)
        assert_int_equal(hc_connect(&idle[i], sv.port), 0);
    assert_served(&sv, 100); /* the 8th */
    assert_int_equal(hc_connect(&idle[7], sv.port), 0);
    usleep(100000);
    assert_int_equal(hc_connect(&c, sv.port), 0);
    uint64_t t0 = ms_now();
    assert_true(hc_reply(&c, &r, 3000));
    check_reply(&r, 503, NULL, "too many connections");
    reply_free(&r);
    assert_true(ms_now() - t0 < LATENCY_MS);
    hc_close(&c);
    expect(sv.admin_port, "GET", "/healthz", NULL, 200, "ok: ");
    for (int i = 0; i < 8; i++)
        hc_close(&idle[i]);
    usleep(200000);
    assert_served(&sv, 100);
    assert_int_equal(metric(sv.port, "executor_serve_connections_refused_total "), 1);
    check_after(&sv, &b);
    assert_int_equal(server_stop(&sv), 0);
}

/* ------------------------------------------------------------------------- */
/* 6. Records that hang, clients that leave them                             */
/* ------------------------------------------------------------------------- */

/*
 * Two clients leave a record that hangs each (as many as there are workers):
 * the records are cancelled when they go, and the next request is served.
 * While clients wait on hung records, /healthz says no worker is free. A
 * finite record timeout is the default, threads too.
 */
static void test_hung_records(void **state)
{
    need_server(state);
    char hang[PATH_MAX + 96];
    snprintf(hang, sizeof hang, "%s,hang=sleepy", spec);
    static const char *const backends[] = {"threads", "fork"};
    for (int bk = 0; bk < 2; bk++) {
        struct server sv;
        const char *args[] = {"--spec",     hang,    "--header", "id,text", "--backend",
                              backends[bk], "--workers", "2", "--unhealthy-after", "1", NULL};
        server_start(&sv, args);
        struct baseline b = baseline(&sv);
        struct hc c[2];
        for (int i = 0; i < 2; i++) {
            assert_int_equal(hc_connect(&c[i], sv.port), 0);
            hc_request(&c[i], "POST", "/classify", "1,sleepy", 8, NULL);
        }
        /* Every worker holds a record, none finishes: unhealthy. */
        uint64_t end = ms_now() + 5000;
        struct reply r;
        for (;;) {
            http(sv.port, "GET", "/healthz", NULL, NULL, &r);
            bool sick = r.code == 503 && strstr(r.body, "no worker has been free");
            reply_free(&r);
            if (sick)
                break;
            if (ms_now() > end)
                fail_msg("%s: /healthz stayed ok with every worker hung", backends[bk]);
            usleep(100000);
        }
        for (int i = 0; i < 2; i++)
            hc_close(&c[i]);
        /* Their records are cancelled: the workers serve again. */
        uint64_t t0 = ms_now();
        expect(sv.port, "POST", "/classify", "2,apple", 200, "2,fruit\n");
        if (ms_now() - t0 > 3000)
            fail_msg("%s: served %llu ms after the clients left", backends[bk],
                     (unsigned long long)(ms_now() - t0));
        assert_served(&sv, 100);
        assert_true(metric(sv.port, "executor_serve_clients_gone_total ") == 2);
        struct reply ri;
        http(sv.port, "GET", "/metrics", NULL, NULL, &ri);
        check_reply(&ri, 200, NULL, ",timeout_ms=\"30000\","); /* finite by default */
        reply_free(&ri);
        check_after(&sv, &b);
        assert_int_equal(server_stop(&sv), 0);
    }
    /* A record past --timeout on threads: cancelled, 504. */
    struct server sv;
    const char *args[] = {"--spec", hang, "--header", "id,text", "--backend", "threads",
                          "--timeout", "300", NULL};
    server_start(&sv, args);
    uint64_t t0 = ms_now();
    expect(sv.port, "POST", "/classify", "3,sleepy", 504, "EXEC_ERECTIMEOUT");
    assert_true(ms_now() - t0 < 3000);
    expect(sv.port, "POST", "/classify", "4,apple", 200, "4,fruit\n");
    assert_int_equal(server_stop(&sv), 0);
    /* Every record failing: unhealthy. */
    char crash[PATH_MAX + 96];
    snprintf(crash, sizeof crash, "%s,crash=*", spec);
    const char *args2[] = {"--spec", crash, "--header", "id,text", "--backend", "fork",
                           "--workers", "2", "--unhealthy-after", "5", NULL};
    server_start(&sv, args2);
    expect(sv.port, "GET", "/healthz", NULL, 200, "ok: ");
    for (int i = 0; i < 12; i++)
        expect(sv.port, "POST", "/classify", "5,apple", 500, "EXEC_ECRASHED");
    expect(sv.port, "GET", "/healthz", NULL, 503, "unhealthy: all of the last 12 records failed");
    assert_int_equal(server_stop(&sv), 0);
}

/* ------------------------------------------------------------------------- */
/* 7. A threads reload proves worker_init                                    */
/* ------------------------------------------------------------------------- */

static void test_threads_reload_proves_init(void **state)
{
    need_server(state);
    struct server sv;
    const char *more[] = {"--admin", "127.0.0.1:0", "--admin-spec", NULL};
    start(&sv, "threads", more);
    char bad[PATH_MAX + 96];
    snprintf(bad, sizeof bad, "%s,init=fail", spec);
    expect(sv.admin_port, "POST", "/admin/reload", bad, 422, "refused: EXEC_EINIT");
    expect(sv.port, "GET", "/healthz", NULL, 200, "generation 0,");
    expect(sv.port, "POST", "/classify", "1,apple", 200, "1,fruit\n");
    expect(sv.admin_port, "POST", "/admin/reload", NULL, 200, "reloaded: generation 1\n");
    assert_int_equal(server_stop(&sv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_quote_body, kill_servers),
        cmocka_unit_test_teardown(test_reader_that_never_reads, kill_servers),
        cmocka_unit_test_teardown(test_admin_off_public, kill_servers),
        cmocka_unit_test_teardown(test_admin_reload_limits, kill_servers),
        cmocka_unit_test_teardown(test_framing, kill_servers),
        cmocka_unit_test_teardown(test_slow_and_many, kill_servers),
        cmocka_unit_test_teardown(test_hung_records, kill_servers),
        cmocka_unit_test_teardown(test_threads_reload_proves_init, kill_servers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
