/*
 * The seam between core/ and backends/. Core owns validation, the window and
 * backpressure, batching, dispatch, ordering, delivery, cancel, counters and
 * strings; a backend only moves batches to its workers and back, and reports
 * what happened to them through the calls at the end of this file.
 *
 * struct exec is core's own (core/exec_core.h): here it is incomplete, so a
 * backend can neither read nor write its fields; it asks through functions.
 */
#ifndef EXEC_INTERNAL_H
#define EXEC_INTERNAL_H

#include "executor.h"
#include "lock.h"

#include <ck_ec.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define EXEC__MAX_WORKERS 1024u
#define EXEC__MAX_WINDOW (1u << 24)
#define EXEC__MAX_BATCH 4096u
#define EXEC__MAX_SIZE ((size_t)64 << 20)

/* One record inside a batch. Its bytes are in the batch's data area, or
 * (a backend with refs) where the caller keeps them for the call. EXEC_FORK's
 * regions sit at the same address in the parent and its workers, so a
 * pointer into one means the same bytes to both. Laid out as exec_record_t
 * (and allowed to alias it): exec_run_records() on a backend with refs hands
 * workers runs of the caller's own array (batch views), copying nothing. */
struct __attribute__((may_alias)) exec__rec {
    const char *p;
    size_t len;
    uint64_t tag;
};
_Static_assert(sizeof(struct exec__rec) == sizeof(exec_record_t) &&
                   offsetof(struct exec__rec, p) == offsetof(exec_record_t, data) &&
                   offsetof(struct exec__rec, len) == offsetof(exec_record_t, len) &&
                   offsetof(struct exec__rec, tag) == offsetof(exec_record_t, tag),
               "struct exec__rec is laid out as exec_record_t");

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
 * A batch: records filled by the producer (core, under its submit lock),
 * processed by one worker, then delivered by the consumer. The backend
 * allocates batches (EXEC_FORK: recs and data sit in shared memory) and may
 * embed this struct. Core's own fields lie in core_room, which a backend
 * allocates with the batch but cannot read (struct exec__batch_core,
 * core/exec_core.h), as it cannot read struct exec.
 */
struct exec__batch {
    uint64_t seq;      /* batch number, dense from 0 in dispatch order */
    uint64_t rec_seq0; /* submission number of recs[0] */
    uint32_t n;        /* records */
    uint32_t cap;      /* room in recs[] and res[] */
    uint32_t worker;   /* set by the backend */
    uint64_t generation; /* set by the backend: the context it ran against */
    struct exec__rec *recs; /* the batch's records: recs_buf, or a view (core) */
    struct exec__rec *recs_buf; /* the backend's own room for them; NULL: recs is
                                   always that room (no views) */
    char *data;
    size_t data_len, data_cap;
    struct exec__res *res;
    char *rdata;
    size_t rdata_len, rdata_cap;
    /* Cancel: one byte per record that workers read before and after
     * process() (exec__run_batch does), and the index of the record after
     * the last one a worker finished (stored per record). */
    uint8_t *rflags;
    uint32_t progress;
    union {
        unsigned char bytes[40];
        uint64_t align_u64;
        void *align_ptr;
    } core_room; /* core's: struct exec__batch_core */
};

/* The result writer handed to process(). */
struct exec_writer {
    char *buf; /* result area; grown by grow() when set */
    size_t cap;
    size_t start; /* where this record's result begins */
    size_t len;   /* end of what was written */
    size_t max;   /* max_result */
    size_t end;   /* this record's room ends here: min(cap, start + max), or 0
                     after an overflow (set by exec__writer_begin and the writer) */
    bool overflow;
    bool nomem;           /* ... because the area could not grow */
    bool saw_cancel;      /* exec_cancelled() returned true */
    const uint8_t *rflag; /* this record's flags, or NULL */
    /* Makes room for at least need bytes in total; 0 or an error. NULL: fixed. */
    int (*grow)(struct exec_writer *w, size_t need);
    void *grow_arg;
};

void exec__writer_begin(struct exec_writer *w);
/* A grow for a writer whose area is its own heap buffer (doubling, from 4 KiB). */
int exec__writer_grow(struct exec_writer *w, size_t need);

/*
 * What a worker loop may ask of exec__run_batch besides running records:
 * on_record is called before each record starts (the fork worker publishes
 * where it is), on_return as soon as it is over (before its cancel and timeout
 * flags are read), and with a fixed result area (w->grow NULL) the pass stops
 * where a whole max_result would no longer fit, or where process() broke the
 * writer (then *broken is set and the record it broke is the last one run).
 */
struct exec__run_hooks {
    void (*on_record)(void *arg, uint32_t i);
    void (*on_return)(void *arg, uint32_t i);
    void *arg;
    bool broken;
    size_t good; /* out: the writer's length after the last sane record */
};

