/*
 * executor-serve as operators run it: live reload (POST /admin/reload and
 * SIGHUP, a new spec, a bad one, and on fork a context whose canary crashes or
 * hangs: refused, the old one keeps serving), reloads while requests run,
 * graceful shutdown on SIGTERM, a client that leaves mid-request, the access
 * log, and clear errors at start (port in use, bad plugin, bad spec, usage).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "serveutil.h"

static char table2[64], logfile[64];

static int setup(void **state)
{
    (void)state;
    serve_paths(__FILE__);
    snprintf(table2, sizeof table2, "/tmp/exec-serve-table-%d", (int)getpid());
    snprintf(logfile, sizeof logfile, "/tmp/exec-serve-log-%d", (int)getpid());
    FILE *f = fopen(table2, "w");
    assert_non_null(f);
    fputs("apple tool\nowl fruit\n", f); /* a second table that says other things */
    fclose(f);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(table2);
    unlink(logfile);
    return 0;
}

/* With an admin listener on loopback that takes a spec in the body. */
static void start(struct server *sv, const char *backend, const char *const *more)
{
    static const char *const admin[] = {"--admin", "127.0.0.1:0", "--admin-spec", NULL};
    serve_start(sv, spec, backend, admin, more);
}

/* Waits until GET /healthz names generation gen. */
static void await_generation(int port, int gen)
{
    char want[64], what[64];
    snprintf(want, sizeof want, "generation %d,", gen);
    snprintf(what, sizeof what, "generation %d", gen);
    await_body(port, "/healthz", want, NULL, what);
}

static const char *const backends[] = {"threads", "fork", "inline"};

static void test_reload(void **state)
{
    need_server(state);
    for (size_t b = 0; b < 3; b++) {
        struct server sv;
        const char *more[] = {"--start-timeout", "700", NULL};
        start(&sv, backends[b], more);
        expect(sv.port, "POST", "/classify", "1,apple", 200, "1,fruit\n");
        assert_true(sv.admin_port > 0);
        expect(sv.admin_port, "POST", "/admin/reload", NULL, 200, "reloaded: generation 1\n");
        struct reply r;
        char v[16];
        http(sv.port, "POST", "/classify", "2,apple", NULL, &r);
        check_reply(&r, 200, "2,fruit\n", NULL);
        assert_string_equal(reply_header(&r, "x-context-generation", v, sizeof v), "1");
        reply_free(&r);
        kill(sv.pid, SIGHUP);
        await_generation(sv.port, 2);
        assert_true(server_said(&sv, "reloaded on SIGHUP: generation 2", 5000));
        /* A new spec, then a bad one: the new one keeps serving. */
        char s2[128];
        snprintf(s2, sizeof s2, "table=%s,column=text,id=id", table2);
        expect(sv.admin_port, "POST", "/admin/reload", s2, 200, "reloaded: generation 3\n");
        expect(sv.port, "POST", "/classify", "3,apple", 200, "3,tool\n");
        /* The plugin's reason goes to the log only (it may name files). */
        expect(sv.admin_port, "POST", "/admin/reload", "table=/nonexistent/table", 400,
               "bad spec: the plugin refused it (the reason is in the server's log); still "
               "serving generation 3\n");
        assert_true(server_said(&sv, "cannot open table '/nonexistent/table'", 5000));
        expect(sv.admin_port, "POST", "/admin/reload", "colour=red", 400, "bad spec: ");
        assert_true(server_said(&sv, "unknown spec key", 5000));
        expect(sv.port, "POST", "/classify", "4,owl", 200, "4,fruit\n");
        /* An empty body rebuilds --spec: the first table again. */
        expect(sv.admin_port, "POST", "/admin/reload", NULL, 200, "reloaded: generation 4\n");
        expect(sv.port, "POST", "/classify", "5,apple", 200, "5,fruit\n");
        if (b == 1) {
            /* The canary refuses contexts whose worker_init crashes or hangs,
             * or that crash on the records it replays; the old one serves. */
            char bad[PATH_MAX + 96];
            snprintf(bad, sizeof bad, "%s,init=crash", spec);
            expect(sv.admin_port, "POST", "/admin/reload", bad, 422,
                   "refused: EXEC_EINIT: a worker failed to start (worker_init); still serving "
                   "generation 4\n");
            snprintf(bad, sizeof bad, "%s,init=hang", spec);
            expect(sv.admin_port, "POST", "/admin/reload", bad, 422, "refused: EXEC_EINIT");
            snprintf(bad, sizeof bad, "%s,crash=*", spec);
            expect(sv.admin_port, "POST", "/admin/reload", bad, 422, "refused: EXEC_ECRASHED");
            assert_true(server_said(&sv, "reload refused: EXEC_ECRASHED", 5000));
            expect(sv.port, "POST", "/classify", "6,apple", 200, "6,fruit\n");
            http(sv.port, "GET", "/metrics", NULL, NULL, &r);
            check_reply(&r, 200, NULL, "executor_serve_reloads_total{result=\"refused\"} 3\n");
            check_reply(&r, 200, NULL, "executor_serve_reloads_total{result=\"ok\"} 4\n");
            check_reply(&r, 200, NULL, "executor_serve_reloads_total{result=\"bad_spec\"} 2\n");
            check_reply(&r, 200, NULL, "executor_context_generation 4\n");
            reply_free(&r);
        }
        assert_int_equal(server_stop(&sv), 0);
    }
}

