/*
 * libexecutor: apply one read-only context to a stream of records, in parallel.
 *
 * A program builds a context once (a classifier, a rule set, a model), then runs
 * many small records through ops->process(ctx, ...) on a pool of workers and
 * collects the results as they finish (unordered) or in input order (ordered).
 * The context is passed explicitly, never through a global, and never copied or
 * serialized: EXEC_THREADS workers share it under RCU; EXEC_FORK workers are
 * forked after it was built and inherit it copy-on-write.
 *
 * Conventions
 *   - Every public name starts with exec_ (functions, types) or EXEC_ (constants).
 *   - Functions return 0 on success or a negative error code (EXEC_E*), as libuv
 *     does; exec_strerror() and exec_err_name() describe a code. Where a system
 *     call fails the code is its negated errno (e.g. -EMFILE).
 *   - No global state: every call works on the executor handle it is given, and
 *     several executors (different classifiers, different backends) may live side
 *     by side in one process.
 *   - The library never calls exit(), never installs a signal handler, and after
 *     exec_destroy() leaves no thread, process, file descriptor or mapping behind.
 *   - An executor belongs to the process that created it. A host that forks may
 *     do so at any time, records in flight or not, but the child's copy is not
 *     an executor: every call on it there (all but exec_backend()) returns
 *     EXEC_ESTATE, and exec_destroy() there frees only the child's memory (see
 *     exec_destroy). The parent's executor goes on as if nothing happened.
 *     The check costs one load per call (a word on a page mapped with
 *     MADV_WIPEONFORK, zero in a child; before Linux 4.14, getpid()).
 *
 * The typical loop (one thread):
 *
 *     exec_t *ex;
 *     exec_create(&ex, &my_ops, ctx, EXEC_AUTO, NULL);
 *     while (read a record) {
 *         while (exec_try_submit(ex, rec, len, tag) == EXEC_EAGAIN)
 *             drain: exec_next(ex, &res, -1) and use res;
 *     }
 *     exec_finish(ex);
 *     while (exec_next(ex, &res, -1) == 0) use res;   (ends with EXEC_EOF)
 *     exec_destroy(ex);
 *
 * or simply exec_map(), which does exactly that with two callbacks.
 *
 * This header is the executor. Record sources, CSV fields, the file-to-file
 * map and plugins are in executor_records.h; EXEC_MPI is in executor_mpi.h.
 */
#ifndef EXECUTOR_H
#define EXECUTOR_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden visibility; everything declared here is its ABI. */
#pragma GCC visibility push(default)

#define EXEC_VERSION_MAJOR 0
#define EXEC_VERSION_MINOR 1
#define EXEC_VERSION_PATCH 0
#define EXEC_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------------- */
/* Error codes                                                               */
/* ------------------------------------------------------------------------- */

/* Codes shared with errno (negated). */
#define EXEC_EINVAL    (-EINVAL)    /* a bad argument: NULL, zero size, unknown flag */
#define EXEC_ENOMEM    (-ENOMEM)    /* out of memory */
#define EXEC_EAGAIN    (-EAGAIN)    /* would block: window full, or no result ready */
#define EXEC_ETIMEDOUT (-ETIMEDOUT) /* exec_next(): no result within the timeout */
#define EXEC_E2BIG     (-E2BIG)     /* record larger than options.max_record */
#define EXEC_ENOTSUP   (-ENOTSUP)   /* backend not available in this build */
#define EXEC_EBUSY     (-EBUSY)     /* exec_map() on an executor already in use */
#define EXEC_ENOENT    (-ENOENT)    /* not found: a field, a column, a tag in flight */

/* Codes of the library's own, in a range errno does not use. */
#define EXEC_EOF          (-4095) /* exec_next(): end of stream, every result delivered */
#define EXEC_ESTATE       (-4094) /* call out of order (e.g. submit after finish) */
#define EXEC_ECAPS        (-4093) /* classifier lacks a capability the backend needs */
#define EXEC_EVERSION     (-4092) /* ops->version is not EXEC_OPS_VERSION */
#define EXEC_EUSER        (-4091) /* result: process() returned non-zero (see user_code) */
#define EXEC_ECRASHED     (-4090) /* result: the worker died (see signal, exit_status) */
#define EXEC_ERECTIMEOUT  (-4089) /* result: record ran past options.timeout_ms */
#define EXEC_ERESULT2BIG  (-4088) /* result: larger than options.max_result */
#define EXEC_ECANCELLED   (-4087) /* result: record was cancelled */
#define EXEC_EINIT        (-4086) /* worker_init() failed, or a worker did not start */
#define EXEC_EWORKER      (-4085) /* result: a worker failed outside the record: garbage
                                     output, a stall, or its place given up after
                                     repeated deaths (EXEC_WORKER_GONE) */
