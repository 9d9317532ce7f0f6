/*
 * EXEC_THREADS, internal: the structures its files share.
 *   threads.c  the seam: batches, dispatch, reap, start, stop, figures.
 *   worker.c   a worker thread's loop: take, steal, run, hand back, sleep.
 *   context.c  the context under RCU: swaps, the reclaimer, and the calling
 *              thread of exec_map()/exec_run_records() running batches too.
 *
 * Each worker has its own rings from ck: `in` (producer -> worker, filled
 * under core's submit lock; the owner and, when they run dry, other workers
 * consume it) and `out` (worker -> consumer). A worker with nothing to do
 * spins briefly, then sleeps on a ck_ec event count the producer bumps after
 * each enqueue.
 *
 * Locks (core/lock.h's, checked in checked builds): init_lock for the
 * startup handshake, rec_lock for the reclaimer's list; neither is held
 * while another lock is taken.
 */
#ifndef EXEC_THREADS_H
#define EXEC_THREADS_H

#include "exec_internal.h"

#include <ck_ec.h>
#include <ck_ring.h>
#include <ck_stack.h>

#define THR_SPIN_NS 20000u       /* a worker out of work looks this long before it sleeps */
#define THR_LOW 2u               /* a worker with this few batches queued is running dry */
#define THR_BATCH_NS 250000u     /* aim for batches of about this much work */
#define THR_SLOW_INIT_NS 1000000u /* a worker state this dear (CPU): the caller makes none */
#define THR_WBUF 2048u            /* a batch's first result buffer, in the batch mapping */
#define THR_HUGE ((size_t)2 << 20) /* a huge page */
#define THR_DATA_MAP ((size_t)64 << 20) /* record bytes of all batches in the mapping up to this */

/* An enqueue on a ring sized to hold every batch: it never fails (asserted
 * in checked builds; the call runs in every build). */
#define THR_PUT(enqueue)                                                                   \
    do {                                                                                   \
        bool thr_put_ = (enqueue);                                                         \
        EXEC__ASSERT(thr_put_);                                                            \
        (void)thr_put_;                                                                    \
    } while (0)

/* A context as the workers see it. */
struct exec__ctxref {
    void *ctx;
    uint64_t generation;
    struct exec__ctxref *next; /* reclaimer list */
};

struct thr_worker {
    struct ck_ring in;
    char pad0[64];
    struct ck_ring out;
    char pad1[64];
    struct ck_ec32 ec; /* bumped after each enqueue on `in`, and to unpark */
    char pad2[64];
    ck_ring_buffer_t *inbuf, *outbuf;
    struct thr *t;
    unsigned idx;
    pthread_t tid;
    bool started;
    int init_rc;
    /* Figures: written by the worker (ck_pr stores), read by anyone. */
    uint64_t t_start, startup_ns, busy_ns, records, batches;
    uint64_t init_cpu_ns; /* CPU time its worker_init took */
    uint64_t ewma_ns; /* smoothed cost of one record */
};

struct thr_batch {
    struct exec__batch b; /* first: a struct exec__batch * is a struct thr_batch * */
    struct exec_writer w;
    ck_stack_entry_t link; /* in the free stack */
};
CK_STACK_CONTAINER(struct thr_batch, link, thr_batch_of)

/* The backend's private state (core allocates it: exec__priv()). */
struct thr {
    exec_t *ex;
    const exec_ops_t *ops;
    size_t max_result;
    unsigned nw;
    struct thr_worker *w;
    struct exec__ctxref *cur;     /* RCU-protected */
    struct exec__ctxref *pending; /* prepared by swap_prepare, published by swap_commit */
    uint32_t stop;
    uint32_t parked; /* ck_pr: 1 + the index of the worker resting while a caller works */

    /* Startup handshake: workers report worker_init's result. */
    exec__mutex_t init_lock;
    pthread_cond_t init_cond;
    unsigned init_done; /* workers past worker_init, at most nw (init_lock) */

    /* Batch pool: a LIFO of free batches (the consumer pushes, the producer
     * pops; one popper, so no ABA). LIFO reuses the batches still warm in
     * cache and keeps the touched set, hence RSS, as small as what is in flight. */
    ck_stack_t free;
    uint32_t nall, maxb;
    /* The batches' memory (threads.c, thr_group): mappings of our own,
     * each for grp_n batches and made when the first of them is needed:
     * their small parts (entries, flags, first result buffer) side by side,
     * then, where they fit, their record bytes (else malloc'd each). */
    char **grp;             /* each group's mapping as mmap returned it, or NULL */
    uint32_t grp_n;         /* batches a group */
    size_t grp_small;       /* bytes of a group's small parts, a whole number of huge pages */
    size_t grp_len;         /* bytes of a group's mapping */
    size_t small_sz, dcap;  /* a batch's small part, its record bytes */
    bool grp_data;          /* record bytes in the mapping */
    unsigned reap_pos;
    unsigned wake_out;  /* wake the consumer once a worker has this many batches done */
    uint64_t last_wake; /* when a worker last woke the consumer (ck_pr) */
    uint64_t wake_age_ns; /* options.result_delay_us */

    /* The calling thread of a whole-stream call, running batches (context.c):
     * its results go over a ring of their own to the consumer (itself). */
    struct ck_ring help_out;
    ck_ring_buffer_t *help_outbuf;
    pthread_t help_thread; /* the caller that joined */
    struct exec__ctxref *help_hazard; /* the ref the caller reads (ck_pr), or NULL */
    bool help_joined;
    /* The callers' worker state: made by the first call that runs a batch,
     * kept for the next ones (a chunked input pays worker_init once) and
     * given worker_fini by stop. help_tried: this call tried to make it. */
    bool help_ready, help_tried;
    void *help_ws;

    /* Reclaimer. */
    pthread_t reclaimer;
    bool reclaimer_started;
    exec__mutex_t rec_lock; /* guards rec_list and rec_stop */
    pthread_cond_t rec_cond;
    struct exec__ctxref *rec_list;
    bool rec_stop;
    char tsan_gp; /* grace-period annotation address */
};

/* worker.c */
void *thr_main(void *arg);
void thr_run(struct thr *t, struct thr_batch *tb, struct exec__ctxref *ref, void *wstate,
             unsigned worker);
bool thr_take(struct thr_worker *wk, struct thr_batch **out);
bool thr_steal(struct thr *t, const struct thr_worker *self, struct thr_batch **out);

/* context.c */
void *thr_reclaim_main(void *arg);
int thr_swap_prepare(exec_t *ex, void *new_ctx, uint64_t generation);
void thr_swap_commit(exec_t *ex);
bool thr_help(exec_t *ex);
void thr_caller_joins(exec_t *ex, bool joins);
void thr_help_fini(struct thr *t);

#endif /* EXEC_THREADS_H */
