/*
 * struct exec and a batch's core fields (struct exec__batch_core): core's own
 * state. Only core/ includes this; backends see struct exec as incomplete
 * and a batch's core_room as bytes (exec_internal.h), and go through the
 * seam's calls.
 *
 * Locks, in the order they nest: next_lock, submit_lock, flight_lock
 * (swap_lock alone, before submit_lock in a swap's commit; wait_lock alone).
 *   submit_lock  the producer side: the open batch, sequence numbers, dispatch.
 *   next_lock    the consumer side: reaping, the reorder buffer, delivery,
 *                the consumer threads' holds.
 *   flight_lock  the flight list (dispatched batches not yet reaped).
 *   wait_lock    only for sleeping submitters (window full or no free batch).
 *   swap_lock    one swap at a time; destroy marks `destroying` under it.
 * The window needs no atomic read-modify-write: the producer owns
 * `submitted`, the consumer owns `collected`, and in flight is their difference.
 */
#ifndef EXEC_CORE_H
#define EXEC_CORE_H

#include "exec_internal.h"

#include <ck_pr.h>
#include <string.h>
#include <unistd.h>

/* How long a consumer looks for a result before it sleeps (see exec__ready). */
#ifndef EXEC__SPIN_NS
#define EXEC__SPIN_NS 20000u
#endif

/* Consumer threads the executor keeps without allocating (so that the usual
 * one, exec_map's caller among them, never meets an allocation failure). */
#define EXEC__CONS_INLINE 4

/* A batch's fields that are core's alone, in its core_room: at a fixed
 * offset in the batch, so reaching them costs no load. */
struct exec__batch_core {
    uint32_t cursor;  /* next record to deliver */
    uint32_t holders; /* consumer threads holding results of it */
    bool spent;       /* every result handed out; recycled once unheld */
    bool in_flight;   /* on the flight list (cancellable) */
    struct exec__batch *fl_prev, *fl_next; /* the flight list */
    uint64_t t_open;  /* when its first record was submitted */
};
_Static_assert(sizeof(struct exec__batch_core) <= sizeof(((struct exec__batch *)0)->core_room),
               "core_room is too small for struct exec__batch_core");
_Static_assert(_Alignof(struct exec__batch_core) <= _Alignof(struct exec__batch),
               "core_room is not aligned for struct exec__batch_core");

static inline struct exec__batch_core *exec__bc(struct exec__batch *b)
{
    return (struct exec__batch_core *)(void *)b->core_room.bytes;
}

static inline const struct exec__batch_core *exec__bcc(const struct exec__batch *b)
{
    return (const struct exec__batch_core *)(const void *)b->core_room.bytes;
}

/* A thread that calls exec_next*(): the batch whose results it holds. */
struct exec__consumer {
    pthread_t tid;
    struct exec__batch *held;
};

struct exec {
    const exec_ops_t *ops;
    void *ctx0; /* the context given to exec_create */
    exec_backend_t backend;
    exec_options_t opt;
    const struct exec__backend *be;
    void *be_priv;

    /* Consumer wake-up: efd is readable when *armed was set and a worker
     * saw results ready. A backend may move the armed word (exec__use_armed). */
    int efd;
    uint32_t *armed;
    uint32_t armed_local;

    /* Producer side (submit_lock). */
    exec__mutex_t submit_lock;
    struct exec__batch *open; /* batch being filled */
    uint64_t next_batch_seq;
    uint64_t next_rec_seq;
    bool finished;

    /* Backpressure: submitters wait here for the window or a free batch. */
    exec__mutex_t wait_lock;
    pthread_cond_t wait_cond;
    unsigned waiters;

    /* Consumer side (next_lock). */
    exec__mutex_t next_lock;
    struct exec__batch *cur;      /* batch being delivered */
    struct exec__batch **reorder; /* ordered: completed batches by seq & mask */
    uint64_t reorder_mask;
    uint64_t deliver_seq;         /* ordered: next batch seq to deliver */
    struct exec__consumer *cons;  /* threads that took results, and what they hold */
    unsigned ncons, cons_cap;     /* cons is cons_inline until more threads come */
    struct exec__consumer cons_inline[EXEC__CONS_INLINE];

    exec__mutex_t swap_lock;

    /* Dispatched batches not yet reaped, for exec_cancel (flight_lock). */
    exec__mutex_t flight_lock;
    struct exec__batch *flight;

    /* The creating process's mark, for a host that forks: a word on a page
     * of the executor's own mapped with MADV_WIPEONFORK, EXEC__MINE here and
     * 0 in a child of fork(), so that a call from another process than the
     * creator is refused at the cost of one load. NULL where the kernel lacks
     * MADV_WIPEONFORK (before Linux 4.14): pid is compared instead. */
    const uint32_t *mine;
    pid_t pid;

