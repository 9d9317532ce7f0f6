/*
 * executor-serve: a classifier plugin as an HTTP service.
 *
 *     executor-serve --plugin ./libwordtable.so --spec table=words.txt,column=text,id=id \
 *                    --header id,text --listen 127.0.0.1:8080 --backend fork --workers 4
 *
 * This file owns the command line (--help is the manual), the start (plugin,
 * context, executor, listening socket), the event loop with its signals, and
 * the shutdown. One thread runs the loop; the library's workers run the
 * records; a reload thread builds and swaps contexts (reload.c).
 */
#include "serve.h"

#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void manual(FILE *f)
{
    fputs(
"usage: " PROG " --plugin PATH --spec SPEC [options]\n"
"\n"
"Serves the classifier in the plugin PATH over HTTP. Each record sent to\n"
"POST /classify runs through the plugin on a pool of workers (threads, or\n"
"forked processes that may crash, hang or be replaced without taking the\n"
"server down), and its result comes back in the reply. One thread runs an\n"
"event loop (libevent) for every connection; the library's descriptor\n"
"(exec_fd) sits in that loop, so no request holds a thread and nothing in\n"
"the loop blocks.\n"
"\n"
"Endpoints\n"
"  POST /classify      the body is one record (a CSV row or a line, by\n"
"                      --format): the reply is its result, 200, or its\n"
"                      error (below). A body of several records, or one that\n"
"                      starts with the --header row, is a document: the reply\n"
"                      is 200, streamed (chunked), one line per record in input\n"
"                      order; a record that failed gives the line\n"
"                      '!error STATUS record N NAME: text'.\n"
"  GET  /metrics       Prometheus text format: requests by status and their\n"
"                      duration, records by outcome, the library's latency\n"
"                      histogram and utilisation, respawns by cause, per-worker\n"
"                      PSS and private dirty memory (fork), context generation.\n"
"  GET  /healthz       200 'ok: ...', or 503 while draining or after the\n"
"                      executor gave up.\n"
"  POST /admin/reload  rebuilds the context from the spec serving now, or from\n"
"                      the spec in the body, and swaps it in while requests\n"
"                      run. 200 'reloaded: generation N'; 400 for a spec the\n"
"                      plugin refuses; 422 when the new context fails its\n"
"                      canary (fork: its worker_init or a replayed record\n"
"                      crashed or hung): the old context keeps serving.\n"
"  Other paths: 404; other methods: 405 with Allow.\n"
"\n"
"Status codes of a record (the body names the library's error)\n"
"  200 ok; 413 EXEC_E2BIG (record over --max-record; a body over --max-body\n"
"  gets 413 too); 422 EXEC_EUSER (the plugin refused the record); 500\n"
"  EXEC_ECRASHED (its worker died: the signal is named) or EXEC_ERESULT2BIG;\n"
"  502 EXEC_EWORKER (its worker wrote garbage); 504 EXEC_ERECTIMEOUT (ran\n"
"  past --timeout); 503 EXEC_EAGAIN with Retry-After (the window is full: the\n"
"  server refuses rather than queue without bound), or while shutting down.\n"
"\n"
"Options\n"
"  --plugin PATH         shared object exporting " EXEC_PLUGIN_SYMBOL "\n"
"  --spec SPEC           what the plugin builds its context from\n"
"  --listen HOST:PORT    where to listen (default 127.0.0.1:8080; port 0: any\n"
"                        free port, named on stderr; [::1]:PORT for IPv6)\n"
"  --backend B           auto (default: threads if the plugin is thread-safe,\n"
"                        else fork), threads, fork, or inline (process() in the\n"
"                        event loop, no workers: the baseline to compare with)\n"
"  --workers N           worker threads or processes (default: online CPUs)\n"
"  --worker-nice N       the workers' nice value, 0..19 (default 0): above 0,\n"
"                        the event loop runs first when they compete for a core\n"
"  --batch N             records a worker takes at once, at most (default 128;\n"
"                        the library sends heavy records in smaller batches)\n"
"  --window N            records in flight at most, over all requests (default\n"
"                        1024); a document keeps at most half of it\n"
"  --format F            csv (default) or lines: how a body is cut into records\n"
"  --header ROW          CSV: the column names, given to the plugin's ctx_build\n"
"                        (e.g. id,text); a body starting with this row is a\n"
"                        document\n"
"  --delim C             CSV field delimiter (default ,)\n"
"  --max-record N        largest record in bytes (default 65536)\n"
"  --max-result N        largest result in bytes (default 65536)\n"
"  --max-body N          largest request body in bytes (default 16777216)\n"
"  --timeout MS          fork: a record running longer is stopped (504);\n"
"                        default none\n"
"  --start-timeout MS    fork: a worker_init (at start, or a reload's canary)\n"
"                        running longer fails (default 10000)\n"
"  --idle-timeout S      close a connection idle this long (default 60)\n"
"  --graceful-timeout S  on SIGTERM, wait this long for requests in flight\n"
"                        (default 30)\n"
"  --retry-after S       the Retry-After of a 503 (default 1)\n"
"  --access-log FILE     one line per request to FILE ('-': stdout): time,\n"
"                        peer, method and target, status, bytes, seconds,\n"
"                        records, context generation\n"
"  --no-admin            no /admin/reload (SIGHUP still reloads)\n"
"  --help                this text, and the plugin's spec when --plugin is given\n"
"\n"
"Signals\n"
"  SIGHUP           reload from the spec serving now (as POST /admin/reload)\n"
"  SIGTERM, SIGINT  graceful shutdown: stop accepting, answer new requests on\n"
"                   open connections with 503, finish every request in flight,\n"
"                   exit 0. A second signal, or --graceful-timeout, exits 1 at\n"
"                   once.\n"
"\n"
"Exit status: 0 after a graceful shutdown; 1 when the server cannot start (a\n"
"plugin that does not load, a bad spec, a port in use) or was stopped before\n"
"its requests finished; 2 for a usage error.\n"
"\n"
"Example\n"
"  " PROG " --plugin ./libwordtable.so --header id,text \\\n"
"      --spec table=words.txt,column=text,id=id --listen 127.0.0.1:8080 &\n"
"  curl -s --data-binary '1,an apple and a pear' localhost:8080/classify\n"
"  1,fruit\n",
        f);
}

