/*
 * GET /metrics in the Prometheus text format (version 0.0.4), and the
 * one-line access log.
 *
 * The server counts what it sees (requests by status code and their
 * duration, records by outcome, reloads); the rest comes from exec_stats()
 * and exec_worker_stats(). Respawns by cause are summed here from the
 * per-worker figures, read every second and at each scrape, and kept
 * monotonic: a worker's figure that went down (a new generation) counts from
 * zero again.
 */
#include "serve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const double dur_le[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1,
                                2.5,     5,      10};
#define NDUR (sizeof dur_le / sizeof dur_le[0])

static const char *const outcome_names[O_N] = {
    "ok", "user_error", "crashed", "timeout", "result_too_big", "cancelled", "worker_error",
    "record_too_big", "rejected"};

static const char *const reload_results[] = {"ok", "bad_spec", "refused", "error", "timeout",
                                             "busy"};
#define NRELOAD 6
static const char *const refusal_names[R_N] = {"framing", "body_too_large", "header_too_large",
                                               "too_many_records"};
#define NSEC 64 /* seconds of record outcomes kept for /healthz */
#define NCAUSE 4

struct metrics {
    uint64_t records[O_N];
    uint64_t codes[600];
    uint64_t dur[NDUR + 1];
    double dur_sum;
    uint64_t dur_count;
    uint64_t reloads[NRELOAD];
    unsigned workers;
    uint64_t *last;          /* per worker and cause: the figure seen last */
    uint64_t resp[NCAUSE];   /* respawns by cause, summed */
    uint64_t refused[R_N];
    uint64_t deadlines[2];   /* header, body */
    uint64_t conns_refused, clients_gone, paused, unread;
    /* Per second: records that ran well and records that failed (crashed,
     * timed out, worker errors; not the client's: user errors, too big). */
    uint64_t sec_ok[NSEC], sec_fail[NSEC];
    uint64_t sec_now; /* the second the current slot counts */
};

struct access_log {
    int fd;
    struct evbuffer *buf;
    struct event *ev; /* flush timer */
    uint64_t dropped;
    bool stamp; /* lines start with the time (not on the journal: it has its own) */
};

int metrics_create(struct serve *s)
{
    s->m = calloc(1, sizeof *s->m);
    if (!s->m)
        return -1;
    if (s->ex) {
        exec_options_t o;
        exec_get_options(s->ex, &o);
        s->m->workers = o.workers;
        s->m->last = calloc((size_t)o.workers * NCAUSE, sizeof *s->m->last);
        if (!s->m->last)
            return -1;
    }
    return 0;
}

void metrics_free(struct serve *s)
{
    if (s->m)
        free(s->m->last);
    free(s->m);
    s->m = NULL;
}

void metrics_record(struct serve *s, enum outcome o)
{
    struct metrics *m = s->m;
    m->records[o]++;
    uint64_t sec = serve_now_ns() / 1000000000u;
    if (sec != m->sec_now) {
        for (uint64_t k = m->sec_now + 1; k <= sec && k <= m->sec_now + NSEC; k++)
            m->sec_ok[k % NSEC] = m->sec_fail[k % NSEC] = 0;
        m->sec_now = sec;
    }
    if (o == O_OK)
        m->sec_ok[sec % NSEC]++;
    else if (o == O_CRASHED || o == O_TIMEOUT || o == O_WORKER || o == O_RESULT2BIG)
        m->sec_fail[sec % NSEC]++;
}

/* True when in the last secs seconds at least 10 records failed and none ran
 * well (*failed: how many failed). */
bool metrics_all_failing(struct serve *s, unsigned secs, uint64_t *failed)
{
    struct metrics *m = s->m;
    uint64_t sec = serve_now_ns() / 1000000000u, ok = 0, bad = 0;
    if (secs >= NSEC)
        secs = NSEC - 1;
    for (uint64_t k = sec - secs; k <= sec; k++)
        if (k > m->sec_now - NSEC && k <= m->sec_now) {
            ok += m->sec_ok[k % NSEC];
            bad += m->sec_fail[k % NSEC];
        }
    *failed = bad;
    return ok == 0 && bad >= 10;
}