    /* exec_map() runs its callbacks in this thread: calls on ex from them
     * are refused (they would deadlock or free what map uses). */
    pthread_t map_thread;
    uint32_t in_map;

    /* exec_buffer(): memory the workers read where it lies. A backend whose
     * workers see only some memory (EXEC_FORK) makes it in start() and says
     * so (exec__use_buffer: buf_shared); else core allocates it on the first
     * exec_buffer() call (buf_own), under submit_lock. */
    char *buf;
    size_t buf_size;
    bool buf_shared, buf_own;

    /* What a whole-stream call's thread spends per record besides running
     * batches (exec_stats' caller_ns): its CPU time from claim to unclaim
     * less the time it ran batches (help, on the monotonic clock: a help
     * preempted by another process counts whole), over the records it
     * submitted.
     * Written by that thread (ck_pr), read by exec_stats. */
    uint64_t caller_cpu_ns, caller_recs, help_ns;
    uint64_t claim_cpu_ns, claim_recs, claim_help_ns; /* at the claim */

    /* Latency histogram (consumer writes, anyone reads). */
    uint64_t lat_hist[EXEC_LAT_BUCKETS];
    bool started; /* start() succeeded: contexts are ours to release */
    bool destroying;

    /* Counters: each has one writer and is read with ck_pr loads (respawns:
     * atomic increments, any thread). submitted: producer, per record.
     * collected: consumer, per result handed out. progress: consumer,
     * bumped whenever room may have appeared (sleeping submitters wait on it). */
    uint64_t submitted, collected, progress;
    uint64_t batches_put; /* consumer: batches recycled (batches - this = out) */
    uint32_t batch_limit; /* records per batch the backend asks for (<= opt.batch) */
    uint32_t idle;        /* workers going to sleep: send what is open at once */
    uint64_t early_max;   /* most batches out before none is sent early */
    uint32_t run_cap;     /* exec_run_records: most records a batch of its array
                             holds (0: no cap), so a short array is spread */
    uint64_t ok, user_errors, crashed, timed_out, too_big, cancelled, worker_errors, batches,
        swaps, generation, respawns;
    uint32_t fatal; /* set once the backend gave up */
};

/* Between core's files (submit.c, next.c, map.c, cancel.c, exec.c). */

/* Sends the open batch now, so that nothing waits in it (takes submit_lock). */
void exec__flush_consumer(exec_t *ex);
/* submit_lock held: sends the open batch to a worker (it becomes cancellable). */
void exec__dispatch_open(exec_t *ex);
/* The consumer made room (window or batches): wake sleeping submitters. */
void exec__wake_submitters(exec_t *ex);
/* A dispatched batch joins / leaves the flight list (takes flight_lock). */
void exec__flight_add(exec_t *ex, struct exec__batch *b);
void exec__flight_remove(exec_t *ex, struct exec__batch *b);

/* submit_lock held. Appends one record (by_ref: the caller keeps its bytes
 * alive until its result is delivered; the backend must have refs): 0,
 * EXEC_EAGAIN (no room: window or batches), EXEC_ESTATE, EXEC_EFATAL. */
int exec__append(exec_t *ex, const void *rec, size_t len, uint64_t tag, bool by_ref);
/* submit_lock held, room checked: the record goes into b (its bytes copied
 * unless by_ref) and counts as submitted. */
static inline void exec__batch_put(exec_t *ex, struct exec__batch *b, const void *rec,
                                   size_t len, uint64_t tag, bool by_ref)
{
    struct exec__rec *r = &b->recs[b->n];
    r->tag = tag;
    r->len = len;
    if (by_ref) {
        r->p = rec;
    } else {
        r->p = b->data + b->data_len;
        if (len)
            memcpy(b->data + b->data_len, rec, len);
        b->data_len += len;
    }
    if (b->rflags)
        __atomic_store_n(&b->rflags[b->n], 0, __ATOMIC_RELAXED); /* a watcher may look */
    b->n++;
    ex->next_rec_seq++;
    ck_pr_store_64(&ex->submitted, ex->submitted + 1);
}

/* submit_lock held. exec__append(), inline, for the common case only: the open batch has room for it and nothing is to be decided
 * (the record that may fill the batch, every 8th one, and any record while a
 * worker idles go through exec__append(), which decides whether the batch
 * goes out). False when exec__append() must do it. */