/*
 * Runs process() over b->recs[from..n) with ctx, filling b->res and the
 * writer's area. Returns the index it stopped at (n unless a fixed result
 * area ran short or was broken: then the rest must be run in another pass).
 * The one per-record loop every backend's workers run. hooks may be NULL.
 */
uint32_t exec__run_batch(const exec_ops_t *ops, void *ctx, void *wstate,
                         struct exec__batch *b, uint32_t from, struct exec_writer *w,
                         size_t max_result, struct exec__run_hooks *hooks);

/*
 * The backend seam, in the spirit of sqlite3_io_methods. Which thread calls:
 *   batch_get, dispatch, hungry, swap_commit: the producer (core's submit
 *     lock held, one at a time);
 *   reap, batch_put: the consumer (core's next lock held, one at a time);
 *   cancel: any thread (core's submit and flight locks held);
 *   swap_prepare: one at a time (core's swap lock held, no other);
 *   worker_stats: any thread, no lock;
 *   start, stop: exec_create / exec_destroy only.
 */
struct exec__backend {
    unsigned version;
    exec_backend_t id; /* the exec_backend_t this implements */
    const char *name;
    /* Bytes of private state core allocates (zeroed) before start():
     * exec__priv() returns it. */
    size_t priv_size;
    /* Starts the workers. On failure stop() is still called: it must cope
     * with a partial start. */
    int (*start)(exec_t *ex);
    /* An empty batch with room for up to batch records, or NULL when none is
     * free right now (the producer then waits for the consumer); *err is set
     * to EXEC_ENOMEM when one could not be made. */
    struct exec__batch *(*batch_get)(exec_t *ex, int *err);
    /* Hands a filled batch to a worker. Must not fail. */
    void (*dispatch)(exec_t *ex, struct exec__batch *b);
    /* True when the worker b would go to is short of work: send b now. */
    bool (*hungry)(exec_t *ex, const struct exec__batch *b);
    /* A completed batch (every res[] filled), or NULL if none is ready. */
    struct exec__batch *(*reap)(exec_t *ex);
    /* The consumer is done with b: recycle it. */
    void (*batch_put)(exec_t *ex, struct exec__batch *b);
    /* A swap in two steps. prepare readies new_ctx (EXEC_FORK: a new
     * generation and its canary) and may fail, leaving nothing behind; core
     * then sends the open batch to the current context, and commit makes
     * new_ctx the one every later batch runs against. commit cannot fail. */
    int (*swap_prepare)(exec_t *ex, void *new_ctx, uint64_t generation);
    void (*swap_commit)(exec_t *ex);
    /* Cancel: batches carry rflags that workers honour. cancel, when set,
     * decides for record i of a dispatched batch: 1 if it cancelled it
     * (queued: flag it; running: e.g. kill the worker), 0 if it had
     * finished. Without it core flags records at or after b->progress. */
    int (*cancel)(exec_t *ex, struct exec__batch *b, uint32_t i);
    /* Records may stay where the caller keeps them (exec_run_records): the
     * backend's workers can read the caller's memory. */
    bool refs;
    /* Optional: the calling thread runs one queued batch itself, because it
     * would wait otherwise (exec_map's caller). True if it ran one. Any
     * thread, no core lock held. */
    bool (*help)(exec_t *ex);
    /* Optional: a whole-stream call's thread joins (true) the workers, which
     * rest one of theirs meanwhile, or leaves (false). */
    void (*caller_joins)(exec_t *ex, bool joins);
    /* Optional: worker i's figures (core has filled the index). */
    void (*worker_stats)(exec_t *ex, unsigned i, exec_worker_stats_t *ws);
    /* Stops workers, abandons what is in flight, releases every resource. */
    void (*stop)(exec_t *ex);
    /* Optional: adjusts the caller's options before core fills in defaults
     * and checks ranges (EXEC_MPI: workers are ranks). exec_create only;
     * 0 or an error exec_create returns. */
    int (*configure)(exec_options_t *o);
    /* Optional: the first step of a swap by spec (exec_swap_spec), in place
     * of swap_prepare; swap_commit is the second. May fail (err gets why),
     * leaving nothing behind. Same thread rules as swap_prepare. */
    int (*swap_spec)(exec_t *ex, const char *spec, uint64_t generation, char *err,
                     size_t errlen);
    /* Optional: true while the backend still has to settle something that a
     * stream whose every result is out set off (EXEC_FORK: a worker killed
     * for a record it answered with garbage, not yet dead and replaced), so
     * that exec_stats() is exact once exec_next() says EXEC_EOF: core holds
     * EXEC_EOF back meanwhile, and the backend wakes the consumer
     * (exec__wake) once it is settled. Consumer (core's next lock held). */
    bool (*unsettled)(exec_t *ex);
    /* Optional: exec_destroy() in a child of the creating process (the host
     * forked): frees this process's copy of the backend's memory and closes
     * its copies of descriptors and mappings; touches no worker, thread,
     * lock or shared state (they are the creator's) and runs no user
     * callback. Core frees the private state itself afterwards. */
    void (*forget)(exec_t *ex);
};