void metrics_refused(struct serve *s, enum refusal why)
{
    s->m->refused[why]++;
}

void metrics_deadline(struct serve *s, bool body)
{
    s->m->deadlines[body]++;
}

void metrics_conn_refused(struct serve *s)
{
    s->m->conns_refused++;
}

void metrics_client_gone(struct serve *s)
{
    s->m->clients_gone++;
}

void metrics_paused(struct serve *s)
{
    s->m->paused++;
}

void metrics_unread(struct serve *s)
{
    s->m->unread++;
}

void metrics_request(struct serve *s, int code, uint64_t ns)
{
    struct metrics *m = s->m;
    if (code >= 100 && code < 600)
        m->codes[code]++;
    double sec = (double)ns / 1e9;
    unsigned i = 0;
    while (i < NDUR && sec > dur_le[i])
        i++;
    m->dur[i]++;
    m->dur_sum += sec;
    m->dur_count++;
}

void metrics_reload(struct serve *s, const char *result)
{
    for (int i = 0; i < NRELOAD; i++)
        if (strcmp(result, reload_results[i]) == 0)
            s->m->reloads[i]++;
}

/* Folds the workers' respawn figures into the sums; fills ws[] if given. */
static void sample_workers(struct serve *s, exec_worker_stats_t *ws)
{
    struct metrics *m = s->m;
    for (unsigned i = 0; s->ex && i < m->workers; i++) {
        exec_worker_stats_t w;
        if (exec_worker_stats(s->ex, i, &w) != 0)
            continue;
        const uint64_t now[NCAUSE] = {w.respawns_crash, w.respawns_timeout, w.respawns_recycle,
                                      w.respawns_cancel};
        for (int c = 0; c < NCAUSE; c++) {
            uint64_t *last = &m->last[i * NCAUSE + c];
            m->resp[c] += now[c] >= *last ? now[c] - *last : now[c];
            *last = now[c];
        }
        if (ws)
            ws[i] = w;
    }
}

void metrics_tick(struct serve *s)
{
    sample_workers(s, NULL);
}