#define EXEC_EFATAL       (-4084) /* executor gave up (workers die in a loop) */
#define EXEC_ELIMIT       (-4083) /* cannot start a thread or process: a resource
                                     limit (RLIMIT_NPROC, threads-max, pid_max, or
                                     memory for a thread's stack) */
#define EXEC_ELOST        (-4082) /* result: EXEC_MPI: the rank holding the record
                                     died or stopped answering (rank_timeout_ms) */

/* Codes of the record sources (executor_records.h; see docs/csv.md). */
#define EXEC_ENOBUFS       (-ENOBUFS) /* the caller's buffer is too small */
#define EXEC_EUNTERMINATED (-4070)    /* input ends inside a quoted field */
#define EXEC_EBADQUOTE     (-4069)    /* quote inside an unquoted field, or text
                                         after a closing quote */
#define EXEC_ETRUNCATED    (-4068)    /* input ends inside a length-prefixed record */

/* A short English text for an error code; never NULL. Thread-safe. */
const char *exec_strerror(int err);
/* The code's name, e.g. "EXEC_EAGAIN"; never NULL. Thread-safe. */
const char *exec_err_name(int err);

/* ------------------------------------------------------------------------- */
/* The classifier: a const table of callbacks                                */
/* ------------------------------------------------------------------------- */

/* Capability flags in exec_ops_t.caps. */
#define EXEC_CAP_THREAD_SAFE 0x1u /* process() may run concurrently on one shared ctx */
#define EXEC_CAP_FORK_SAFE   0x2u /* ctx stays valid in a child forked after it was built */

#define EXEC_OPS_VERSION 1

/*
 * Where process() writes its result. The bytes go straight to where the consumer
 * will read them (for EXEC_FORK: shared memory), so there is no copy per result.
 * A writer is valid only during the process() call it was handed to.
 */
typedef struct exec_writer exec_writer_t;

/* Appends len bytes. 0, or EXEC_ERESULT2BIG past options.max_result (the record's
 * result then reports EXEC_ERESULT2BIG whatever process() returns), or
 * EXEC_ENOMEM when the result area could not grow (the result says so too). */
int exec_write(exec_writer_t *out, const void *data, size_t len);
/* Appends len bytes and returns where to write them, or NULL past max_result. */
void *exec_write_reserve(exec_writer_t *out, size_t len);
/* Appends formatted text (no terminating NUL). 0 or EXEC_ERESULT2BIG. */
int exec_writef(exec_writer_t *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Drops what was written for this record so far, and forgets an earlier
 * EXEC_ERESULT2BIG: process() may then write a shorter result. */
void exec_write_reset(exec_writer_t *out);
/* Bytes written for this record so far. */
size_t exec_write_len(const exec_writer_t *out);

typedef struct exec_ops {
    unsigned version; /* EXEC_OPS_VERSION */
    unsigned caps;    /* EXEC_CAP_* */
    const char *name; /* for messages; may be NULL */

    /*
     * Required. Runs one record against ctx. worker_state is what worker_init
     * made (NULL without worker_init). Writes the result through out. Returns 0,
     * or a non-zero code of the user's that the record's result reports as
     * status EXEC_EUSER with user_code set; the stream goes on either way.
     * Bytes written before a non-zero return are delivered with EXEC_EUSER
     * (res.data, res.len): the place for an error message or a traceback.
     * The record bytes are valid only during the call.
     */
    int (*process)(void *ctx, void *worker_state, const void *rec, size_t len,
                   exec_writer_t *out);

    /*
     * Optional. Runs once inside each worker before its first record: in the
     * worker thread (EXEC_THREADS) or in the child after fork (EXEC_FORK).
     * Returns 0, or non-zero to refuse: exec_create() then fails with EXEC_EINIT.
     * EXEC_THREADS keeps worker_state across exec_swap_context(), so it must not
     * cache pointers into ctx; EXEC_FORK runs it again in each new generation.
     */
    int (*worker_init)(void *ctx, void **worker_state);
    /* Optional. Runs once inside each worker when it stops. */
    void (*worker_fini)(void *ctx, void *worker_state);

    /*
     * Optional. Called once for each context that leaves the executor: a
     * swapped-out one after its last reader is done (never on a worker's path),
     * and the current one in exec_destroy(). Called from a thread of the
     * library's (EXEC_FORK: the supervisor, once the old generation drained;
     * EXEC_THREADS: the reclaimer, after a grace period), with no lock of the
     * library's held and every signal blocked, or from exec_destroy() in its
     * caller's thread; never concurrently for one ctx. A host whose contexts
     * need its runtime (an interpreter's lock) takes it there safely or
     * defers the work to a thread of its own.
     */
    void (*ctx_release)(void *ctx);
} exec_ops_t;

/*
 * Where callbacks run, and what is held meanwhile. None may call into its own
 * executor unless said so; a host whose runtime has a lock of its own (an
 * interpreter's) never holds it while it calls the library, and then any
 * callback may take it.
 *   process, worker_init, worker_fini: EXEC_THREADS: the executor's worker
 *     threads (library threads, every signal blocked), and the caller of
 *     exec_map(), exec_map_source(), exec_map_fd() or exec_run_records()
 *     while it helps; no lock of the library's held. EXEC_FORK: the only
 *     thread of a worker process.
 *   ctx_release: a library thread or exec_destroy()'s caller (see above).
 *   options.on_slow: the EXEC_FORK supervisor thread, no lock held.
 *   options.fork_hooks: see exec_fork_hooks_t.
 *   exec_map()'s read_cb and emit_cb, exec_run_records()'s emit_cb, the map
 *     helpers' on_bad and on_failed: the calling thread, core's locks held.
 * The library's own threads: EXEC_THREADS's workers and its reclaimer,
 * EXEC_FORK's supervisor (one per executor), EXEC_MPI's (executor_mpi.h).
 */

/*
 * A writer the host owns, to run process() in its own thread with no
 * executor: a baseline to compare with, a test, a record that must be done
 * now. Results go one after another into memory the writer grows.
 * exec_writer_new returns NULL for max_result 0 or over 64 MiB, or out of
 * memory. exec_writer_run calls ops->process(ctx, worker_state, rec, len, w)
 * as a worker would and returns the status its result would have: 0,
 * EXEC_EUSER (*user_code set; may be NULL), EXEC_ERESULT2BIG, EXEC_ENOMEM,
 * or EXEC_EINVAL; the result is bytes [*off, *off + *out_len) of
 * exec_writer_data(w), valid until the next run or clear (a run may move
 * them). exec_writer_clear forgets every result. Not thread-safe: one writer
 * per thread.
 */
exec_writer_t *exec_writer_new(size_t max_result);
void exec_writer_free(exec_writer_t *w);
int exec_writer_run(exec_writer_t *w, const exec_ops_t *ops, void *ctx, void *worker_state,
                    const void *rec, size_t len, size_t *off, size_t *out_len, int *user_code);
const void *exec_writer_data(const exec_writer_t *w);
void exec_writer_clear(exec_writer_t *w);

/* ------------------------------------------------------------------------- */
/* Creating an executor                                                      */
/* ------------------------------------------------------------------------- */

typedef enum exec_backend {
    EXEC_AUTO = 0,    /* THREADS if caps has THREAD_SAFE, else FORK if FORK_SAFE;
                         never MPI */
    EXEC_THREADS = 1, /* pthreads sharing ctx under RCU; needs EXEC_CAP_THREAD_SAFE */
    EXEC_FORK = 2,    /* forked workers inheriting ctx; needs EXEC_CAP_FORK_SAFE */
    EXEC_MPI = 3      /* the worker ranks of an MPI job, each building its own
                         context from options.spec and running records on its
                         own EXEC_THREADS or EXEC_FORK executor; needs
                         libexecutor_mpi (see executor_mpi.h) and options.plugin */
} exec_backend_t;

/* Defined in executor_records.h, named by exec_options_t (EXEC_MPI). */
struct exec_plugin;
struct exec_csv_header;

/* Flags in exec_options_t.flags. */
#define EXEC_ORDERED 0x1u   /* deliver results in submission order */
#define EXEC_NO_REPLAY 0x2u /* EXEC_FORK: a swap's canary does not replay recent
                               records (see exec_swap_context) */
#define EXEC_CLOSE_FDS 0x4u /* EXEC_FORK: each zygote closes every descriptor it
                               inherits from the host except 0, 1, 2, the
                               executor's own and options.keep_fds, before it
                               forks any worker; a server's sockets then end
                               when it closes them. Ignored by EXEC_THREADS */

/* A record running past options.slow_ms (see on_slow). */
typedef struct exec_slow {
    uint64_t tag;
    uint64_t seq;        /* its submission number */
    unsigned worker;     /* the worker's index */
    int pid;             /* the worker's process */
    uint64_t elapsed_ms; /* how long it has run (at least slow_ms) */
} exec_slow_t;

/*
 * Fork hooks (EXEC_FORK), for a host whose runtime must take part in every
 * fork of its process: an interpreter (CPython's PyOS_BeforeFork,
 * PyOS_AfterFork_Parent and PyOS_AfterFork_Child), a library with
 * pthread_atfork-like needs of its own. Each is optional; they are called
 * around every fork() of the fork backend, on the thread that forks:
 *
 *   - a zygote's fork (one per context generation): prepare and parent in
 *     the host's thread calling exec_create() or exec_swap_context(), or, to
 *     replace a zygote that died, the next consumer call (exec_next(),
 *     exec_next_many(), exec_map(), exec_map_source(), exec_map_fd(),
 *     exec_run_records()); child in the new zygote.
 *   - a worker's fork (workers, their successors, a swap's canary): prepare
 *     and parent in the zygote (its only thread), child in the worker.
 *
 * parent(arg, pid) runs once after each prepare, with the child's pid, or
 * -errno when the fork failed. child runs in the new process after the
 * library's own async-signal-safe steps (process group, parent-death watch,
 * descriptors closed, in a zygote every signal disposition reset to SIG_DFL:
 * restore the SIG_IGNs the host needs there) and before anything else: in a
 * worker, before worker_init. Every signal is blocked while it runs. In the
 * host, prepare and parent run with no lock of the executor's held but
 * core's own (the swap lock in exec_swap_context, the consumer lock in a
 * consumer call): a hook must not call into the same executor.
 *
 * With any hook set, the zygote is forked on the calling thread, not on the
 * executor's supervisor thread, and a zygote that dies is forked again only
 * by the host's next consumer call (until then its generation's workers are
 * not replaced; one that dies during exec_create or a swap fails that call
 * with EXEC_EINIT). Such a zygote may outlive the thread that forked it: it
 * watches the host process (a pidfd) and its channel, not that thread, and
 * it and its workers are gone soon after the host process ends.
 */
typedef struct exec_fork_hooks {
    void (*prepare)(void *arg);
    void (*parent)(void *arg, int pid);
    void (*child)(void *arg);
    void *arg;
} exec_fork_hooks_t;

/*
 * Options: zero in any field means its default, so `exec_options_t o = {0};`
 * (or passing NULL) gives a sensible executor.
 *
 * Which backend uses which field (x: used; ranks: EXEC_MPI passes it on to
 * each rank's executor; -: ignored):
 *
 *   field                                threads  fork  mpi
 *   workers, window, batch, max_record,     x      x     x
 *   max_result, result_delay_us
 *   flags                                   x      x     x    (EXEC_NO_REPLAY,
 *                                                              EXEC_CLOSE_FDS: fork)
 *   timeout_ms, grace_ms,                   -      x     ranks
 *   max_records_per_worker,
 *   max_worker_growth_kb
 *   start_timeout_ms                        -      x     x and ranks
 *   slow_ms, on_slow, slow_arg              -      x     -
 *   keep_fds, n_keep_fds, fork_hooks        -      x     -
 *   buffer_size                             x      x     -
 *   plugin, spec, header, rank_backend,     -      -     x
 *   rank_workers, rank_batches,
 *   rank_timeout_ms, err, errlen
 */
typedef struct exec_options {
    unsigned workers;     /* default: the number of online CPUs; at most 1024.
                             EXEC_MPI: the worker ranks used (ranks 1..workers);
                             default: every rank but rank 0 */
    unsigned window;      /* records submitted but not yet collected, at most;
                             default 4096 x workers (EXEC_MPI: 16384 x ranks),
                             at most 1<<24. It sizes the batches' memory,
                             touched as used (EXEC_THREADS: ~2 x window / batch
                             batches of ~75 bytes a record slot and 64 KiB or
                             max_record of record bytes; docs/architecture.md) */
    unsigned batch;       /* most records in one batch; default 128; at most 4096.
                             Batches go out early when a worker runs short, and
                             EXEC_THREADS sends about 250 us of work per batch
                             when records are heavy (adaptive) */
    unsigned flags;       /* EXEC_ORDERED */
    size_t max_record;    /* largest record accepted; default 64 KiB, at most 64 MiB */
    size_t max_result;    /* largest result accepted; default 64 KiB, at most 64 MiB */
    unsigned timeout_ms;  /* EXEC_FORK: a record running longer is stopped in two
                             steps (see grace_ms); its result is EXEC_ERECTIMEOUT;
                             default 0 = none */
    unsigned max_records_per_worker; /* EXEC_FORK: a worker is replaced after at
                                        least this many records. Each worker's own
                                        limit is drawn in [N, N + N/10]; one worker
                                        is recycled at a time, and its successor
                                        is forked shortly before the limit and runs
                                        worker_init first: the worker leaves at the
                                        first batch boundary past its limit once
                                        the successor is ready (later if it is not
                                        yet), and the successor takes over its
                                        queue at once; default 0 = never */
    unsigned grace_ms; /* EXEC_FORK, with timeout_ms: at the timeout the record is
                          flagged (exec_cancelled() returns true in process()) and
                          its worker gets SIGTERM; grace_ms later, if the record is
                          still running, the worker's process group gets SIGKILL.
                          A record that stops within the grace reads
                          EXEC_ERECTIMEOUT with EXEC_RESULT_EARLY if it saw
                          exec_cancelled(), and its worker lives on. Default 1000 */
    unsigned slow_ms; /* EXEC_FORK: a record running longer is reported once through
                         on_slow, before any timeout acts on it; default 0 = none */
    /* Called from the executor's supervisor thread (a library thread, every
     * signal blocked) with no lock of the library's held and s valid for the
     * call only; it must be quick and must not call into the executor (kills
     * wait for it). */
    void (*on_slow)(void *arg, const exec_slow_t *s);
    void *slow_arg;
    unsigned start_timeout_ms; /* EXEC_FORK: a worker_init of exec_create() or
                                  exec_swap_context() still running after this
                                  long fails the call with EXEC_EINIT, as one
                                  that crashes or refuses does; default 10000 */
    unsigned max_worker_growth_kb; /* EXEC_FORK: a worker whose Private_Dirty (from
                                      /proc/PID/smaps_rollup, looked at about every
                                      100 ms) grew by more than this over what it
                                      was after worker_init is replaced, as by
                                      max_records_per_worker but at its next batch
                                      boundary once the successor is ready; pages
                                      of the context it only reads do not count;
                                      default 0 = never */
    unsigned result_delay_us; /* while workers are busy, wake-ups of a sleeping
                                 consumer are grouped (each costs both sides a
                                 context switch): a finished result waits at
                                 most about this long, plus the batch it is in,
                                 before its consumer is woken; 1..1000000,
                                 default 1000. A server's latency may want 50 */
    /* EXEC_FORK with EXEC_CLOSE_FDS: descriptors the workers keep open (files
     * or sockets the context uses); exec_create copies the list; at most 1024
     * entries, each >= 0 */
    const int *keep_fds;
    unsigned n_keep_fds;

    /*
     * EXEC_MPI (executor_mpi.h). A context is never sent: every worker rank
     * builds its own with plugin->ctx_build(spec, header), and frees it with
     * plugin->ctx_free when its executor ends. Only records and results cross
     * the network. The other fields above are passed on to each rank's
     * executor (workers there is rank_workers; on_slow is not called).
     */
    const struct exec_plugin *plugin; /* required: how a rank builds its context;
                                         plugin->ops must be exec_create()'s ops */
    const char *spec;                 /* required: what every rank builds from */
    const struct exec_csv_header *header; /* optional: given to ctx_build on every
                                             rank (its names and delimiter are sent) */
    exec_backend_t rank_backend; /* each rank's executor: EXEC_AUTO (default: by caps),
                                    EXEC_THREADS or EXEC_FORK */
    unsigned rank_workers;       /* workers in each rank's executor; default: that
                                    rank's online CPUs; at most 1024 */
    unsigned rank_batches;       /* batches in flight per rank, at most; default
                                    2 x the rank's workers + 4; at most 4096 */
    unsigned rank_timeout_ms;    /* a rank holding records that sends nothing (it
                                    sends results, and a heartbeat every quarter of
                                    this) for this long is taken for lost: its
                                    records read EXEC_ELOST and the other ranks
                                    carry the stream; default 10000 */
    char *err;                   /* optional: where exec_create() writes why it
                                    failed when a rank refused (e.g. "rank 2: ..."),
                                    NUL-terminated, at most errlen bytes */
    size_t errlen;

    exec_fork_hooks_t fork_hooks; /* EXEC_FORK: see exec_fork_hooks_t; ignored by
                                     EXEC_THREADS, not passed to EXEC_MPI ranks */
    size_t buffer_size; /* bytes of exec_buffer(); default 16 MiB, at most 1 GiB.
                           EXEC_FORK reserves it at exec_create (address space:
                           memory is used as it is written) */
} exec_options_t;

typedef struct exec exec_t;

/*
 * Creates an executor running ops over ctx on the given backend and starts its
 * workers. ctx is not copied: it must stay valid until it is released (see
 * ops->ctx_release) or until exec_destroy() returns.
 *
 * EXEC_MPI (rank 0 of an MPI job, see executor_mpi.h): ctx must be NULL, as
 * every worker rank builds its own context from options.spec with
 * options.plugin; ops must be options.plugin->ops.
 *
 * Errors: EXEC_EINVAL (NULL exp/ops/process, unknown backend, an option out of
 * range or an unknown flag; EXEC_MPI: ctx not NULL, ops not the plugin's, more
 * workers than ranks, or not rank 0), EXEC_EVERSION, EXEC_ECAPS (EXEC_THREADS
 * without THREAD_SAFE, EXEC_FORK without FORK_SAFE, AUTO with neither; EXEC_MPI
 * without a plugin with ctx_build and a spec: a classifier that cannot be built
 * from a spec cannot run there, or a rank_backend its caps lack), EXEC_ENOTSUP
 * (backend not built, or libexecutor_mpi not linked in), EXEC_EINIT (a
 * worker_init failed, crashed or hung past options.start_timeout_ms; EXEC_MPI:
 * a rank refused: its ctx_build failed or its executor did not start, see
 * options.err), EXEC_ESTATE (EXEC_MPI: MPI not initialized, or with a thread
 * level below MPI_THREAD_SERIALIZED), EXEC_ENOMEM, or a
 * system call's -errno. On error *exp is NULL and nothing is left behind.
 * Thread-safe (it touches only what it creates). The executor is the calling
 * process's: in a child of a later fork() its calls return EXEC_ESTATE.
 */
int exec_create(exec_t **exp, const exec_ops_t *ops, void *ctx,
                exec_backend_t backend, const exec_options_t *opts);

/* The backend exec_create() chose (never EXEC_AUTO); EXEC_AUTO for NULL. */
exec_backend_t exec_backend(const exec_t *ex);
/* "auto", "threads", "fork", "mpi", or "unknown". */
const char *exec_backend_name(exec_backend_t backend);
/* The options in force after defaults were filled in; EXEC_EINVAL for NULL. */
int exec_get_options(const exec_t *ex, exec_options_t *out);

/* ------------------------------------------------------------------------- */
/* Streaming                                                                 */
/* ------------------------------------------------------------------------- */

/*
 * Submits one record; its bytes are copied, so the caller may reuse rec at once.
 * tag is the caller's and comes back in the result (it need not be unique).
 * Blocks while the window is full; another thread must then be collecting with
 * exec_next(), so a single-threaded caller uses exec_try_submit() (or exec_map()).
 *
 * Errors: EXEC_EINVAL (NULL ex, rec NULL with len > 0), EXEC_ESTATE (after
 * exec_finish(); checked first), EXEC_E2BIG (len > max_record), EXEC_EFATAL.
 * Thread-safe: any number of threads may submit at once.
 */
int exec_submit(exec_t *ex, const void *rec, size_t len, uint64_t tag);
/* As exec_submit() but returns EXEC_EAGAIN instead of blocking. */
int exec_try_submit(exec_t *ex, const void *rec, size_t len, uint64_t tag);

/* One record for the *_many calls. */
typedef struct exec_record {
    const void *data;
    size_t len;
    uint64_t tag;
} exec_record_t;

/*
 * Submits n records under one lock: the fast path for a producer that has many
 * records at hand (per-record calls pay for a lock each). *accepted is set to how
 * many were taken, from the front. exec_submit_many() blocks for room and returns
 * 0 when all n were taken; exec_try_submit_many() returns EXEC_EAGAIN when it had
 * to stop for room. On an error the record at recs[*accepted] is the one refused:
 * EXEC_E2BIG, EXEC_EINVAL (data NULL with len > 0, or NULL ex/accepted),
 * EXEC_ESTATE, EXEC_EFATAL. Thread-safe like exec_submit().
 */
int exec_submit_many(exec_t *ex, const exec_record_t *recs, size_t n, size_t *accepted);
int exec_try_submit_many(exec_t *ex, const exec_record_t *recs, size_t n, size_t *accepted);

/*
 * Says no more records will come. Records already submitted are still processed;
 * exec_next() drains them and then returns EXEC_EOF.
 * Errors: EXEC_EINVAL, EXEC_ESTATE (called twice). Thread-safe.
 */
int exec_finish(exec_t *ex);

/* One finished record. */
typedef struct exec_result {
    uint64_t tag;        /* the caller's tag from submit */
    int status;          /* 0, EXEC_EUSER, EXEC_ECRASHED, EXEC_ERECTIMEOUT,
                            EXEC_ERESULT2BIG, EXEC_ECANCELLED, EXEC_EWORKER,
                            EXEC_ELOST (EXEC_MPI), or EXEC_ENOMEM (the result
                            could not be stored);
                            exec_map_source() adds EXEC_E2BIG (record too large,
                            never submitted: seq is UINT64_MAX) */
    int user_code;       /* EXEC_EUSER: what process() returned; else 0 */
    int signal;          /* EXEC_ECRASHED/ERECTIMEOUT: the signal that ended the
                            worker, 0 if it exited */
    int exit_status;     /* EXEC_ECRASHED: the worker's exit status if it exited */
    const void *data;    /* result bytes (status 0 or EXEC_EUSER); valid until
                            this thread's next exec_next*() or exec_release()
                            call on the executor, or exec_destroy() */
    size_t len;
    uint64_t seq;        /* the record's submission number, from 0 */
    uint64_t generation; /* which context it ran against: 0 for the first, +1 per swap */
    unsigned worker;     /* index of the worker that ran it */
    unsigned flags;      /* EXEC_RESULT_* */
} exec_result_t;

/* Flags in exec_result_t.flags. */
#define EXEC_RESULT_EARLY 0x1u /* cancelled or timed out while running, and
                                  process() saw it (exec_cancelled() returned
                                  true) and returned */

/*
 * Returns one finished record in *res (0), EXEC_EOF once exec_finish() was called
 * and every result was delivered, or EXEC_ETIMEDOUT when none came within
 * timeout_ms (0: do not wait, and EXEC_EAGAIN is returned instead; -1: wait for
 * ever). In EXEC_ORDERED mode results come in submission order; a failed record
 * keeps its place. Other errors: EXEC_EINVAL, EXEC_ESTATE (from exec_map()'s
 * callbacks), EXEC_ENOMEM.
 * Thread-safe: several threads may call it at once (they take turns, and each
 * result goes to exactly one of them). A result's bytes stay valid until the
 * same thread calls exec_next*() or exec_release() again, whatever the other
 * threads do meanwhile; the executor keeps the batch they sit in (one per
 * consumer thread) until then.
 */
int exec_next(exec_t *ex, exec_result_t *res, int timeout_ms);

/*
 * Up to max results at once (*got of them, at least 1 when 0 is returned), under
 * one lock; all stay valid until this thread's next exec_next*() call. Returns
 * and waits as exec_next() does; EXEC_EINVAL also for max == 0 or got NULL.
 */
int exec_next_many(exec_t *ex, exec_result_t *res, size_t max, size_t *got, int timeout_ms);

/*
 * The calling thread is done with the results it got from exec_next*(): their
 * bytes may be reused. A thread that stops consuming while others go on calls
 * it, so that the batch it holds goes back to the pool. 0, EXEC_EINVAL,
 * EXEC_ESTATE (from exec_map()'s callbacks). Thread-safe.
 */
int exec_release(exec_t *ex);

/*
 * A descriptor that polls readable when exec_next() may have a result (or the
 * end of stream) to give. Use it in an epoll/libuv/libevent loop: when it is
 * readable, call exec_next(ex, &res, 0) until it returns EXEC_EAGAIN, then poll
 * again. Do not read, write or close it. Workers signal it in batches (after a
 * few batches, or when they run short of work), not once per record.
 * Returns the fd, EXEC_EINVAL (NULL) or EXEC_ESTATE (another process than the
 * creator).
 */
int exec_fd(const exec_t *ex);

/*
 * The whole loop in one call: reads records with read_cb until it returns 0
 * (end) or < 0 (an error, which exec_map returns after draining what was
 * submitted), submits them, and hands each result to emit_cb as it comes
 * (stopping early if emit_cb returns non-zero, which exec_map then returns).
 * Finishes the executor. A record from read_cb need stay valid only until the
 * next read_cb call (it is copied), unless it lies in exec_buffer(): then it is
 * passed by reference and must stay unchanged until its result is out.
 * read_cb returns 1 for a record; or EXEC_EAGAIN when it has none until some
 * results come back (it reads into memory they hold): exec_map then hands at
 * least one result to emit_cb and calls read_cb again (with nothing in
 * flight, EXEC_EAGAIN ends the map and is returned). res is valid during the
 * emit_cb call. The calling thread works too: when it would wait for
 * room or results it runs batches itself (EXEC_THREADS; one worker thread rests
 * meanwhile, so `workers` threads run in all), as OpenMP's and oneTBB's callers
 * do; unless the workers' worker_init took over 1 ms of CPU each: the caller makes
 * no worker state of its own (it would hold the stream up as long), and only
 * feeds the workers and collects. The callbacks run in the calling thread with
 * internal locks held: calls on this executor from them are refused
 * (EXEC_ESTATE; exec_destroy() does nothing there), another executor is fine;
 * other threads' submit and next calls get EXEC_EBUSY until exec_map returns.
 * When emit_cb stops the map, a record read_cb had just returned may not have
 * been submitted (no room yet); it yields no result.
 * Errors: EXEC_EINVAL, EXEC_EBUSY (records were already submitted), EXEC_ESTATE
 * (after exec_finish), EXEC_E2BIG (a record from read_cb was too large).
 */
typedef int (*exec_read_fn)(void *arg, const void **rec, size_t *len, uint64_t *tag);
typedef int (*exec_emit_fn)(void *arg, const exec_result_t *res);
int exec_map(exec_t *ex, exec_read_fn read_cb, void *read_arg,
             exec_emit_fn emit_cb, void *emit_arg);

/*
 * The fastest way to run records that are already in memory: runs recs[0..n)
 * and hands their results to emit_cb a batch at a time (res[0..k), valid
 * during the call; in input order within a call with EXEC_ORDERED), returning
 * when every one of them has its result. The records are not copied on
 * EXEC_THREADS (workers read them where they are: keep them unchanged until
 * exec_run_records returns); EXEC_FORK copies each once into the memory its
 * workers share, unless it lies in exec_buffer() (see there: then nothing is
 * copied). The calling thread works as in exec_map() (on EXEC_THREADS its
 * worker state is made by the first call that runs a batch and kept until
 * exec_destroy). The executor is left as it was, so a long input may be run
 * in chunks, one call each.
 * emit_cb returning non-zero stops the call: records not yet submitted are not
 * run, those in flight still finish (their results are dropped), and that
 * value is returned. Other threads' submit and next calls get EXEC_EBUSY
 * meanwhile, and calls on ex from emit_cb EXEC_ESTATE.
 * Errors: EXEC_EINVAL (NULL ex/emit_cb, recs NULL with n > 0, a record with
 * data NULL and len > 0), EXEC_E2BIG (a record over max_record; checked before
 * any runs), EXEC_EBUSY (other records in flight), EXEC_ESTATE (after
 * exec_finish), EXEC_EFATAL.
 */
typedef int (*exec_emit_many_fn)(void *arg, const exec_result_t *res, size_t n);
int exec_run_records(exec_t *ex, const exec_record_t *recs, size_t n,
                     exec_emit_many_fn emit_cb, void *emit_arg);

/*
 * Memory for records that the workers read where it lies, so that nothing is
 * copied on their way: options.buffer_size bytes (*size gets it), the same
 * buffer for the executor's life, freed by exec_destroy(). Fill it with
 * records (and, to copy nothing at all, with their exec_record_t array too)
 * and run them with exec_run_records(): on EXEC_FORK, where workers are other
 * processes, records whose bytes lie in it are passed by reference, and when
 * the array and every record lie in it each batch is a run of that array
 * (otherwise records are copied once into the memory the workers share). It is
 * mapped into every worker, read-only there, from exec_create() on. On
 * EXEC_THREADS it is plain memory (workers read any memory in place). Change
 * nothing in it while records that lie in it are in flight (until
 * exec_run_records returns): a worker reading a record that changes under it
 * may produce garbage or crash (that record's EXEC_ECRASHED on EXEC_FORK).
 * exec_map_source() and exec_map_fd() read their input into it. NULL (with
 * *size 0) on a bad executor, on EXEC_MPI (records cross the network anyway),
 * or when it could not be allocated. size may be NULL. Thread-safe.
 */
void *exec_buffer(exec_t *ex, size_t *size);

/*
 * Replaces the context. Every record runs against exactly one context, never a
 * mix; records submitted after this returns see the new one; the old one gets
 * ops->ctx_release once no worker uses it. Workers never block on a swap, and
 * the call does not wait for the old context's readers.
 * EXEC_THREADS: proves new_ctx first where ops->worker_init exists: the calling
 * thread runs worker_init(new_ctx) once and, when it succeeds, worker_fini on
 * that state at once (the workers keep the state they started with); a refusal
 * returns EXEC_EINIT and changes nothing (new_ctx not released). Then new_ctx is
 * published with RCU. EXEC_FORK: forks a new generation of
 * workers that inherit new_ctx, one canary worker first. The canary runs
 * worker_init, then replays up to 8 recent records that ran without error on
 * the current context (copies; their results are dropped, so process() runs
 * twice on them: set EXEC_NO_REPLAY where that matters; with no such record
 * yet, worker_init alone is the proof). If the canary refuses, dies, hangs or
 * breaks the protocol, or a worker of the rest of the generation then fails
 * worker_init, the swap is rolled back (new_ctx not released; it may be tried
 * again) and the old generation keeps serving. Otherwise the old generation
 * finishes the records already given to it and exits, and its context is
 * released then. Either way no record is lost or run twice for a result.
 * Errors: EXEC_EINVAL, EXEC_ESTATE (after exec_destroy started), EXEC_ENOMEM,
 * EXEC_EBUSY (EXEC_FORK: 15 older generations still draining), and the
 * canary's: EXEC_EINIT (worker_init refused; EXEC_FORK: or crashed, or ran past
 * start_timeout_ms), EXEC_ECRASHED (it died on a replayed record),
 * EXEC_ERECTIMEOUT (a replayed record ran past timeout_ms, or past
 * start_timeout_ms without one), EXEC_EWORKER (garbage results), EXEC_ENOTSUP
 * (EXEC_MPI: a context cannot be sent; use exec_swap_spec()).
 * Thread-safe (swaps are serialized).
 */
int exec_swap_context(exec_t *ex, void *new_ctx);

/*
 * Replaces the context with one built from spec, on a backend that builds its
 * contexts from a spec (EXEC_MPI). Every worker rank builds the new context
 * with options.plugin->ctx_build(spec, options.header) and starts a new
 * executor of its own on it while the current one keeps serving. When every
 * rank succeeded, records submitted after this returns run on the new
 * context (each record on exactly one, as for exec_swap_context), and each
 * rank ends its old executor and frees the old context once the records given
 * to it are done. When one rank fails (ctx_build refuses, its executor does not
 * start, or it does not answer within start_timeout_ms), every rank drops what
 * it built and the old context keeps serving; err (may be NULL) then gets
 * "rank R: why", NUL-terminated, at most errlen bytes.
 * Errors: EXEC_EINVAL (NULL ex or spec), EXEC_ENOTSUP (any other backend: build
 * the context and call exec_swap_context()), EXEC_ESTATE (after exec_destroy
 * started, or from exec_map()'s callbacks), EXEC_EINIT (a rank refused),
 * EXEC_EFATAL (no rank left), EXEC_ENOMEM.
 * Thread-safe (swaps are serialized, with exec_swap_context() too).
 */
int exec_swap_spec(exec_t *ex, const char *spec, char *err, size_t errlen);

/* ------------------------------------------------------------------------- */
/* Stats                                                                     */
/* ------------------------------------------------------------------------- */

#define EXEC_LAT_BUCKETS 40

typedef struct exec_stats {
    exec_backend_t backend;
    unsigned workers;
    uint64_t submitted;  /* records accepted by submit */
    uint64_t delivered;  /* results handed out by exec_next */
    uint64_t in_flight;  /* submitted - delivered */
    uint64_t ok;         /* delivered with status 0 */
    uint64_t user_errors;
    uint64_t crashed;
    uint64_t timed_out;
    uint64_t too_big;    /* EXEC_ERESULT2BIG */
    uint64_t cancelled;
    uint64_t worker_errors; /* EXEC_EWORKER, EXEC_ELOST and other statuses */
    uint64_t batches;    /* batches sent to workers */
    uint64_t swaps;
    uint64_t generation; /* the current context's generation */
    uint64_t respawns;   /* EXEC_FORK: workers replaced (EXEC_MPI: inside the ranks) */
    /* Submit-to-result latency, sampled on the first record of each batch (so
     * every record when they travel one at a time): lat_hist[i] counts samples
     * in [2^i, 2^(i+1)) ns; p50/p99/p999 are read off it (upper bounds). */
    uint64_t lat_hist[EXEC_LAT_BUCKETS];
    uint64_t lat_samples;
    uint64_t lat_p50_ns, lat_p99_ns, lat_p999_ns;
    /* Worker time, summed over workers (see exec_worker_stats). */
    uint64_t busy_ns, idle_ns;
    double utilisation; /* busy / (busy + idle), 0..1 */
    /* Can this executor win at the weight of its records? From the library's
     * own figures: record_ns is the workers' busy time per record (a record's
     * weight as run, plus the worker's own per-record cost); caller_ns the CPU
     * time per record that the thread of exec_map(), exec_run_records() or
     * exec_map_source() spent besides running batches itself (producing,
     * collecting, the callbacks; 0 before such a call). speedup_est = workers
     * x record_ns / (record_ns + caller_ns) is about the best speedup over
     * one thread running the same records, when the workers have a core each
     * and the caller shares them. hints says what follows (0 before such a
     * call): EXEC_HINT_SLOWER, the plain loop would be faster (records this
     * light cost more to hand over than the workers save); EXEC_HINT_HANDOVER,
     * the hand-over keeps the speedup below 0.8 x workers (put more work in a
     * record, keep records in exec_buffer() on EXEC_FORK, or use
     * exec_run_records()). */
    uint64_t record_ns, caller_ns;
    double speedup_est;
    unsigned hints;
} exec_stats_t;

/* Bits in exec_stats_t.hints. */
#define EXEC_HINT_SLOWER   0x1u /* a plain loop would beat this executor here */
#define EXEC_HINT_HANDOVER 0x2u /* the hand-over keeps the speedup below 0.8 x workers */

/* Fills *st. Readable at any time from any thread without stopping the pool.
 * Once exec_next() returned EXEC_EOF the figures include every respawn the
 * stream's records caused (EXEC_FORK holds EXEC_EOF back until a worker killed
 * for a garbage result has been replaced). */
int exec_stats(const exec_t *ex, exec_stats_t *st);

/* One worker's figures. Times are wall-clock nanoseconds since it started. */
typedef struct exec_worker_stats {
    unsigned index;
    int pid;             /* EXEC_FORK: the worker process; 0 for threads;
                            EXEC_MPI: worker i is rank i + 1, and this is its
                            process on its host */
    uint64_t records;    /* records it ran */
    uint64_t batches;
    uint64_t busy_ns;    /* inside batches */
    uint64_t idle_ns;    /* waiting for work */
    uint64_t startup_ns; /* worker_init (and, for EXEC_FORK, the fork) */
    /* EXEC_FORK: busy/idle/startup add up over the processes that held this
     * place; the workers keep them, so they are for display only. */
    /* EXEC_FORK: replacements of this worker, by cause. */
    uint64_t respawns_crash, respawns_timeout, respawns_recycle, respawns_cancel;
    /* EXEC_FORK, read from /proc/PID/smaps_rollup when asked (0 if unknown):
     * its proportional share of memory, and the pages it has made private
     * (how much of the shared context it has copied, plus its own heap). */
    uint64_t pss_kb, private_dirty_kb;
    unsigned flags; /* EXEC_WORKER_* */
} exec_worker_stats_t;

/* Flags in exec_worker_stats_t.flags (EXEC_FORK). */
#define EXEC_WORKER_GONE 0x1u    /* given up on: its replacements kept dying or
                                    could not start; records sent to it get
                                    EXEC_EWORKER and the others carry the stream */
#define EXEC_WORKER_MEM_OFF 0x2u /* memory recycling stopped for this worker: two
                                    processes in a row passed max_worker_growth_kb
                                    within a second of starting, so the limit is
                                    below the context's own steady state (e.g. a
                                    garbage collector rewriting it after fork;
                                    see docs/fork.md) and recycling would thrash */

/*
 * Fills *ws for worker i (0 <= i < workers). Readable at any time from any
 * thread. Errors: EXEC_EINVAL (NULL, i out of range).
 */
int exec_worker_stats(const exec_t *ex, unsigned i, exec_worker_stats_t *ws);

/* ------------------------------------------------------------------------- */
/* Cancel                                                                    */
/* ------------------------------------------------------------------------- */

/*
 * Cancels every record with this tag that has not finished. A record still
 * queued is never processed and gets status EXEC_ECANCELLED. A record already
 * running: its process() may poll exec_cancelled() and return early; its result
 * is EXEC_ECANCELLED either way, with EXEC_RESULT_EARLY when process() saw the
 * flag. On EXEC_THREADS one that does not look runs to its end; on EXEC_FORK
 * its worker is killed and replaced if it is still on the record 20 ms later. Every record still yields exactly one result.
 * Returns how many records it cancelled (> 0), or EXEC_ENOENT when no record
 * with that tag is still in flight (never submitted, or finished: a finished
 * record keeps its result), EXEC_EINVAL, EXEC_ENOTSUP. A record that finishes
 * at the very moment of the call may keep its result although it was counted
 * (at most one per worker): each result says what happened. Thread-safe.
 */
int exec_cancel(exec_t *ex, uint64_t tag);
/* Cancels every record in flight (for shutdown); returns how many (>= 0), with
 * exec_cancel()'s rule for records finishing at that moment. */
int exec_cancel_all(exec_t *ex);
/* For process(): non-zero once its record was cancelled, or (EXEC_FORK) ran past
 * options.timeout_ms. Cheap: poll it in long loops. */
int exec_cancelled(exec_writer_t *out);

/*
 * Stops the workers and frees everything: threads are joined, children reaped,
 * descriptors closed, mappings removed. Results not collected are dropped.
 * Records still in flight are abandoned (a record already inside process()
 * finishes first on EXEC_THREADS; an EXEC_FORK worker is killed).
 * Calls ops->ctx_release on the current context, and on swapped-out ones not
 * yet released. NULL is ignored. Must not run concurrently with other calls on ex.
 *
 * In a child of the creating process (the host called fork()), the workers,
 * threads and shared memory belong to the parent, which keeps using them:
 * exec_destroy() then only frees the child's copy of the executor's memory and
 * closes the child's copies of its descriptors and mappings (the parent's stay
 * open), and returns at once. It joins no thread (the executor's threads do
 * not exist in the child), signals or waits for no process, writes nothing the
 * parent shares, takes no lock, and calls no ops callback (no ctx_release, no
 * worker_fini: worker states made by worker_init in the parent's threads are
 * the parent's). A child that neither calls it nor execs keeps that memory
 * until it exits, which is harmless.
 */
void exec_destroy(exec_t *ex);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif

#endif /* EXECUTOR_H */
