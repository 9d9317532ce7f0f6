/*
 * executor-serve's shared state: one struct serve for the process, one struct
 * req per HTTP request being answered, one struct conn per client connection
 * that sent a request. All of it belongs to the event loop's thread; the
 * reload thread (reload.c) only builds contexts, swaps them in and reports
 * back through a queue.
 *
 * Files: main.c (start, listeners, loop, health, shutdown), options.c
 * (command line, manual), conn.c (client connections: limits, deadlines,
 * closing), frame.c (request framing, checked before evhttp reads it),
 * http.c (routes, replies), body.c (a body cut into records, a slice per
 * loop turn), pump.c (records into the executor and results out of it),
 * inline.c (the baseline: process() in the loop), reload.c (live reload),
 * metrics.c (/metrics and the access log), log.c (the log and the clocks),
 * systemd.c (socket activation, readiness), client.c (--reload: a
 * reload through the admin listener, for a service manager).
 */
#ifndef SERVE_H
#define SERVE_H

#include "executor_records.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define PROG "executor-serve"

enum serve_format { SF_CSV, SF_LINES };

struct serve_opts {
    const char *plugin, *spec, *listen, *header, *access_log, *admin;
    const char *reload; /* --reload ADDR: the client of an admin listener */
    exec_backend_t backend;
    bool inline_run; /* --backend inline: process() in the loop (the baseline) */
    unsigned workers, window, batch;
    enum serve_format format;
    int delim;
    size_t max_record, max_result, max_body, max_pending;
    unsigned max_records, max_connections;
    unsigned timeout_ms, start_timeout_ms;
    unsigned idle_timeout_s, graceful_timeout_s, retry_after_s;
    unsigned header_timeout_s, body_timeout_s, reload_timeout_s, unhealthy_after_s;
    int worker_nice; /* added to the workers' nice value: the loop goes first */
    bool admin_spec;  /* POST /admin/reload may carry a spec */
    bool inherit_fds; /* fork: without EXEC_CLOSE_FDS */
};

/* What became of a record, for /metrics. */
enum outcome {
    O_OK, O_USER, O_CRASHED, O_TIMEOUT, O_RESULT2BIG, O_CANCELLED, O_WORKER,
    O_TOO_BIG,  /* larger than --max-record: never submitted */
    O_REJECTED, /* window full: answered 503 */
    O_N
};

/* A result kept for a document until its turn comes (records finish out of order). */
struct held {
    bool have;
    bool timed_out; /* threads: cancelled at --timeout, reported as such */
    int status, user_code, sig, exit_status;
    char *data;
    size_t len;
    uint64_t sent; /* when it was submitted (ns), while in flight */
};

/* A record of a document: its place in the body. */
struct span {
    uint32_t off, len;
};

struct conn;

/* Cutting a body into records, a slice per loop turn (body.c). */
struct scan {
    size_t n;          /* the body's length */
    size_t have;       /* bytes of it in r->body so far */
    size_t pos;        /* scanned up to here */
    size_t rec;        /* where the record being scanned starts */
    size_t nq, nq_lim; /* the next quote at or after pos: nq < nq_lim, or none below nq_lim */
    size_t nl, nl_lim; /* the same for LF */
    bool quoted, first;
    uint32_t cap;      /* room in r->recs */
};

struct req {
    struct serve *s;
    struct evhttp_request *http; /* NULL once the reply is handed to evhttp */
    struct conn *conn;           /* NULL once the client is gone */
    uint32_t slot;               /* tag = slot << 32 | record index */
    bool doc;                    /* a document: one line per record, streamed */
    bool started;                /* doc: status line and headers sent */
    bool waiting;                /* on the queue of requests waiting for room */
    bool dirty;                  /* doc: lines to send after this drain */
    bool counted;                /* counted in s->open */
    bool stepping;               /* on the queue of work done a slice per turn */
    bool scanning;               /* its body is being cut into records */
    bool paused;                 /* doc: its client's output is full */
    bool body_owned;             /* r->body is ours to free */
    bool timed_out;              /* single record: cancelled at --timeout (threads) */
    bool reloading;              /* POST /admin/reload: the reload answers it */
    int abort_code;              /* doc: the executor gave up; lines left get this */
    uint64_t t0;                 /* when the handler saw it (ns) */
    uint64_t sent;               /* single record: when it was submitted (ns) */
    const char *body;            /* the body */
    struct scan sc;
    struct span *recs;           /* its records */
    uint32_t nrec, next_submit, next_emit, in_flight;
    struct held *held;           /* doc: ring of hold_cap results waiting their turn */
    size_t held_bytes;           /* their result bytes */
    struct evbuffer *out;        /* doc: lines not yet sent */
    uint64_t generation;
    int code;                    /* the status code replied */
    size_t bytes;                /* body bytes replied */
    char line[192];              /* access log: peer, method and path (escaped) */
    struct req *next_wait, *next_dirty, *next_step;
};