static void head(struct evbuffer *b, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: \, " and newline escaped. */
static void label(struct evbuffer *b, const char *v)
{
    for (; v && *v; v++) {
        if (*v == '\\' || *v == '"')
            evbuffer_add_printf(b, "\\%c", *v);
        else if (*v == '\n')
            evbuffer_add(b, "\\n", 2);
        else
            evbuffer_add(b, v, 1);
    }
}

void metrics_page(struct serve *s, struct evbuffer *b)
{
    struct metrics *m = s->m;
    const char *backend = s->inl ? "inline" : exec_backend_name(exec_backend(s->ex));

    head(b, "executor_serve_info", "gauge", "The server: plugin, backend, workers, window.");
    evbuffer_add_printf(b, "executor_serve_info{plugin=\"");
    label(b, s->pl->name ? s->pl->name : s->o.plugin);
    evbuffer_add_printf(b,
                        "\",backend=\"%s\",workers=\"%u\",window=\"%u\",timeout_ms=\"%u\","
                        "version=\"%s\"} 1\n",
                        backend, s->inl ? 1 : m->workers, s->o.window, s->o.timeout_ms,
                        EXEC_VERSION_STRING);
    head(b, "executor_serve_start_time_seconds", "gauge", "When the server started (Unix time).");
    evbuffer_add_printf(b, "executor_serve_start_time_seconds %.3f\n",
                        (double)s->started_ns / 1e9);

    head(b, "executor_serve_requests_total", "counter", "HTTP requests answered, by status code.");
    for (int c = 100; c < 600; c++)
        if (m->codes[c])
            evbuffer_add_printf(b, "executor_serve_requests_total{code=\"%d\"} %llu\n", c,
                                (unsigned long long)m->codes[c]);
    head(b, "executor_serve_request_duration_seconds", "histogram",
         "From the request read to its reply handed to the connection.");
    uint64_t cum = 0;
    for (unsigned i = 0; i < NDUR; i++) {
        cum += m->dur[i];
        evbuffer_add_printf(b, "executor_serve_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                            dur_le[i], (unsigned long long)cum);
    }
    evbuffer_add_printf(b,
                        "executor_serve_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
                        "executor_serve_request_duration_seconds_sum %.6f\n"
                        "executor_serve_request_duration_seconds_count %llu\n",
                        (unsigned long long)m->dur_count, m->dur_sum,
                        (unsigned long long)m->dur_count);
    head(b, "executor_serve_records_total", "counter",
         "Records by outcome (record_too_big: over --max-record, never run; rejected: window "
         "full, answered 503).");
    for (int o = 0; o < O_N; o++)
        evbuffer_add_printf(b, "executor_serve_records_total{outcome=\"%s\"} %llu\n",
                            outcome_names[o], (unsigned long long)m->records[o]);
    head(b, "executor_serve_requests_open", "gauge", "Requests being answered.");
    evbuffer_add_printf(b, "executor_serve_requests_open %llu\n", (unsigned long long)s->open);
    head(b, "executor_serve_connections", "gauge",
         "Client connections open on the public listener (not those refused over the cap).");
    evbuffer_add_printf(b, "executor_serve_connections %u\n", s->nconns - s->nrefusing - s->nadmin);
    head(b, "executor_serve_connections_max", "gauge", "--max-connections.");
    evbuffer_add_printf(b, "executor_serve_connections_max %u\n", s->o.max_connections);
    head(b, "executor_serve_connections_refused_total", "counter",
         "Connections answered 503 and closed at once: --max-connections were open.");
    evbuffer_add_printf(b, "executor_serve_connections_refused_total %llu\n",
                        (unsigned long long)m->conns_refused);
    head(b, "executor_serve_deadlines_total", "counter",
         "Requests cut off (408, connection closed): the header section not in within "
         "--header-timeout, or the body within --body-timeout.");
    evbuffer_add_printf(b, "executor_serve_deadlines_total{phase=\"header\"} %llu\n"
                           "executor_serve_deadlines_total{phase=\"body\"} %llu\n",
                        (unsigned long long)m->deadlines[0], (unsigned long long)m->deadlines[1]);
    head(b, "executor_serve_requests_refused_total", "counter",
         "Requests refused before they ran, by reason (framing: 400/501/505; body_too_large: "
         "413, over --max-body; header_too_large: 414/431; too_many_records: 413, over "
         "--max-records).");
    for (int i = 0; i < R_N; i++)
        evbuffer_add_printf(b, "executor_serve_requests_refused_total{reason=\"%s\"} %llu\n",
                            refusal_names[i], (unsigned long long)m->refused[i]);
    head(b, "executor_serve_clients_gone_total", "counter",
         "Clients that hung up while their request ran: its records were cancelled.");
    evbuffer_add_printf(b, "executor_serve_clients_gone_total %llu\n",
                        (unsigned long long)m->clients_gone);
    head(b, "executor_serve_documents_paused_total", "counter",
         "Times a document stopped feeding records: its client had more than --max-pending "
         "bytes of reply not yet read.");
    evbuffer_add_printf(b, "executor_serve_documents_paused_total %llu\n",
                        (unsigned long long)m->paused);
    head(b, "executor_serve_documents_unread_total", "counter",
         "Documents cut off while paused: their client read none of the reply for "
         "--idle-timeout (logged as 499).");
    evbuffer_add_printf(b, "executor_serve_documents_unread_total %llu\n",
                        (unsigned long long)m->unread);
    char why[200];
    head(b, "executor_serve_healthy", "gauge", "1 when GET /healthz answers 200.");
    evbuffer_add_printf(b, "executor_serve_healthy %d\n",
                        !s->fatal && !s->draining && !serve_unhealthy(s, why, sizeof why));
    head(b, "executor_serve_reloads_total", "counter",
         "Reloads by result (refused: the new context failed its proof; timeout: abandoned "
         "past --reload-timeout; busy: refused, another reload was running; the old context "
         "serves but after ok).");
    for (int i = 0; i < NRELOAD; i++)
        evbuffer_add_printf(b, "executor_serve_reloads_total{result=\"%s\"} %llu\n",
                            reload_results[i], (unsigned long long)m->reloads[i]);
    head(b, "executor_context_generation", "gauge",
         "The context serving now: 0 for the first, +1 per reload.");
    evbuffer_add_printf(b, "executor_context_generation %llu\n",
                        (unsigned long long)s->generation);
    if (s->log) {
        head(b, "executor_serve_access_log_dropped_total", "counter",
             "Access log lines dropped because the log could not keep up.");
        evbuffer_add_printf(b, "executor_serve_access_log_dropped_total %llu\n",
                            (unsigned long long)s->log->dropped);
    }
    if (!s->ex)
        return;

    exec_stats_t st;
    exec_stats(s->ex, &st);
    head(b, "executor_records_in_flight", "gauge", "Records submitted and not yet collected.");
    evbuffer_add_printf(b, "executor_records_in_flight %llu\n",
                        (unsigned long long)st.in_flight);
    head(b, "executor_batches_total", "counter", "Batches sent to workers.");
    evbuffer_add_printf(b, "executor_batches_total %llu\n", (unsigned long long)st.batches);
    head(b, "executor_record_latency_seconds", "histogram",
         "Submit to result, sampled on the first record of each batch; buckets are powers of "
         "two nanoseconds, and the sum takes each sample at its bucket's middle.");
    cum = 0;
    double sum = 0;
    for (unsigned k = 0; k < EXEC_LAT_BUCKETS; k++) {
        cum += st.lat_hist[k];
        sum += (double)st.lat_hist[k] * 1.5 * (double)(1ull << k) / 1e9;
        if (k >= 10 && k <= 34)
            evbuffer_add_printf(b, "executor_record_latency_seconds_bucket{le=\"%g\"} %llu\n",
                                (double)(2ull << k) / 1e9, (unsigned long long)cum);
    }
    evbuffer_add_printf(b,
                        "executor_record_latency_seconds_bucket{le=\"+Inf\"} %llu\n"
                        "executor_record_latency_seconds_sum %.6f\n"
                        "executor_record_latency_seconds_count %llu\n",
                        (unsigned long long)cum, sum, (unsigned long long)cum);
    head(b, "executor_utilisation", "gauge", "Worker time busy, over busy + idle, 0..1.");
    evbuffer_add_printf(b, "executor_utilisation %.4f\n", st.utilisation);
    head(b, "executor_swaps_total", "counter", "Contexts swapped in.");
    evbuffer_add_printf(b, "executor_swaps_total %llu\n", (unsigned long long)st.swaps);

    exec_worker_stats_t *ws = calloc(m->workers, sizeof *ws);
    sample_workers(s, ws);
    head(b, "executor_worker_respawns_total", "counter", "Worker processes replaced, by cause.");
    static const char *const causes[NCAUSE] = {"crash", "timeout", "recycle", "cancel"};
    for (int c = 0; c < NCAUSE; c++)
        evbuffer_add_printf(b, "executor_worker_respawns_total{cause=\"%s\"} %llu\n", causes[c],
                            (unsigned long long)m->resp[c]);
    if (ws && st.backend == EXEC_FORK) {
        head(b, "executor_worker_pss_bytes", "gauge",
             "A worker process's proportional share of memory (the shared context split among "
             "its users).");
        for (unsigned i = 0; i < m->workers; i++)
            evbuffer_add_printf(b, "executor_worker_pss_bytes{worker=\"%u\",pid=\"%d\"} %llu\n", i,
                                ws[i].pid, (unsigned long long)ws[i].pss_kb * 1024);
        head(b, "executor_worker_private_dirty_bytes", "gauge",
             "Pages a worker process made its own (its heap, and the context it wrote to).");
        for (unsigned i = 0; i < m->workers; i++)
            evbuffer_add_printf(b,
                                "executor_worker_private_dirty_bytes{worker=\"%u\",pid=\"%d\"} %llu\n",
                                i, ws[i].pid, (unsigned long long)ws[i].private_dirty_kb * 1024);
    }
    free(ws);
}

/* ------------------------------------------------------------------------- */
/* Access log                                                                */
/* ------------------------------------------------------------------------- */

#define LOG_MAX (1u << 20) /* bytes held when the log cannot keep up; more are dropped */

static void log_write(struct access_log *l)
{
    while (evbuffer_get_length(l->buf)) {
        int n = evbuffer_write(l->buf, l->fd);
        if (n <= 0)
            break; /* EAGAIN: a pipe that is full; the timer tries again */
    }
}

static void on_log_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct access_log *l = arg;
    log_write(l);
    if (evbuffer_get_length(l->buf)) {
        struct timeval tv = {0, 100000};
        event_add(l->ev, &tv);
    }
}

/*
 * "-" is stdout. A pipe or terminal gets an open file description of its own,
 * non-blocking, so that a slow reader never stalls the loop (stdout's own
 * flags are left alone); a regular file is shared as it is (its offset with
 * it), and never blocks for long.
 */
int access_log_open(struct serve *s, const char *path)
{
    struct access_log *l = calloc(1, sizeof *l);
    if (!l)
        return -1;
    struct stat st;
    if (strcmp(path, "-") != 0)
        l->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC, 0644);
    else if (fstat(STDOUT_FILENO, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)))
        l->fd = open("/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    else
        l->fd = -1;
    if (l->fd < 0 && strcmp(path, "-") == 0)
        l->fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
    if (l->fd < 0) {
        free(l);
        return -1;
    }
    l->stamp = !(strcmp(path, "-") == 0 && serve_on_journal(STDOUT_FILENO));
    l->buf = evbuffer_new();
    l->ev = evtimer_new(s->base, on_log_timer, l);
    if (!l->buf || !l->ev) {
        close(l->fd);
        free(l);
        return -1;
    }
    s->log = l;
    return 0;
}