static inline bool exec__append_quick(exec_t *ex, const void *rec, size_t len, uint64_t tag,
                                      bool by_ref)
{
    struct exec__batch *b = ex->open;
    if (!b || (b->n & 7) == 0 || b->n + 1 >= b->cap ||
        b->n + 1 >= ck_pr_load_32(&ex->batch_limit) ||
        (!by_ref && b->data_cap - b->data_len < len) || ck_pr_load_32(&ex->idle) ||
        ex->submitted - ck_pr_load_64(&ex->collected) >= ex->opt.window)
        return false;
    exec__batch_put(ex, b, rec, len, tag, by_ref);
    return true;
}

/* How exec__append_many takes records. */
enum exec__take {
    EXEC__COPY,      /* copied into the batch */
    EXEC__VIEWS,     /* batches are views of the caller's array, nothing copied
                        (the backend's workers read it, and every record, in place) */
    EXEC__IN_BUFFER  /* records whose bytes lie in exec_buffer() are passed by
                        reference, the others copied */
};

/* True when [p, p + len) lies in exec_buffer(): bytes that stay put while
 * they are in flight, which workers read in place. */
static inline bool exec__in_buffer(const exec_t *ex, const void *p, size_t len)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)ex->buf;
    return b && a >= b && a - b <= ex->buf_size && len <= ex->buf_size - (a - b);
}

/* submit_lock held. Appends recs[0..n) in runs that fill the open batch;
 * *taken gets how many. 0 when all were, else exec__append's codes. */
int exec__append_many(exec_t *ex, const exec_record_t *recs, size_t n, enum exec__take how,
                      size_t *taken);
/* next_lock held; ex->cur has an undelivered record. Up to max results of it
 * into res (me holds its batch); returns how many. */
size_t exec__deliver_many(exec_t *ex, struct exec__consumer *me, exec_result_t *res, size_t max);
/* next_lock held: the calling thread's entry, its earlier results given back
 * (NULL: out of memory). */
struct exec__consumer *exec__consumer_begin(exec_t *ex);
/* next_lock held. Makes ex->cur a batch with a record left to deliver (0), or
 * returns EXEC_EOF, EXEC_EFATAL, EXEC_EAGAIN (timeout_ms 0) or EXEC_ETIMEDOUT.
 * timeout_ms EXEC__LOOK: only looks (EXEC_EAGAIN when nothing is ready):
 * sends no open batch and arms no wake-up (no lock, no system call), for a
 * whole-stream call that has other work at hand. */
#define EXEC__LOOK (-2)
int exec__ready(exec_t *ex, int timeout_ms);
/* The same in two steps: fill writes the results (me holds the batch), and
 * commit hands out the first k of them (k <= what fill wrote): they count,
 * leave the window and move the cursor. In between, the caller may hand
 * them to a callback one by one and commit only as many as it took. */
size_t exec__fill(exec_t *ex, struct exec__consumer *me, exec_result_t *res, size_t max);
void exec__commit(exec_t *ex, const exec_result_t *res, size_t k);

#define EXEC__MINE 0x656e696du /* "mine" */

/* True in a process other than the one that created ex (a child of the
 * host's fork()): every call on ex is refused with EXEC_ESTATE there, and
 * exec_destroy() frees only that process's memory (exec.c). */
static inline bool exec__foreign(const exec_t *ex)
{
    if (__builtin_expect(ex->mine != NULL, 1))
        return *ex->mine != EXEC__MINE;
    return getpid() != ex->pid;
}

/* True in the thread running exec_map()'s callbacks: calls on ex from there
 * are refused with EXEC_ESTATE. */
static inline bool exec__in_callback(exec_t *ex)
{
    /* Another thread may be claiming the executor (writing map_thread) as
     * we look: it is never this thread, whatever the load returns. */
    return __atomic_load_n(&ex->in_map, __ATOMIC_ACQUIRE) &&
           pthread_equal(__atomic_load_n(&ex->map_thread, __ATOMIC_RELAXED), pthread_self());
}

/* The calls that are refused in exec_map()'s callbacks and in another
 * process than the creator: EXEC_ESTATE, else 0. */
static inline int exec__refuse(exec_t *ex)
{
    return exec__foreign(ex) || exec__in_callback(ex) ? EXEC_ESTATE : 0;
}

/* The stream calls' guard: EXEC_ESTATE from exec_map()'s own callbacks and
 * from another process than the creator, EXEC_EBUSY from other threads while
 * exec_map()/exec_run_records() has the executor, else 0. */
static inline int exec__guard(exec_t *ex)
{
    if (exec__foreign(ex))
        return EXEC_ESTATE;
    if (!__atomic_load_n(&ex->in_map, __ATOMIC_ACQUIRE))
        return 0;
    return pthread_equal(__atomic_load_n(&ex->map_thread, __ATOMIC_RELAXED), pthread_self())
               ? EXEC_ESTATE
               : EXEC_EBUSY;
}

#endif /* EXEC_CORE_H */
