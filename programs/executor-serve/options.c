/*
 * executor-serve's command line: the manual (--help) and the options, parsed
 * into struct serve_opts with the defaults filled in.
 */
#include "serve.h"
#include "parse_num.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The defaults a server picks (see docs/serve.md, Tuning). */
#define DEFAULT_NICE 5
#define DEFAULT_NICE_S "5"
#define DEFAULT_BATCH 1
#define DEFAULT_BATCH_S "1"
#define DEFAULT_BATCH_WHY "each record goes to the worker with the\n" \
    "                        shortest queue; light records gain from more)"

void serve_manual(FILE *f)
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
"the loop blocks or runs long: a large body is cut into records a slice\n"
"(about 1 MB, at most 16384 records) per loop turn.\n"
"\n"
"Endpoints (the public listener, --listen)\n"
"  POST /classify      the body is one record (a CSV row or a line, by\n"
"                      --format): the reply is its result, 200, or its\n"
"                      error (below). A body of several records, or one that\n"
"                      starts with the --header row, is a document: the reply\n"
"                      is 200, streamed (chunked), one line per record in input\n"
"                      order; a record that failed gives the line\n"
"                      '!error STATUS record N NAME: text'.\n"
"  GET  /metrics       Prometheus text format: requests by status and their\n"
"                      duration, records by outcome, refusals by reason,\n"
"                      connections, deadlines hit, the library's latency\n"
"                      histogram and utilisation, respawns by cause, per-worker\n"
"                      PSS and private dirty memory (fork), context generation.\n"
"  GET  /healthz       200 'ok: ...'; 503 'unhealthy: why' when a reload runs\n"
"                      past --reload-timeout, when every worker has held a\n"
"                      record and none finished for --unhealthy-after seconds,\n"
"                      or when all records of the last --unhealthy-after\n"
"                      seconds failed (at least 10: crashed, timed out, worker\n"
"                      errors); 503 while draining or after the executor gave up.\n"
"  Other paths: 404; other methods: 405 with Allow.\n"
"\n"
"Admin (only on the --admin listener; none by default)\n"
"  POST /admin/reload  rebuilds the context from --spec (the plugin reads its\n"
"                      files again) and swaps it in while requests run. With\n"
"                      --admin-spec, a body holds a spec to build instead\n"
"                      (at most 4096 bytes); without it, a body is refused 403.\n"
"                      200 'reloaded: generation N'; 400 for a spec the plugin\n"
"                      refuses (its reason goes to the log, not to the client);\n"
"                      422 when the new context fails its proof (its\n"
"                      worker_init refused; fork: or its canary crashed or\n"
"                      hung); 409 while another reload runs; 504 when it runs\n"
"                      past --reload-timeout (abandoned: see below); 503 while\n"
"                      an abandoned one has not returned. The old context keeps\n"
"                      serving after any failure.\n"
"  GET  /metrics, GET /healthz as on the public listener.\n"
"  The public listener has no admin path. Put the admin listener on a Unix\n"
"  socket (mode 0600; its directory decides who may connect) or on loopback.\n"
"\n"
"Status codes of a record (the body names the library's error)\n"
"  200 ok; 413 EXEC_E2BIG (record over --max-record); 422 EXEC_EUSER (the\n"
"  plugin refused the record); 500 EXEC_ECRASHED (its worker died: the\n"
"  signal is named) or EXEC_ERESULT2BIG; 502 EXEC_EWORKER (its worker wrote\n"
"  garbage); 504 EXEC_ERECTIMEOUT (ran past --timeout); 503 EXEC_EAGAIN with\n"
"  Retry-After (the window is full: the server refuses rather than queue\n"
"  without bound), or while shutting down.\n"
"\n"
"Requests refused before they run (the connection is then closed)\n"
"  400 malformed framing: two Content-Length fields, a Content-Length that is\n"
"      not digits, Transfer-Encoding with Content-Length or in HTTP/1.0, a bad\n"
"      chunk size, a bare LF or CR, a folded field line, a control byte in a\n"
"      field value, whitespace before a field's colon, no Host in HTTP/1.1, a\n"
"      HEAD or TRACE with a body; an unterminated quote (CSV); an empty body\n"
"  408 the header section not in within --header-timeout, or the body within\n"
"      --body-timeout\n"
"  413 a body over --max-body (answered from its Content-Length, at once), a\n"
"      body of more than --max-records records\n"
"  414 a request line over 8 KiB\n"
"  431 a header line over 8 KiB, or a header section (or trailer) over 64 KiB\n"
"  501 an unknown method, or a transfer coding other than chunked\n"
"  505 an HTTP version other than 1.x\n"
"  503 over --max-connections (Retry-After: 1)\n"
"\n"
"Options\n"
"  --plugin PATH         shared object exporting " EXEC_PLUGIN_SYMBOL "\n"
"  --spec SPEC           what the plugin builds its context from\n"
"  --listen HOST:PORT    where to listen (default 127.0.0.1:8080; port 0: any\n"
"                        free port, named on stderr; [::1]:PORT for IPv6); a\n"
"                        socket passed by systemd takes its place (below)\n"
"  --admin ADDR          the admin listener: unix:PATH or HOST:PORT (default:\n"
"                        none; SIGHUP still reloads)\n"
"  --admin-spec          POST /admin/reload may carry a spec in its body\n"
"  --backend B           auto (default: threads if the plugin is thread-safe,\n"
"                        else fork), threads, fork, or inline (process() in the\n"
"                        event loop, no workers: the baseline to compare with)\n"
"  --workers N           worker threads or processes (default: online CPUs)\n"
"  --worker-nice N       the workers' nice value above the server's, 0..19 (default\n"
"                        " DEFAULT_NICE_S "): above 0, the event loop runs first when they\n"
"                        compete for a core\n"
"  --batch N             records a worker takes at once, at most (default " DEFAULT_BATCH_S ";\n"
"                        " DEFAULT_BATCH_WHY "\n"
"  --window N            records in flight or waiting for room, at most, over\n"
"                        all requests (default 1024); past it, 503. A document\n"
"                        keeps at most half of it in flight\n"
"  --format F            csv (default) or lines: how a body is cut into records\n"
"  --header ROW          CSV: the column names, given to the plugin's ctx_build\n"
"                        (e.g. id,text); a body starting with this row is a\n"
"                        document\n"
"  --delim C             CSV field delimiter (default ,)\n"
"  --timeout MS          a record running longer is stopped, 504 (default\n"
"                        30000; 0: none). Fork: its worker is replaced.\n"
"                        Threads: the record is cancelled (process() sees\n"
"                        exec_cancelled() and may return); one that does not\n"
"                        look holds its worker until it returns\n"
"  --start-timeout MS    fork: a worker_init (at start, or a reload's canary)\n"
"                        running longer fails (default 10000)\n"
"  --inherit-fds         fork: workers keep copies of the server's descriptors\n"
"                        (by default they close all but their own, so that a\n"
"                        closed connection ends at once; a plugin whose\n"
"                        context keeps a file open across fork needs this)\n"
"\n"
"Limits (each refusal is counted in /metrics)\n"
"  --max-connections N   open connections on the public listener, at most\n"
"                        (default: the descriptor limit, raised to its hard\n"
"                        limit, less 64 + 8 per worker); past it, 503 and\n"
"                        close. The admin listener has 64 of its own\n"
"  --header-timeout S    a request's header section must arrive within S\n"
"                        seconds of its first byte (the first request: of the\n"
"                        connection), whatever the pace (default 10)\n"
"  --body-timeout S      its body within S seconds of the header (default 60)\n"
"  --idle-timeout S      close a connection idle this long between requests,\n"
"                        or whose client reads none of its reply for this long\n"
"                        (default 60)\n"
"  --max-body N          largest request body in bytes (default 16777216)\n"
"  --max-records N       records in one request, at most (default 1000000;\n"
"                        the server keeps 8 bytes per record)\n"
"  --max-record N        largest record in bytes (default 65536)\n"
"  --max-result N        largest result in bytes (default 65536)\n"
"  --max-pending N       bytes of a reply held for a client not yet reading\n"
"                        it (default 1048576): past this a document stops\n"
"                        feeding records until the client reads (plus, at\n"
"                        most, the results of its records in flight); one\n"
"                        that reads nothing for --idle-timeout is closed\n"
"                        (logged 499)\n"
"  --reload-timeout S    a reload running longer is abandoned (default 60)\n"
"  --unhealthy-after S   see GET /healthz (default 10)\n"
"  --graceful-timeout S  on SIGTERM, wait this long for requests in flight\n"
"                        (default 30)\n"
"  --retry-after S       the Retry-After of a 503 (default 1)\n"
"  --access-log FILE     one line per request to FILE ('-': stdout): time,\n"
"                        peer, method and target (escaped), status, bytes,\n"
"                        seconds, records, context generation\n"
"  --reload ADDR         no server: ask the one whose admin listener is ADDR\n"
"                        to reload (POST /admin/reload), wait for its verdict\n"
"                        and print it; exit 0 when it reloaded, 1 otherwise.\n"
"                        A service manager's reload command (it waits\n"
"                        --reload-timeout plus 10 s at most)\n"
"  --help                this text, and the plugin's spec when --plugin is given\n"
"\n"
"Memory and time, measured on a 2-vCPU VM (docs/serve.md has the cases): an\n"
"open connection costs about 3.6 KiB; a request holds its body (twice, at\n"
"most, while it is cut into records), 8 bytes per record, and a document's\n"
"reply up to --max-pending. Cutting a body costs the loop about 3.3 ms per MB\n"
"of ordinary CSV and 6.5 ms per MB of a body of quotes, in slices of about\n"
"2 ms at most, with every connection served in between; 19,800 connections\n"
"sending a byte a second left other clients' p99 at 12 ms.\n"
"\n"
"Signals\n"
"  SIGHUP           reload from --spec (as an empty POST /admin/reload); one\n"
"                   that comes while a reload runs is done after it (several\n"
"                   such are one)\n"
"  SIGTERM, SIGINT  graceful shutdown: stop accepting, answer new requests on\n"
"                   open connections with 503, finish every request in flight,\n"
"                   exit 0 (a reload not yet swapping is abandoned). A second\n"
"                   signal, or --graceful-timeout, exits 1 at once.\n"
"\n"
"A reload past --reload-timeout: a plugin's ctx_build cannot be stopped (a\n"
"context cannot cross processes, and a thread cannot be killed), so it is\n"
"abandoned on its thread; the old context serves, /healthz answers 503 (so\n"
"that an orchestrator restarts the server) and reloads are refused until it\n"
"returns, when what it built is freed. SIGTERM still exits 0.\n"
"\n"
"Under systemd\n"
"  The unit executor-serve@.service runs a server per classifier, with its\n"
"  options in /etc/executor-serve/NAME.conf; its socket unit holds the public\n"
"  listener and passes it (LISTEN_FDS: socket activation). systemd keeps that\n"
"  socket open while the server restarts, so that connections wait for the\n"
"  next server instead of being refused. The service manager is told\n"
"  (sd_notify) READY=1 once the server serves, RELOADING=1 when a reload\n"
"  starts and READY=1 when it has ended, and STOPPING=1 when it shuts down;\n"
"  its reload command is --reload on the admin socket. When stderr is the\n"
"  journal's (JOURNAL_STREAM), a message is its text alone, and the access\n"
"  log on a stdout that is the journal's leaves out its time: the journal\n"
"  has them.\n"
"\n"
"Exit status: 0 after a graceful shutdown; 1 when the server cannot start (a\n"
"plugin that does not load, a bad spec, a port in use) or was stopped before\n"
"its requests finished; 2 for a usage error.\n"
"\n"
"Example\n"
"  " PROG " --plugin ./libwordtable.so --header id,text \\\n"
"      --spec table=words.txt,column=text,id=id --listen 127.0.0.1:8080 \\\n"
"      --admin unix:/run/executor-serve/admin.sock &\n"
"  curl -s --data-binary '1,an apple and a pear' localhost:8080/classify\n"
"  1,fruit\n"
"  curl -s -X POST --unix-socket /run/executor-serve/admin.sock \\\n"
"      http://localhost/admin/reload\n"
"  reloaded: generation 1\n",
        f);
}

