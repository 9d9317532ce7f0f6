/*
 * Helpers for the executor-serve tests: start the server built beside the
 * tests on a free port (it names the port on stderr), a small HTTP/1.1 client
 * (keep-alive, pipelining, Content-Length and chunked replies), and the
 * server's exit. Include after cmocka.h.
 */
#ifndef SERVEUTIL_H
#define SERVEUTIL_H

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char serve_bin[PATH_MAX], plugin_so[PATH_MAX], words_txt[PATH_MAX];

/* Whether the server and the plugin are built, and the spec of the word table
 * (tests/data/words.txt): each suite's group setup fills them (serve_paths). */
static bool built;
static char spec[PATH_MAX + 64];

/* Each test's first line: skips it when the server or the plugin is not built. */
static void need_server(void **state)
{
    (void)state;
    if (!built)
        skip();
}

/* Finds the server, the plugin and the word table; false if not built. */
static bool serve_paths(const char *test_file)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return false;
    self[n] = '\0';
    const char *dir = dirname(self);
    snprintf(serve_bin, sizeof serve_bin, "%s/../programs/executor-serve", dir);
    snprintf(plugin_so, sizeof plugin_so, "%s/../examples/libwordtable.so", dir);
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s", test_file);
    snprintf(words_txt, sizeof words_txt, "%s/data/words.txt", dirname(src));
    snprintf(spec, sizeof spec, "table=%s,column=text,id=id", words_txt);
    built = access(serve_bin, X_OK) == 0 && access(plugin_so, R_OK) == 0;
    return built;
}

static uint64_t ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Servers started and not yet reaped: a failed test kills them (kill_servers). */
static pid_t live[8];

static void live_set(pid_t old, pid_t pid)
{
    for (int i = 0; i < 8; i++)
        if (live[i] == old) {
            live[i] = pid;
            return;
        }
}

/* A test's teardown: no server outlives its test. */
static int kill_servers(void **state)
{
    (void)state;
    for (int i = 0; i < 8; i++)
        if (live[i] > 0) {
            kill(live[i], SIGKILL);
            waitpid(live[i], NULL, 0);
            live[i] = 0;
        }
    return 0;
}

struct server {
    pid_t pid;
    int port;
    int admin_port;  /* --admin 127.0.0.1:0: the port it took, else 0 */
    int err_fd;      /* its stderr, non-blocking */
    char err[65536]; /* what it said so far */
    size_t err_len;
};

/* Reads what the server said on stderr so far. */
static void server_read_err(struct server *sv)
{
    ssize_t n;
    while (sv->err_len < sizeof sv->err - 1 &&
           (n = read(sv->err_fd, sv->err + sv->err_len, sizeof sv->err - 1 - sv->err_len)) > 0)
        sv->err_len += (size_t)n;
    sv->err[sv->err_len] = '\0';
}

/* A /proc/.../stat file's ppid and nice value. */
static bool stat_of(const char *path, int *ppid, int *nice)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* after the command name */
    long pp, ni;
    if (!p || sscanf(p + 2, "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %ld",
                     &pp, &ni) != 2)
        return false;
    *ppid = (int)pp;
    *nice = (int)ni;
    return true;
}

/* The fork workers of server (processes whose parent's parent it is: the
 * zygote's children), at most max of them; how many. */
static inline int fork_workers_of(pid_t server, pid_t *out, int max)
{
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d)) && n < max) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300];
        int ppid, gp, nice;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        if (!stat_of(path, &ppid, &nice))
            continue;
        snprintf(path, sizeof path, "/proc/%d/stat", ppid);
        if (stat_of(path, &gp, &nice) && gp == server)
            out[n++] = (pid_t)atoi(e->d_name);
    }
    if (d)
        closedir(d);
    return n;
}