/* Request framing, as read from the socket (frame.c). Offsets are absolute:
 * bytes since the connection began. */
enum {
    FR_IDLE, FR_HEAD, FR_BODY, FR_CHUNK_SIZE, FR_CHUNK_DATA, FR_CHUNK_END, FR_TRAILER,
    FR_REFUSED /* refused; what follows is dropped */
};
#define FE_HEAD 1u /* frame_feed() saw: a request's first byte */
#define FE_BODY 2u /* a header section ending, a body to follow */
#define FE_DONE 4u /* a request's last byte */

struct frame {
    uint8_t st;
    bool http10, no_body, has_cl, has_host, chunked, got_line;
    uint64_t req;        /* where the current request began (a trailer: where it began) */
    uint64_t line, scan; /* the current line's first byte; how far LF was looked for */
    uint64_t pos;        /* the next byte to look at */
    uint64_t cl, left, body;
    uint32_t done;       /* requests read whole */
    const char *why;     /* the refusal's reason */
};

struct listener {
    struct serve *s;
    bool admin;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    char name[128];
    char *unix_path; /* a Unix socket of ours, removed at exit */
    bool inherited;  /* systemd's (socket activation): not ours to shut down */
};

struct conn {
    struct serve *s;
    struct bufferevent *bev;         /* the socket's, evhttp's */
    struct evhttp_connection *evcon; /* its evhttp connection */
    struct event *ev_timer;          /* set-up, deadlines, the lingering close */
    struct event *ev_gone;           /* the peer hung up */
    struct event *ev_answer;         /* writing a reply of ours */
    struct evbuffer *answer;         /* a reply of ours (a refusal), to write */
    struct evbuffer_cb_entry *in_cb, *out_cb;
    struct req *cur;                 /* the request being answered on it, if any */
    struct frame fr;
    uint64_t base;                   /* the absolute offset of the input's first byte */
    uint64_t bad_at;                 /* a refused request starts here (UINT64_MAX: none) */
    uint32_t replied;                /* replies written */
    int refuse_code;                 /* a refusal to answer once the replies before it are */
    const char *refuse_why;
    uint8_t deadline, phase;
    bool admin;                      /* came through the admin listener */
    bool writing;                    /* a reply is handed to evhttp and not yet written */
    bool refused;                    /* over --max-connections */
    bool dead, in_cb_now;
};

/* Requests refused before they ran, by reason (for /metrics). */
enum refusal { R_FRAMING, R_BODY_TOO_LARGE, R_HEADER_TOO_LARGE, R_TOO_MANY_RECORDS, R_N };

struct metrics;
struct reloader;
struct access_log;
struct inline_run;

struct serve {
    struct serve_opts o;
    struct event_base *base;
    struct listener pub, adm;
    struct event *ev_exec, *ev_flush, *ev_tick, *ev_deadline, *ev_step;
    struct event *ev_sig[3];
    bool kicked; /* ev_flush is active */

    /* The classifier. */
    const exec_plugin_t *pl; /* exec_plugin_open() */
    exec_ops_t ops; /* the plugin's ops, with ctx_release freeing swapped-out contexts */
    exec_csv_header_t *hdr;
    char *header_row; /* --header as given, to recognise it at the top of a body */
    size_t header_len;
    char *spec;       /* the spec of the context serving now */
    exec_t *ex;
    struct inline_run *inl;
    uint64_t generation;
    unsigned workers;

    /* Requests. */
    struct req **slots;
    uint32_t nslots, cap_slots;
    uint32_t *free_slots, nfree;
    struct req *wait_head, *wait_tail; /* requests with records waiting for room */
    uint64_t waiting_singles;          /* single records among them */
    struct req *dirty;
    struct req *step_head, *step_tail; /* requests with work for the next turn */
    uint32_t hold_cap; /* a document's records in flight, at most */
    uint64_t open;     /* requests being answered */
    uint64_t writing;  /* replies handed to evhttp and not yet written */
    uint64_t records_in_flight;
    uint64_t last_result; /* when a result last came (ns) */
    uint64_t busy_since;  /* since when every worker has had a record (ns), or 0 */

    /* Connections. */
    struct conn **conns; /* open addressing, by bufferevent */
    uint32_t conns_mask;
    uint32_t nconns, nrefusing, nadmin; /* all; over a cap (closing); admin ones */

    uint64_t accept_errors;
    unsigned ticks, warned_evcon;
    bool draining, fatal, stopping;
    int exit_code;
    uint64_t started_ns;
    struct metrics *m;
    struct reloader *rl;
    struct access_log *log;
};

