/*
 * EXEC_FORK, internal: the structures its files share and who owns what.
 * docs/fork.md explains the design; fork_shm.h is the shared region's layout.
 *
 * Files, by the process or thread that runs them:
 *   worker.c      a worker process: takes slots from its ring, runs records.
 *   zygote.c      the zygote process of a generation: forks and reaps workers.
 *   channel.c     the messages between supervisor and zygote (with fds).
 *   supervisor.c  the supervisor thread: its loop, zygotes, spawns, deaths.
 *   hostfork.c    with fork hooks: zygotes forked on the host's threads.
 *   watch.c       the supervisor's watches: timeouts, slow records, memory,
 *                 stalls (a worker that stops answering).
 *   recycle.c     the supervisor's recycling: successors and hand-overs.
 *   procs.c       below the supervisor, watch.c, recycle.c, deaths.c and
 *                 hostfork.c: a zygote's start, a place's process (reset,
 *                 kill, death), where a worker is.
 *   prefault.c    a successor copying the pages its predecessor wrote, in bulk.
 *   queue.c       the parent's queues: slots to workers, results back
 *                 (producer and consumer threads).
 *   deaths.c      the consumer settling a dead worker's slots.
 *   generation.c  generations: the region, start, drain, swap and canary.
 *   region.c      the region's layout, shared futexes, /proc figures.
 *   fork.c        the seam: what core calls.
 *
 * Calls run one way, never back to a caller's file (tests/check_calls.py).
 *
 * Locks: core's submit and next locks (the producer and the consumer), then
 * a worker's q.lock, then fk->lock (the supervisor's state). fk->lock is
 * never held while waiting for a worker.
 */
#ifndef EXEC_FORK_H
#define EXEC_FORK_H

#include "exec_internal.h"
#include "fork_shm.h"

#include <ck_ec.h>
#include <ck_ring.h>
#include <poll.h>
#include <sys/types.h>

#define FK_MAXGEN 16        /* generations alive at once (current + draining) */
#define FK_MAX_SLOTS 32u    /* slots per worker, at most (bits of freemask) */
_Static_assert(FK_MAX_SLOTS <= 32, "freemask is 32 bits");
#define FK_SPIN_NS 20000u   /* a worker out of work looks this long before it sleeps */
#define FK_LOW 2u           /* a worker with this few slots queued runs dry */
#define FK_MAX_FAILS 8      /* failed starts or deaths in a row before giving up */
#define FK_STOP_GRACE 100   /* ms a stopping worker gets before SIGKILL (destroy) */
#define FK_DRAIN_GRACE 2000 /* ms, for a drained generation's idle workers */
#define FK_EXIT_INIT 3      /* worker exit status: worker_init refused */
#define FK_EXIT_ORPHAN 4    /* worker exit status: its zygote was already gone */
#define FK_PROBE_N 8          /* records a swap's canary replays, at most */
#define FK_PROBE_BYTES 65536  /* ... and bytes */
#define FK_PROBE_EVERY 64     /* batches between two refreshes of them */
#define FK_NUDGE_NS 100000000ull   /* idle with work this long: republish, wake */
#define FK_STALL_NS 3000000000ull  /* ... this long after: it broke the protocol */
#define FK_MEM_QUICK_NS 1000000000ull /* a life this short is a quick memory pass */
#define FK_LIVED_NS 1000000000ull     /* a process admitted this long ago was no failed start */
#define FK_CANCEL_NS 20000000ull      /* a cancelled record still running this long: kill */
#define FK_SETTLE_NS 2000000000ull    /* EOF waits this long at most for a requested kill */
#define FK_YOUNG_NS 50000000ull       /* a process asked for this recently is about to serve */

/* Supervisor <-> zygote messages (channel.c). */
enum { FK_M_SPAWN = 1, FK_M_EXIT, FK_M_SPAWNED, FK_M_FAILED, FK_M_EXITED, FK_M_KILL };
struct fk_msg {
    int32_t op;
    int32_t idx; /* the zygote's number for a process (see fk_proc.zi); -1: the zygote */
    int32_t pid;
    int32_t val; /* SPAWN: 1 for a successor; FAILED: errno; EXITED: wait status;
                    EXIT: grace in ms */
};