/* Waits up to ms for the server to say s on stderr. */
static bool server_said(struct server *sv, const char *s, int ms)
{
    uint64_t end = ms_now() + (uint64_t)ms;
    for (;;) {
        server_read_err(sv);
        if (strstr(sv->err, s))
            return true;
        if (ms_now() >= end)
            return false;
        struct pollfd p = {.fd = sv->err_fd, .events = POLLIN};
        poll(&p, 1, 20);
    }
}

/*
 * Starts executor-serve with the word-table plugin on 127.0.0.1:0 and the
 * given arguments (NULL-terminated, after --plugin); waits until it listens.
 */
static void server_start(struct server *sv, const char *const *args)
{
    memset(sv, 0, sizeof *sv);
    const char *argv[64] = {serve_bin, "--plugin", plugin_so, "--listen", "127.0.0.1:0"};
    int n = 5;
    for (int i = 0; args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 2);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    assert_int_equal(posix_spawn(&sv->pid, serve_bin, &fa, NULL, (char **)argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    live_set(0, sv->pid);
    close(p[1]);
    sv->err_fd = p[0];
    fcntl(sv->err_fd, F_SETFL, O_NONBLOCK);
    if (!server_said(sv, "listening on 127.0.0.1:", 60000))
        fail_msg("executor-serve did not start; it said: %s", sv->err);
    sv->port = atoi(strstr(sv->err, "listening on 127.0.0.1:") + 23);
    assert_true(sv->port > 0);
    const char *adm = strstr(sv->err, "admin on 127.0.0.1:"); /* said before listening */
    sv->admin_port = adm ? atoi(adm + 19) : 0;
}

/*
 * Starts the server on the word table with --spec sp, --header id,text,
 * --backend backend and 2 workers, then the suite's own arguments and the
 * test's (own, more: NULL-ended lists, or NULL).
 */
static void serve_start(struct server *sv, const char *sp, const char *backend,
                        const char *const *own, const char *const *more)
{
    const char *args[56] = {"--spec", sp, "--header", "id,text", "--backend", backend,
                            "--workers", "2"};
    int n = 8;
    for (int i = 0; own && own[i]; i++)
        args[n++] = own[i];
    for (int i = 0; more && more[i]; i++)
        args[n++] = more[i];
    args[n] = NULL;
    server_start(sv, args);
}

/* Waits up to ms for the server to exit: its exit status, or -1. */
static int server_wait(struct server *sv, int ms)
{
    uint64_t end = ms_now() + (uint64_t)ms;
    int st;
    for (;;) {
        pid_t r = waitpid(sv->pid, &st, WNOHANG);
        if (r == sv->pid) {
            live_set(sv->pid, 0);
            break;
        }
        if (ms_now() >= end)
            return -1;
        server_read_err(sv);
        usleep(10000);
    }
    server_read_err(sv);
    sv->pid = 0;
    if (WIFSIGNALED(st))
        fail_msg("executor-serve died of signal %d; it said: %s", WTERMSIG(st), sv->err);
    return WEXITSTATUS(st);
}

/* SIGTERM, and the exit status it gives within 30 s. */
static int server_stop(struct server *sv)
{
    kill(sv->pid, SIGTERM);
    int rc = server_wait(sv, 30000);
    if (rc < 0) {
        kill(sv->pid, SIGKILL);
        server_wait(sv, 5000);
        fail_msg("executor-serve did not stop on SIGTERM; it said: %s", sv->err);
    }
    if (rc != 0)
        print_message("executor-serve exited %d; it said: %s\n", rc, sv->err);
    close(sv->err_fd);
    return rc;
}

/* ------------------------------------------------------------------------- */
/* The client                                                                */
/* ------------------------------------------------------------------------- */

struct hc {
    int fd;
    char buf[1 << 16];
    size_t n;
};

struct reply {
    int code;
    char head[4096]; /* the header lines, lower-cased names */
    char *body;
    size_t len;
};

/* A connection to a Unix socket (an admin listener). */
static inline int hc_connect_unix(struct hc *c, const char *path)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    return connect(c->fd, (struct sockaddr *)&a, sizeof a);
}

static int hc_connect(struct hc *c, int port)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return connect(c->fd, (struct sockaddr *)&a, sizeof a);
}

