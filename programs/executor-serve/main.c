/*
 * executor-serve: a classifier plugin as an HTTP service.
 *
 *     executor-serve --plugin ./libwordtable.so --spec table=words.txt,column=text,id=id \
 *                    --header id,text --listen 127.0.0.1:8080 --backend fork --workers 4 \
 *                    --admin unix:/run/executor-serve/admin.sock
 *
 * This file owns the start (plugin, context, executor, the public listener
 * and the admin one), the event loop with its signals, the health verdict,
 * and the shutdown; options.c the command line and the manual. One thread
 * runs the loop; the library's workers run the records; a reload thread
 * builds and swaps contexts (reload.c).
 */
#include "serve.h"
#include "parse_num.h"

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------- */
/* Listening                                                                 */
/* ------------------------------------------------------------------------- */

/*
 * A Unix socket at path, reachable by our user only (0600; its directory
 * decides who reaches it: a systemd RuntimeDirectory=, say). A socket left
 * there by an earlier run is replaced; any other file is not touched.
 */
static int listen_unix(struct listener *l, const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) {
        serve_log("--admin unix:%s: the path is too long", path);
        return -1;
    }
    strcpy(a.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            serve_log("--admin unix:%s: a file is there and it is not a socket", path);
            return -1;
        }
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    mode_t old = umask(0177);
    int rc = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&a, sizeof a);
    umask(old);
    if (rc != 0 || listen(fd, 64) != 0) {
        serve_log("--admin unix:%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    l->unix_path = strdup(path);
    snprintf(l->name, sizeof l->name, "unix:%s", path);
    return fd;
}

/* l->name: the address fd listens on (HOST:PORT, [V6]:PORT, unix:PATH). */
static void listener_name(struct listener *l, int fd, const char *fallback)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char hbuf[NI_MAXHOST], pbuf[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        snprintf(l->name, sizeof l->name, "%s", fallback);
    else if (ss.ss_family == AF_UNIX)
        snprintf(l->name, sizeof l->name, "unix:%.*s",
                 (int)(sl > offsetof(struct sockaddr_un, sun_path)
                           ? sl - offsetof(struct sockaddr_un, sun_path)
                           : 0),
                 ((struct sockaddr_un *)&ss)->sun_path);
    else if (getnameinfo((struct sockaddr *)&ss, sl, hbuf, sizeof hbuf, pbuf, sizeof pbuf,
                         NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        snprintf(l->name, sizeof l->name, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", hbuf,
                 pbuf);
    else
        snprintf(l->name, sizeof l->name, "%s", fallback);
}

/* Binds HOST:PORT ([V6]:PORT, :PORT, PORT). The socket, or -1 with a message. */
static int listen_on(struct listener *l, const char *opt, const char *spec)
{
    char host[256] = "127.0.0.1", port[16];
    const char *colon = strrchr(spec, ':');
    if (!colon) {
        snprintf(port, sizeof port, "%s", spec);
    } else {
        size_t hl = (size_t)(colon - spec);
        const char *h = spec;
        if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
            h++;
            hl -= 2;
        }
        if (hl >= sizeof host) {
            serve_log("--%s: host too long: %s", opt, spec);
            return -1;
        }
        if (hl) {
            memcpy(host, h, hl);
            host[hl] = '\0';
        }
        snprintf(port, sizeof port, "%s", colon + 1);
    }
    unsigned long long p;
    if (prog_parse_uint(port, 65535, &p) != 0) {
        serve_log("--%s: expected HOST:PORT with a port in 0..65535, not '%s'", opt, spec);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai;
    int g = getaddrinfo(host, port, &hints, &ai);
    if (g) {
        serve_log("cannot listen on %s: %s", spec, gai_strerror(g));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        serve_log("cannot listen on %s: %s%s", spec, strerror(e),
                  e == EADDRINUSE    ? " (another server listens there: stop it, or pick "
                                       "another address)"
                  : e == EACCES      ? " (ports below 1024 need privileges)"
                  : e == EADDRNOTAVAIL ? " (not an address of this machine)"
                                     : "");
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    listener_name(l, fd, spec);
    return fd;
}

/*
 * The public listener systemd passed (a socket unit): its copy stays with
 * systemd, which keeps it listening while the server restarts. The socket,
 * -1 when none was passed, or -2 with a message.
 */
static int listen_inherited(struct listener *l)
{
    int fd = systemd_listener();
    if (fd >= 0) {
        l->inherited = true;
        listener_name(l, fd, "the socket from systemd");
    }
    return fd;
}

static void listener_close(struct listener *l)
{
    if (l->bound) {
        /* shutdown() first: with --inherit-fds a worker process forked from
         * us holds a copy of the listening socket, and only this stops it
         * listening for all. Not systemd's socket: it must go on listening
         * for the next server (connections wait in its backlog). */
        if (!l->inherited)
            shutdown(evhttp_bound_socket_get_fd(l->bound), SHUT_RDWR);
        evhttp_del_accept_socket(l->http, l->bound);
        l->bound = NULL;
    }
}

/* ------------------------------------------------------------------------- */
/* Signals and shutdown                                                      */
/* ------------------------------------------------------------------------- */

void serve_maybe_exit(struct serve *s)
{
    if (s->draining && s->open == 0 && s->writing == 0 && !reload_busy(s))
        event_base_loopbreak(s->base);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct serve *s = arg;
    serve_log("--graceful-timeout (%u s) passed with %llu requests still open: exiting",
              s->o.graceful_timeout_s, (unsigned long long)s->open);
    s->exit_code = 1;
    event_base_loopbreak(s->base);
}

void serve_drain_start(struct serve *s, const char *why)
{
    if (s->draining)
        return;
    s->draining = true;
    listener_close(&s->pub);
    listener_close(&s->adm);
    reload_drain(s);
    serve_log("shutting down (%s): %llu requests in flight", why, (unsigned long long)s->open);
    char status[128];
    snprintf(status, sizeof status, "shutting down (%s): %llu requests in flight", why,
             (unsigned long long)s->open);
    systemd_stopping(status);
    struct timeval tv = {(time_t)s->o.graceful_timeout_s, 0};
    s->ev_deadline = evtimer_new(s->base, on_deadline, s);
    if (s->ev_deadline)
        event_add(s->ev_deadline, &tv);
    serve_maybe_exit(s);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct serve *s = arg;
    if (sig == SIGHUP) {
        if (!s->draining)
            reload_request(s, NULL, 0, NULL);
        return;
    }
    if (s->draining) {
        serve_log("%s again: exiting now", sig == SIGINT ? "SIGINT" : "SIGTERM");
        s->exit_code = 1;
        event_base_loopbreak(s->base);
        return;
    }
    serve_drain_start(s, sig == SIGINT ? "SIGINT" : "SIGTERM");
}

/* ------------------------------------------------------------------------- */
/* Health                                                                    */
/* ------------------------------------------------------------------------- */

/*
 * Why the server is not healthy, or NULL: a reload running past
 * --reload-timeout; every worker holding a record and none finished for
 * --unhealthy-after seconds; every record of the last --unhealthy-after
 * seconds failed (at least 10: crashed, timed out, worker errors).
 */
const char *serve_unhealthy(struct serve *s, char *buf, size_t cap)
{
    double secs;
    uint64_t now = serve_now_ns(), failed;
    if (reload_stuck(s, &secs)) {
        snprintf(buf, cap, "a reload has run for %.0f s, past --reload-timeout (%u s)", secs,
                 s->o.reload_timeout_s);
        return buf;
    }
    uint64_t limit = (uint64_t)s->o.unhealthy_after_s * 1000000000u;
    if (s->busy_since && now - s->busy_since >= limit &&
        (!s->last_result || now - s->last_result >= limit)) {
        snprintf(buf, cap, "no worker has been free for %.0f s (%llu records in flight)",
                 (double)(now - s->busy_since) / 1e9,
                 (unsigned long long)s->records_in_flight);
        return buf;
    }
    if (metrics_all_failing(s, s->o.unhealthy_after_s, &failed)) {
        snprintf(buf, cap, "all of the last %llu records failed (in %u s)",
                 (unsigned long long)failed, s->o.unhealthy_after_s);
        return buf;
    }
    return NULL;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct serve *s = arg;
    if (s->ticks++ % 4 == 0)
        metrics_tick(s); /* each second: it reads every fork worker's smaps */
    pump_timeouts(s);
    /* Every worker busy: as many records in flight as workers. */
    bool busy = s->workers && s->records_in_flight >= s->workers;
    if (!busy)
        s->busy_since = 0;
    else if (!s->busy_since)
        s->busy_since = serve_now_ns();
    if (s->wait_head)
        pump_kick(s); /* room is made by results, which wake the loop; this is a spare */
}

/* ------------------------------------------------------------------------- */
/* Start                                                                     */
/* ------------------------------------------------------------------------- */

static int load_plugin(struct serve *s)
{
    char why[512];
    if (exec_plugin_open(&s->pl, s->o.plugin, why, sizeof why) != 0) {
        serve_log("%s", why);
        return -1;
    }
    return 0;
}

/* The context and what runs it. 0, or -1 with a message. */
static int start_classifier(struct serve *s)
{
    const struct serve_opts *o = &s->o;
    if (o->header) {
        int rc = exec_csv_header_create(&s->hdr, o->header, strlen(o->header), o->delim);
        if (rc) {
            serve_log("--header: %s", exec_strerror(rc));
            return -1;
        }
        s->header_row = strdup(o->header);
        s->header_len = strlen(o->header);
    }
    s->spec = strdup(o->spec);
    if (!s->spec || (o->header && !s->header_row)) {
        serve_log("out of memory");
        return -1;
    }
    const char *name = s->pl->name ? s->pl->name : o->plugin;
    char err[512] = "";
    void *ctx = NULL;
    if (s->pl->ctx_build(o->spec, s->hdr, &ctx, err, sizeof err) != 0) {
        serve_log("plugin %s: bad spec '%s': %s", name, o->spec, err[0] ? err : "(no reason given)");
        return -1;
    }
    ops_wrap(s);
    if (o->inline_run) {
        if (inline_create(s, ctx, err, sizeof err) != 0) {
            serve_log("plugin %s: %s", name, err);
            s->pl->ctx_free(ctx);
            return -1;
        }
        return 0;
    }
    exec_options_t eo;
    memset(&eo, 0, sizeof eo);
    eo.workers = o->workers;
    eo.window = o->window;
    eo.batch = o->batch;
    eo.max_record = o->max_record;
    eo.max_result = o->max_result;
    eo.timeout_ms = o->timeout_ms;
    eo.start_timeout_ms = o->start_timeout_ms;
    eo.result_delay_us = 100; /* a request waits on its result: wake the loop soon */
    if (!o->inherit_fds)
        eo.flags |= EXEC_CLOSE_FDS; /* connections end when the loop closes them */
    int rc = exec_create(&s->ex, &s->ops, ctx, o->backend, &eo);
    if (rc == 0)
        return 0;
    s->pl->ctx_free(ctx); /* not released by a failed exec_create */
    if (rc == EXEC_ECAPS && o->backend == EXEC_THREADS)
        serve_log("plugin %s is not thread-safe: use --backend fork or auto", name);
    else if (rc == EXEC_ECAPS && o->backend == EXEC_FORK)
        serve_log("plugin %s is not fork-safe: use --backend threads or auto", name);
    else if (rc == EXEC_ECAPS)
        serve_log("plugin %s is neither thread-safe nor fork-safe", name);
    else if (rc == EXEC_ENOTSUP)
        serve_log("plugin %s needs a backend this build of libexecutor does not have (%s)", name,
                  exec_err_name(rc));
    else
        serve_log("cannot start the executor: %s (%s)", exec_strerror(rc), exec_err_name(rc));
    return -1;
}

static int start_loop(struct serve *s, int listen_fd, int admin_fd)
{
    s->base = event_base_new();
    /* Three priorities: results (0) before connections and the rest (1, the
     * default); 2 is unused. */
    if (s->base && event_base_priority_init(s->base, 3) != 0)
        return -1;
    if (!s->base || http_start(s, &s->pub, listen_fd) != 0 ||
        (admin_fd >= 0 && http_start(s, &s->adm, admin_fd) != 0) || metrics_create(s) != 0 ||
        reload_start(s) != 0)
        return -1;
    pump_start(s);
    static const int sigs[3] = {SIGHUP, SIGTERM, SIGINT};
    for (int i = 0; i < 3; i++) {
        s->ev_sig[i] = evsignal_new(s->base, sigs[i], on_signal, s);
        if (!s->ev_sig[i] || event_add(s->ev_sig[i], NULL) != 0)
            return -1;
    }
    struct timeval sec = {0, 250000};
    s->ev_tick = event_new(s->base, -1, EV_PERSIST, on_tick, s);
    if (!s->ev_tick || event_add(s->ev_tick, &sec) != 0)
        return -1;
    if (s->o.access_log && access_log_open(s, s->o.access_log) != 0) {
        serve_log("--access-log %s: %s", s->o.access_log, strerror(errno));
        return -2;
    }
    return 0;
}

/*
 * The end, with exit status code. A reload thread that cannot be joined (a
 * plugin's ctx_build that never returned) is left running: everything else
 * is let go (not the plugin, whose code it runs), and the process ends with
 * _exit(). A swap still running (the loop only ends then past
 * --graceful-timeout, or on a second signal) keeps the executor: the
 * process ends without destroying it (fork workers die with their parent).
 */
static int stop(struct serve *s, int code)
{
    s->stopping = true;
    if (reload_in_swap(s)) {
        serve_log("a reload is still swapping contexts: leaving without stopping the workers");
        access_log_close(s);
        if (s->adm.unix_path)
            unlink(s->adm.unix_path);
        fflush(NULL);
        _exit(code);
    }
    if (s->pub.http)
        evhttp_free(s->pub.http); /* closes every connection (their conns go with them) */
    if (s->adm.http)
        evhttp_free(s->adm.http);
    if (s->adm.unix_path)
        unlink(s->adm.unix_path);
    free(s->adm.unix_path);
    bool joined = reload_stop(s);
    if (!joined)
        serve_log("a reload's context build has not returned: leaving it running");
    exec_destroy(s->ex); /* releases the context serving now */
    inline_destroy(s->inl);
    for (uint32_t i = 0; i < s->nslots; i++) {
        struct req *r = s->slots[i];
        if (r) {
            free(r->recs);
            body_free(r);
            if (r->out)
                evbuffer_free(r->out);
            if (r->held)
                for (uint32_t k = 0; k < s->hold_cap; k++)
                    free(r->held[k].data);
            free(r->held);
            free(r);
        }
    }
    free(s->slots);
    free(s->free_slots);
    access_log_close(s);
    for (int i = 0; i < 3; i++)
        if (s->ev_sig[i])
            event_free(s->ev_sig[i]);
    struct event *evs[] = {s->ev_exec, s->ev_flush, s->ev_tick, s->ev_deadline, s->ev_step};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            event_free(evs[i]);
    if (s->base)
        event_base_free(s->base);
    free(s->conns);
    metrics_free(s);
    free(s->header_row);
    free(s->spec);
    if (!joined) {
        /* (The build still uses the header and the plugin.) */
        fflush(NULL);
        _exit(code);
    }
    exec_csv_header_free(s->hdr);
    exec_plugin_close(s->pl);
    return code;
}

/* --max-connections by default: what the descriptor limit leaves after the
 * server's own (the executor's, the log's, the listeners'). */
static unsigned default_max_connections(const struct serve *s, rlim_t nofile)
{
    unsigned workers = s->o.workers ? s->o.workers : 64;
    rlim_t reserve = 64 + 8 * (rlim_t)workers;
    rlim_t n = nofile > reserve + 16 ? nofile - reserve : 16;
    return n > 1000000 ? 1000000 : (unsigned)n;
}

int main(int argc, char **argv)
{
    static struct serve srv;
    struct serve *s = &srv;
    bool help = false;
    int rc = serve_options(s, argc, argv, &help);
    if (rc)
        return rc;
    if (s->o.reload && !help)
        return client_reload(s->o.reload, s->o.reload_timeout_s);
    if (s->o.plugin && load_plugin(s) != 0) {
        exec_plugin_close(s->pl);
        return 1;
    }
    if (help) {
        serve_manual(stdout);
        if (s->pl)
            printf("\nplugin %s: spec %s\n", s->pl->name ? s->pl->name : s->o.plugin,
                   s->pl->usage ? s->pl->usage : "(not described)");
        exec_plugin_close(s->pl);
        return 0;
    }
    if (!s->o.plugin || !s->o.spec) {
        serve_log("--plugin and --spec are required");
        fprintf(stderr, "Try '" PROG " --help'.\n");
        exec_plugin_close(s->pl);
        return 2;
    }
    s->hold_cap = s->o.window >= 2 ? (s->o.window / 2 < 4096 ? s->o.window / 2 : 4096) : 1;
    s->started_ns = serve_wall_ns();
    signal(SIGPIPE, SIG_IGN); /* a client that left is an error code, not a signal */
    /* A descriptor per connection: as many as the hard limit allows (a
     * listener that runs out of descriptors spins on accept()). */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    if (!s->o.max_connections)
        s->o.max_connections =
            default_max_connections(s, getrlimit(RLIMIT_NOFILE, &nofile) == 0 ? nofile.rlim_cur : 1024);

    /* The ports first: a port in use fails before a large context is built. */
    int fd = listen_inherited(&s->pub), afd = -1;
    if (fd == -1)
        fd = listen_on(&s->pub, "listen", s->o.listen);
    if (fd >= 0 && s->o.admin) {
        afd = strncmp(s->o.admin, "unix:", 5) == 0 ? listen_unix(&s->adm, s->o.admin + 5)
                                                   : listen_on(&s->adm, "admin", s->o.admin);
        s->adm.admin = true;
    }
    if (fd < 0 || (s->o.admin && afd < 0) || start_classifier(s) != 0) {
        if (fd >= 0)
            close(fd);
        if (afd >= 0)
            close(afd);
        return stop(s, 1);
    }
    rc = start_loop(s, fd, afd);
    if (rc) {
        if (rc == -1)
            serve_log("cannot start the event loop: %s", strerror(errno));
        if (!s->pub.bound)
            close(fd);
        if (afd >= 0 && !s->adm.bound)
            close(afd);
        return stop(s, 1);
    }
    exec_options_t eo;
    if (s->ex) {
        exec_get_options(s->ex, &eo);
        s->workers = eo.workers;
    }
    if (s->adm.bound)
        serve_log("admin on %s (POST /admin/reload%s)", s->adm.name,
                  s->o.admin_spec ? ", a spec in the body allowed" : "");
    serve_log("listening on %s (plugin %s, backend %s, %u workers, window %u, timeout %u ms, "
              "max %u connections)",
              s->pub.name, s->pl->name ? s->pl->name : s->o.plugin,
              s->inl ? "inline" : exec_backend_name(exec_backend(s->ex)), s->ex ? eo.workers : 0,
              s->o.window, s->o.timeout_ms, s->o.max_connections);
    char status[sizeof s->pub.name + 64];
    snprintf(status, sizeof status, "serving generation 0 on %.127s", s->pub.name);
    systemd_ready(status);
    event_base_dispatch(s->base);
    if (!s->exit_code && s->draining)
        serve_log("all requests answered: bye");
    return stop(s, s->exit_code);
}
