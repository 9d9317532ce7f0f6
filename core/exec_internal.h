/*
 * Internal seam between core/ and backends/. Core owns validation, the window
 * and backpressure, batching, ordering, delivery, stats and strings; a backend
 * only moves batches to its workers and back (see struct exec__backend).
 */
#ifndef EXEC_INTERNAL_H
#define EXEC_INTERNAL_H

#include "executor.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define EXEC__MAX_WORKERS 1024u
#define EXEC__MAX_WINDOW (1u << 24)
#define EXEC__MAX_BATCH 4096u
#define EXEC__MAX_SIZE ((size_t)64 << 20)

/* One record inside a batch: bytes at batch->data + off. */
struct exec__rec {
    uint64_t tag;
    uint32_t off;
    uint32_t len;
};

/* One record's outcome: bytes at batch->rdata + off. */
struct exec__res {
    int32_t status;    /* 0 or an EXEC_E* result code */
    int32_t user_code; /* EXEC_EUSER: process()'s return */
    int32_t signal;
    int32_t exit_status;
    uint32_t len;
    uint32_t flags; /* EXEC_RESULT_* */
    uint64_t off;
};

/* Per-record flags in exec__batch.rflags: set by the canceller, read by the worker. */
#define EXEC__RF_CANCEL 0x1u
#define EXEC__RF_SOFT 0x2u /* ran past timeout_ms: asked to stop */

/*
 * A batch: records filled by the producer (under ex->submit_lock), processed by
 * one worker, then delivered by the consumer. The backend allocates batches
 * (for EXEC_FORK recs/data sit in shared memory) and may embed this struct.
 */
struct exec__batch {
    uint64_t seq;      /* batch number, dense from 0 in dispatch order */
    uint64_t rec_seq0; /* submission number of recs[0] */
    uint32_t n;        /* records */
    uint32_t cap;      /* room in recs[] and res[] */
    uint32_t worker;   /* set by the backend */
    uint32_t cursor;   /* consumer: next record to deliver */
    uint64_t generation;
    struct exec__rec *recs;
    char *data;
    size_t data_len, data_cap;
    struct exec__res *res;
    char *rdata;
    size_t rdata_len, rdata_cap;
    /* Cancel support (backends with cancel_flags): one byte per record that
     * workers read before and after process(), and the index of the record a
     * worker is on (ck_pr store per record). */
    uint8_t *rflags;
    uint32_t progress;
    uint64_t t_open; /* when its first record was submitted (latency samples) */
};

/* The result writer handed to process(). */
struct exec_writer {
    char *buf;    /* result area; grown by grow() when set */
    size_t cap;
    size_t start; /* where this record's result begins */
    size_t len;   /* end of what was written */
    size_t max;   /* max_result */
    bool overflow;
    bool saw_cancel;       /* exec_cancelled() returned true */
    const uint8_t *rflag;  /* this record's flags, or NULL */
    /* Makes room for at least need bytes in total; 0 or an error. NULL: fixed. */
    int (*grow)(struct exec_writer *w, size_t need);
    void *grow_arg;
};

void exec__writer_begin(struct exec_writer *w);

/*
 * Runs process() over b->recs[from..n) with ctx, filling b->res and b->rdata.
 * Returns the index it stopped at (n unless the fixed result area ran short:
 * then the rest must be re-run). Used by every backend's worker loop.
 */
uint32_t exec__run_batch(const exec_ops_t *ops, void *ctx, void *wstate,
                         struct exec__batch *b, uint32_t from, struct exec_writer *w,
                         size_t max_result);

/*
 * The backend seam, in the spirit of sqlite3_io_methods. Threads:
 *   batch_get, dispatch, hungry: the producer (one at a time, ex->submit_lock held);
 *   reap, batch_put: the consumer (one at a time, ex->next_lock held);
 *   swap: one at a time (ex->swap_lock held); start/stop: create/destroy only.
 */