/* A place's process as the supervisor knows it. */
enum { W_NONE, W_SPAWNING, W_LIVE, W_DEAD, W_WAIT, W_GONE, W_HOLD };
/* Its successor while recycling: asked for, forked, ready (waits for the
 * place), being killed because it can no longer take over. */
enum { S_NONE, S_SPAWNING, S_LIVE, S_READY, S_DOOMED };
/* Why we killed a worker. */
enum { K_NONE, K_TIMEOUT, K_OURS, K_CANCEL, K_STALL };
/* Generation states (ck_pr, changed under fk->lock). */
enum { G_FREE, G_STARTING, G_ACTIVE, G_RETIRING, G_DRAINED, G_CLOSING };

struct fk;
struct fk_gen;
struct fk_worker;

/* A slot: one batch's room in a worker's area. */
struct fk_slot {
    struct exec__batch b; /* first: a struct exec__batch * is a struct fk_slot * */
    struct fk_gen *g;
    struct fk_worker *wk;
    uint32_t idx;  /* within its worker */
    uint32_t from; /* next record to run */
    uint32_t qrec; /* records it added to its worker's q.nrec when queued */
    bool copied;   /* results are gathered in rbuf (more than one pass) */
    struct fk_slot *next_done;
    struct fk_sin *sin;
    struct fk_sout *sout;
    struct exec__res *sres;
    char *srdata;
    char *rbuf;
    size_t rbuf_len, rbuf_cap;
};

/* Figures of a worker place that add up over its processes and over
 * generations (a swap keeps them). Atomic adds by the consumer and the
 * supervisor; read by anyone. */
struct fk_place {
    uint64_t records, batches;
    uint64_t resp_crash, resp_timeout, resp_recycle, resp_cancel;
    uint64_t startup_ns, busy_ns, idle_ns; /* of processes that left */
    uint32_t flags;                        /* EXEC_WORKER_* */
    unsigned mem_quick;                    /* supervisor: quick memory passes in a row */
};

/* A place's process, as the supervisor sees it (fk->lock). */
struct fk_proc {
    int state; /* W_* */
    pid_t pid;
    int pidfd;
    unsigned zi;   /* the zygote's number for it: idx, or idx + nw */
    bool exited;   /* its pidfd polled readable */
    bool have_status;
    bool admitted; /* told it may run records (it has a pidfd we watch) */
    bool nofd;     /* spawned, but its pidfd never reached us: being killed */
    bool kill_req;
    int kill_req_why;
    uint64_t kill_req_at; /* when kill_req was set (a drained stream waits that long at most) */
    int kill_why; /* K_*: why we killed it */
    int wstatus;
    int spawn_err; /* why the last start failed (-errno), or 0 */
    unsigned fails;
    uint64_t respawn_at;
    uint64_t ready_at; /* when it was admitted (or took the place) */
};

/* What the supervisor watches of a live process (fk->lock). */
struct fk_watch {
    uint32_t to_slot, to_rec; /* where it was when it ran past timeout_ms */
    uint32_t last_tick;
    uint64_t last_change;
    uint64_t soft_at;   /* when it was asked to stop (timeout), or 0 */
    uint32_t soft_tick; /* its tick then */
    bool soft_sent;     /* this process was asked to stop, on the record of
                           soft_tick (kept when soft_at is let go: a death
                           as it left that record may be seen later) */
    bool slow_told;     /* the record at last_tick was reported slow */
    bool mem_base_set, mem_told, mem_want;
    uint64_t mem_base; /* Private_Dirty (kB) right after worker_init */
    uint64_t mem_at;   /* next look at it */
    uint64_t cancel_at; /* when it was first seen on a cancelled record */
    uint32_t cancel_tick;
    /* Stalls: no slot back and no tick for a while, with work queued. */
    uint64_t st_returned;
    uint32_t st_tick;
    uint64_t st_since;
    bool st_nudged;
};

/* Its successor while the place is recycled (fk->lock). */
struct fk_succ {
    int state; /* S_* */
    pid_t pid;
    int pidfd;
    bool now;    /* to take over at once (memory), not at the records limit */
    bool killed; /* we sent it SIGKILL */
    bool dead;   /* gone after it took the place, before it was promoted */
    int wstatus;
    uint64_t at; /* when it was asked for */
    bool mem_base_set;
    uint64_t mem_base;
};

