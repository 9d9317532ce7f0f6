/*
 * executor-serve --reload ADDR: the client side of POST /admin/reload, for a
 * service manager's reload command (systemd's ExecReload=). It asks the
 * server whose admin listener is ADDR (unix:PATH or HOST:PORT) to reload,
 * waits for the verdict and says it: exit 0 once the new context serves, 1
 * when the reload failed (the old context still serves) or the server could
 * not be reached. Unlike a SIGHUP, the caller learns when the reload is done
 * and whether it worked.
 */
#include "serve.h"
#include "parse_num.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* A connected socket to addr, or -1 with a message. */
static int dial(const char *addr)
{
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        if (strlen(addr + 5) >= sizeof a.sun_path) {
            serve_log("--reload %s: the path is too long", addr);
            return -1;
        }
        strcpy(a.sun_path, addr + 5);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            serve_log("--reload %s: %s", addr, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        return fd;
    }
    char host[256], port[16];
    const char *colon = strrchr(addr, ':');
    size_t hl = colon ? (size_t)(colon - addr) : 0;
    const char *h = addr;
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    unsigned long long p;
    if (!colon || !hl || hl >= sizeof host || strlen(colon + 1) >= sizeof port ||
        prog_parse_uint(colon + 1, 65535, &p) != 0 || p == 0) {
        serve_log("--reload: expected unix:PATH or HOST:PORT, not '%s'", addr);
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    snprintf(port, sizeof port, "%s", colon + 1);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai;
    int g = getaddrinfo(host, port, &hints, &ai);
    if (g) {
        serve_log("--reload %s: %s", addr, gai_strerror(g));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        serve_log("--reload %s: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

int client_reload(const char *addr, unsigned reload_timeout_s)
{
    int fd = dial(addr);
    if (fd < 0)
        return 1;
    /* The server answers by --reload-timeout (504 past it): a little more. */
    struct timeval tv = {(time_t)reload_timeout_s + 10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    static const char req[] = "POST /admin/reload HTTP/1.1\r\nHost: localhost\r\n"
                              "Content-Length: 0\r\nConnection: close\r\n\r\n";
    size_t off = 0;
    while (off < sizeof req - 1) {
        ssize_t n = write(fd, req + off, sizeof req - 1 - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            serve_log("--reload %s: %s", addr, n < 0 ? strerror(errno) : "closed");
            close(fd);
            return 1;
        }
        off += (size_t)n;
    }
    char buf[8192];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            serve_log("--reload %s: no answer: %s", addr,
                      errno == EAGAIN ? "timed out" : strerror(errno));
            close(fd);
            return 1;
        }
        if (n == 0 || (len += (size_t)n) == sizeof buf - 1)
            break;
    }
    close(fd);
    buf[len] = '\0';
    int code = 0;
    const char *body = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*[01] %d", &code) != 1 || !body) {
        serve_log("--reload %s: not an HTTP reply", addr);
        return 1;
    }
    body += 4;
    size_t bl = strlen(body);
    while (bl && (body[bl - 1] == '\n' || body[bl - 1] == '\r'))
        bl--;
    char esc[1024];
    serve_escape(esc, sizeof esc, body, bl);
    if (code == 200) {
        printf("%s\n", esc);
        return 0;
    }
    serve_log("reload: %d %s", code, esc);
    return 1;
}