/* options.c */
void serve_manual(FILE *f);
int serve_options(struct serve *s, int argc, char **argv, bool *help);

/* log.c */
uint64_t serve_now_ns(void);  /* monotonic */
uint64_t serve_wall_ns(void); /* since the epoch */
const char *serve_stamp(char *buf, size_t cap);
void serve_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool serve_on_journal(int fd);
const char *serve_escape(char *buf, size_t cap, const char *text, size_t len);

/* client.c */
int client_reload(const char *addr, unsigned reload_timeout_s);

/* systemd.c */
int systemd_listener(void); /* the socket systemd passed; -1: none; -2: a bad one */
void systemd_ready(const char *status);
void systemd_reloading(const char *status);
void systemd_stopping(const char *status);

/* main.c */
void serve_maybe_exit(struct serve *s);
void serve_drain_start(struct serve *s, const char *why);
const char *serve_unhealthy(struct serve *s, char *buf, size_t cap);

/* conn.c */
struct bufferevent *conn_new(struct event_base *base, void *arg);
struct conn *conn_of(struct serve *s, struct evhttp_connection *evcon);
size_t conn_pending(const struct conn *c);
void conn_reply_written(struct evhttp_request *http, void *arg);

/* frame.c */
int frame_feed(struct frame *f, struct evbuffer *b, uint64_t base, uint64_t max_body,
               unsigned *ev);
bool frame_in_body(const struct frame *f);

/* http.c */
int http_start(struct serve *s, struct listener *l, int listen_fd);
void http_reply_text(struct serve *s, struct req *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void http_reply_result(struct serve *s, struct req *r, const exec_result_t *res);
void http_doc_flush(struct serve *s, struct req *r);
void http_doc_line(struct serve *s, struct req *r, uint32_t idx, int status, int user_code,
                   int sig, int exit_status, const void *data, size_t len);
void http_body_ready(struct serve *s, struct req *r);

/* body.c */
int body_start(struct serve *s, struct req *r);
bool body_step(struct serve *s, struct req *r);
void body_free(struct req *r);

/* pump.c */
struct req *req_new(struct serve *s, struct evhttp_request *http);
void req_settle(struct serve *s, struct req *r);
int pump_submit(struct serve *s, struct req *r);
int pump_request(struct serve *s, struct req *r);
void pump_kick(struct serve *s);
void pump_step(struct serve *s, struct req *r);
void pump_start(struct serve *s);
void pump_fail_all(struct serve *s, int code);
void pump_output_drained(struct serve *s, struct req *r);
void pump_client_gone(struct serve *s, struct req *r);
void pump_timeouts(struct serve *s);
int status_of(int exec_status);
enum outcome outcome_of(int exec_status);
const char *signal_name(int sig);

/* inline.c: a synchronous stand-in for the executor, for --backend inline. */
int inline_create(struct serve *s, void *ctx, char *err, size_t errlen);
int inline_try_submit(struct inline_run *in, const void *rec, size_t len, uint64_t tag);
int inline_next(struct inline_run *in, exec_result_t *res);
void inline_swap(struct inline_run *in, void *ctx);
void inline_destroy(struct inline_run *in);

/* reload.c */
int reload_start(struct serve *s);
void reload_request(struct serve *s, const char *spec, size_t spec_len, struct req *r);
bool reload_busy(const struct serve *s);
bool reload_stuck(const struct serve *s, double *secs);
bool reload_in_swap(const struct serve *s);
void reload_drain(struct serve *s);
bool reload_stop(struct serve *s);
void ops_wrap(struct serve *s);

/* metrics.c */
int metrics_create(struct serve *s);
void metrics_free(struct serve *s);
void metrics_record(struct serve *s, enum outcome o);
void metrics_request(struct serve *s, int code, uint64_t ns);
void metrics_reload(struct serve *s, const char *result);
void metrics_refused(struct serve *s, enum refusal why);
void metrics_deadline(struct serve *s, bool body);
void metrics_conn_refused(struct serve *s);
void metrics_client_gone(struct serve *s);
void metrics_paused(struct serve *s);
void metrics_unread(struct serve *s);
void metrics_tick(struct serve *s);
bool metrics_all_failing(struct serve *s, unsigned secs, uint64_t *failed);
void metrics_page(struct serve *s, struct evbuffer *out);
int access_log_open(struct serve *s, const char *path);
void access_log_line(struct serve *s, const struct req *r, uint32_t records);
void access_log_refusal(struct serve *s, const struct conn *c, int code, const char *why);
void access_log_flush(struct serve *s);
void access_log_close(struct serve *s);

#endif /* SERVE_H */
