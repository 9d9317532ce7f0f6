/*
 * executor-serve under systemd (docs/serve.md, "As a systemd service").
 *
 * The public listener may come from a socket unit (socket activation,
 * sd_listen_fds): systemd holds it, so that a restart refuses no connection;
 * they wait in its backlog for the next server. The service manager is told
 * (sd_notify) READY=1 once the server serves, RELOADING=1 with
 * MONOTONIC_USEC when a reload starts and READY=1 when it has ended (swapped
 * in or refused), STOPPING=1 when it drains, each with a STATUS= line.
 *
 * Built without libsystemd, none of this is done: the notifications are not
 * sent, and a socket passed through LISTEN_FDS is refused with a message.
 */
#include "serve.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef EXEC_SERVE_SYSTEMD
#include <systemd/sd-daemon.h>

int systemd_listener(void)
{
    int n = sd_listen_fds(1); /* 1: unsets LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES */
    if (n < 0) {
        serve_log("the sockets systemd passed (LISTEN_FDS): %s", strerror(-n));
        return -2;
    }
    if (n == 0)
        return -1;
    if (n > 1) {
        serve_log("systemd passed %d sockets; executor-serve takes one, its public listener "
                  "(the admin listener is --admin)",
                  n);
        return -2;
    }
    int fd = SD_LISTEN_FDS_START;
    if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
        serve_log("the socket systemd passed is not a listening stream socket "
                  "(the socket unit needs ListenStream=)");
        return -2;
    }
    /* (Shared with systemd's copy, which is non-blocking already.) */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        serve_log("the socket systemd passed: %s", strerror(errno));
        return -2;
    }
    return fd;
}

static void say(const char *state, const char *status)
{
    char esc[256];
    serve_escape(esc, sizeof esc, status, strlen(status));
    sd_notifyf(0, "%s\nSTATUS=%s", state, esc);
}

void systemd_ready(const char *status)
{
    say("READY=1", status);
}

void systemd_reloading(const char *status)
{
    char state[64];
    snprintf(state, sizeof state, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)(serve_now_ns() / 1000));
    say(state, status);
}

void systemd_stopping(const char *status)
{
    say("STOPPING=1", status);
}

#else /* no libsystemd */

int systemd_listener(void)
{
    if (!getenv("LISTEN_FDS"))
        return -1;
    serve_log("LISTEN_FDS is set, but this executor-serve was built without libsystemd: "
              "it cannot take a socket from systemd");
    return -2;
}

void systemd_ready(const char *status)
{
    (void)status;
}

void systemd_reloading(const char *status)
{
    (void)status;
}

void systemd_stopping(const char *status)
{
    (void)status;
}

#endif
