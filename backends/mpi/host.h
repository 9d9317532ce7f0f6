/*
 * EXEC_MPI on rank 0, internal: the state host.c (the seam, on core's
 * threads) and progress.c (the progress thread) share.
 *
 * Batches go producer -> progress thread over the `in` ring (dispatch, under
 * core's submit lock), wait in a FIFO there until a rank has room (at most
 * depth batches per rank), go out as two messages (BATCH, BDATA), and come
 * back as one RESULT that is received into the batch's own buffer; the
 * progress thread then puts the batch on the `out` ring for the consumer
 * (reap) and wakes it through exec__notify(). Only the progress thread calls
 * MPI once start() is over, so MPI_THREAD_SERIALIZED is enough.
 */
#ifndef EXEC_MPI_HOST_H
#define EXEC_MPI_HOST_H

#include "wire.h"

#include <ck_ring.h>
#include <ck_stack.h>
#include <pthread.h>

/* An enqueue on a ring sized to hold every batch: it never fails (asserted
 * in checked builds; the call runs in every build). */
#define MH_PUT(enqueue)                                                                    \
    do {                                                                                   \
        bool mh_put_ = (enqueue);                                                          \
        EXEC__ASSERT(mh_put_);                                                             \
        (void)mh_put_;                                                                     \
    } while (0)

/* A batch's state, for cancel (changes under mh.lock). */
enum { MH_QUEUED = 1, MH_SENT, MH_DONE };

struct mh_batch {
    struct exec__batch b;
    ck_stack_entry_t link; /* free stack */
    uint32_t index;        /* in mh.all */
    uint32_t sends;        /* bumped per send: ids of old sends go stale */
    uint64_t id;           /* index | sends << 32, while it is out */
    int state;
    int rank;              /* where it was sent */
    MPI_Request req[2];    /* BATCH and BDATA */
    bool unconfirmed;      /* on mh.unconf */
    char *hdr;             /* the BATCH message */
    size_t hdr_cap;
    char *rbuf;            /* the RESULT message; b.rdata points into it */
    size_t rbuf_cap;
    struct mh_batch *next; /* FIFO of the progress thread */
};

struct mh_rank {
    int rank;
    bool lost;             /* taken for lost (or never answered HELLO) */
    bool bye;              /* said BYE at the session's end */
    int pid;
    unsigned workers, depth;
    char host[MX_HOSTLEN];
    uint32_t inflight;     /* batches it holds (progress thread; read by hungry) */
    uint64_t last_heard;   /* progress thread */
    uint64_t respawns;     /* seen so far, to report the increase */
    uint64_t seen_records, seen_busy; /* figures at the last RESULT, for the batch size */
    /* Figures for exec_worker_stats (progress thread writes, any reads). */
    struct mx_figs figs;
    uint32_t gone;
    /* Swap in progress: its answer. */
    bool prep_wait;
    int prep_rc;
};

struct mh_swap {
    bool asked, done;
    uint64_t generation;
    char *spec;
    int rc;
    char err[MX_ERRLEN];
    /* Progress thread: the round under way. */
    bool running;
    uint64_t deadline;
};

struct mh {
    exec_t *ex;
    const exec_options_t *o;
    MPI_Comm comm;
    uint64_t session;
    int nranks;            /* active worker ranks: 1..nranks */
    int world;             /* MPI_COMM_WORLD's size */
    struct mh_rank *r;     /* r[0] is rank 1 */

    struct mh_batch **all;
    uint32_t nall, maxb;
    ck_stack_t free;

    struct ck_ring in, out;
    ck_ring_buffer_t *inbuf, *outbuf;
    uint32_t pending;      /* dispatched, not yet sent (producer +, progress -) */
    uint32_t room;         /* free places at live ranks (progress thread writes) */
    uint64_t generation;   /* stamped on batches at dispatch (producer) */

    int wake_fd;           /* eventfd: wakes the progress thread */
    uint32_t sleeping;
    pthread_t thread;
    bool thread_started;
    uint32_t stop;

    exec__mutex_t lock;    /* batch states vs cancel; the swap request */
    pthread_cond_t cond;   /* a swap answered */
    struct mh_swap swap;

    /* Progress thread only. */
    struct mh_batch *qhead, *qtail;
    struct mh_batch **unconf; /* sends not yet complete: pushed along (see progress.c) */
    uint32_t nunconf;
    char *scratch;
    size_t scratch_cap;
    char **graves;         /* buffers of receives given up on (freed at stop) */
    size_t ngraves;
    int live;              /* ranks not lost */
    uint64_t rec_ns;       /* a record's cost on a rank, smoothed (0: not known yet) */
    uint64_t next_check;
};

/* progress.c */
void *mh_progress_main(void *arg);
/* The next message (mx_recv_any into h->scratch): 1, 0 (none), or < 0. A
 * message that does not arrive whole within rank_timeout_ms loses its
 * sender. */
int mh_recv(struct mh *h, int tag, size_t *len, int *from, int *tag_out);
/* Ends the session: END to every live active rank, then takes everything
 * until each said BYE or rank_timeout_ms passed; pending sends are dropped.
 * From the progress thread when it stops, or from start() when it fails. */
void mh_shutdown(struct mh *h);
/* A message from rank `from` with tag, len bytes in buf (progress thread, or
 * start() before the thread exists). */
void mh_handle(struct mh *h, int from, int tag, char *buf, size_t len);

/* host.c: the seam's calls (api.c holds the table), and a rank's entry. */
int mh_configure(exec_options_t *o);
int mh_start(exec_t *ex);
struct exec__batch *mh_batch_get(exec_t *ex, int *err);
void mh_dispatch(exec_t *ex, struct exec__batch *b);
bool mh_hungry(exec_t *ex, const struct exec__batch *b);
struct exec__batch *mh_reap(exec_t *ex);
void mh_batch_put(exec_t *ex, struct exec__batch *b);
int mh_cancel(exec_t *ex, struct exec__batch *b, uint32_t i);
int mh_swap_spec(exec_t *ex, const char *spec, uint64_t generation, char *err, size_t errlen);
void mh_swap_commit(exec_t *ex);
void mh_worker_stats(exec_t *ex, unsigned i, exec_worker_stats_t *ws);
void mh_stop(exec_t *ex);
void mh_forget(exec_t *ex);
struct mh_rank *mh_rank_of(struct mh *h, int rank);

#endif /* EXEC_MPI_HOST_H */
