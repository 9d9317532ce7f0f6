/*
 * executor-serve as systemd runs it, without systemd: this program plays the
 * service manager of executor-serve@.service and its socket unit. It binds
 * the public listener and a notify socket, starts the server with
 * LISTEN_FDS, LISTEN_PID, NOTIFY_SOCKET and JOURNAL_STREAM set as systemd
 * sets them, and checks that
 *   - it serves on the socket it was passed (its --listen is an address it
 *     could not bind) and says READY=1;
 *   - a SIGHUP and `executor-serve --reload` (the unit's ExecReload=) each
 *     give RELOADING=1 with MONOTONIC_USEC, then READY=1 with the new
 *     generation, and --reload prints the verdict and exits 0 (1 when the
 *     server cannot be reached);
 *   - its messages on the journal's stream carry no name of their own, and
 *     do elsewhere;
 *   - a restart loses no connection: on SIGTERM it says STOPPING=1 and
 *     drains, the socket (held here, as systemd holds it) keeps listening,
 *     and the connections made while one server leaves and the next starts
 *     are all answered by the next;
 *   - two sockets passed are refused.
 * Plain C with no library but libc, so that it builds wherever the package
 * is installed (the packages' test runs it in a fresh root).
 *
 * Usage: sd_check SERVE PLUGIN WORDS
 * Exit status: 0 passed, 1 failed, 77 (skipped) when SERVE was built
 * without libsystemd.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 60000 /* for anything the server does: sanitized builds are slow */

struct server {
    pid_t pid;
    int err_fd;
    char err[65536];
    size_t err_len;
};

static const char *serve, *plugin;
static char spec[4200], dir[32], notify_path[64], admin_path[64], admin_arg[80];
static int notify_fd = -1;
static struct server *live[2];

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000;
}

static void read_err(struct server *sv)
{
    ssize_t n;
    while (sv->err_fd >= 0 && sv->err_len < sizeof sv->err - 1 &&
           (n = read(sv->err_fd, sv->err + sv->err_len, sizeof sv->err - 1 - sv->err_len)) > 0)
        sv->err_len += (size_t)n;
    sv->err[sv->err_len] = '\0';
}

static void cleanup(void)
{
    for (int i = 0; i < 2; i++)
        if (live[i] && live[i]->pid > 0) {
            kill(live[i]->pid, SIGKILL);
            waitpid(live[i]->pid, NULL, 0);
            live[i]->pid = 0;
        }
    unlink(notify_path);
    unlink(admin_path);
    rmdir(dir);
}

static void __attribute__((format(printf, 1, 2), noreturn)) fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sd_check: FAILED: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    for (int i = 0; i < 2; i++)
        if (live[i]) {
            read_err(live[i]);
            fprintf(stderr, "--- the server's stderr:\n%s---\n", live[i]->err);
        }
    cleanup();
    exit(1);
}

static void ok(const char *what)
{
    printf("sd_check: ok: %s\n", what);
    fflush(stdout);
}

/* A listening TCP socket on 127.0.0.1, its port in *port. */
static int listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0)
        fail("listener: %s", strerror(errno));
    *port = ntohs(a.sin_port);
    return fd;
}

/*
 * Starts the server with nfds copies of lfd from fd 3 on, as systemd passes
 * sockets; JOURNAL_STREAM names its stderr when journal is set.
 */