/* A numeric option in lo..hi: 0, or -1 with a message. */
static int num_opt(const char *opt, const char *arg, unsigned long long lo,
                   unsigned long long hi, const char *what, unsigned long long *v)
{
    if (prog_parse_uint(arg, hi, v) != 0 || *v < lo) {
        serve_log("--%s: expected %s, not '%s'", opt, what, arg);
        return -1;
    }
    return 0;
}

/* Parses the command line into s->o: 0, or the exit status (usage: 2). */
int serve_options(struct serve *s, int argc, char **argv, bool *help)
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
    o->timeout_ms = 30000;
    o->header_timeout_s = 10;
    o->body_timeout_s = 60;
    o->reload_timeout_s = 60;
    o->unhealthy_after_s = 10;
    o->max_records = 1000000;
    o->max_pending = 1u << 20;
    o->worker_nice = DEFAULT_NICE;
    o->batch = DEFAULT_BATCH;
    enum { OPT_PLUGIN = 1, OPT_SPEC, OPT_LISTEN, OPT_BACKEND, OPT_WORKERS, OPT_WINDOW,
           OPT_FORMAT, OPT_HEADER, OPT_DELIM, OPT_MAXREC, OPT_MAXRES, OPT_MAXBODY, OPT_TIMEOUT,
           OPT_START, OPT_IDLE, OPT_GRACE, OPT_RETRY, OPT_LOG, OPT_ADMIN, OPT_ADMIN_SPEC, OPT_NICE,
           OPT_BATCH, OPT_INHERIT, OPT_MAXCONN, OPT_HEADER_TO, OPT_BODY_TO, OPT_MAXRECS,
           OPT_MAXPEND, OPT_RELOAD_TO, OPT_UNHEALTHY, OPT_RELOAD, OPT_HELP };
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
        {"admin", required_argument, NULL, OPT_ADMIN},
        {"admin-spec", no_argument, NULL, OPT_ADMIN_SPEC},
        {"max-connections", required_argument, NULL, OPT_MAXCONN},
        {"header-timeout", required_argument, NULL, OPT_HEADER_TO},
        {"body-timeout", required_argument, NULL, OPT_BODY_TO},
        {"max-records", required_argument, NULL, OPT_MAXRECS},
        {"max-pending", required_argument, NULL, OPT_MAXPEND},
        {"reload-timeout", required_argument, NULL, OPT_RELOAD_TO},
        {"unhealthy-after", required_argument, NULL, OPT_UNHEALTHY},
        {"worker-nice", required_argument, NULL, OPT_NICE},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"inherit-fds", no_argument, NULL, OPT_INHERIT},
        {"reload", required_argument, NULL, OPT_RELOAD},
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
        case OPT_TIMEOUT: NUM(timeout_ms, 0, 86400000, "0..86400000 ms"); break;
        case OPT_START: NUM(start_timeout_ms, 1, 86400000, "1..86400000 ms"); break;
        case OPT_IDLE: NUM(idle_timeout_s, 1, 86400, "1..86400 s"); break;
        case OPT_GRACE: NUM(graceful_timeout_s, 0, 86400, "0..86400 s"); break;
        case OPT_RETRY: NUM(retry_after_s, 0, 86400, "0..86400 s"); break;
        case OPT_LOG: o->access_log = optarg; break;
        case OPT_ADMIN: o->admin = optarg; break;
        case OPT_ADMIN_SPEC: o->admin_spec = true; break;
        case OPT_MAXCONN: NUM(max_connections, 1, 1000000, "1..1000000"); break;
        case OPT_HEADER_TO: NUM(header_timeout_s, 1, 3600, "1..3600 s"); break;
        case OPT_BODY_TO: NUM(body_timeout_s, 1, 86400, "1..86400 s"); break;
        case OPT_MAXRECS: NUM(max_records, 1, 1u << 30, "1..1073741824"); break;
        case OPT_MAXPEND: NUM(max_pending, 4096, 1u << 30, "4096..1073741824 bytes"); break;
        case OPT_RELOAD_TO: NUM(reload_timeout_s, 1, 86400, "1..86400 s"); break;
        case OPT_UNHEALTHY: NUM(unhealthy_after_s, 1, 3600, "1..3600 s"); break;
        case OPT_INHERIT: o->inherit_fds = true; break;
        case OPT_RELOAD: o->reload = optarg; break;
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
    if (o->admin_spec && !o->admin) {
        serve_log("--admin-spec needs --admin");
        return 2;
    }
    if (o->header && o->format != SF_CSV) {
        serve_log("--header is for --format csv");
        return 2;
    }
    return 0;
}