/* Every backend built in, NULL-terminated (backends/registry.c). Core finds a
 * backend here by id and names none itself. A backend that lives in a library
 * of its own (EXEC_MPI in libexecutor_mpi) is listed when that library is
 * linked in. */
extern const struct exec__backend *const exec__backends[];

/* ------------------------------------------------------------------------- */
/* What a backend may ask of core, and how it reports                         */
/* ------------------------------------------------------------------------- */

/* These calls are exported by the shared library (protected there: calls
 * from inside it still bind locally), so that a backend built as a library
 * of its own can make them; they are no API (libexecutor_mpi must come from
 * the same build). */
#ifdef EXEC_BUILDING
#define EXEC__SEAM __attribute__((visibility("protected")))
#else
#define EXEC__SEAM __attribute__((visibility("default")))
#endif

EXEC__SEAM void *exec__priv(const exec_t *ex); /* the backend's private state */
EXEC__SEAM const exec_ops_t *exec__ops(const exec_t *ex);
EXEC__SEAM const exec_options_t *exec__opts(const exec_t *ex); /* defaults filled in */
EXEC__SEAM void *exec__ctx0(const exec_t *ex);   /* the context exec_create got */
EXEC__SEAM bool exec__started(const exec_t *ex); /* start() succeeded: contexts are ours */
EXEC__SEAM int exec__efd(const exec_t *ex);      /* the consumer's eventfd */
/* Most batches that can be in flight at once (sizes rings and pools). */
EXEC__SEAM uint32_t exec__max_batches(const exec_t *ex);
/* Nanoseconds on CLOCK_MONOTONIC. */
EXEC__SEAM uint64_t exec__now_ns(void);
/* CPU time of the calling thread, in ns (0 if unknown). */
static inline uint64_t exec__thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Where workers find the consumer's "armed" word (it sleeps, wake it): a
 * backend whose workers are other processes moves it into shared memory in
 * start(), before any worker runs, and back (NULL) in stop(), after the last.
 */
EXEC__SEAM void exec__use_armed(exec_t *ex, uint32_t *word);
/* Wakes a sleeping consumer if it is armed (workers, after making results
 * visible; also from forked workers). */
EXEC__SEAM void exec__notify(exec_t *ex);
/* True while the consumer sleeps (or may) and wants a wake-up. */
EXEC__SEAM bool exec__armed(const exec_t *ex);
/* Wakes the consumer whatever the armed word says (deaths to settle). */
EXEC__SEAM void exec__wake(exec_t *ex);
/* True when an ordered consumer waits for exactly this batch. */
EXEC__SEAM bool exec__awaited(exec_t *ex, const struct exec__batch *b);
/* The backend holds at most n batches at once (fewer than max_batches):
 * half of them may go out early and small (start() only). */
EXEC__SEAM void exec__batch_room(exec_t *ex, uint32_t n);
/* The backend's workers read [base, base + size) where it lies (and no
 * other memory of the host's): exec_buffer() hands it out, and records in it
 * travel by reference (start() only; NULL: none). */
EXEC__SEAM void exec__use_buffer(exec_t *ex, void *base, size_t size);
/* Records per batch the producer should aim for (heavy records: fewer). */
EXEC__SEAM void exec__tune_batch(exec_t *ex, uint32_t records);
/*
 * A worker about to sleep calls idle_enter, then flush_idle so no record
 * waits in the open batch while it sleeps: 1 if it sent the open batch, 0 if
 * there was none, -1 if a producer holds the lock (it will see the idle
 * count on its next record; look again soon). idle_leave when it wakes.
 */
EXEC__SEAM void exec__idle_enter(exec_t *ex);
EXEC__SEAM void exec__idle_leave(exec_t *ex);
EXEC__SEAM int exec__flush_idle(exec_t *ex);
/* A worker was replaced (any thread). */
EXEC__SEAM void exec__respawned(exec_t *ex);
/* The backend gave up: every later submit fails with EXEC_EFATAL. */
EXEC__SEAM void exec__fatal(exec_t *ex);
/* True once exec__fatal() was called. */
EXEC__SEAM bool exec__is_fatal(const exec_t *ex);

/* Starts a thread with every signal blocked, so a host's signals never land
 * on our threads (their threads inherit the mask too). 0, EXEC_ELIMIT or
 * -errno. */
EXEC__SEAM int exec__spawn(pthread_t *tid, void *(*fn)(void *), void *arg);

/* Event count modes (core/ec.c): threads of one process, or processes
 * sharing a mapping. */
extern const struct ck_ec_mode exec__ec_threads;
extern const struct ck_ec_mode exec__ec_procs;

/* Maps a failed pthread_create()/fork() errno to the library's code. */
static inline int exec__spawn_error(int err)
{
    return err == 0 ? 0 : err == EAGAIN ? EXEC_ELIMIT : -err;
}

#endif /* EXEC_INTERNAL_H */