static void start(struct server *sv, int lfd, int nfds, bool journal)
{
    memset(sv, 0, sizeof *sv);
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        fail("pipe: %s", strerror(errno));
    struct stat st;
    char js[64] = "";
    if (fstat(p[1], &st) == 0)
        snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev,
                 (unsigned long long)st.st_ino);
    sv->pid = fork();
    if (sv->pid < 0)
        fail("fork: %s", strerror(errno));
    if (sv->pid == 0) {
        dup2(p[1], 2);
        for (int i = 0; i < nfds; i++) {
            if (lfd == 3 + i)
                fcntl(lfd, F_SETFD, 0);
            else
                dup2(lfd, 3 + i);
        }
        char n[16], pid[16];
        snprintf(n, sizeof n, "%d", nfds);
        snprintf(pid, sizeof pid, "%d", (int)getpid());
        setenv("LISTEN_FDS", n, 1);
        setenv("LISTEN_PID", pid, 1);
        setenv("NOTIFY_SOCKET", notify_path, 1);
        if (journal)
            setenv("JOURNAL_STREAM", js, 1);
        else
            unsetenv("JOURNAL_STREAM");
        /* --listen names an address no machine has: only the passed socket works. */
        execl(serve, serve, "--plugin", plugin, "--spec", spec, "--header", "id,text",
              "--backend", "fork", "--workers", "2", "--admin", admin_arg, "--listen",
              "192.0.2.1:9", "--graceful-timeout", "20", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    sv->err_fd = p[0];
    fcntl(sv->err_fd, F_SETFL, O_NONBLOCK);
    live[live[0] && live[0] != sv ? 1 : 0] = sv;
}

/* The server's exit status, waiting ms at most (-1: still running). */
static int wait_exit(struct server *sv, int ms)
{
    uint64_t end = now_us() + (uint64_t)ms * 1000;
    int st;
    for (;;) {
        read_err(sv);
        pid_t r = waitpid(sv->pid, &st, WNOHANG);
        if (r == sv->pid) {
            sv->pid = 0;
            read_err(sv);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (now_us() > end)
            return -1;
        usleep(10000);
    }
}

/*
 * Receives notifications until one has field (e.g. "READY=1") among its
 * lines; that one is copied to out. Fails past WAIT_MS, or if the server
 * exits first.
 */
static void await_notify(struct server *sv, const char *field, char *out, size_t cap)
{
    uint64_t end = now_us() + (uint64_t)WAIT_MS * 1000;
    char buf[4096];
    for (;;) {
        struct pollfd pfd = {.fd = notify_fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) == 1) {
            ssize_t n = recv(notify_fd, buf, sizeof buf - 1, 0);
            if (n > 0) {
                buf[n] = '\0';
                printf("sd_check: notify: %.*s\n", (int)strcspn(buf, "\n") , buf);
                char *line = buf;
                for (;;) {
                    size_t len = strcspn(line, "\n");
                    if (len == strlen(field) && strncmp(line, field, len) == 0) {
                        snprintf(out, cap, "%s", buf);
                        return;
                    }
                    if (!line[len])
                        break;
                    line += len + 1;
                }
            }
        }
        read_err(sv);
        if (sv->pid > 0 && waitpid(sv->pid, NULL, WNOHANG) == sv->pid) {
            sv->pid = 0;
            fail("the server exited before it said %s", field);
        }
        if (now_us() > end)
            fail("no %s in %d ms", field, WAIT_MS);
    }
}

/* A value of a notification: the text after "NAME=" on its line. */
static const char *value(const char *msg, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *line = msg; *line;) {
        size_t len = strcspn(line, "\n");
        if (len > nl && strncmp(line, name, nl) == 0 && line[nl] == '=') {
            snprintf(out, cap, "%.*s", (int)(len - nl - 1), line + nl + 1);
            return out;
        }
        line += len + (line[len] ? 1 : 0);
    }
    fail("no %s= in the notification '%s'", name, msg);
}

/* A client that sent POST /classify with body on a new connection. */
static int client_send(int port, const char *body)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        fail("connect to 127.0.0.1:%d: %s (refused: nothing listens there)", port,
             strerror(errno));
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     strlen(body), body);
    if (write(fd, req, (size_t)n) != n)
        fail("write: %s", strerror(errno));
    return fd;
}

/* Reads the reply on fd to its end; asserts 200 and a body of want. */
static void client_check(int fd, const char *want)
{
    char buf[4096];
    size_t len = 0;
    uint64_t end = now_us() + (uint64_t)WAIT_MS * 1000;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) == 1) {
            ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
            if (n < 0)
                fail("read a reply: %s", strerror(errno));
            if (n == 0)
                break;
            len += (size_t)n;
            if (len == sizeof buf - 1)
                break;
        }
        if (now_us() > end)
            fail("no whole reply in %d ms (%zu bytes so far)", WAIT_MS, len);
    }
    buf[len] = '\0';
    close(fd);
    const char *body = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.1 200 ", 13) != 0 || !body || strcmp(body + 4, want) != 0)
        fail("the reply was not 200 with '%s' but:\n%s", want, buf);
}