/* Reloads while records run: every reply is right, no connection drops. */
static void test_reload_under_load(void **state)
{
    need_server(state);
    for (size_t b = 0; b < 2; b++) {
        struct server sv;
        start(&sv, backends[b], NULL);
        enum { NC = 6, ROUNDS = 60 };
        struct hc *c = calloc(NC + 1, sizeof *c);
        for (int i = 0; i <= NC; i++)
            assert_int_equal(hc_connect(&c[i], i < NC ? sv.port : sv.admin_port), 0);
        static const char *const words[3][2] = {{"pear", "fruit"}, {"dog", "animal"},
                                                {"saw", "tool"}};
        int reloads = 0;
        for (int round = 0; round < ROUNDS; round++) {
            for (int i = 0; i < NC; i++) {
                char body[64];
                int n = snprintf(body, sizeof body, "%d,%s", round * NC + i, words[i % 3][0]);
                hc_request(&c[i], "POST", "/classify", body, (size_t)n, NULL);
            }
            hc_request(&c[NC], "POST", "/admin/reload", NULL, 0, NULL);
            for (int i = 0; i < NC; i++) {
                struct reply r;
                if (!hc_reply(&c[i], &r, 30000))
                    fail_msg("round %d: connection %d dropped", round, i);
                char want[64];
                snprintf(want, sizeof want, "%d,%s\n", round * NC + i, words[i % 3][1]);
                check_reply(&r, 200, want, NULL);
                reply_free(&r);
            }
            struct reply r;
            assert_true(hc_reply(&c[NC], &r, 30000));
            check_reply(&r, 200, NULL, "reloaded: generation ");
            reply_free(&r);
            reloads++;
        }
        for (int i = 0; i <= NC; i++)
            hc_close(&c[i]);
        free(c);
        await_generation(sv.port, reloads);
        assert_int_equal(server_stop(&sv), 0);
    }
}

/* SIGTERM: no new connections, 503 on open ones, what runs finishes, exit 0. */
static void test_graceful_shutdown(void **state)
{
    need_server(state);
    struct server sv;
    char s[PATH_MAX + 96];
    snprintf(s, sizeof s, "%s,hang=sleepy", spec);
    const char *args[] = {"--spec", s, "--header", "id,text", "--backend", "fork",
                          "--timeout", "1500", NULL};
    server_start(&sv, args);
    struct hc idle, slow;
    assert_int_equal(hc_connect(&idle, sv.port), 0);
    hc_request(&idle, "GET", "/healthz", NULL, 0, NULL);
    struct reply r;
    assert_true(hc_reply(&idle, &r, 30000));
    reply_free(&r);
    assert_int_equal(hc_connect(&slow, sv.port), 0);
    hc_request(&slow, "POST", "/classify", "1,sleepy", 8, NULL);
    usleep(200000);
    kill(sv.pid, SIGTERM);
    assert_true(server_said(&sv, "shutting down (SIGTERM): 1 requests in flight", 5000));
    struct hc late;
    assert_int_not_equal(hc_connect(&late, sv.port), 0); /* refused at once */
    hc_close(&late);
    hc_request(&idle, "POST", "/classify", "2,apple", 7, NULL);
    assert_true(hc_reply(&idle, &r, 30000));
    check_reply(&r, 503, "shutting down\n", NULL);
    reply_free(&r);
    assert_true(hc_closed(&idle, 5000));
    assert_true(hc_reply(&slow, &r, 30000));
    check_reply(&r, 504, NULL, "EXEC_ERECTIMEOUT");
    reply_free(&r);
    assert_int_equal(server_wait(&sv, 30000), 0);
    assert_non_null(strstr(sv.err, "all requests answered"));
    hc_close(&idle);
    hc_close(&slow);
    close(sv.err_fd);

    /* A second SIGTERM does not wait. */
    server_start(&sv, args);
    assert_int_equal(hc_connect(&slow, sv.port), 0);
    hc_request(&slow, "POST", "/classify", "1,sleepy", 8, NULL);
    usleep(200000);
    kill(sv.pid, SIGTERM);
    assert_true(server_said(&sv, "shutting down", 5000));
    kill(sv.pid, SIGTERM);
    assert_int_equal(server_wait(&sv, 1000), 1);
    hc_close(&slow);
    close(sv.err_fd);
}