/* [time] peer "METHOD target" status bytes seconds records=N gen=G */
void access_log_line(struct serve *s, const struct req *r, uint32_t records)
{
    struct access_log *l = s->log;
    if (!l)
        return;
    if (evbuffer_get_length(l->buf) > LOG_MAX) {
        l->dropped++;
        return;
    }
    char when[40];
    if (l->stamp)
        evbuffer_add_printf(l->buf, "%s ", serve_stamp(when, sizeof when));
    evbuffer_add_printf(l->buf, "%s %d %zu %.6f records=%u gen=%llu\n",
                        r->line[0] ? r->line : "-", r->code, r->bytes,
                        (double)(serve_now_ns() - r->t0) / 1e9, records,
                        (unsigned long long)r->generation);
    if (!evtimer_pending(l->ev, NULL)) {
        struct timeval tv = {0, 100000};
        event_add(l->ev, &tv);
    }
}

/* A request refused by conn.c (no evhttp request behind it). */
void access_log_refusal(struct serve *s, const struct conn *c, int code, const char *why)
{
    struct access_log *l = s->log;
    if (!l)
        return;
    if (evbuffer_get_length(l->buf) > LOG_MAX) {
        l->dropped++;
        return;
    }
    char peer[INET6_ADDRSTRLEN + 8] = "-";
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (fd >= 0 && getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        char host[INET6_ADDRSTRLEN] = "";
        unsigned port = 0;
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
            port = ntohs(a->sin6_port);
        } else {
            snprintf(host, sizeof host, "unix");
        }
        snprintf(peer, sizeof peer, "%s:%u", host, port);
    }
    char when[40];
    if (l->stamp)
        evbuffer_add_printf(l->buf, "%s ", serve_stamp(when, sizeof when));
    evbuffer_add_printf(l->buf, "%s%s \"-\" %d 0 0 refused=\"%s\"\n",
                        c->admin ? "admin " : "", peer, code, why);
    if (!evtimer_pending(l->ev, NULL)) {
        struct timeval tv = {0, 100000};
        event_add(l->ev, &tv);
    }
}

void access_log_flush(struct serve *s)
{
    if (s->log)
        log_write(s->log);
}

void access_log_close(struct serve *s)
{
    struct access_log *l = s->log;
    if (!l)
        return;
    /* The last lines: blocking now is fine, the loop is over. */
    int fl = fcntl(l->fd, F_GETFL);
    if (fl >= 0)
        fcntl(l->fd, F_SETFL, fl & ~O_NONBLOCK);
    log_write(l);
    event_free(l->ev);
    evbuffer_free(l->buf);
    close(l->fd);
    free(l);
    s->log = NULL;
}