/* One worker place of a generation: its header and slots in the region, and
 * the process (or two, while recycling) serving it. */
struct fk_worker {
    struct fk_gen *g;
    unsigned idx;
    struct fk_hdr *hdr;
    struct fk_slot *slots;
    struct fk_place *place;

    /* Slots handed to the worker and not yet back, in ring order. The
     * producer and the consumer both change it, under q.lock. */
    struct {
        exec__mutex_t lock;
        uint32_t *fifo;
        unsigned head, n;
        unsigned qn;          /* ck_pr mirror of n, read without the lock */
        uint64_t nrec;        /* records in those slots not yet run (ck_pr) */
        uint64_t head_since;  /* ck_pr: when the head slot became the head */
        struct ck_ring in_sh; /* our side of hdr->in: p_tail and mask */
    } q;

    /* The consumer's (reap, deaths). */
    struct {
        struct ck_ring out_sh; /* our side of hdr->out: c_head and mask */
        bool distrust;         /* broke the protocol: being killed */
        bool viol_head;        /* ... while reporting the FIFO's head */
        unsigned completed;    /* slots returned since its process started */
        uint64_t returned;     /* ck_pr: slots returned, ever (stall watch) */
        uint32_t gone;         /* ck_pr: given up on; producers skip it */
    } c;

    /* Its slots' result entries as the parent keeps them, one mapping that
     * no child inherits (MADV_DONTFORK): a child shares no page of it, so the
     * parent's writes never take a copy-on-write fault. */
    struct exec__res *res_block;
    size_t res_bytes;

    /* Free slots, bit i for slot i (ck_pr): batch_put (consumers) sets a
     * bit, batch_get (the producer) takes the lowest. With few batches in
     * flight (a server, one record at a time) the same slots come back: their
     * pages stay in cache, and a new worker reads few for the first time. */
    uint32_t freemask;

    struct fk_proc p;  /* supervisor, fk->lock */
    struct fk_watch w; /* supervisor, fk->lock */
    struct fk_succ s;  /* supervisor, fk->lock */
    uint32_t alive;    /* ck_pr: a hint for batch_get */
    uint64_t young_at; /* ck_pr: when a process of a place with no failed start was
                          asked for (0: none or failing), a hint for batch_get */
};

struct fk_gen {
    struct fk *fk;
    uint32_t state;
    uint64_t generation;
    void *ctx;
    bool release_ctx;
    unsigned nw, nslot;
    unsigned reap_w; /* consumer: where reap starts looking */
    char *base;
    size_t size, in_size, in_slot, out_slot, out_worker, hdr_size;
    size_t dcap, rcap, recs_size, res_size;
    struct fk_worker *w;
    uint32_t held; /* slots the core holds (batch_get .. batch_put) */

    /* Supervisor side, under fk->lock. */
    pid_t zpid;
    int zpidfd, zsock;
    pid_t *zpids; /* the zygote's own table of its workers (its copy) */
    unsigned nready, nfailed;
    int zerr;      /* the zygote could not start (-errno) */
    bool zdied;    /* fork hooks: its zygote died (a starting one is not replaced) */
    int start_err; /* a worker could not start for a system reason (-errno) */
    unsigned zfails;
    uint64_t zretry_at, close_deadline;
};

struct fk_ctl {
    uint32_t armed; /* core's armed word: workers wake the consumer through it */
    uint32_t pad;
    uint64_t last_wake; /* when a worker last woke the consumer (ck_pr) */
};

/* Poll set entries of the supervisor. */
enum { P_EFD, P_ZSOCK, P_ZPID, P_WORKER };
struct fk_ptag {
    int kind;
    struct fk_gen *g;
    struct fk_worker *wk;
};