/* A client that leaves while its record runs costs nothing else. */
static void test_client_leaves(void **state)
{
    need_server(state);
    struct server sv;
    char s[PATH_MAX + 96];
    snprintf(s, sizeof s, "%s,hang=sleepy", spec);
    const char *args[] = {"--spec", s, "--header", "id,text", "--backend", "fork",
                          "--timeout", "500", "--access-log", logfile, NULL};
    server_start(&sv, args);
    for (int i = 0; i < 3; i++) {
        struct hc c;
        assert_int_equal(hc_connect(&c, sv.port), 0);
        hc_request(&c, "POST", "/classify", i == 2 ? "id,text\n1,sleepy\n2,dog\n" : "1,sleepy",
                   i == 2 ? 23 : 8, NULL);
        usleep(50000);
        hc_close(&c);
    }
    expect(sv.port, "POST", "/classify", "2,apple", 200, "2,fruit\n");
    await_body(sv.port, "/metrics", "executor_serve_requests_open 1\n", NULL, /* this one */
               "the end of the requests of clients that left");
    expect(sv.port, "GET", "/nope", NULL, 404, NULL);
    assert_int_equal(server_stop(&sv), 0);
    /* The access log has a line per request (evhttp learns that a client
     * left when the reply is written: those lines say what was sent). */
    FILE *f = fopen(logfile, "r");
    assert_non_null(f);
    char line[512];
    int posts = 0, ok = 0, doc = 0, nf = 0;
    while (fgets(line, sizeof line, f)) {
        posts += strstr(line, "\"POST /classify\" ") != NULL;
        ok += strstr(line, "\"POST /classify\" 200 8 ") && strstr(line, " records=1 gen=0\n");
        doc += strstr(line, " records=2 ") != NULL;
        nf += strstr(line, "\"GET /nope\" 404 ") != NULL;
        assert_non_null(strstr(line, "Z 127.0.0.1:"));
    }
    fclose(f);
    assert_int_equal(posts, 4);
    assert_int_equal(ok, 1);
    assert_int_equal(doc, 1);
    assert_int_equal(nf, 1);
}