static void hc_send(struct hc *c, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t w = send(c->fd, p, len, MSG_NOSIGNAL);
        assert_true(w > 0);
        p += w;
        len -= (size_t)w;
    }
}

/* Sends a request; body may be NULL. extra: more header lines ("K: v\r\n"). */
static void hc_request(struct hc *c, const char *method, const char *path, const char *body,
                       size_t len, const char *extra)
{
    char head[1024];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: test\r\n%sContent-Length: %zu\r\n\r\n",
                     method, path, extra ? extra : "", body ? len : 0);
    hc_send(c, head, (size_t)n);
    if (body && len)
        hc_send(c, body, len);
}

/* More bytes into c->buf within the deadline; false on EOF or timeout. */
static bool hc_fill(struct hc *c, uint64_t deadline)
{
    if (c->n == sizeof c->buf)
        return false;
    uint64_t now = ms_now();
    if (now >= deadline)
        return false;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, (int)(deadline - now)) <= 0)
        return false;
    ssize_t r = recv(c->fd, c->buf + c->n, sizeof c->buf - c->n, 0);
    if (r <= 0)
        return false;
    c->n += (size_t)r;
    return true;
}

static void hc_take(struct hc *c, size_t k)
{
    memmove(c->buf, c->buf + k, c->n - k);
    c->n -= k;
}

/* A line (CRLF-ended) from the connection, without its CRLF. */
static bool hc_line(struct hc *c, char *out, size_t cap, uint64_t deadline)
{
    char *e;
    while (!(e = memmem(c->buf, c->n, "\r\n", 2)))
        if (!hc_fill(c, deadline))
            return false;
    size_t len = (size_t)(e - c->buf);
    if (len >= cap)
        len = cap - 1;
    memcpy(out, c->buf, len);
    out[len] = '\0';
    hc_take(c, (size_t)(e - c->buf) + 2);
    return true;
}

/* k bytes of body into r (in pieces: k may be larger than c->buf). */
static bool hc_bytes(struct hc *c, struct reply *r, size_t k, uint64_t deadline)
{
    r->body = realloc(r->body, r->len + k + 1);
    while (k) {
        if (c->n == 0 && !hc_fill(c, deadline))
            return false;
        size_t m = c->n < k ? c->n : k;
        memcpy(r->body + r->len, c->buf, m);
        r->len += m;
        r->body[r->len] = '\0';
        hc_take(c, m);
        k -= m;
    }
    return true;
}

/* Reads one reply (to a request other than HEAD); false on EOF or timeout. */
static bool hc_reply(struct hc *c, struct reply *r, int ms)
{
    uint64_t deadline = ms_now() + (uint64_t)ms;
    memset(r, 0, sizeof *r);
    r->body = calloc(1, 1);
    char line[4096];
    if (!hc_line(c, line, sizeof line, deadline) || sscanf(line, "HTTP/1.%*d %d", &r->code) != 1)
        return false;
    long clen = -1;
    bool chunked = false;
    size_t hl = 0;
    for (;;) {
        if (!hc_line(c, line, sizeof line, deadline))
            return false;
        if (!line[0])
            break;
        for (char *p = line; *p && *p != ':'; p++)
            *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        hl += (size_t)snprintf(r->head + hl, sizeof r->head - hl, "%s\n", line);
        if (hl >= sizeof r->head)
            hl = sizeof r->head - 1;
        if (strncmp(line, "content-length:", 15) == 0)
            clen = atol(line + 15);
        if (strstr(line, "transfer-encoding:") == line && strstr(line, "chunked"))
            chunked = true;
    }
    if (!chunked && clen < 0 && strstr(r->head, "connection: close")) {
        /* Delimited by the end of the connection. */
        while (hc_fill(c, deadline) || c->n)
            if (!hc_bytes(c, r, c->n, deadline))
                return false;
        return true;
    }
    if (!chunked)
        return hc_bytes(c, r, clen > 0 ? (size_t)clen : 0, deadline);
    for (;;) {
        if (!hc_line(c, line, sizeof line, deadline))
            return false;
        size_t k = strtoul(line, NULL, 16);
        if (k == 0)
            return hc_line(c, line, sizeof line, deadline); /* the last CRLF */
        if (!hc_bytes(c, r, k, deadline))
            return false;
        char crlf[4];
        if (!hc_line(c, crlf, sizeof crlf, deadline))
            return false;
    }
}