/* The backend's private state (core allocates it: exec__priv()). */
struct fk {
    exec_t *ex;
    const exec_ops_t *ops;
    const exec_options_t *o;
    struct fk_ctl *ctl;
    /* exec_buffer(): a memfd mapped shared before any zygote was forked, so
     * at the same address in every process; read-only outside the parent. */
    char *buf;
    size_t buf_size;
    int sup_efd; /* wakes the supervisor (also written by workers) */
    pthread_t sup;
    bool sup_started;
    exec__mutex_t lock;
    pthread_cond_t cond;
    bool stopping;
    uint32_t dead_pending;
    uint32_t sup_idle; /* supervisor asleep with no deadline: a dispatch wakes it */
    uint32_t zneed;    /* ck_pr, fork hooks: a zygote is due, for the consumer to fork */
    uint64_t seed;     /* per executor: each worker's records limit */
    exec_slow_t *slow; /* reports gathered in a pass, sent after it */
    unsigned nslow, slow_cap;
    struct fk_worker *recycling; /* the one place being recycled (fk->lock) */
    struct fk_place *places;     /* per worker index, across generations */
    /* A few records that ran well lately, for a swap's canary to replay:
     * the consumer refreshes them now and then, swaps read them. */
    pthread_mutex_t probe_lock;
    unsigned probe_n, probe_tick;
    struct exec__rec probe_rec[FK_PROBE_N];
    char *probe_data;
    struct fk_gen *cur;     /* where new batches go (producer) */
    struct fk_gen *pending; /* prepared by a swap, made current by its commit */
    uint32_t held_all;      /* slots the core holds, all generations */
    uint32_t maxb;          /* at most this many (core sizes its reorder ring so) */
    struct fk_slot *done;   /* consumer: completed by death handling */
    unsigned reap_g;
    struct pollfd *pfd;
    struct fk_ptag *ptag;
    size_t npfd_max;
    struct fk_gen gens[FK_MAXGEN];
};

/* Lowers *wait_ms (-1: no deadline yet) so that a poll wakes at time t. */
static inline void fk_wait_at(int *wait_ms, uint64_t now, uint64_t t)
{
    int ms = t > now ? (int)((t - now) / 1000000u) + 1 : 0;
    if (*wait_ms < 0 || ms < *wait_ms)
        *wait_ms = ms;
}

/* With fork hooks the host's threads fork the zygotes (hostfork.c). */
static inline bool fk_hooked(const struct fk *fk)
{
    const exec_fork_hooks_t *h = &fk->o->fork_hooks;
    return h->prepare || h->parent || h->child;
}

/* region.c */
int fk_region_map(struct fk_gen *g, const exec_options_t *o);
/* Parent-only memory, never inherited by a child (MADV_DONTFORK), zeroed;
 * NULL when it cannot be had. fk_private_free() frees it (never in a child of
 * the host's fork(): the range is not mapped there, and may be another's). */
void *fk_private(size_t bytes);
void fk_private_free(void *p, size_t bytes);
struct fk_sin *fk_sin_at(const struct fk_gen *g, unsigned w, unsigned s);
struct fk_hdr *fk_hdr_at(const struct fk_gen *g, unsigned w);
struct fk_sout *fk_sout_at(const struct fk_gen *g, unsigned w, unsigned s);
void fk_wake_sup(struct fk *fk);
uint64_t fk_mix(uint64_t x);
void fk_smaps(int pid, uint64_t *pss, uint64_t *dirty);

/* worker.c (in the worker process) */
__attribute__((noreturn)) void fk_worker_main(struct fk *fk, struct fk_gen *g, unsigned idx,
                                              bool successor, int zsock, int sfd, int hostfd,
                                              pid_t zygote);

/* prefault.c (in a successor): copies, in bulk, the inherited pages that its
 * predecessor pred (a child of zygote) holds exclusively; returns how many. */
size_t fk_prefault(pid_t pred, pid_t zygote);

/* zygote.c */
__attribute__((noreturn)) void fk_zygote_main(struct fk *fk, struct fk_gen *g, int sock,
                                              pid_t parent);

/* channel.c */
void fk_chan_send(int *sock, const struct fk_msg *m, int fd);
/* 1 with *m (and *fd, -1 when none came or it was cut off: *cut set), 0 when
 * nothing is waiting, -1 at the end (the peer is gone). */
int fk_chan_recv(int sock, struct fk_msg *m, int *fd, bool *cut);