struct exec__backend {
    unsigned version;
    exec_backend_t id; /* required: the exec_backend_t this implements */
    const char *name;
    int (*start)(exec_t *ex);
    /* An empty batch with room for up to ex->opt.batch records, or NULL when none
     * is free right now (the producer then waits for the consumer). */
    struct exec__batch *(*batch_get)(exec_t *ex);
    /* Hands a filled batch to a worker. Must not fail. */
    void (*dispatch)(exec_t *ex, struct exec__batch *b);
    /* True when the worker b would go to is short of work: send b now. */
    bool (*hungry)(exec_t *ex, const struct exec__batch *b);
    /* A completed batch (every res[] filled), or NULL if none is ready. */
    struct exec__batch *(*reap)(exec_t *ex);
    /* The consumer is done with b (delivered): recycle it. */
    void (*batch_put)(exec_t *ex, struct exec__batch *b);
    int (*swap)(exec_t *ex, void *new_ctx, uint64_t generation);
    /* Cancel: with cancel_flags, batches carry rflags that workers honour
     * (exec__run_batch does). cancel, when set, decides for a record of a
     * dispatched batch (called under ex->flight_lock): 1 if it cancelled it
     * (queued: flag it; running: e.g. kill the worker), 0 if it had finished.
     * Without it core flags records at or after b->progress. */
    bool cancel_flags;
    int (*cancel)(exec_t *ex, struct exec__batch *b, uint32_t i);
    /* Optional: one worker's figures (core has filled index). */
    void (*worker_stats)(const exec_t *ex, unsigned i, exec_worker_stats_t *ws);
    /* Stops workers, abandons what is in flight, releases every resource.
     * Must cope with a partial start(). */
    void (*stop)(exec_t *ex);
};

/* Every backend built in, NULL-terminated (backends/registry.c). Core finds a
 * backend here by id and names none itself. */
extern const struct exec__backend *const exec__backends[];

struct exec {
    const exec_ops_t *ops;
    void *ctx0; /* the context given to exec_create */
    exec_backend_t backend;
    exec_options_t opt;
    const struct exec__backend *be;
    void *be_priv;

    /* Consumer wake-up: efd is readable when *armed was set and a worker
     * saw results ready. Backends point armed into memory their workers see. */
    int efd;
    uint32_t *armed;
    uint32_t armed_local;

    /* Producer side (submit_lock). */
    pthread_mutex_t submit_lock;
    struct exec__batch *open; /* batch being filled */
    uint64_t next_batch_seq;
    uint64_t next_rec_seq;
    bool finished;

    /* Backpressure: submitters wait here for the window or a free batch. */
    pthread_mutex_t wait_lock;
    pthread_cond_t wait_cond;
    unsigned waiters;

    /* Consumer side (next_lock). */
    pthread_mutex_t next_lock;
    struct exec__batch *cur;      /* batch being delivered */
    struct exec__batch **reorder; /* ordered: completed batches by seq & mask */
    uint64_t reorder_mask;
    uint64_t deliver_seq;         /* ordered: next batch seq to deliver */
    struct exec__batch **ready;   /* unordered: completed batches, FIFO */
    uint64_t ready_head, ready_tail, ready_mask;

    pthread_mutex_t swap_lock;

    /* Dispatched batches not yet taken by the consumer, by seq & reorder_mask,
     * for exec_cancel. Lock order: next_lock, submit_lock, flight_lock. */
    pthread_mutex_t flight_lock;
    struct exec__batch **flight;

    /* Latency histogram (consumer writes, anyone reads). */
    uint64_t lat_hist[EXEC_LAT_BUCKETS];
    bool started;    /* start() succeeded: contexts are ours to release */
    bool destroying;

    /* Counters: each has one writer and is read with ck_pr loads.
     * submitted: producer, per record. collected: consumer, per whole batch
     * delivered (the window is submitted - collected). progress: consumer, bumped
     * whenever room may have appeared (sleeping submitters wait on it). */
    uint64_t submitted, collected, progress;
    uint64_t batches_put; /* consumer: batches recycled (batches - this = out) */
    uint32_t batch_limit; /* records per batch the backend asks for (<= opt.batch) */
    uint32_t idle;        /* workers going to sleep: send what is open at once */
    uint64_t early_max;   /* most batches out before none is sent early */
    uint64_t ok, user_errors, crashed, timed_out, too_big,
        cancelled, worker_errors, batches, swaps, generation, respawns;
    uint32_t fatal; /* set by a backend that gave up */
};

/*
 * A worker about to sleep calls this (after counting itself in ex->idle) so no
 * record waits in the open batch while it sleeps: sends the open batch and
 * returns 1, returns 0 if there was none, or -1 if a producer holds the lock
 * (it will see ex->idle on its next record; retry before sleeping for long).
 */
int exec__flush_idle(exec_t *ex);

/* Backends call this after making results visible: wakes a sleeping consumer. */
void exec__notify(exec_t *ex);
/* True when an ordered consumer is waiting for exactly this batch. */
static inline bool exec__awaited(exec_t *ex, const struct exec__batch *b)
{
    return ex->reorder && b->seq == __atomic_load_n(&ex->deliver_seq, __ATOMIC_RELAXED);
}
/* Most batches that can be in flight at once (sizes rings and pools). */
uint32_t exec__max_batches(const exec_t *ex);
/* Nanoseconds on CLOCK_MONOTONIC. */
uint64_t exec__now_ns(void);

#endif /* EXEC_INTERNAL_H */