uint64_t serve_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void serve_log(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, PROG ": %s\n", line);
}

static int parse_size(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || v > max || *s == '-')
        return -1;
    *out = v;
    return 0;
}

/* A numeric option in lo..hi: 0, or -1 with a message. */
static int num_opt(const char *opt, const char *arg, unsigned long long lo,
                   unsigned long long hi, const char *what, unsigned long long *v)
{
    if (parse_size(arg, hi, v) != 0 || *v < lo) {
        serve_log("--%s: expected %s, not '%s'", opt, what, arg);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Listening                                                                 */
/* ------------------------------------------------------------------------- */

/* Binds HOST:PORT ([V6]:PORT, :PORT, PORT). The socket, or -1 with a message. */
static int listen_on(struct serve *s, const char *spec)
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
            serve_log("--listen: host too long: %s", spec);
            return -1;
        }
        if (hl) {
            memcpy(host, h, hl);
            host[hl] = '\0';
        }
        snprintf(port, sizeof port, "%s", colon + 1);
    }
    unsigned long long p;
    if (parse_size(port, 65535, &p) != 0) {
        serve_log("--listen: expected HOST:PORT with a port in 0..65535, not '%s'", spec);
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
                                       "another --listen)"
                  : e == EACCES      ? " (ports below 1024 need privileges)"
                  : e == EADDRNOTAVAIL ? " (not an address of this machine)"
                                     : "");
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char hbuf[NI_MAXHOST], pbuf[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
        getnameinfo((struct sockaddr *)&ss, sl, hbuf, sizeof hbuf, pbuf, sizeof pbuf,
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        snprintf(s->listen_name, sizeof s->listen_name, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
                 hbuf, pbuf);
    else
        snprintf(s->listen_name, sizeof s->listen_name, "%s", spec);
    return fd;
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
    if (s->bound) {
        /* shutdown() first: a worker process forked from us holds a copy of
         * the listening socket, and only this stops it listening for all. */
        shutdown(evhttp_bound_socket_get_fd(s->bound), SHUT_RDWR);
        evhttp_del_accept_socket(s->http, s->bound);
        s->bound = NULL;
    }
    serve_log("shutting down (%s): %llu requests in flight", why, (unsigned long long)s->open);
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

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct serve *s = arg;
    metrics_tick(s);
    if (s->wait_head)
        pump_kick(s); /* room is made by results, which wake the loop; this is a spare */
}

/* ------------------------------------------------------------------------- */
/* Start                                                                     */
/* ------------------------------------------------------------------------- */

/* Parses the command line into s->o: 0, or the exit status (usage: 2). */
static int options(struct serve *s, int argc, char **argv, bool *help)
{
    struct serve_opts *o = &s->o;
    o->listen = "127.0.0.1:8080";
    o->backend = EXEC_AUTO;
    o->window = 1024;
    o->format = SF_CSV;
    o->delim = ',';
    o->max_record = 65536;
    o->max_result = 65536;
    o->max_body = 16u << 20;
    o->idle_timeout_s = 60;
    o->graceful_timeout_s = 30;
    o->retry_after_s = 1;
    o->admin = true;
    enum { OPT_PLUGIN = 1, OPT_SPEC, OPT_LISTEN, OPT_BACKEND, OPT_WORKERS, OPT_WINDOW,
           OPT_FORMAT, OPT_HEADER, OPT_DELIM, OPT_MAXREC, OPT_MAXRES, OPT_MAXBODY, OPT_TIMEOUT,
           OPT_START, OPT_IDLE, OPT_GRACE, OPT_RETRY, OPT_LOG, OPT_NOADMIN, OPT_NICE, OPT_BATCH, OPT_HELP };
    static const struct option longopts[] = {
        {"plugin", required_argument, NULL, OPT_PLUGIN},
        {"spec", required_argument, NULL, OPT_SPEC},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"backend", required_argument, NULL, OPT_BACKEND},
        {"workers", required_argument, NULL, OPT_WORKERS},
        {"window", required_argument, NULL, OPT_WINDOW},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"header", required_argument, NULL, OPT_HEADER},
        {"delim", required_argument, NULL, OPT_DELIM},
        {"max-record", required_argument, NULL, OPT_MAXREC},
        {"max-result", required_argument, NULL, OPT_MAXRES},
        {"max-body", required_argument, NULL, OPT_MAXBODY},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"start-timeout", required_argument, NULL, OPT_START},
        {"idle-timeout", required_argument, NULL, OPT_IDLE},
        {"graceful-timeout", required_argument, NULL, OPT_GRACE},
        {"retry-after", required_argument, NULL, OPT_RETRY},
        {"access-log", required_argument, NULL, OPT_LOG},
        {"no-admin", no_argument, NULL, OPT_NOADMIN},
        {"worker-nice", required_argument, NULL, OPT_NICE},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;
    unsigned long long v;
    opterr = 0;
