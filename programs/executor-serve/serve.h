/*
 * executor-serve's shared state: one struct serve for the process, one struct
 * req per HTTP request being answered, one struct conn per client connection
 * that sent a request. All of it belongs to the event loop's thread; the
 * reload thread (reload.c) only builds contexts, swaps them in and reports
 * back through a queue.
 *
 * Files: main.c (start, loop, shutdown), options.c (command line, manual),
 * http.c (routes, bodies, replies), conn.c (client connections), pump.c
 * (records into the executor and results out of it), inline.c (the baseline: process() in the loop), reload.c (live reload),
 * metrics.c (/metrics and the access log).
 */
#ifndef SERVE_H
#define SERVE_H

#include "executor.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define PROG "executor-serve"

enum serve_format { SF_CSV, SF_LINES };

struct serve_opts {
    const char *plugin, *spec, *listen, *header, *access_log;
    exec_backend_t backend;
    bool inline_run; /* --backend inline: process() in the loop (the baseline) */
    unsigned workers, window, batch;
    enum serve_format format;
    int delim;
    size_t max_record, max_result, max_body;
    unsigned timeout_ms, start_timeout_ms;
    unsigned idle_timeout_s, graceful_timeout_s, retry_after_s;
    int worker_nice; /* added to the workers' nice value: the loop goes first */
    bool admin;
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
    int status, user_code, sig, exit_status;
    char *data;
    size_t len;
};

/* A record of a document: its place in the body. */
struct span {
    uint32_t off, len;
};

struct conn;

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
    uint64_t t0;                 /* when the handler saw it (ns) */
    const char *body;            /* the body, in evhttp's buffer */
    struct span *recs;           /* doc: its records */
    uint32_t nrec, next_submit, next_emit, in_flight;
    struct held *held;           /* doc: ring of hold_cap results waiting their turn */
    struct evbuffer *out;        /* doc: lines not yet sent */
    uint64_t generation;
    int code;                    /* the status code replied */
    size_t bytes;                /* body bytes replied */
    char line[160];              /* access log: peer, method and path */
    struct req *next_wait, *next_dirty;
};

struct conn {
    struct evhttp_connection *evcon;
    struct serve *s;
    struct req *cur; /* the request being answered on it, if any */
    bool writing;    /* a reply is handed to evhttp and not yet written */
};

struct metrics;
struct reloader;
struct access_log;
struct inline_run;

struct serve {
    struct serve_opts o;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    char listen_name[80];
    struct event *ev_exec, *ev_flush, *ev_tick, *ev_deadline;
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

    /* Requests. */
    struct req **slots;
    uint32_t nslots, cap_slots;
    uint32_t *free_slots, nfree;
    struct req *wait_head, *wait_tail; /* requests with records waiting for room */
    uint64_t waiting_singles;          /* single records among them */
    struct req *dirty;
    uint32_t hold_cap; /* a document's records in flight, at most */
    uint64_t open;     /* requests being answered */
    uint64_t writing;  /* replies handed to evhttp and not yet written */
    uint64_t records_in_flight;
    struct conn **conns; /* open addressing, by evhttp_connection */
    uint32_t conns_mask, nconns;

    uint64_t accept_errors;
    bool draining, fatal;
    int exit_code;
    uint64_t started_ns;
    struct metrics *m;
    struct reloader *rl;
    struct access_log *log;
};

/* options.c */
void serve_manual(FILE *f);
int serve_options(struct serve *s, int argc, char **argv, bool *help);

/* main.c */
uint64_t serve_now_ns(void);
void serve_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void serve_maybe_exit(struct serve *s);
void serve_drain_start(struct serve *s, const char *why);

/* conn.c */
struct conn *conn_of(struct serve *s, struct evhttp_connection *evcon);
void conn_reply_written(struct evhttp_request *http, void *arg);
void conn_forget_all(struct serve *s);

/* http.c */
int http_start(struct serve *s, int listen_fd);
void http_reply_text(struct serve *s, struct req *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void http_reply_result(struct serve *s, struct req *r, const exec_result_t *res);
void http_doc_flush(struct serve *s, struct req *r);
void http_doc_line(struct serve *s, struct req *r, uint32_t idx, int status, int user_code,
                   int sig, int exit_status, const void *data, size_t len);

/* pump.c */
struct req *req_new(struct serve *s, struct evhttp_request *http);
void req_settle(struct serve *s, struct req *r);
int pump_submit(struct serve *s, struct req *r);
int pump_request(struct serve *s, struct req *r);
void pump_kick(struct serve *s);
void pump_start(struct serve *s);
void pump_fail_all(struct serve *s, int code);
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
void reload_stop(struct serve *s);
void ops_wrap(struct serve *s);

/* metrics.c */
int metrics_create(struct serve *s);
void metrics_free(struct serve *s);
void metrics_record(struct serve *s, enum outcome o);
void metrics_request(struct serve *s, int code, uint64_t ns);
void metrics_reload(struct serve *s, const char *result);
void metrics_tick(struct serve *s);
void metrics_page(struct serve *s, struct evbuffer *out);
int access_log_open(struct serve *s, const char *path);
void access_log_line(struct serve *s, const struct req *r, uint32_t records);
void access_log_flush(struct serve *s);
void access_log_close(struct serve *s);

#endif /* SERVE_H */