/* True when the peer closed the connection within ms (and sent nothing more). */
static bool hc_closed(struct hc *c, int ms)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, ms) <= 0)
        return false;
    char b;
    return recv(c->fd, &b, 1, 0) == 0;
}

static void hc_close(struct hc *c)
{
    close(c->fd);
}

static void reply_free(struct reply *r)
{
    free(r->body);
    r->body = NULL;
}

/* A header's value in r ("" when absent). */
static inline const char *reply_header(const struct reply *r, const char *name, char *out,
                                       size_t cap)
{
    char key[64];
    snprintf(key, sizeof key, "%s:", name);
    const char *h = strstr(r->head, key);
    out[0] = '\0';
    if (h) {
        h += strlen(key);
        while (*h == ' ')
            h++;
        size_t n = strcspn(h, "\n");
        if (n >= cap)
            n = cap - 1;
        memcpy(out, h, n);
        out[n] = '\0';
    }
    return out;
}

/* One request on a connection of its own; the reply in *r. */
static void http(int port, const char *method, const char *path, const char *body,
                 const char *extra, struct reply *r)
{
    struct hc c;
    if (hc_connect(&c, port) != 0)
        fail_msg("connect to port %d: %s", port, strerror(errno));
    hc_request(&c, method, path, body, body ? strlen(body) : 0, extra);
    if (!hc_reply(&c, r, 30000))
        fail_msg("%s %s: no reply", method, path);
    hc_close(&c);
}

/* Asserts code and body (exactly, or a part of it with part); NULL: any. */
static void check_reply_at(const struct reply *r, int code, const char *want, const char *part,
                           const char *file, int line)
{
    if (r->code == code && (!want || strcmp(r->body, want) == 0) &&
        (!part || strstr(r->body, part)))
        return;
    print_error("%s:%d: got %d '%s', want %d '%s'\n", file, line, r->code, r->body, code,
                want ? want : part ? part : "");
    _fail(file, line);
}
#define check_reply(r, code, want, part) check_reply_at(r, code, want, part, __FILE__, __LINE__)

/* METHOD path with body: asserts the reply's code and its body (exactly want,
 * or with part in it; NULL: not checked). */
static void expect_reply(int port, const char *method, const char *path, const char *body,
                         int code, const char *want, const char *part)
{
    struct reply r;
    http(port, method, path, body, NULL, &r);
    check_reply(&r, code, want, part);
    reply_free(&r);
}

static inline void expect(int port, const char *method, const char *path, const char *body,
                          int code, const char *part)
{
    expect_reply(port, method, path, body, code, NULL, part);
}

/* Asks GET path until its body has has in it and not lacks (NULL: no such
 * condition), for 30 s at most; fails naming what never came. */
static inline void await_body(int port, const char *path, const char *has, const char *lacks,
                              const char *what)
{
    uint64_t end = ms_now() + 30000;
    for (;;) {
        struct reply r;
        http(port, "GET", path, NULL, NULL, &r);
        bool ok = strstr(r.body, has) && (!lacks || !strstr(r.body, lacks));
        reply_free(&r);
        if (ok)
            return;
        if (ms_now() > end)
            fail_msg("%s never came", what);
        usleep(10000);
    }
}

#endif /* SERVEUTIL_H */