#define NUM(field, lo, hi, what)                                                              \
    do {                                                                                       \
        if (num_opt(longopts[idx].name, optarg, lo, hi, what, &v) != 0)                        \
            return 2;                                                                          \
        o->field = v;                                                                          \
    } while (0)
    int idx = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
        switch (c) {
        case OPT_PLUGIN: o->plugin = optarg; break;
        case OPT_SPEC: o->spec = optarg; break;
        case OPT_LISTEN: o->listen = optarg; break;
        case OPT_BACKEND:
            o->inline_run = strcmp(optarg, "inline") == 0;
            if (strcmp(optarg, "auto") == 0 || o->inline_run)
                o->backend = EXEC_AUTO;
            else if (strcmp(optarg, "threads") == 0)
                o->backend = EXEC_THREADS;
            else if (strcmp(optarg, "fork") == 0)
                o->backend = EXEC_FORK;
            else {
                serve_log("--backend: expected auto, threads, fork or inline, not '%s'", optarg);
                return 2;
            }
            break;
        case OPT_WORKERS: NUM(workers, 1, 1024, "1..1024"); break;
        case OPT_WINDOW: NUM(window, 1, 1u << 24, "1..16777216"); break;
        case OPT_FORMAT:
            if (strcmp(optarg, "csv") == 0)
                o->format = SF_CSV;
            else if (strcmp(optarg, "lines") == 0)
                o->format = SF_LINES;
            else {
                serve_log("--format: expected csv or lines, not '%s'", optarg);
                return 2;
            }
            break;
        case OPT_HEADER: o->header = optarg; break;
        case OPT_DELIM:
            if (strlen(optarg) != 1 || optarg[0] == '"' || optarg[0] == '\n' ||
                optarg[0] == '\r') {
                serve_log("--delim: expected one character other than a quote, CR or LF");
                return 2;
            }
            o->delim = (unsigned char)optarg[0];
            break;
        case OPT_MAXREC: NUM(max_record, 1, 64u << 20, "1..67108864 bytes"); break;
        case OPT_MAXRES: NUM(max_result, 1, 64u << 20, "1..67108864 bytes"); break;
        case OPT_MAXBODY: NUM(max_body, 1, 1u << 30, "1..1073741824 bytes"); break;
        case OPT_TIMEOUT: NUM(timeout_ms, 1, 86400000, "1..86400000 ms"); break;
        case OPT_START: NUM(start_timeout_ms, 1, 86400000, "1..86400000 ms"); break;
        case OPT_IDLE: NUM(idle_timeout_s, 1, 86400, "1..86400 s"); break;
        case OPT_GRACE: NUM(graceful_timeout_s, 0, 86400, "0..86400 s"); break;
        case OPT_RETRY: NUM(retry_after_s, 0, 86400, "0..86400 s"); break;
        case OPT_LOG: o->access_log = optarg; break;
        case OPT_NOADMIN: o->admin = false; break;
        case OPT_NICE: NUM(worker_nice, 0, 19, "0..19"); break;
        case OPT_BATCH: NUM(batch, 1, 4096, "1..4096"); break;
        case OPT_HELP:
        case 'h': *help = true; break;
        default:
            serve_log("unknown option, or one that needs an argument: %s", argv[optind - 1]);
            fprintf(stderr, "Try '" PROG " --help'.\n");
            return 2;
        }
    }