/* supervisor.c */
void *fk_sup_main(void *arg);

/* procs.c */
int fk_zygote_start(struct fk *fk, struct fk_gen *g, int *forked);
void fk_sup_send(struct fk_gen *g, const struct fk_msg *m);
void fk_sup_dead(struct fk *fk, struct fk_gen *g, struct fk_worker *wk);
void fk_kill_proc(pid_t pid, int pidfd);
void fk_sup_kill(struct fk_worker *wk, int why);
void fk_proc_reset(struct fk_worker *wk);
bool fk_where(const struct fk_hdr *h, uint32_t tick, uint32_t *slot, uint32_t *rec);

/* hostfork.c (a host's thread, no fk->lock held) */
void fk_host_fork(struct fk *fk, struct fk_gen *g, bool starting);
void fk_host_refork(struct fk *fk);

/* watch.c (supervisor, fk->lock held) */
void fk_watch_worker(struct fk *fk, struct fk_gen *g, struct fk_worker *wk, uint64_t now,
                     int *wait_ms);
void fk_watch_memory_ready(struct fk *fk, struct fk_worker *wk);

/* recycle.c (supervisor, fk->lock held) */
void fk_succ_maybe_start(struct fk *fk, struct fk_gen *g, struct fk_worker *wk, uint64_t now,
                         int *wait_ms);
void fk_succ_spawned(struct fk *fk, struct fk_worker *wk, const struct fk_msg *m, int *fd);
void fk_succ_gone(struct fk *fk, struct fk_gen *g, struct fk_worker *wk, int wstatus);
void fk_succ_ready(struct fk *fk, struct fk_worker *wk);
void fk_succ_kill(struct fk_worker *wk);
void fk_succ_clear(struct fk *fk, struct fk_worker *wk);
void fk_sup_gone(struct fk *fk, struct fk_gen *g, struct fk_worker *wk);

/* queue.c */
bool fk_enqueue(struct fk_worker *wk, struct fk_slot *s);
bool fk_ring_put(struct fk_worker *wk, struct fk_slot *s);
/* The lowest free slot of wk, taken (NULL when none); a slot given back.
 * Any thread (ck_pr). */
struct fk_slot *fk_slot_take(struct fk_worker *wk);
void fk_slot_give(struct fk_worker *wk, struct fk_slot *s);
struct fk_slot *fk_fifo_pop(struct fk_worker *wk);
bool fk_cancelled(const struct fk_slot *s, uint32_t i);
bool fk_harvest(struct fk_slot *s, uint32_t to, uint64_t rlen, bool in_place);
/* The pass a worker says it finished on s (sout->done, sout->rdata_len, read
 * once and checked against s and rcap), harvested. Returns the new `done`, or
 * 0 when the slot's header was garbage (nothing taken); *clean is false when
 * it was, or when an entry was (fk_harvest). Does not move s->from. */
uint32_t fk_take_pass(struct fk_slot *s, uint64_t rcap, bool *clean);
void fk_results_apart(struct fk_slot *s);
struct fk_slot *fk_pull(struct fk *fk, struct fk_worker *wk, bool count);
void fk_fail_all(struct fk *fk, struct fk_worker *wk, int status);
void fk_push_done(struct fk *fk, struct fk_slot *s);
void fk_kill_req(struct fk *fk, struct fk_worker *wk, int why);
void fk_violation(struct fk *fk, struct fk_worker *wk, bool head);

/* deaths.c (consumer) */
void fk_deaths(struct fk *fk);
bool fk_unsettled(exec_t *ex);

/* generation.c */
int fk_gen_init(struct fk *fk, struct fk_gen *g, void *ctx, uint64_t generation, unsigned start);
int fk_gen_wait(struct fk *fk, struct fk_gen *g, unsigned want);
void fk_gen_abandon(struct fk *fk, struct fk_gen *g);
void fk_gen_free(struct fk *fk, struct fk_gen *g, bool release);
void fk_drained(struct fk *fk, struct fk_gen *g);
int fk_swap_prepare(exec_t *ex, void *new_ctx, uint64_t generation);
void fk_swap_commit(exec_t *ex);

#endif /* EXEC_FORK_H */