/* Runs the server to its exit with args; its status, and stderr in *err. */
static int run(const char *const *args, char *err, size_t cap, char *out, size_t ocap)
{
    const char *argv[32] = {serve_bin};
    int n = 1;
    for (int i = 0; args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int pe[2], po[2];
    assert_int_equal(pipe2(pe, O_CLOEXEC), 0);
    assert_int_equal(pipe2(po, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, serve_bin, &fa, NULL, (char **)argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(pe[1]);
    close(po[1]);
    size_t el = 0, ol = 0;
    ssize_t k;
    while ((k = read(po[0], out + ol, ocap - 1 - ol)) > 0)
        ol += (size_t)k;
    while ((k = read(pe[0], err + el, cap - 1 - el)) > 0)
        el += (size_t)k;
    err[el] = out[ol] = '\0';
    close(pe[0]);
    close(po[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void test_start_errors(void **state)
{
    need_server(state);
    static char err[8192], out[16384];
    /* A port in use. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    char listen_at[32];
    snprintf(listen_at, sizeof listen_at, "127.0.0.1:%d", ntohs(a.sin_port));
    const char *inuse[] = {"--plugin", plugin_so, "--spec", spec, "--header", "id,text",
                           "--listen", listen_at, NULL};
    assert_int_equal(run(inuse, err, sizeof err, out, sizeof out), 1);
    assert_non_null(strstr(err, "cannot listen on"));
    assert_non_null(strstr(err, "Address already in use (another server listens there"));
    close(fd);

    const char *noplugin[] = {"--plugin", "/nonexistent/libx.so", "--spec", "x", NULL};
    assert_int_equal(run(noplugin, err, sizeof err, out, sizeof out), 1);
    assert_non_null(strstr(err, "executor-serve: cannot load plugin: /nonexistent/libx.so"));
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n] = '\0';
    char lib[PATH_MAX + 32];
    snprintf(lib, sizeof lib, "%s/../libexecutor.so", dirname(self));
    const char *notplugin[] = {"--plugin", lib, "--spec", "x", NULL};
    assert_int_equal(run(notplugin, err, sizeof err, out, sizeof out), 1);
    assert_non_null(strstr(err, "not a plugin (no symbol exec_plugin_v1)"));
    const char *badspec[] = {"--plugin", plugin_so, "--spec", "table=/nonexistent", "--listen",
                             "127.0.0.1:0", NULL};
    assert_int_equal(run(badspec, err, sizeof err, out, sizeof out), 1);
    assert_non_null(strstr(err, "plugin wordtable: bad spec 'table=/nonexistent': cannot open"));
    const char *noheader[] = {"--plugin", plugin_so, "--spec", spec, "--listen", "127.0.0.1:0",
                              NULL};
    assert_int_equal(run(noheader, err, sizeof err, out, sizeof out), 1);
    assert_non_null(strstr(err, "given by name, but the input has no header"));
    char scratch[PATH_MAX + 32];
    snprintf(scratch, sizeof scratch, "%s/examples/libscratch.so", dirname(lib));
    const char *notsafe[] = {"--plugin", scratch, "--spec", spec, "--header", "id,text",
                             "--listen", "127.0.0.1:0", "--backend", "threads", NULL};
    assert_int_equal(run(notsafe, err, sizeof err, out, sizeof out), 1);
    assert_non_null(strstr(err, "plugin scratch is not thread-safe: use --backend fork or auto"));

    const char *usage[][4] = {{"--plugin", plugin_so, NULL},
                              {"--bogus", NULL},
                              {"--window", "0", NULL},
                              {"--backend", "gpu", NULL}};
    const char *why[] = {"--plugin and --spec are required", "unknown option",
                         "--window: expected 1..16777216, not '0'",
                         "--backend: expected auto, threads, fork or inline"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(run(usage[i], err, sizeof err, out, sizeof out), 2);
        if (!strstr(err, why[i]))
            fail_msg("usage error %d said: %s", i, err);
    }
    const char *help[] = {"--help", "--plugin", plugin_so, NULL};
    assert_int_equal(run(help, err, sizeof err, out, sizeof out), 0);
    assert_non_null(strstr(out, "usage: executor-serve --plugin PATH --spec SPEC"));
    assert_non_null(strstr(out, "POST /admin/reload"));
    assert_non_null(strstr(out, "plugin wordtable: spec table=FILE"));
}

/* Sockets held by the fork workers of server. */
static int worker_sockets(pid_t server)
{
    int count = 0;
    pid_t w[64];
    int n = fork_workers_of(server, w, 64);
    for (int i = 0; i < n; i++) {
        char path[300], link[128];
        snprintf(path, sizeof path, "/proc/%d/fd", (int)w[i]);
        DIR *f = opendir(path);
        struct dirent *fe;
        while (f && (fe = readdir(f))) {
            snprintf(path, sizeof path, "/proc/%d/fd/%s", (int)w[i], fe->d_name);
            ssize_t len = readlink(path, link, sizeof link - 1);
            if (len > 7 && strncmp(link, "socket:", 7) == 0)
                count++;
        }
        if (f)
            closedir(f);
    }
    return count;
}

/*
 * A reload forks a new zygote while clients are connected. Its workers close
 * every socket of the server (so closing a connection ends it), unless told
 * --inherit-fds.
 */
static void test_workers_hold_no_sockets(void **state)
{
    need_server(state);
    for (int inherit = 0; inherit < 2; inherit++) {
        struct server sv;
        const char *more[] = {inherit ? "--inherit-fds" : NULL, NULL};
        start(&sv, "fork", more);
        struct hc c;
        assert_int_equal(hc_connect(&c, sv.port), 0);
        hc_request(&c, "POST", "/classify", "1,apple", 7, NULL);
        struct reply r;
        assert_true(hc_reply(&c, &r, 10000));
        check_reply(&r, 200, "1,fruit\n", NULL);
        reply_free(&r);
        expect(sv.admin_port, "POST", "/admin/reload", NULL, 200, "reloaded: generation 1\n");
        expect(sv.port, "POST", "/classify", "2,apple", 200, "2,fruit\n");
        int n = worker_sockets(sv.pid);
        if (inherit)
            assert_true(n >= 2 * 2); /* the listeners and c, in each of 2 workers */
        else
            assert_int_equal(n, 0);
        hc_close(&c);
        assert_int_equal(server_stop(&sv), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_reload, kill_servers),
        cmocka_unit_test_teardown(test_reload_under_load, kill_servers),
        cmocka_unit_test_teardown(test_graceful_shutdown, kill_servers),
        cmocka_unit_test_teardown(test_client_leaves, kill_servers),
        cmocka_unit_test_teardown(test_start_errors, kill_servers),
        cmocka_unit_test_teardown(test_workers_hold_no_sockets, kill_servers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