/* executor-serve --reload ADDR: its exit status, its stdout in out. */
static int run_reload(const char *addr, char *out, size_t cap)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        fail("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        execl(serve, serve, "--reload", addr, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    size_t len = 0;
    ssize_t n;
    while (len < cap - 1 && (n = read(p[0], out + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(p[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A reload's notifications: RELOADING=1 with a MONOTONIC_USEC of now, then READY=1. */
static void await_reload(struct server *sv, uint64_t t0, int gen)
{
    char msg[4096], v[64], want[64];
    await_notify(sv, "RELOADING=1", msg, sizeof msg);
    uint64_t t = strtoull(value(msg, "MONOTONIC_USEC", v, sizeof v), NULL, 10);
    if (t < t0 || t > now_us())
        fail("MONOTONIC_USEC=%llu is not a time of the reload (%llu..%llu)",
             (unsigned long long)t, (unsigned long long)t0, (unsigned long long)now_us());
    await_notify(sv, "READY=1", msg, sizeof msg);
    snprintf(want, sizeof want, "serving generation %d on", gen);
    if (!strstr(msg, want))
        fail("READY=1 after the reload does not say '%s': %s", want, msg);
}

static bool has_line_starting(const char *text, const char *prefix)
{
    for (const char *line = text; *line;) {
        if (strncmp(line, prefix, strlen(prefix)) == 0)
            return true;
        const char *nl = strchr(line, '\n');
        if (!nl)
            break;
        line = nl + 1;
    }
    return false;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: sd_check SERVE PLUGIN WORDS\n");
        return 2;
    }
    serve = argv[1];
    plugin = argv[2];
    snprintf(spec, sizeof spec, "table=%s,column=text,id=id", argv[3]);
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof dir, "/tmp/sd_check.XXXXXX");
    if (!mkdtemp(dir))
        fail("mkdtemp: %s", strerror(errno));
    snprintf(notify_path, sizeof notify_path, "%s/notify", dir);
    snprintf(admin_path, sizeof admin_path, "%s/admin.sock", dir);
    snprintf(admin_arg, sizeof admin_arg, "unix:%s", admin_path);
    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un na = {.sun_family = AF_UNIX};
    snprintf(na.sun_path, sizeof na.sun_path, "%s", notify_path);
    if (notify_fd < 0 || bind(notify_fd, (struct sockaddr *)&na, sizeof na) != 0)
        fail("the notify socket: %s", strerror(errno));
    int port, lfd = listener(&port);
    char msg[4096], want[128], out[512];

    /* Two sockets: refused (or, without libsystemd, any). */
    struct server a, b;
    start(&a, lfd, 2, false);
    int rc = wait_exit(&a, WAIT_MS);
    if (rc == 1 && strstr(a.err, "built without libsystemd")) {
        printf("sd_check: skipped: %s was built without libsystemd\n", serve);
        cleanup();
        return 77;
    }
    if (rc != 1 || !strstr(a.err, "systemd passed 2 sockets"))
        fail("two sockets passed: exit %d, not 1 with a message", rc);
    ok("two sockets passed are refused");

    /* One socket: served there, READY=1. */
    start(&a, lfd, 1, true);
    await_notify(&a, "READY=1", msg, sizeof msg);
    snprintf(want, sizeof want, "serving generation 0 on 127.0.0.1:%d", port);
    if (!strstr(msg, want))
        fail("READY=1 does not say '%s': %s", want, msg);
    client_check(client_send(port, "1,an apple and a pear"), "1,fruit\n");
    ok("READY=1, and it serves on the socket it was passed");

    /* Reloads: SIGHUP, then the unit's ExecReload= (--reload). */
    uint64_t t0 = now_us();
    kill(a.pid, SIGHUP);
    await_reload(&a, t0, 1);
    ok("SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 on generation 1");
    t0 = now_us();
    rc = run_reload(admin_arg, out, sizeof out);
    if (rc != 0 || strcmp(out, "reloaded: generation 2\n") != 0)
        fail("--reload %s: exit %d, said '%s'", admin_arg, rc, out);
    await_reload(&a, t0, 2);
    client_check(client_send(port, "2,owl"), "2,animal\n");
    char nowhere[80];
    snprintf(nowhere, sizeof nowhere, "unix:%s/none.sock", dir);
    if ((rc = run_reload(nowhere, out, sizeof out)) != 1)
        fail("--reload to no server: exit %d, not 1", rc);
    ok("--reload: the verdict, exit 0, RELOADING=1 then READY=1; exit 1 with no server");

    /* On the journal's stream: no name of its own. */
    read_err(&a);
    snprintf(want, sizeof want, "listening on 127.0.0.1:%d", port);
    if (!has_line_starting(a.err, want) || has_line_starting(a.err, "executor-serve: "))
        fail("on the journal's stream, a message is not its text alone");
    ok("messages on the journal's stream are their text alone");

    /* A restart, as the socket unit makes it: no connection refused or lost. */
    kill(a.pid, SIGTERM);
    await_notify(&a, "STOPPING=1", msg, sizeof msg);
    int waiting[9], nw = 0;
    for (; nw < 8; nw++) {
        char body[32];
        snprintf(body, sizeof body, "%d,pear", nw);
        waiting[nw] = client_send(port, body);
    }
    if ((rc = wait_exit(&a, WAIT_MS)) != 0)
        fail("after SIGTERM: exit %d, not 0", rc);
    waiting[nw++] = client_send(port, "8,pear"); /* between the two servers */
    start(&b, lfd, 1, false);
    await_notify(&b, "READY=1", msg, sizeof msg);
    for (int i = 0; i < nw; i++) {
        char body[32];
        snprintf(body, sizeof body, "%d,fruit\n", i);
        client_check(waiting[i], body);
    }
    ok("restart: STOPPING=1; the 9 connections made meanwhile answered by the next server");
    read_err(&b);
    if (!has_line_starting(b.err, "executor-serve: listening on"))
        fail("off the journal, a message does not start with the program's name");
    ok("messages elsewhere start with the program's name");
    kill(b.pid, SIGTERM);
    await_notify(&b, "STOPPING=1", msg, sizeof msg);
    if ((rc = wait_exit(&b, WAIT_MS)) != 0)
        fail("after SIGTERM: exit %d, not 0", rc);
    ok("SIGTERM: STOPPING=1, exit 0");
    cleanup();
    printf("sd_check: all passed\n");
    return 0;
}