#undef NUM
    if (optind < argc) {
        serve_log("unexpected argument: '%s'", argv[optind]);
        fprintf(stderr, "Try '" PROG " --help'.\n");
        return 2;
    }
    if (o->header && o->format != SF_CSV) {
        serve_log("--header is for --format csv");
        return 2;
    }
    return 0;
}

static int load_plugin(struct serve *s)
{
    s->dl = dlopen(s->o.plugin, RTLD_NOW | RTLD_LOCAL);
    if (!s->dl) {
        serve_log("cannot load plugin: %s", dlerror());
        return -1;
    }
    s->pl = dlsym(s->dl, EXEC_PLUGIN_SYMBOL);
    if (!s->pl) {
        serve_log("%s: not a plugin (no symbol " EXEC_PLUGIN_SYMBOL ")", s->o.plugin);
        return -1;
    }
    if (s->pl->abi != EXEC_PLUGIN_ABI || !s->pl->ops || !s->pl->ops->process ||
        !s->pl->ctx_build || !s->pl->ctx_free) {
        serve_log("%s: plugin ABI %u, this program speaks %u%s", s->o.plugin, s->pl->abi,
                  EXEC_PLUGIN_ABI,
                  s->pl->abi == EXEC_PLUGIN_ABI
                      ? " (but ops, process, ctx_build or ctx_free is missing)"
                      : "");
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

static int start_loop(struct serve *s, int listen_fd)
{
    s->base = event_base_new();
    if (!s->base || http_start(s, listen_fd) != 0 || metrics_create(s) != 0 ||
        reload_start(s) != 0)
        return -1;
    pump_start(s);
    static const int sigs[3] = {SIGHUP, SIGTERM, SIGINT};
    for (int i = 0; i < 3; i++) {
        s->ev_sig[i] = evsignal_new(s->base, sigs[i], on_signal, s);
        if (!s->ev_sig[i] || event_add(s->ev_sig[i], NULL) != 0)
            return -1;
    }
    struct timeval sec = {1, 0};
    s->ev_tick = event_new(s->base, -1, EV_PERSIST, on_tick, s);
    if (!s->ev_tick || event_add(s->ev_tick, &sec) != 0)
        return -1;
    if (s->o.access_log && access_log_open(s, s->o.access_log) != 0) {
        serve_log("--access-log %s: %s", s->o.access_log, strerror(errno));
        return -2;
    }
    return 0;
}

/* Everything but the exit: the loop is over. */
static void stop(struct serve *s)
{
    bool stuck = reload_busy(s) && s->exit_code;
    if (stuck) {
        /* A reload thread still busy (a plugin's ctx_build that hangs) cannot
         * be joined; exec_destroy() must not run beside its swap. */
        serve_log("a reload is still running: leaving without stopping the workers");
        access_log_close(s);
        fflush(NULL);
        _exit(s->exit_code);
    }
    if (s->http)
        evhttp_free(s->http); /* closes every connection */
    http_conn_forget(s);
    reload_stop(s);
    exec_destroy(s->ex); /* releases the context serving now */
    inline_destroy(s->inl);
    for (uint32_t i = 0; i < s->nslots; i++) {
        struct req *r = s->slots[i];
        if (r) {
            free(r->recs);
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
    struct event *evs[] = {s->ev_exec, s->ev_flush, s->ev_tick, s->ev_deadline};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            event_free(evs[i]);
    if (s->base)
        event_base_free(s->base);
    metrics_free(s);
    exec_csv_header_free(s->hdr);
    free(s->header_row);
    free(s->spec);
    if (s->dl)
        dlclose(s->dl);
}

int main(int argc, char **argv)
{
    static struct serve srv;
    struct serve *s = &srv;
    bool help = false;
    int rc = options(s, argc, argv, &help);
    if (rc)
        return rc;
    if (s->o.plugin && load_plugin(s) != 0) {
        if (s->dl)
            dlclose(s->dl);
        return 1;
    }
    if (help) {
        manual(stdout);
        if (s->pl)
            printf("\nplugin %s: spec %s\n", s->pl->name ? s->pl->name : s->o.plugin,
                   s->pl->usage ? s->pl->usage : "(not described)");
        if (s->dl)
            dlclose(s->dl);
        return 0;
    }
    if (!s->o.plugin || !s->o.spec) {
        serve_log("--plugin and --spec are required");
        fprintf(stderr, "Try '" PROG " --help'.\n");
        if (s->dl)
            dlclose(s->dl);
        return 2;
    }
    s->hold_cap = s->o.window >= 2 ? (s->o.window / 2 < 4096 ? s->o.window / 2 : 4096) : 1;
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    s->started_ns = (uint64_t)wall.tv_sec * 1000000000u + (uint64_t)wall.tv_nsec;
    signal(SIGPIPE, SIG_IGN); /* a client that left is an error code, not a signal */

    /* The port first: a port in use fails before a large context is built. */
    int fd = listen_on(s, s->o.listen);
    if (fd < 0 || start_classifier(s) != 0) {
        if (fd >= 0)
            close(fd);
        stop(s);
        return 1;
    }
    rc = start_loop(s, fd);
    if (rc) {
        if (rc == -1)
            serve_log("cannot start the event loop: %s", strerror(errno));
        if (!s->http)
            close(fd);
        stop(s);
        return 1;
    }
    exec_options_t eo;
    if (s->ex)
        exec_get_options(s->ex, &eo);
    serve_log("listening on %s (plugin %s, backend %s, %u workers, window %u)", s->listen_name,
              s->pl->name ? s->pl->name : s->o.plugin,
              s->inl ? "inline" : exec_backend_name(exec_backend(s->ex)), s->ex ? eo.workers : 0,
              s->o.window);
    event_base_dispatch(s->base);
    if (!s->exit_code && s->draining)
        serve_log("all requests answered: bye");
    int code = s->exit_code;
    stop(s);
    return code;
}
