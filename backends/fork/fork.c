/*
 * EXEC_FORK: worker processes forked after the context was built, inheriting
 * it copy-on-write; the context is never serialized.
 *
 * Processes. A supervisor thread of ours (all signals blocked) owns them. For
 * each generation of the context it forks a single-threaded zygote, and the
 * zygote forks the workers on request, reaps them and reports (pid, wait
 * status) over a SOCK_SEQPACKET socket, passing a pidfd for each new worker.
 * Workers and zygotes die with their parent (PR_SET_PDEATHSIG, then a check
 * of getppid()), leave through _exit, and run in process groups of their own.
 * No SIGCHLD handler anywhere: the supervisor polls pidfds.
 *
 * Transport. One memfd region per generation, mapped MAP_SHARED (layout in
 * fork_shm.h). Each worker owns ~32 slots; a core batch is filled straight
 * into a slot's input part (read-only in the worker) and the slot index goes
 * over the worker's `in` ring; the worker runs the records, writing results
 * into the slot's output part through a fixed writer, and sends the index
 * back over its `out` ring. Workers spin briefly and then sleep on a ck_ec
 * event count with process-shared futexes.
 *
 * Trust. The truth about slots (whose, queued where, which pass) is kept in
 * parent memory: a per-worker FIFO mirrors the `in` ring, and whatever comes
 * out of `out` must be the FIFO's head. The parent never uses a ring header
 * that a worker can write (it keeps private shadows with the mask), copies
 * every result entry out of shared memory before checking it, and bounds
 * every offset and length. A worker that breaks the protocol gets its bad
 * records reported as EXEC_EWORKER, is killed and replaced.
 *
 * Deaths. The supervisor marks a worker dead (pidfd readable + status from
 * the zygote) and wakes the consumer; the consumer, inside reap(), charges
 * the record the worker was on (header: slot, record, tick), keeps the
 * results before it, re-queues the rest of that slot and every queued slot
 * for the replacement (same area, rings rebuilt from the FIFO), and asks the
 * supervisor for the replacement. A record thus gets exactly one result.
 *
 * Recycling. One place at a time: a successor is forked ahead (zygote number
 * idx + nw or idx), runs worker_init and waits; the worker leaves at a batch
 * boundary and hands over the header (FK_H_GO), and the successor goes on
 * with the same rings. Swap. A new generation starts with one canary worker
 * that replays a few records that ran well; only then do the others start.
 */
#define _LGPL_SOURCE
#include "exec_internal.h"
#include "fork_shm.h"
#include "tsan.h"

#include <ck_ec.h>
#include <ck_pr.h>
#include <ck_ring.h>
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#define FK_MAXGEN 16       /* generations alive at once (current + draining) */
#define FK_SPIN 200        /* pauses before a worker sleeps */
#define FK_LOW 2u          /* a worker with this few slots queued runs dry */
#define FK_MAX_FAILS 8     /* deaths in a row without progress before giving up */
#define FK_STOP_GRACE 100  /* ms a stopping worker gets before SIGKILL (destroy) */
#define FK_DRAIN_GRACE 2000 /* ms, for a drained generation's idle workers */
#define FK_EXIT_INIT 3     /* worker exit status: worker_init refused */
#define FK_EXIT_ORPHAN 4   /* worker exit status: its zygote was already gone */
#define FK_MIB ((size_t)1 << 20)
#define FK_PROBE_N 8          /* records a swap's canary replays, at most */
#define FK_PROBE_BYTES 65536  /* ... and bytes */
#define FK_PROBE_EVERY 64     /* batches between two refreshes of them */

/* Zygote protocol. */
enum { FK_M_SPAWN = 1, FK_M_EXIT, FK_M_SPAWNED, FK_M_FAILED, FK_M_EXITED };
struct fk_msg {
    int32_t op;
    int32_t idx;
    int32_t pid;
    int32_t val;
};

/* Worker states (parent-private, under fk->lock). */
enum { W_NONE, W_SPAWNING, W_LIVE, W_DEAD, W_WAIT, W_GONE, W_HOLD };
/* Successor states: asked for, forked, ready (waits for the place), being
 * killed because it can no longer take over. */
enum { S_NONE, S_SPAWNING, S_LIVE, S_READY, S_DOOMED };
/* Why we killed a worker. */
enum { K_NONE, K_TIMEOUT, K_OURS, K_CANCEL };
/* Generation states (ck_pr, changed under fk->lock). */
enum { G_FREE, G_STARTING, G_ACTIVE, G_RETIRING, G_DRAINED, G_CLOSING };

struct fk;
struct fk_gen;
struct fk_worker;

struct fk_slot {
    struct exec__batch b; /* first: a struct exec__batch * is a struct fk_slot * */
    struct fk_gen *g;
    struct fk_worker *wk;
    uint32_t idx;   /* within its worker */
    uint32_t from;  /* next record to run */
    bool copied;    /* results are gathered in rbuf (more than one pass) */
    struct fk_slot *next_done;
    struct fk_sin *sin;
    struct fk_sout *sout;
    struct exec__res *sres;
    char *srdata;
    char *rbuf;
    size_t rbuf_len, rbuf_cap;
};

struct fk_worker {
    struct fk_gen *g;
    unsigned idx;
    struct fk_hdr *hdr;
    struct fk_slot *slots;

    /* Slots handed to this worker and not yet back, in ring order. Producer
     * and consumer both change it: under `lock`. qn mirrors fifo_n. */
    pthread_mutex_t lock;
    uint32_t *fifo;
    unsigned fifo_head, fifo_n, qn;
    struct ck_ring in_sh; /* our side of hdr->in: p_tail and mask */

    /* Consumer only. */
    struct ck_ring out_sh; /* our side of hdr->out: c_head and mask */
    bool distrust;         /* broke the protocol: being killed */
    bool viol_head;        /* ... while reporting the FIFO's head */
    unsigned completed;    /* slots returned since it was spawned */
    uint32_t gone;         /* ck_pr: given up on; producers skip it */
    /* Figures (consumer writes, anyone reads with ck_pr). */
    uint64_t records, batches;
    uint64_t resp_crash, resp_timeout, resp_recycle, resp_cancel;
    uint64_t startup_ns, busy_ns, idle_ns; /* of its earlier processes */

    /* Free slots: batch_put -> batch_get. */
    struct ck_ring freer;
    ck_ring_buffer_t *freebuf;

    /* Supervisor side, under fk->lock. */
    int state;
    pid_t pid;
    int pidfd;
    bool exited, have_status, ready, kill_req;
    int kill_req_why;
    int wstatus;
    int kill_why;
    uint32_t to_slot, to_rec, last_tick;
    uint64_t last_change;
    uint64_t soft_at;    /* when it was asked to stop (timeout), or 0 */
    uint32_t soft_tick;  /* its tick then */
    bool slow_told;      /* the record at last_tick was reported slow */
    bool mem_base_set, mem_told;
    uint64_t mem_base;   /* Private_Dirty (kB) right after worker_init */
    uint64_t mem_at;     /* next look at it */
    unsigned fails;
    uint64_t respawn_at;
    uint32_t alive; /* ck_pr: a hint for batch_get */
    unsigned zi;    /* the zygote's number for its process: idx, or idx + nw */
    bool mem_want;  /* grew: wants a successor */

    /* Its successor while it is being recycled (supervisor, under fk->lock):
     * forked ahead, it runs worker_init and waits for the place. */
    int s_state; /* S_* */
    pid_t s_pid;
    int s_pidfd;
    bool s_now;    /* to take over at once (memory), not at the records limit */
    bool s_killed; /* we sent it SIGKILL */
    bool s_dead;   /* gone after it took the place, before it was promoted */
    int s_wstatus;
    uint64_t s_at; /* when it was asked for */
    bool s_mem_base_set;
    uint64_t s_mem_base;
};

struct fk_gen {
    struct fk *fk;
    uint32_t state;
    uint64_t generation;
    void *ctx;
    bool release_ctx;
    unsigned nw, nslot;
    unsigned rr;     /* producer: where batch_get starts looking */
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
    int zerr;
    unsigned zfails;
    uint64_t zretry_at, close_deadline;
};

struct fk_ctl {
    uint32_t armed; /* ex->armed: workers wake the consumer through it */
};

struct fk {
    exec_t *ex;
    struct fk_ctl *ctl;
    int sup_efd; /* wakes the supervisor (also written by workers after init) */
    pthread_t sup;
    bool sup_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stopping;
    uint32_t dead_pending;
    uint32_t sup_idle; /* supervisor asleep with no deadline (timeouts on) */
    bool watch;        /* timeout_ms or slow_ms: the supervisor times records */
    uint64_t seed;     /* per-executor: each worker's records limit */
    exec_slow_t *slow; /* reports gathered in a pass, sent after it */
    unsigned nslow, slow_cap;
    struct fk_worker *recycling; /* the one place being recycled (fk->lock) */
    /* A few records that ran well lately, for a swap's canary to replay:
     * the consumer refreshes them now and then, swaps read them. */
    pthread_mutex_t probe_lock;
    unsigned probe_n, probe_tick;
    struct exec__rec probe_rec[FK_PROBE_N];
    char *probe_data;
    struct fk_gen *cur; /* where new batches go (submit_lock) */
    uint32_t held_all;  /* slots the core holds, all generations */
    uint32_t maxb;      /* at most this many (core sizes its reorder ring so) */
    struct fk_slot *done; /* consumer: completed by death handling */
    unsigned reap_g;
    struct pollfd *pfd;
    struct fk_ptag {
        int kind;
        struct fk_gen *g;
        struct fk_worker *wk;
    } * ptag;
    size_t npfd_max;
    struct fk_gen gens[FK_MAXGEN];
};

/* ------------------------------------------------------------------------- */
/* Event counts across processes: shared futexes                             */
/* ------------------------------------------------------------------------- */

static int fk_gettime(const struct ck_ec_ops *ops, struct timespec *out)
{
    (void)ops;
    return clock_gettime(CLOCK_MONOTONIC, out);
}

static void fk_wait32(const struct ck_ec_wait_state *st, const uint32_t *addr, uint32_t expected,
                      const struct timespec *deadline)
{
    (void)st;
    (void)deadline;
    syscall(SYS_futex, addr, FUTEX_WAIT, expected, NULL, NULL, 0);
}

static void fk_wake32(const struct ck_ec_ops *ops, const uint32_t *addr)
{
    (void)ops;
    syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static const struct ck_ec_ops fk_ec_ops = {
    .gettime = fk_gettime,
    .wait32 = fk_wait32,
    .wake32 = fk_wake32,
    .busy_loop_iter = 64,
};
static const struct ck_ec_mode fk_ec_mode = {.ops = &fk_ec_ops, .single_producer = false};

/* ------------------------------------------------------------------------- */
/* Layout                                                                    */
/* ------------------------------------------------------------------------- */

static size_t fk_align(size_t x, size_t a)
{
    return (x + a - 1) & ~(a - 1);
}

static struct fk_sin *fk_sin_at(const struct fk_gen *g, unsigned w, unsigned s)
{
    return (struct fk_sin *)(g->base + ((size_t)w * g->nslot + s) * g->in_slot);
}

static struct fk_hdr *fk_hdr_at(const struct fk_gen *g, unsigned w)
{
    return (struct fk_hdr *)(g->base + g->in_size + (size_t)w * g->out_worker);
}

static struct fk_sout *fk_sout_at(const struct fk_gen *g, unsigned w, unsigned s)
{
    return (struct fk_sout *)((char *)fk_hdr_at(g, w) + g->hdr_size + (size_t)s * g->out_slot);
}

static void fk_wake_sup(struct fk *fk)
{
    uint64_t one = 1;
    ssize_t r = write(fk->sup_efd, &one, sizeof one);
    (void)r;
}

/* ------------------------------------------------------------------------- */
/* Worker process                                                            */
/* ------------------------------------------------------------------------- */

static bool fk_w_take(struct fk_hdr *h, uint32_t *si)
{
    void *v;
    if (!ck_ring_dequeue_spsc(&h->in, h->inbuf, &v))
        return false;
    *si = (uint32_t)(uintptr_t)v;
    return true;
}

static uint64_t fk_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* From /proc/PID/smaps_rollup: Pss and Private_Dirty, in kB (0 if unknown). */
static void fk_smaps(int pid, uint64_t *pss, uint64_t *dirty)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    unsigned long long v;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "Pss: %llu kB", &v) == 1)
            *pss = v;
        else if (sscanf(line, "Private_Dirty: %llu kB", &v) == 1)
            *dirty = v;
    }
    fclose(f);
}

/* Leaves on purpose (asked to, or at its records limit): not a crash. */
static void fk_w_leave(exec_t *ex, struct fk_gen *g, struct fk_hdr *h, void *ws)
{
    ck_pr_store_32(&h->state, FK_W_RETIRED);
    if (ex->ops->worker_fini)
        ex->ops->worker_fini(g->ctx, ws);
    _exit(0);
}

/*
 * Recycling: a successor is ready. Leaves at a batch boundary (nothing taken,
 * every slot it took sent back) and gives the place to the successor.
 */
static __attribute__((noreturn)) void fk_w_handoff(exec_t *ex, struct fk_gen *g, struct fk_hdr *h,
                                                   void *ws)
{
    ck_pr_store_64(&h->idle_since, 0);
    ck_pr_store_32(&h->state, FK_W_RETIRED);
    ck_pr_fence_store();
    ck_pr_store_32(&h->handoff, FK_H_GO);
    ck_ec32_inc(&h->ec, &fk_ec_mode);
    if (ex->ops->worker_fini)
        ex->ops->worker_fini(g->ctx, ws);
    _exit(0);
}

/*
 * Is it time to ask for a successor? About when the records left would take
 * twice a start-up plus 1 ms (busy time per record so far; the start-up is
 * this process's own, or the last successor's as the parent saw it):
 * the successor is then ready near the limit, and the one recycling slot is
 * held no longer than that.
 */
static bool fk_w_ask(const struct fk_hdr *h, uint64_t records, uint32_t limit, uint64_t busy_ns,
                     uint64_t startup_ns)
{
    if (records >= limit)
        return true;
    if (records == 0)
        return false;
    /* The last successor's lead as the parent saw it, if longer (a slow fork). */
    uint64_t lead = ck_pr_load_64(&h->lead_ns);
    if (lead > startup_ns && lead < 60 * 1000000000ull)
        startup_ns = lead;
    double left_ns = (double)(limit - records) * ((double)busy_ns / (double)records);
    return left_ns <= 2.0 * (double)startup_ns + 1e6;
}

/* Is it time to give the place to a ready successor? */
static bool fk_w_handing(const struct fk_hdr *h, uint64_t records, uint32_t limit)
{
    uint32_t ho = ck_pr_load_32(&h->handoff);
    return ho == FK_H_NOW || (ho == FK_H_READY && records >= limit);
}

static __attribute__((noreturn)) void fk_worker_main(struct fk *fk, struct fk_gen *g, unsigned idx,
                                                     bool successor, int zsock, int sfd,
                                                     pid_t zygote)
{
    exec_t *ex = fk->ex;
    const uint64_t t_fork = exec__now_ns();
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != zygote)
        _exit(FK_EXIT_ORPHAN);
    close(zsock);
    close(sfd);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* A worker that scribbles over its input faults instead. */
    mprotect(g->base, g->in_size, PROT_READ);

    struct fk_hdr *h = fk_hdr_at(g, idx);
    if (!successor)
        ck_pr_store_32((uint32_t *)&h->pid, (uint32_t)getpid());
    void *ws = NULL;
    int rc = ex->ops->worker_init ? ex->ops->worker_init(g->ctx, &ws) : 0;
    uint64_t busy_ns = 0, idle_ns = 0, startup_ns = exec__now_ns() - t_fork;
    const uint64_t my_startup_ns = startup_ns;
    if (successor) {
        ck_pr_store_32(&h->succ_state, rc ? FK_W_INITFAIL : FK_W_READY);
        fk_wake_sup(fk);
        if (rc)
            _exit(FK_EXIT_INIT);
        /* Ready; the worker in the place leaves at a batch boundary. */
        for (;;) {
            uint32_t snap = ck_ec32_value(&h->ec);
            if (ck_pr_load_32(&h->handoff) == FK_H_GO)
                break;
            if (ck_pr_load_32(&h->stop)) {
                if (ex->ops->worker_fini)
                    ex->ops->worker_fini(g->ctx, ws);
                _exit(0);
            }
            ck_ec32_wait(&h->ec, &fk_ec_mode, snap, NULL);
        }
        ck_pr_fence_load();
        /* The place's figures go on from its predecessor's. */
        busy_ns = ck_pr_load_64(&h->busy_ns);
        idle_ns = ck_pr_load_64(&h->idle_ns);
        startup_ns += ck_pr_load_64(&h->startup_ns);
        ck_pr_store_32((uint32_t *)&h->pid, (uint32_t)getpid());
        ck_pr_store_32(&h->want_out, 0);
    }
    ck_pr_store_64(&h->busy_ns, busy_ns);
    ck_pr_store_64(&h->idle_ns, idle_ns);
    ck_pr_store_64(&h->startup_ns, startup_ns);
    const uint64_t busy0_ns = busy_ns; /* the place's, before this process */
    ck_pr_store_32(&h->state, rc ? FK_W_INITFAIL : FK_W_READY);
    if (!successor)
        fk_wake_sup(fk);
    if (rc)
        _exit(FK_EXIT_INIT);

    const exec_ops_t *ops = ex->ops;
    const size_t max_result = ex->opt.max_result;
    /* Each worker its own limit in [N, N + N/10]: restarts spread out. */
    uint32_t limit = ex->opt.max_records_per_worker;
    if (limit)
        limit += (uint32_t)(fk_mix(fk->seed ^ ((uint64_t)idx << 32) ^ (uint64_t)getpid()) %
                            (limit / 10 + 1));
    bool asked = false;
    const unsigned wake_out = g->nslot / 2 > 4 ? g->nslot / 2 : 4;
    uint64_t records = 0;
    /* Even: (cur_slot, cur_rec) are stable. A predecessor may have died mid-way. */
    uint32_t tick = (ck_pr_load_32(&h->tick) + 1) & ~1u;
    struct exec_writer w;
    memset(&w, 0, sizeof w);
    w.max = max_result;
    w.grow_arg = h; /* lets tests find the area; unused by fixed writers */
    struct exec__batch wb;
    memset(&wb, 0, sizeof wb);

    for (;;) {
        uint32_t si;
        uint32_t snap = ck_ec32_value(&h->ec);
        if (!fk_w_take(h, &si)) {
            const uint64_t t_idle = exec__now_ns();
            ck_pr_store_64(&h->idle_since, t_idle);
            int spins = 0;
            while (!fk_w_take(h, &si)) {
                if (ck_pr_load_32(&h->stop))
                    fk_w_leave(ex, g, h, ws);
                if (fk_w_handing(h, records, limit)) {
                    ck_pr_store_64(&h->idle_ns, idle_ns + exec__now_ns() - t_idle);
                    fk_w_handoff(ex, g, h, ws);
                }
                if (++spins < FK_SPIN) {
                    ck_pr_stall();
                    continue;
                }
                if (ck_ring_size(&h->out))
                    exec__notify(ex);
                ck_ec32_wait(&h->ec, &fk_ec_mode, snap, NULL);
                snap = ck_ec32_value(&h->ec);
                spins = 0;
            }
            idle_ns += exec__now_ns() - t_idle;
            ck_pr_store_64(&h->idle_ns, idle_ns);
            ck_pr_store_64(&h->idle_since, 0);
        }
        const uint64_t t_busy = exec__now_ns();
        if (si >= g->nslot)
            _exit(FK_EXIT_ORPHAN);
        const struct fk_sin *in = fk_sin_at(g, idx, si);
        struct fk_sout *out = fk_sout_at(g, idx, si);
        uint32_t n = in->n, from = in->from;
        wb.recs = (struct exec__rec *)(in + 1);
        wb.rflags = (uint8_t *)(wb.recs + ex->opt.batch); /* read-only here */
        wb.data = (char *)in + g->recs_size;
        wb.res = (struct exec__res *)(out + 1);
        wb.cap = n;
        w.buf = (char *)out + g->res_size;
        w.cap = g->rcap;
        w.len = 0;
        ck_pr_store_32(&h->tick, ++tick);
        ck_pr_fence_store();
        ck_pr_store_32(&h->cur_slot, si);
        ck_pr_store_32(&h->cur_rec, from);
        ck_pr_fence_store();
        ck_pr_store_32(&h->tick, ++tick);
        ck_pr_store_32(&h->busy, 1);
        uint32_t i;
        size_t good = 0; /* result bytes in use, as of the last sane writer */
        for (i = from; i < n; i++) {
            /* Room for a whole max_result before a record starts. */
            if (i > from && w.cap - w.len < max_result)
                break;
            if (i + 4 < n)
                __builtin_prefetch(wb.data + wb.recs[i + 4].off);
            /* (slot, record) under a seqlock: odd tick while they change. */
            ck_pr_store_32(&h->tick, ++tick);
            ck_pr_fence_store();
            ck_pr_store_32(&h->cur_rec, i);
            ck_pr_fence_store();
            ck_pr_store_32(&h->tick, ++tick);
            wb.n = i + 1;
            exec__run_batch(ops, g->ctx, ws, &wb, i, &w, max_result);
            if (w.len > w.cap || w.start > w.len) {
                /* process() broke the writer: this record's entry is garbage
                 * (the parent will say so); end the pass here. */
                i++;
                break;
            }
            good = w.len;
        }
        out->done = i;
        out->rdata_len = good;
        busy_ns += exec__now_ns() - t_busy;
        ck_pr_store_64(&h->busy_ns, busy_ns);
        ck_pr_store_32(&h->busy, 0);
        ck_pr_fence_store();
        ck_ring_enqueue_spsc(&h->out, h->outbuf, (void *)(uintptr_t)si);
        records += i - from;
        if (limit && !asked && fk_w_ask(h, records, limit, busy_ns - busy0_ns, my_startup_ns)) {
            asked = true;
            ck_pr_store_32(&h->want_out, 1);
            fk_wake_sup(fk);
        }
        if (fk_w_handing(h, records, limit))
            fk_w_handoff(ex, g, h, ws);
        if (ck_pr_load_32(ex->armed) &&
            (ck_ring_size(&h->out) >= wake_out || ck_ring_size(&h->in) <= FK_LOW))
            exec__notify(ex);
        if (ck_pr_load_32(&h->stop))
            fk_w_leave(ex, g, h, ws);
    }
}

/* ------------------------------------------------------------------------- */
/* Zygote process                                                            */
/* ------------------------------------------------------------------------- */

static void fk_z_send(int *sock, const struct fk_msg *m, int fd)
{
    if (*sock < 0)
        return;
    struct iovec iov = {.iov_base = (void *)m, .iov_len = sizeof *m};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&u, 0, sizeof u);
        mh.msg_control = u.buf;
        mh.msg_controllen = sizeof u.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    if (sendmsg(*sock, &mh, MSG_NOSIGNAL) < 0 && errno != EINTR) {
        close(*sock);
        *sock = -1;
    }
}

static __attribute__((noreturn)) void fk_zygote_main(struct fk *fk, struct fk_gen *g, int sock,
                                                     pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    setpgid(0, 0);
    /* Descriptors of ours that belong to other processes' business. */
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *o = &fk->gens[k];
        if (o->zsock >= 0)
            close(o->zsock);
        if (o->zpidfd >= 0)
            close(o->zpidfd);
        if (o->w)
            for (unsigned i = 0; i < o->nw; i++) {
                if (o->w[i].pidfd >= 0)
                    close(o->w[i].pidfd);
                if (o->w[i].s_pidfd >= 0)
                    close(o->w[i].s_pidfd);
            }
    }
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL);
    /* Every signal is still blocked (the supervisor's mask): SIGCHLD comes
     * through a signalfd. Workers unblock them all. */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        _exit(1);
    pid_t self = getpid();
    pid_t *pids = g->zpids;
    unsigned live = 0;
    bool exiting = false;
    uint64_t deadline = 0;
    for (;;) {
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG | __WALL)) > 0) {
            for (unsigned i = 0; i < 2 * g->nw; i++) {
                if (pids[i] == p) {
                    pids[i] = 0;
                    live--;
                    /* Whatever it forked into its group goes with it. */
                    kill(-p, SIGKILL);
                    struct fk_msg m = {FK_M_EXITED, (int32_t)i, p, st};
                    fk_z_send(&sock, &m, -1);
                    break;
                }
            }
        }
        if (exiting && live == 0)
            _exit(0);
        int timeout = -1;
        if (exiting) {
            uint64_t now = exec__now_ns();
            if (now >= deadline) {
                for (unsigned i = 0; i < 2 * g->nw; i++)
                    if (pids[i] > 0) {
                        kill(-pids[i], SIGKILL);
                        kill(pids[i], SIGKILL);
                    }
                timeout = 50;
            } else {
                timeout = (int)((deadline - now) / 1000000u) + 1;
            }
        }
        struct pollfd pf[2] = {{.fd = sfd, .events = POLLIN}, {.fd = sock, .events = POLLIN}};
        int r = poll(pf, sock >= 0 ? 2 : 1, timeout);
        if (r < 0 && errno != EINTR)
            _exit(1);
        if (pf[0].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si)
                ;
        }
        if (sock < 0 || !pf[1].revents)
            continue;
        struct fk_msg m;
        ssize_t n = recv(sock, &m, sizeof m, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n != (ssize_t)sizeof m) {
            /* The supervisor is gone: stop now. */
            close(sock);
            sock = -1;
            exiting = true;
            deadline = 0;
            continue;
        }
        if (m.op == FK_M_EXIT) {
            exiting = true;
            deadline = exec__now_ns() + (uint64_t)(m.val > 0 ? m.val : 0) * 1000000u;
            for (unsigned i = 0; i < g->nw; i++) {
                struct fk_hdr *h = fk_hdr_at(g, i);
                ck_pr_store_32(&h->stop, 1);
                ck_ec32_inc(&h->ec, &fk_ec_mode);
            }
        } else if (m.op == FK_M_SPAWN && !exiting && m.idx >= 0 &&
                   (unsigned)m.idx < 2 * g->nw && pids[m.idx] == 0) {
            pid_t c = fork();
            if (c == 0)
                fk_worker_main(fk, g, (unsigned)m.idx % g->nw, m.val != 0, sock, sfd, self);
            if (c < 0) {
                struct fk_msg f = {FK_M_FAILED, m.idx, 0, errno};
                fk_z_send(&sock, &f, -1);
                continue;
            }
            setpgid(c, c);
            pids[m.idx] = c;
            live++;
            int pfd = pidfd_open(c, 0);
            struct fk_msg s = {FK_M_SPAWNED, m.idx, c, 0};
            fk_z_send(&sock, &s, pfd);
            if (pfd >= 0)
                close(pfd);
        }
    }
}

/* ------------------------------------------------------------------------- */
/* Supervisor thread                                                         */
/* ------------------------------------------------------------------------- */

/* fk->lock held. Forks g's zygote from this (long-lived) thread. */
static int fk_zygote_start(struct fk *fk, struct fk_gen *g)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    memset(g->zpids, 0, 2 * g->nw * sizeof *g->zpids);
    pid_t parent = getpid();
    urcu_memb_call_rcu_before_fork();
    pid_t pid = fork();
    if (pid == 0) {
        urcu_memb_call_rcu_after_fork_child();
        close(sv[0]);
        fk_zygote_main(fk, g, sv[1], parent);
    }
    int err = errno;
    urcu_memb_call_rcu_after_fork_parent();
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        return -err;
    }
    int pfd = pidfd_open(pid, 0);
    if (pfd < 0) {
        err = errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, __WALL);
        close(sv[0]);
        return -err;
    }
    g->zpid = pid;
    g->zpidfd = pfd;
    g->zsock = sv[0];
    return 0;
}

/* fk->lock held. The zygote exited: reap it and forget its descriptors. */
static void fk_zygote_gone(struct fk *fk, struct fk_gen *g)
{
    siginfo_t si;
    /* ECHILD when the host ignores SIGCHLD or reaped it first: fine. */
    waitid((idtype_t)P_PIDFD, (id_t)g->zpidfd, &si, WEXITED | WNOHANG | __WALL);
    close(g->zpidfd);
    close(g->zsock);
    g->zpidfd = -1;
    g->zsock = -1;
    g->zpid = 0;
    (void)fk;
}

static void fk_sup_send(struct fk_gen *g, const struct fk_msg *m)
{
    if (g->zsock >= 0 && send(g->zsock, m, sizeof *m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
        /* Dead zygote: its pidfd will tell. */
    }
}

/* fk->lock held. A worker is gone for good (status known). */
static void fk_sup_dead(struct fk *fk, struct fk_gen *g, struct fk_worker *wk)
{
    if (wk->pidfd >= 0) {
        close(wk->pidfd);
        wk->pidfd = -1;
    }
    ck_pr_store_32(&wk->alive, 0);
    uint32_t gs = ck_pr_load_32(&g->state);
    if (gs == G_STARTING)
        g->nfailed++; /* worker_init failed, or the canary died on its records */
    wk->state = W_DEAD;
    pthread_cond_broadcast(&fk->cond);
    if (gs == G_STARTING || gs == G_ACTIVE || gs == G_RETIRING) {
        ck_pr_store_32(&fk->dead_pending, 1);
        /* Wake the consumer whatever *armed says: a worker killed inside
         * exec__notify() may have cleared it without writing the eventfd. */
        ck_pr_fence_memory();
        uint64_t one = 1;
        ssize_t r = write(fk->ex->efd, &one, sizeof one);
        (void)r;
    }
}

/* SIGKILL to a worker process and its group (whatever it forked goes too);
 * the group only while the pidfd says the process is not reaped yet. */
static void fk_kill_proc(pid_t pid, int pidfd)
{
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    if (poll(&p, 1, 0) == 0 && pid > 0)
        kill(-pid, SIGKILL);
    pidfd_send_signal(pidfd, SIGKILL, NULL, 0);
}

static void fk_sup_kill(struct fk_worker *wk, int why)
{
    if (wk->kill_why != K_NONE || wk->pidfd < 0)
        return;
    fk_kill_proc(wk->pid, wk->pidfd);
    wk->kill_why = why;
}

/* fk->lock held. SIGKILL to wk's successor and its group. */
static void fk_succ_kill(struct fk_worker *wk)
{
    if (wk->s_killed || wk->s_pidfd < 0)
        return;
    fk_kill_proc(wk->s_pid, wk->s_pidfd);
    wk->s_killed = true;
}

/* fk->lock held. What the supervisor knows of a place's process, for a new one. */
static void fk_proc_reset(struct fk_worker *wk)
{
    wk->exited = wk->have_status = wk->ready = wk->kill_req = false;
    wk->kill_why = K_NONE;
    wk->last_tick = 0;
    wk->last_change = 0;
    wk->soft_at = 0;
    wk->slow_told = false;
    wk->mem_base_set = wk->mem_told = wk->mem_want = false;
    wk->mem_at = 0;
}

/* fk->lock held. wk has no successor (any more); the next recycling may start. */
static void fk_succ_clear(struct fk *fk, struct fk_worker *wk)
{
    if (wk->s_pidfd >= 0) {
        close(wk->s_pidfd);
        wk->s_pidfd = -1;
    }
    wk->s_state = S_NONE;
    wk->s_pid = 0;
    wk->s_dead = wk->s_killed = false;
    if (fk->recycling == wk)
        fk->recycling = NULL;
}

/*
 * fk->lock held. The worker left the place to its ready successor: the
 * successor is now the place's process, with the same rings and slots, so
 * nothing is re-queued and no record waits.
 */
static void fk_sup_promote(struct fk *fk, struct fk_gen *g, struct fk_worker *wk)
{
    exec_t *ex = fk->ex;
    if (wk->pidfd >= 0)
        close(wk->pidfd);
    wk->pid = wk->s_pid;
    wk->pidfd = wk->s_pidfd;
    wk->s_pidfd = -1;
    wk->zi = wk->zi == wk->idx ? wk->idx + g->nw : wk->idx;
    fk_proc_reset(wk);
    wk->ready = true;
    wk->mem_base = wk->s_mem_base;
    wk->mem_base_set = wk->s_mem_base_set;
    wk->fails = 0;
    /* handoff stays FK_H_GO: the successor may not have seen it yet. */
    ck_pr_store_64(&wk->resp_recycle, wk->resp_recycle + 1);
    ck_pr_store_64(&ex->respawns, ex->respawns + 1);
    bool dead = wk->s_dead;
    int wstatus = wk->s_wstatus;
    fk_succ_clear(fk, wk);
    if (dead) {
        /* It died after it took over: a death of the place's worker. */
        wk->wstatus = wstatus;
        wk->exited = wk->have_status = true;
        fk_sup_dead(fk, g, wk);
    }
}

/*
 * fk->lock held. wk's process is gone (pidfd readable, status known). Its
 * successor takes the place if it was handed over; otherwise the successor
 * goes too and the place is settled (fk_sup_dead) once both are gone, so the
 * consumer never rebuilds rings a live process still reads.
 */
static void fk_sup_gone(struct fk *fk, struct fk_gen *g, struct fk_worker *wk)
{
    if (wk->s_state == S_NONE) {
        fk_sup_dead(fk, g, wk);
    } else if (wk->s_state == S_READY && ck_pr_load_32(&wk->hdr->handoff) == FK_H_GO &&
               !wk->kill_req && wk->kill_why == K_NONE) {
        fk_sup_promote(fk, g, wk);
    } else if (wk->s_dead) {
        fk_succ_clear(fk, wk);
        fk_sup_dead(fk, g, wk);
    } else {
        fk_succ_kill(wk);
        wk->s_state = S_DOOMED;
    }
}

/* fk->lock held. wk's successor is gone (the zygote's word, or its fork failed). */
static void fk_succ_gone(struct fk *fk, struct fk_gen *g, struct fk_worker *wk, int wstatus)
{
    int st = wk->s_state;
    if (st == S_NONE)
        return;
    if (st != S_DOOMED && ck_pr_load_32(&wk->hdr->handoff) == FK_H_GO && wk->state == W_LIVE &&
        !(wk->exited && wk->have_status)) {
        /* It had taken the place: settled when the old worker is gone. */
        wk->s_dead = true;
        wk->s_wstatus = wstatus;
        return;
    }
    fk_succ_clear(fk, wk);
    if (st == S_DOOMED) {
        if (wk->state == W_LIVE && wk->exited && wk->have_status)
            fk_sup_dead(fk, g, wk);
        return;
    }
    /* The recycling failed (worker_init refused, a crash, too slow): the
     * worker leaves at its next batch boundary and is replaced as before. */
    if (wk->state == W_LIVE) {
        ck_pr_store_32(&wk->hdr->stop, 1);
        ck_ec32_inc(&wk->hdr->ec, &fk_ec_mode);
    }
}

/*
 * Where wk is, read under its seqlock: true when (slot, record) were stable
 * and belong to `tick` (even), the tick the caller has been timing.
 */
static bool fk_where(const struct fk_hdr *h, uint32_t tick, uint32_t *slot, uint32_t *rec)
{
    if (tick & 1u || ck_pr_load_32(&h->tick) != tick)
        return false;
    ck_pr_fence_load();
    *slot = ck_pr_load_32(&h->cur_slot);
    *rec = ck_pr_load_32(&h->cur_rec);
    ck_pr_fence_load();
    return ck_pr_load_32(&h->tick) == tick;
}

/*
 * fk->lock held. wk ran past timeout_ms on (to_slot, to_rec): flag the record
 * (exec_cancelled() then says so) and send SIGTERM; the hard kill follows
 * after grace_ms. The flag goes on only while the slot is still the worker's
 * (its FIFO head), so a slot being refilled never gets it. False when the
 * FIFO lock is busy (lock order: wk->lock before fk->lock): try again.
 */
static bool fk_sup_soft(struct fk *fk, struct fk_worker *wk, uint32_t tick, uint64_t now)
{
    struct fk_gen *g = wk->g;
    if (pthread_mutex_trylock(&wk->lock) != 0)
        return false;
    uint32_t cs = wk->to_slot, cr = wk->to_rec;
    if (wk->fifo_n && cs < g->nslot && wk->fifo[wk->fifo_head] == cs && cr < wk->slots[cs].b.n)
        __atomic_fetch_or(&wk->slots[cs].b.rflags[cr], EXEC__RF_SOFT, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&wk->lock);
    wk->soft_at = now ? now : 1;
    wk->soft_tick = tick;
    if (wk->pidfd >= 0)
        pidfd_send_signal(wk->pidfd, SIGTERM, NULL, 0);
    (void)fk;
    return true;
}

/*
 * fk->lock held. Queues a slow-record report for wk's current record (sent
 * after the pass, without the lock). False when the FIFO lock was busy or the
 * queue is full: try again at the next pass.
 */
static bool fk_sup_slow(struct fk *fk, struct fk_worker *wk, uint32_t tick, uint64_t now)
{
    struct fk_gen *g = wk->g;
    if (fk->nslow == fk->slow_cap || pthread_mutex_trylock(&wk->lock) != 0)
        return false;
    uint32_t cs = 0, cr = 0;
    bool ok = fk_where(wk->hdr, tick, &cs, &cr) && wk->fifo_n && cs < g->nslot &&
              wk->fifo[wk->fifo_head] == cs && cr < wk->slots[cs].b.n;
    if (ok) {
        const struct fk_slot *s = &wk->slots[cs];
        exec_slow_t *r = &fk->slow[fk->nslow++];
        r->tag = s->b.recs[cr].tag;
        r->seq = s->b.rec_seq0 + cr;
        r->worker = wk->idx;
        r->pid = wk->pid;
        r->elapsed_ms = (now - wk->last_change) / 1000000u;
    }
    pthread_mutex_unlock(&wk->lock);
    /* A record that moved on was not slow after all: nothing to say. */
    return ok || ck_pr_load_32(&wk->hdr->tick) != tick;
}

static void fk_sup_recv(struct fk *fk, struct fk_gen *g)
{
    for (;;) {
        struct fk_msg m;
        struct iovec iov = {.iov_base = &m, .iov_len = sizeof m};
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } u;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                            .msg_controllen = sizeof u.buf};
        ssize_t n = recvmsg(g->zsock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        int fd = -1;
        if (n > 0) {
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
                memcpy(&fd, CMSG_DATA(c), sizeof fd);
        }
        if (n != (ssize_t)sizeof m) {
            if (fd >= 0)
                close(fd);
            /* EOF: the zygote died; its workers die with it (PDEATHSIG). */
            close(g->zsock);
            g->zsock = -1;
            return;
        }
        struct fk_worker *wk =
            m.idx >= 0 && (unsigned)m.idx < 2 * g->nw ? &g->w[(unsigned)m.idx % g->nw] : NULL;
        if (!wk) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        if ((unsigned)m.idx != wk->zi) {
            /* Its successor. */
            if (m.op == FK_M_SPAWNED && fd >= 0 &&
                (wk->s_state == S_SPAWNING || wk->s_state == S_DOOMED)) {
                wk->s_pid = m.pid;
                wk->s_pidfd = fd;
                fd = -1;
                if (wk->s_state == S_DOOMED)
                    fk_succ_kill(wk);
                else
                    wk->s_state = S_LIVE;
            } else if (m.op == FK_M_FAILED && wk->s_pid == 0) {
                fk_succ_gone(fk, g, wk, 127 << 8);
            } else if (m.op == FK_M_EXITED && wk->s_pid == m.pid) {
                fk_succ_gone(fk, g, wk, m.val);
            }
            if (fd >= 0)
                close(fd);
            continue;
        }
        switch (m.op) {
        case FK_M_SPAWNED:
            if (wk->state == W_SPAWNING && fd >= 0) {
                wk->state = W_LIVE;
                wk->pid = m.pid;
                wk->pidfd = fd;
                ck_pr_store_32(&wk->alive, 1);
                fd = -1;
            }
            break;
        case FK_M_FAILED:
            if (wk->state == W_SPAWNING) {
                wk->wstatus = 127 << 8;
                wk->have_status = wk->exited = true;
                fk_sup_dead(fk, g, wk);
            }
            break;
        case FK_M_EXITED:
            if (wk->state == W_LIVE && wk->pid == m.pid) {
                wk->wstatus = m.val;
                wk->have_status = true;
                if (wk->exited)
                    fk_sup_gone(fk, g, wk);
            }
            break;
        }
        if (fd >= 0)
            close(fd);
    }
}

/* fk->lock held: for each LIVE worker not yet ready, look at its header. */
static void fk_sup_ready(struct fk *fk)
{
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *g = &fk->gens[k];
        uint32_t gs = ck_pr_load_32(&g->state);
        if (gs == G_FREE || !g->w)
            continue;
        for (unsigned i = 0; i < g->nw; i++) {
            struct fk_worker *wk = &g->w[i];
            if (wk->state == W_LIVE && !wk->ready &&
                ck_pr_load_32(&wk->hdr->state) == FK_W_READY) {
                wk->ready = true;
                if (fk->ex->opt.max_worker_growth_kb) {
                    /* Its baseline: what worker_init made private. */
                    uint64_t pss = 0, dirty = 0;
                    fk_smaps(wk->pid, &pss, &dirty);
                    wk->mem_base = dirty;
                    wk->mem_base_set = true;
                }
                g->nready++;
                pthread_cond_broadcast(&fk->cond);
            }
            if (wk->state == W_LIVE && wk->s_state == S_LIVE &&
                ck_pr_load_32(&wk->hdr->succ_state) == FK_W_READY) {
                wk->s_state = S_READY;
                ck_pr_store_64(&wk->hdr->lead_ns, exec__now_ns() - wk->s_at);
                if (fk->ex->opt.max_worker_growth_kb) {
                    uint64_t pss = 0, dirty = 0;
                    fk_smaps(wk->s_pid, &pss, &dirty);
                    wk->s_mem_base = dirty;
                    wk->s_mem_base_set = true;
                }
                /* Tell the worker in the place (it may be asleep). */
                ck_pr_store_32(&wk->hdr->handoff, wk->s_now ? FK_H_NOW : FK_H_READY);
                ck_ec32_inc(&wk->hdr->ec, &fk_ec_mode);
            }
        }
    }
}

static void fk_gen_free(struct fk *fk, struct fk_gen *g, bool release);

/* fk->lock held. One pass over every generation: start what should run, stop
 * what should stop, watch deadlines. Returns how long poll may sleep (ms). */
static int fk_sup_pass(struct fk *fk, uint64_t now)
{
    exec_t *ex = fk->ex;
    int wait_ms = -1;
#define FK_WAIT_AT(t)                                                                      \
    do {                                                                                   \
        uint64_t t_ = (t);                                                                 \
        int ms_ = t_ > now ? (int)((t_ - now) / 1000000u) + 1 : 0;                         \
        if (wait_ms < 0 || ms_ < wait_ms)                                                  \
            wait_ms = ms_;                                                                 \
    } while (0)
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *g = &fk->gens[k];
        uint32_t gs = ck_pr_load_32(&g->state);
        if (gs == G_FREE)
            continue;
        if (fk->stopping && gs != G_CLOSING)
            gs = G_DRAINED;
        if (gs == G_DRAINED) {
            for (unsigned i = 0; i < g->nw; i++) {
                ck_pr_store_32(&g->w[i].hdr->stop, 1);
                ck_ec32_inc(&g->w[i].hdr->ec, &fk_ec_mode);
            }
            int grace = fk->stopping ? FK_STOP_GRACE : FK_DRAIN_GRACE;
            struct fk_msg m = {FK_M_EXIT, 0, 0, grace};
            fk_sup_send(g, &m);
            g->close_deadline = now + (uint64_t)(grace + 3000) * 1000000u;
            ck_pr_store_32(&g->state, G_CLOSING);
            gs = G_CLOSING;
        }
        if (gs == G_CLOSING) {
            if (g->zpidfd < 0) {
                /* Nothing (left) to wait for. */
                for (unsigned i = 0; i < g->nw; i++)
                    if (g->w[i].pidfd >= 0) {
                        close(g->w[i].pidfd);
                        g->w[i].pidfd = -1;
                    }
                if (!fk->stopping) {
                    pthread_mutex_unlock(&fk->lock);
                    fk_gen_free(fk, g, g->release_ctx);
                    pthread_mutex_lock(&fk->lock);
                }
                continue;
            }
            if (now >= g->close_deadline) {
                pidfd_send_signal(g->zpidfd, SIGKILL, NULL, 0);
                g->close_deadline = now + 1000000000u;
            }
            FK_WAIT_AT(g->close_deadline);
            continue;
        }
        /* STARTING, ACTIVE, RETIRING: keep the zygote and the workers up. */
        if (g->zerr)
            continue;
        if (g->zpidfd < 0) {
            if (now < g->zretry_at) {
                FK_WAIT_AT(g->zretry_at);
                continue;
            }
            int rc = fk_zygote_start(fk, g);
            if (rc) {
                if (gs == G_STARTING) {
                    g->zerr = rc;
                    pthread_cond_broadcast(&fk->cond);
                    continue;
                }
                g->zfails++;
                g->zretry_at = now + (1000000ull << (g->zfails < 10 ? g->zfails : 10));
                FK_WAIT_AT(g->zretry_at);
                continue;
            }
        }
        for (unsigned i = 0; i < g->nw; i++) {
            struct fk_worker *wk = &g->w[i];
            if (wk->state == W_NONE || (wk->state == W_WAIT && now >= wk->respawn_at)) {
                if (g->zsock < 0)
                    continue;
                /* Reset before the worker runs: it may break the protocol
                 * (kill_req) before its SPAWNED message is read. */
                fk_proc_reset(wk);
                struct fk_msg m = {FK_M_SPAWN, (int32_t)wk->zi, 0, 0};
                fk_sup_send(g, &m);
                wk->state = W_SPAWNING;
            } else if (wk->state == W_WAIT) {
                FK_WAIT_AT(wk->respawn_at);
            } else if (wk->state == W_LIVE) {
                if (wk->kill_req)
                    fk_sup_kill(wk, wk->kill_req_why);
                /* Recycling, one place at a time: its successor is forked
                 * and made ready while it works on. */
                if (wk->s_state == S_NONE && !fk->recycling && gs == G_ACTIVE && wk->ready &&
                    !wk->exited && !wk->kill_req && wk->kill_why == K_NONE && g->zsock >= 0 &&
                    (wk->mem_want || ck_pr_load_32(&wk->hdr->want_out)) &&
                    ck_pr_load_32((uint32_t *)&wk->hdr->pid) == (uint32_t)wk->pid) {
                    /* (The pid check: the last successor has taken the place.) */
                    ck_pr_store_32(&wk->hdr->want_out, 0);
                    ck_pr_store_32(&wk->hdr->succ_state, FK_W_STARTING);
                    ck_pr_store_32(&wk->hdr->handoff, FK_H_NONE);
                    struct fk_msg m = {FK_M_SPAWN,
                                       (int32_t)(wk->zi == i ? i + g->nw : i), 0, 1};
                    fk_sup_send(g, &m);
                    wk->s_state = S_SPAWNING;
                    wk->s_now = wk->mem_want;
                    wk->s_at = now;
                    wk->s_mem_base_set = false;
                    fk->recycling = wk;
                }
                if (wk->s_state == S_SPAWNING || wk->s_state == S_LIVE) {
                    uint64_t dl = wk->s_at + (uint64_t)ex->opt.start_timeout_ms * 1000000u;
                    if (now >= dl)
                        fk_succ_kill(wk); /* too slow: the recycling fails */
                    else
                        FK_WAIT_AT(dl);
                }
                if (ex->opt.max_worker_growth_kb && wk->ready && wk->mem_base_set &&
                    !wk->mem_told && wk->kill_why == K_NONE) {
                    if (now >= wk->mem_at) {
                        uint64_t pss = 0, dirty = 0;
                        fk_smaps(wk->pid, &pss, &dirty);
                        if (dirty > wk->mem_base + ex->opt.max_worker_growth_kb) {
                            /* Grew: replaced as soon as a successor is ready. */
                            wk->mem_want = true;
                            wk->mem_told = true;
                            FK_WAIT_AT(now); /* another pass starts the recycling */
                        }
                        wk->mem_at = now + 100000000u;
                    }
                    if (!wk->mem_told)
                        FK_WAIT_AT(wk->mem_at);
                }
                if (fk->watch && wk->ready && wk->kill_why == K_NONE) {
                    uint32_t busy = ck_pr_load_32(&wk->hdr->busy);
                    uint32_t tick = ck_pr_load_32(&wk->hdr->tick);
                    uint64_t limit = (uint64_t)ex->opt.timeout_ms * 1000000u;
                    uint64_t slow = ex->opt.slow_ms ? (uint64_t)ex->opt.slow_ms * 1000000u
                                                    : UINT64_MAX;
                    uint64_t grace = (uint64_t)ex->opt.grace_ms * 1000000u;
                    if (wk->soft_at && (!busy || tick != wk->soft_tick))
                        wk->soft_at = 0; /* it stopped within the grace */
                    if (wk->soft_at) {
                        if (now - wk->soft_at >= grace)
                            fk_sup_kill(wk, K_TIMEOUT);
                        else
                            FK_WAIT_AT(wk->soft_at + grace);
                    } else if (!busy) {
                        wk->last_change = 0;
                    } else if (wk->last_change == 0 || tick != wk->last_tick) {
                        wk->last_tick = tick;
                        wk->last_change = now;
                        wk->slow_told = false;
                    } else if (!wk->slow_told && ex->opt.on_slow && ex->opt.slow_ms &&
                               (now - wk->last_change >= slow ||
                                (limit && now - wk->last_change >= limit))) {
                        /* Told first; a timeout acts at the next pass. */
                        if (fk_sup_slow(fk, wk, tick, now))
                            wk->slow_told = true;
                        FK_WAIT_AT(now);
                    } else if (limit && now - wk->last_change >= limit) {
                        if (!fk_where(wk->hdr, tick, &wk->to_slot, &wk->to_rec)) {
                            /* It moved on meanwhile: (slot, rec) may not be
                             * the slow record's. Start its clock again. */
                            wk->last_tick = 0;
                            wk->last_change = 0;
                        } else if (!fk_sup_soft(fk, wk, tick, now)) {
                            FK_WAIT_AT(now + 1000000u); /* busy lock: soon again */
                        }
                    }
                    /* Look again while it has work (idle pools sleep). */
                    if ((busy || ck_pr_load_uint(&wk->qn)) && wk->kill_why == K_NONE) {
                        unsigned tick_ms = 100;
                        if (ex->opt.timeout_ms && ex->opt.timeout_ms / 4 + 1 < tick_ms)
                            tick_ms = ex->opt.timeout_ms / 4 + 1;
                        if (ex->opt.slow_ms && ex->opt.slow_ms / 4 + 1 < tick_ms)
                            tick_ms = ex->opt.slow_ms / 4 + 1;
                        FK_WAIT_AT(now + (uint64_t)tick_ms * 1000000u);
                    }
                }
            }
        }
    }
#undef FK_WAIT_AT
    return wait_ms;
}

enum { P_EFD, P_ZSOCK, P_ZPID, P_WORKER };

static bool fk_any_queued(struct fk *fk)
{
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *g = &fk->gens[k];
        uint32_t gs = ck_pr_load_32(&g->state);
        if (gs != G_ACTIVE && gs != G_RETIRING)
            continue;
        for (unsigned i = 0; i < g->nw; i++)
            if (ck_pr_load_uint(&g->w[i].qn))
                return true;
    }
    return false;
}

static void *fk_sup_main(void *arg)
{
    struct fk *fk = arg;
    pthread_mutex_lock(&fk->lock);
    for (;;) {
        uint64_t now = exec__now_ns();
        int wait_ms = fk_sup_pass(fk, now);
        if (fk->nslow) {
            /* Slow-record reports, without the lock; then a fresh pass. */
            unsigned n = fk->nslow;
            pthread_mutex_unlock(&fk->lock);
            for (unsigned i = 0; i < n; i++)
                fk->ex->opt.on_slow(fk->ex->opt.slow_arg, &fk->slow[i]);
            pthread_mutex_lock(&fk->lock);
            fk->nslow = 0;
            continue;
        }
        if (fk->stopping) {
            bool any = false;
            for (unsigned k = 0; k < FK_MAXGEN; k++)
                if (fk->gens[k].zpidfd >= 0)
                    any = true;
            if (!any)
                break;
        }
        size_t n = 0;
        fk->pfd[n] = (struct pollfd){.fd = fk->sup_efd, .events = POLLIN};
        fk->ptag[n++] = (struct fk_ptag){P_EFD, NULL, NULL};
        for (unsigned k = 0; k < FK_MAXGEN; k++) {
            struct fk_gen *g = &fk->gens[k];
            if (ck_pr_load_32(&g->state) == G_FREE)
                continue;
            if (g->zsock >= 0) {
                fk->pfd[n] = (struct pollfd){.fd = g->zsock, .events = POLLIN};
                fk->ptag[n++] = (struct fk_ptag){P_ZSOCK, g, NULL};
            }
            if (g->zpidfd >= 0) {
                fk->pfd[n] = (struct pollfd){.fd = g->zpidfd, .events = POLLIN};
                fk->ptag[n++] = (struct fk_ptag){P_ZPID, g, NULL};
            }
            for (unsigned i = 0; i < g->nw; i++) {
                struct fk_worker *wk = &g->w[i];
                if (wk->state == W_LIVE && !wk->exited && wk->pidfd >= 0) {
                    fk->pfd[n] = (struct pollfd){.fd = wk->pidfd, .events = POLLIN};
                    fk->ptag[n++] = (struct fk_ptag){P_WORKER, g, wk};
                }
            }
        }
        if (fk->watch && wait_ms < 0) {
            /* Idle: a dispatch wakes us to watch the clock again. */
            ck_pr_store_32(&fk->sup_idle, 1);
            ck_pr_fence_memory();
            if (fk_any_queued(fk))
                wait_ms = 0;
        }
        pthread_mutex_unlock(&fk->lock);
        int r = poll(fk->pfd, n, wait_ms);
        ck_pr_store_32(&fk->sup_idle, 0);
        pthread_mutex_lock(&fk->lock);
        if (r <= 0)
            continue;
        for (size_t j = 0; j < n; j++) {
            if (!fk->pfd[j].revents)
                continue;
            struct fk_ptag *t = &fk->ptag[j];
            switch (t->kind) {
            case P_EFD: {
                uint64_t v;
                ssize_t rd = read(fk->sup_efd, &v, sizeof v);
                (void)rd;
                break;
            }
            case P_ZSOCK:
                if (t->g->zsock >= 0)
                    fk_sup_recv(fk, t->g);
                break;
            case P_ZPID:
                break; /* below, after the socket was read to its end */
            case P_WORKER:
                if (t->wk->state == W_LIVE && !t->wk->exited) {
                    t->wk->exited = true;
                    if (t->wk->have_status)
                        fk_sup_gone(fk, t->g, t->wk);
                }
                break;
            }
        }
        /* A worker may report ready before we read its SPAWNED message. */
        fk_sup_ready(fk);
        for (size_t j = 0; j < n; j++) {
            struct fk_ptag *t = &fk->ptag[j];
            if (t->kind != P_ZPID || !fk->pfd[j].revents || t->g->zpidfd < 0)
                continue;
            struct fk_gen *g = t->g;
            if (g->zsock >= 0)
                fk_sup_recv(fk, g);
            fk_zygote_gone(fk, g);
            /* Its workers died with it; statuses will not come now. */
            for (unsigned i = 0; i < g->nw; i++) {
                struct fk_worker *wk = &g->w[i];
                if (wk->s_state != S_NONE) {
                    bool settle = wk->s_state == S_DOOMED && wk->state == W_LIVE &&
                                  wk->exited && wk->have_status;
                    fk_succ_clear(fk, wk);
                    if (settle)
                        fk_sup_dead(fk, g, wk);
                }
                if (wk->state == W_SPAWNING || (wk->state == W_LIVE && !wk->have_status)) {
                    wk->wstatus = SIGKILL;
                    wk->have_status = true;
                    if (wk->state == W_SPAWNING || wk->exited)
                        fk_sup_dead(fk, g, wk);
                }
            }
            if (ck_pr_load_32(&g->state) != G_CLOSING) {
                g->zfails++;
                g->zretry_at = exec__now_ns() + (1000000ull << (g->zfails < 10 ? g->zfails : 10));
            }
        }
    }
    pthread_mutex_unlock(&fk->lock);
    return NULL;
}

/* ------------------------------------------------------------------------- */
/* Generations                                                               */
/* ------------------------------------------------------------------------- */

static void fk_gen_free(struct fk *fk, struct fk_gen *g, bool release)
{
    exec_t *ex = fk->ex;
    if (release && ex->ops->ctx_release)
        ex->ops->ctx_release(g->ctx);
    /* Under the lock: fk_worker_stats() may be reading g->w. */
    pthread_mutex_lock(&fk->lock);
    if (g->w) {
        for (unsigned i = 0; i < g->nw; i++) {
            struct fk_worker *wk = &g->w[i];
            if (wk->pidfd >= 0)
                close(wk->pidfd);
            if (wk->s_pidfd >= 0)
                close(wk->s_pidfd);
            if (fk->recycling == wk)
                fk->recycling = NULL;
            if (wk->slots) {
                for (unsigned s = 0; s < g->nslot; s++) {
                    free(wk->slots[s].b.res);
                    free(wk->slots[s].rbuf);
                }
            }
            free(wk->slots);
            free(wk->fifo);
            free(wk->freebuf);
            pthread_mutex_destroy(&wk->lock);
        }
    }
    free(g->w);
    free(g->zpids);
    if (g->base)
        munmap(g->base, g->size);
    memset(g, 0, sizeof *g);
    g->zpidfd = g->zsock = -1;
    ck_pr_store_32(&g->state, G_FREE);
    pthread_mutex_unlock(&fk->lock);
}

/* Builds a generation's region and bookkeeping; the supervisor starts it. */
static int fk_gen_init(struct fk *fk, struct fk_gen *g, void *ctx, uint64_t generation,
                       unsigned start)
{
    exec_t *ex = fk->ex;
    const exec_options_t *o = &ex->opt;
    g->fk = fk;
    g->ctx = ctx;
    g->generation = generation;
    g->nw = o->workers;
    g->zpidfd = g->zsock = -1;
    g->dcap = o->max_record > 65536 ? o->max_record : 65536;
    g->rcap = o->max_result + 65536;
    /* recs[batch], then the cancel flags (one byte per record). */
    g->recs_size =
        fk_align(sizeof(struct fk_sin) + o->batch * (sizeof(struct exec__rec) + 1), 64);
    g->res_size = fk_align(sizeof(struct fk_sout) + o->batch * sizeof(struct exec__res), 64);
    g->in_slot = g->recs_size + fk_align(g->dcap, 64);
    g->out_slot = g->res_size + fk_align(g->rcap, 64);
    size_t per = g->in_slot + g->out_slot;
    size_t ns = 64 * FK_MIB / per;
    g->nslot = ns > 32 ? 32 : ns < 4 ? 4 : (unsigned)ns;
    g->hdr_size = fk_align(sizeof(struct fk_hdr), 64);
    long pg = sysconf(_SC_PAGESIZE);
    size_t page = pg > 0 ? (size_t)pg : 4096;
    g->in_size = fk_align((size_t)g->nw * g->nslot * g->in_slot, page);
    g->out_worker = fk_align(g->hdr_size + (size_t)g->nslot * g->out_slot, 4096);
    g->size = g->in_size + (size_t)g->nw * g->out_worker;

    int mfd = memfd_create("exec-fork", MFD_CLOEXEC);
    if (mfd < 0)
        return -errno;
    if (ftruncate(mfd, (off_t)g->size) < 0) {
        int e = -errno;
        close(mfd);
        return e;
    }
    void *base = mmap(NULL, g->size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    int e = -errno;
    close(mfd); /* the mapping keeps the memory; no descriptor to leak */
    if (base == MAP_FAILED)
        return e;
    g->base = base;

    /* A zygote forked meanwhile reads w to close pidfds: publish it with -1s. */
    struct fk_worker *w = calloc(g->nw, sizeof *w);
    g->zpids = calloc(2 * (size_t)g->nw, sizeof *g->zpids); /* places, then successors */
    if (!w || !g->zpids) {
        free(w);
        return EXEC_ENOMEM;
    }
    for (unsigned i = 0; i < g->nw; i++) {
        w[i].pidfd = w[i].s_pidfd = -1;
        w[i].zi = i;
        w[i].state = i < start ? W_NONE : W_HOLD; /* a canary goes first */
        pthread_mutex_init(&w[i].lock, NULL);
    }
    g->w = w;
    for (unsigned i = 0; i < g->nw; i++) {
        struct fk_worker *wk = &g->w[i];
        wk->g = g;
        wk->idx = i;
        wk->hdr = fk_hdr_at(g, i);
        ck_ring_init(&wk->hdr->in, FK_RING);
        ck_ring_init(&wk->hdr->out, FK_RING);
        wk->hdr->cur_slot = FK_NOSLOT;
        ck_ring_init(&wk->in_sh, FK_RING);
        ck_ring_init(&wk->out_sh, FK_RING);
        unsigned fsz = 2;
        while (fsz < g->nslot + 1)
            fsz <<= 1;
        ck_ring_init(&wk->freer, fsz);
        wk->freebuf = calloc(fsz, sizeof *wk->freebuf);
        wk->fifo = calloc(g->nslot, sizeof *wk->fifo);
        wk->slots = calloc(g->nslot, sizeof *wk->slots);
        if (!wk->freebuf || !wk->fifo || !wk->slots)
            return EXEC_ENOMEM;
        for (unsigned s = 0; s < g->nslot; s++) {
            struct fk_slot *sl = &wk->slots[s];
            sl->g = g;
            sl->wk = wk;
            sl->idx = s;
            sl->sin = fk_sin_at(g, i, s);
            sl->sout = fk_sout_at(g, i, s);
            sl->sres = (struct exec__res *)(sl->sout + 1);
            sl->srdata = (char *)sl->sout + g->res_size;
            sl->b.cap = o->batch;
            sl->b.recs = (struct exec__rec *)(sl->sin + 1);
            sl->b.rflags = (uint8_t *)(sl->b.recs + o->batch);
            sl->b.data = (char *)sl->sin + g->recs_size;
            sl->b.data_cap = g->dcap;
            sl->b.res = calloc(o->batch, sizeof *sl->b.res);
            if (!sl->b.res)
                return EXEC_ENOMEM;
            ck_ring_enqueue_spsc(&wk->freer, wk->freebuf, sl);
        }
    }
    pthread_mutex_lock(&fk->lock);
    ck_pr_store_32(&g->state, G_STARTING);
    pthread_mutex_unlock(&fk->lock);
    fk_wake_sup(fk);
    return 0;
}

/* Waits until `want` of g's workers reported worker_init (0), or one failed. */
static int fk_gen_wait(struct fk *fk, struct fk_gen *g, unsigned want)
{
    /* A worker_init that hangs counts as failed after start_timeout_ms. */
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += fk->ex->opt.start_timeout_ms / 1000;
    dl.tv_nsec += (long)(fk->ex->opt.start_timeout_ms % 1000) * 1000000;
    if (dl.tv_nsec >= 1000000000) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000;
    }
    bool late = false;
    pthread_mutex_lock(&fk->lock);
    while (!g->zerr && g->nfailed == 0 && g->nready < want && !late)
        late = pthread_cond_timedwait(&fk->cond, &fk->lock, &dl) == ETIMEDOUT;
    int rc = g->zerr                                    ? g->zerr
             : g->nfailed || (late && g->nready < want) ? EXEC_EINIT
                                                        : 0;
    pthread_mutex_unlock(&fk->lock);
    return rc;
}

/* A generation that never served: stop its processes, free it. */
static void fk_gen_abandon(struct fk *fk, struct fk_gen *g)
{
    pthread_mutex_lock(&fk->lock);
    g->release_ctx = false;
    if (ck_pr_load_32(&g->state) == G_STARTING)
        ck_pr_store_32(&g->state, G_DRAINED);
    pthread_mutex_unlock(&fk->lock);
    fk_wake_sup(fk);
}

/* ------------------------------------------------------------------------- */
/* Parent: queues, results, deaths                                           */
/* ------------------------------------------------------------------------- */

/* Asks the supervisor to kill wk (and so to replace it). */
static void fk_kill_req_why(struct fk *fk, struct fk_worker *wk, int why)
{
    pthread_mutex_lock(&fk->lock);
    wk->kill_req = true;
    wk->kill_req_why = why;
    pthread_mutex_unlock(&fk->lock);
    fk_wake_sup(fk);
}

static void fk_kill_req(struct fk *fk, struct fk_worker *wk)
{
    fk_kill_req_why(fk, wk, K_OURS);
}

/* Consumer. wk broke the protocol: kill it and stop reading what it writes. */
static void fk_violation(struct fk *fk, struct fk_worker *wk, bool head)
{
    wk->distrust = true;
    if (head)
        wk->viol_head = true;
    fk_kill_req(fk, wk);
}

/* wk->lock held. Puts s on wk's `in` ring (not the FIFO). */
static bool fk_ring_put(struct fk_worker *wk, struct fk_slot *s)
{
    struct fk_hdr *h = wk->hdr;
    s->sin->n = s->b.n;
    s->sin->from = s->from;
    exec__tsan_release(s);
    wk->in_sh.c_head = ck_pr_load_uint(&h->in.c_head);
    if (!ck_ring_enqueue_spsc(&wk->in_sh, h->inbuf, (void *)(uintptr_t)s->idx))
        return false; /* cannot happen unless the worker wrote c_head */
    ck_pr_fence_store();
    ck_pr_store_uint(&h->in.p_tail, wk->in_sh.p_tail);
    ck_ec32_inc(&h->ec, &fk_ec_mode);
    return true;
}

/* wk->lock held. */
static bool fk_enqueue(struct fk_worker *wk, struct fk_slot *s)
{
    struct fk_gen *g = wk->g;
    wk->fifo[(wk->fifo_head + wk->fifo_n) % g->nslot] = s->idx;
    wk->fifo_n++;
    ck_pr_store_uint(&wk->qn, wk->fifo_n);
    return fk_ring_put(wk, s);
}

/* wk->lock held. */
static struct fk_slot *fk_fifo_pop(struct fk_worker *wk)
{
    struct fk_slot *s = &wk->slots[wk->fifo[wk->fifo_head]];
    wk->fifo_head = (wk->fifo_head + 1) % wk->g->nslot;
    wk->fifo_n--;
    ck_pr_store_uint(&wk->qn, wk->fifo_n);
    return s;
}

static bool fk_cancelled(const struct fk_slot *s, uint32_t i)
{
    return __atomic_load_n(&s->b.rflags[i], __ATOMIC_RELAXED) & EXEC__RF_CANCEL;
}

static bool fk_rbuf_room(struct fk_slot *s, size_t n)
{
    if (s->rbuf_cap - s->rbuf_len >= n)
        return true;
    size_t cap = s->rbuf_cap ? s->rbuf_cap : 4096;
    while (cap - s->rbuf_len < n)
        cap *= 2;
    char *p = realloc(s->rbuf, cap);
    if (!p)
        return false;
    s->rbuf = p;
    s->rbuf_cap = cap;
    return true;
}

/*
 * Copies the results of records [s->from, to) out of shared memory and checks
 * each one; bytes must lie within [0, rlen). in_place: the result bytes stay in
 * the slot (one pass did the whole batch); else they are copied to rbuf.
 * Returns false if an entry was garbage (it then reads EXEC_EWORKER).
 */
static bool fk_harvest(struct fk_slot *s, uint32_t to, uint64_t rlen, bool in_place)
{
    bool ok = true;
    for (uint32_t j = s->from; j < to; j++) {
        struct exec__res r;
        memcpy(&r, &s->sres[j], sizeof r);
        ck_pr_barrier(); /* use this copy only, never re-read shared memory */
        struct exec__res *o = &s->b.res[j];
        memset(o, 0, sizeof *o);
        bool has_data = r.status == 0 || r.status == EXEC_EUSER;
        uint8_t rf = __atomic_load_n(&s->b.rflags[j], __ATOMIC_RELAXED);
        if ((rf & EXEC__RF_SOFT) && r.status == EXEC_ERECTIMEOUT) {
            /* Stopped within the grace after its timeout. */
            o->status = EXEC_ERECTIMEOUT;
            o->flags = r.flags & EXEC_RESULT_EARLY;
            continue;
        }
        if (rf & EXEC__RF_CANCEL) {
            /* Cancelled before we took its result: that is what it reports. */
            o->status = EXEC_ECANCELLED;
            o->flags = r.status == EXEC_ECANCELLED ? (r.flags & EXEC_RESULT_EARLY) : 0;
            continue;
        }
        if ((!has_data && r.status != EXEC_ERESULT2BIG) ||
            (has_data && (r.off > rlen || r.len > rlen - r.off))) {
            o->status = EXEC_EWORKER;
            ok = false;
            continue;
        }
        o->status = r.status;
        o->user_code = r.status == EXEC_EUSER ? r.user_code : 0;
        if (!has_data)
            continue;
        if (in_place) {
            o->off = r.off;
            o->len = r.len;
        } else if (fk_rbuf_room(s, r.len)) {
            memcpy(s->rbuf + s->rbuf_len, s->srdata + r.off, r.len);
            o->off = s->rbuf_len;
            o->len = r.len;
            s->rbuf_len += r.len;
        } else {
            o->status = EXEC_EWORKER; /* out of memory here: report, never drop */
        }
    }
    if (in_place) {
        s->b.rdata = s->srdata;
    } else {
        s->b.rdata = s->rbuf;
        s->copied = true;
    }
    return ok;
}

static void fk_push_done(struct fk *fk, struct fk_slot *s)
{
    s->next_done = fk->done;
    fk->done = s;
}

/*
 * Consumer. Takes slots wk returned until one completes its batch (returned),
 * the ring is empty, or wk broke the protocol (NULL for both).
 */
static struct fk_slot *fk_pull(struct fk *fk, struct fk_worker *wk)
{
    struct fk_hdr *h = wk->hdr;
    struct fk_gen *g = wk->g;
    while (!wk->distrust) {
        void *v;
        wk->out_sh.p_tail = ck_pr_load_uint(&h->out.p_tail);
        if (!ck_ring_dequeue_spsc(&wk->out_sh, h->outbuf, &v))
            return NULL;
        ck_pr_store_uint(&h->out.c_head, wk->out_sh.c_head);
        uintptr_t si = (uintptr_t)v;
        pthread_mutex_lock(&wk->lock);
        if (wk->fifo_n == 0 || si != wk->fifo[wk->fifo_head]) {
            pthread_mutex_unlock(&wk->lock);
            fk_violation(fk, wk, true);
            return NULL;
        }
        struct fk_slot *s = &wk->slots[si];
        exec__tsan_acquire(s);
        uint32_t done = ck_pr_load_32(&s->sout->done);
        uint64_t rlen = ck_pr_load_64(&s->sout->rdata_len);
        if (done <= s->from || done > s->b.n || rlen > g->rcap) {
            pthread_mutex_unlock(&wk->lock);
            fk_violation(fk, wk, true);
            return NULL;
        }
        fk_fifo_pop(wk);
        /* Under wk->lock: fk_cancel() sees either all of this or none. */
        bool in_place = !s->copied && s->from == 0 && done == s->b.n;
        bool clean = fk_harvest(s, done, rlen, in_place);
        uint32_t ran = done - s->from;
        s->from = done;
        pthread_mutex_unlock(&wk->lock);
        if (!clean)
            fk_violation(fk, wk, false);
        wk->completed++;
        ck_pr_store_64(&wk->records, wk->records + ran);
        ck_pr_store_64(&wk->batches, wk->batches + 1);
        if (done == s->b.n)
            return s;
        /* The result area filled up: run the rest in another pass. */
        pthread_mutex_lock(&wk->lock);
        bool ok = fk_enqueue(wk, s);
        pthread_mutex_unlock(&wk->lock);
        if (!ok)
            fk_violation(fk, wk, false);
    }
    return NULL;
}

/* wk->lock held. Every record left in wk's FIFO gets `status`. */
static void fk_fail_all(struct fk *fk, struct fk_worker *wk, int status)
{
    while (wk->fifo_n) {
        struct fk_slot *s = fk_fifo_pop(wk);
        exec__tsan_acquire(s);
        if (!s->copied) {
            s->b.rdata = s->rbuf;
            s->copied = true;
        }
        for (uint32_t j = s->from; j < s->b.n; j++) {
            memset(&s->b.res[j], 0, sizeof s->b.res[j]);
            s->b.res[j].status = fk_cancelled(s, j) ? EXEC_ECANCELLED : status;
        }
        s->from = s->b.n;
        fk_push_done(fk, s);
    }
}

static void fk_set_cause(struct exec__res *o, int status, int wstatus)
{
    memset(o, 0, sizeof *o);
    o->status = status;
    if (WIFSIGNALED(wstatus))
        o->signal = WTERMSIG(wstatus);
    else if (WIFEXITED(wstatus))
        o->exit_status = WEXITSTATUS(wstatus);
}

/* Consumer. wk died (state W_DEAD): settle its slots, ask for a replacement. */
static void fk_bury(struct fk *fk, struct fk_worker *wk)
{
    exec_t *ex = fk->ex;
    struct fk_gen *g = wk->g;
    struct fk_hdr *h = wk->hdr;
    pthread_mutex_lock(&fk->lock);
    int wstatus = wk->wstatus, why = wk->kill_why;
    if (why == K_NONE && wk->soft_at)
        why = K_TIMEOUT; /* died of the SIGTERM (or soon after) */
    uint32_t to_slot = wk->to_slot, to_rec = wk->to_rec;
    pthread_mutex_unlock(&fk->lock);

    /* What it finished before dying keeps its results. */
    struct fk_slot *c;
    while ((c = fk_pull(fk, wk)))
        fk_push_done(fk, c);

    bool blamed = false;
    bool planned = ck_pr_load_32(&h->state) == FK_W_RETIRED && WIFEXITED(wstatus) &&
                   WEXITSTATUS(wstatus) == 0;
    pthread_mutex_lock(&wk->lock);
    if (wk->fifo_n) {
        struct fk_slot *s = &wk->slots[wk->fifo[wk->fifo_head]];
        exec__tsan_acquire(s);
        if (wk->viol_head) {
            if (!s->copied) {
                s->b.rdata = s->rbuf;
                s->copied = true;
            }
            for (uint32_t j = s->from; j < s->b.n; j++) {
                memset(&s->b.res[j], 0, sizeof s->b.res[j]);
                s->b.res[j].status = fk_cancelled(s, j) ? EXEC_ECANCELLED : EXEC_EWORKER;
            }
            s->from = s->b.n;
        } else if (why != K_OURS && why != K_CANCEL && !planned) {
            uint32_t busy = ck_pr_load_32(&h->busy);
            uint32_t cs = ck_pr_load_32(&h->cur_slot);
            uint32_t cr = ck_pr_load_32(&h->cur_rec);
            if (busy && cs == s->idx && cr >= s->from && cr < s->b.n) {
                /* Records before it in this pass have results (bounded by the
                 * area: the pass never published its length). */
                fk_harvest(s, cr, g->rcap, false);
                bool tmo = why == K_TIMEOUT && to_slot == cs && to_rec == cr;
                fk_set_cause(&s->b.res[cr], tmo ? EXEC_ERECTIMEOUT : EXEC_ECRASHED, wstatus);
                if (fk_cancelled(s, cr))
                    fk_set_cause(&s->b.res[cr], EXEC_ECANCELLED, 0);
                s->from = cr + 1;
                blamed = true;
            }
        }
        if (s->from == s->b.n)
            fk_push_done(fk, fk_fifo_pop(wk));
    }
    /* Its figures (display only) add up over the processes in this place. */
    ck_pr_store_64(&wk->startup_ns, wk->startup_ns + ck_pr_load_64(&h->startup_ns));
    ck_pr_store_64(&wk->busy_ns, wk->busy_ns + ck_pr_load_64(&h->busy_ns));
    ck_pr_store_64(&wk->idle_ns, wk->idle_ns + ck_pr_load_64(&h->idle_ns));
    ck_pr_store_64(&h->startup_ns, 0);
    ck_pr_store_64(&h->busy_ns, 0);
    ck_pr_store_64(&h->idle_ns, 0);
    ck_pr_store_64(&h->idle_since, 0);
    /* Fresh rings for the replacement, refilled from our FIFO. */
    ck_ring_init(&h->in, FK_RING);
    ck_ring_init(&h->out, FK_RING);
    ck_ring_init(&wk->in_sh, FK_RING);
    ck_ring_init(&wk->out_sh, FK_RING);
    ck_pr_store_32(&h->busy, 0);
    ck_pr_store_32(&h->cur_slot, FK_NOSLOT);
    ck_pr_store_32(&h->state, FK_W_STARTING);
    ck_pr_store_32(&h->stop, 0);
    ck_pr_store_32(&h->want_out, 0);
    ck_pr_store_32(&h->handoff, FK_H_NONE);
    for (unsigned k = 0; k < wk->fifo_n; k++)
        fk_ring_put(wk, &wk->slots[wk->fifo[(wk->fifo_head + k) % g->nslot]]);
    wk->distrust = false;
    wk->viol_head = false;
    unsigned completed = wk->completed;
    wk->completed = 0;

    pthread_mutex_lock(&fk->lock);
    if (planned || blamed || completed)
        wk->fails = 0;
    else
        wk->fails++;
    bool give_up = wk->fails > FK_MAX_FAILS;
    if (give_up) {
        wk->state = W_GONE;
    } else {
        /* Counted here (the consumer): a result after a death sees it. */
        ck_pr_store_64(&ex->respawns, ex->respawns + 1);
        uint64_t *cause = planned ? &wk->resp_recycle
                      : why == K_TIMEOUT ? &wk->resp_timeout
                      : why == K_CANCEL ? &wk->resp_cancel
                                        : &wk->resp_crash;
        ck_pr_store_64(cause, *cause + 1);
        wk->state = W_WAIT;
        uint64_t backoff = wk->fails ? 1000000ull << (wk->fails < 10 ? wk->fails : 10) : 0;
        wk->respawn_at = exec__now_ns() + backoff;
    }
    pthread_mutex_unlock(&fk->lock);
    if (give_up) {
        ck_pr_store_32(&wk->gone, 1);
        fk_fail_all(fk, wk, EXEC_EWORKER);
        bool all = true;
        for (unsigned i = 0; i < g->nw; i++)
            if (!ck_pr_load_32(&g->w[i].gone))
                all = false;
        if (all && ck_pr_load_ptr(&fk->cur) == g)
            ck_pr_store_32(&ex->fatal, 1);
    }
    pthread_mutex_unlock(&wk->lock);
    fk_wake_sup(fk);
}

static void fk_deaths(struct fk *fk)
{
    ck_pr_store_32(&fk->dead_pending, 0);
    ck_pr_fence_memory();
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *g = &fk->gens[k];
        uint32_t gs = ck_pr_load_32(&g->state);
        if (gs != G_ACTIVE && gs != G_RETIRING)
            continue;
        exec__tsan_acquire(g);
        for (unsigned i = 0; i < g->nw; i++) {
            struct fk_worker *wk = &g->w[i];
            pthread_mutex_lock(&fk->lock);
            bool dead = wk->state == W_DEAD;
            pthread_mutex_unlock(&fk->lock);
            if (dead)
                fk_bury(fk, wk);
        }
    }
}

/* Consumer. A draining generation whose slots are all back: let it go. */
static void fk_drained(struct fk *fk, struct fk_gen *g)
{
    pthread_mutex_lock(&fk->lock);
    if (ck_pr_load_32(&g->state) == G_RETIRING) {
        ck_pr_store_32(&g->state, G_DRAINED);
        pthread_mutex_unlock(&fk->lock);
        fk_wake_sup(fk);
        return;
    }
    pthread_mutex_unlock(&fk->lock);
}

/* ------------------------------------------------------------------------- */
/* The seam                                                                  */
/* ------------------------------------------------------------------------- */

static struct exec__batch *fk_batch_get(exec_t *ex)
{
    struct fk *fk = ex->be_priv;
    struct fk_gen *g = fk->cur;
    struct fk_worker *best = NULL;
    if (ck_pr_load_32(&fk->held_all) >= fk->maxb)
        return NULL; /* old generations still hold their share */
    unsigned best_q = UINT_MAX;
    for (unsigned i = 0; i < g->nw; i++) {
        unsigned k = (g->rr + i) % g->nw;
        struct fk_worker *wk = &g->w[k];
        if (ck_pr_load_32(&wk->gone) || ck_ring_size(&wk->freer) == 0)
            continue;
        unsigned q = ck_pr_load_uint(&wk->qn) + (ck_pr_load_32(&wk->alive) ? 0 : g->nslot);
        if (q < best_q) {
            best = wk;
            best_q = q;
        }
    }
    if (!best)
        return NULL;
    g->rr = best->idx + 1 == g->nw ? 0 : best->idx + 1;
    struct fk_slot *s;
    if (!ck_ring_dequeue_spsc(&best->freer, best->freebuf, &s))
        return NULL;
    exec__tsan_acquire(s);
    ck_pr_inc_32(&g->held);
    ck_pr_inc_32(&fk->held_all);
    return &s->b;
}

static void fk_dispatch(exec_t *ex, struct exec__batch *b)
{
    struct fk_slot *s = (struct fk_slot *)b;
    struct fk_worker *wk = s->wk;
    b->worker = wk->idx;
    b->generation = s->g->generation;
    pthread_mutex_lock(&wk->lock);
    s->from = 0;
    s->copied = false;
    s->rbuf_len = 0;
    bool ok = fk_enqueue(wk, s);
    pthread_mutex_unlock(&wk->lock);
    struct fk *fk = ex->be_priv;
    if (!ok)
        fk_kill_req(fk, wk);
    if (ck_pr_load_32(&fk->sup_idle) && ck_pr_fas_32(&fk->sup_idle, 0))
        fk_wake_sup(fk);
}

/*
 * Core, under submit_lock and flight_lock: cancel record i of a dispatched
 * batch. Its flag (in the slot's input, read-only to workers) makes a worker
 * skip it, and makes us report it cancelled whatever a worker wrote; a worker
 * running it right now is killed and replaced (the rest of its slot re-runs).
 */
static int fk_cancel(exec_t *ex, struct exec__batch *b, uint32_t i)
{
    struct fk *fk = ex->be_priv;
    struct fk_slot *s = (struct fk_slot *)b;
    struct fk_worker *wk = s->wk;
    pthread_mutex_lock(&wk->lock);
    if (i < s->from) {
        pthread_mutex_unlock(&wk->lock);
        return 0; /* its result is already ours */
    }
    __atomic_fetch_or(&b->rflags[i], EXEC__RF_CANCEL, __ATOMIC_RELAXED);
    struct fk_hdr *h = wk->hdr;
    uint32_t tick = ck_pr_load_32(&h->tick), cs = 0, cr = 0;
    bool running = wk->fifo_n && wk->fifo[wk->fifo_head] == s->idx &&
                   ck_pr_load_32(&h->busy) && fk_where(h, tick, &cs, &cr) && cs == s->idx &&
                   cr == i;
    pthread_mutex_unlock(&wk->lock);
    if (running)
        fk_kill_req_why(fk, wk, K_CANCEL);
    return 1;
}

/* Any thread: worker i of the current generation. */
static void fk_worker_stats(const exec_t *ex, unsigned i, exec_worker_stats_t *ws)
{
    struct fk *fk = ex->be_priv;
    int pid = 0;
    pthread_mutex_lock(&fk->lock);
    struct fk_gen *g = ck_pr_load_ptr(&fk->cur);
    if (g && g->w && i < g->nw) {
        struct fk_worker *wk = &g->w[i];
        pid = wk->state == W_LIVE ? wk->pid : 0;
        ws->records = ck_pr_load_64(&wk->records);
        ws->batches = ck_pr_load_64(&wk->batches);
        ws->respawns_crash = ck_pr_load_64(&wk->resp_crash);
        ws->respawns_timeout = ck_pr_load_64(&wk->resp_timeout);
        ws->respawns_recycle = ck_pr_load_64(&wk->resp_recycle);
        ws->respawns_cancel = ck_pr_load_64(&wk->resp_cancel);
        ws->startup_ns = ck_pr_load_64(&wk->startup_ns) + ck_pr_load_64(&wk->hdr->startup_ns);
        ws->busy_ns = ck_pr_load_64(&wk->busy_ns) + ck_pr_load_64(&wk->hdr->busy_ns);
        ws->idle_ns = ck_pr_load_64(&wk->idle_ns) + ck_pr_load_64(&wk->hdr->idle_ns);
        uint64_t since = ck_pr_load_64(&wk->hdr->idle_since), now = exec__now_ns();
        if (wk->state == W_LIVE && since && since < now)
            ws->idle_ns += now - since; /* waiting now */
    }
    pthread_mutex_unlock(&fk->lock);
    ws->pid = pid;
    if (pid > 0)
        fk_smaps(pid, &ws->pss_kb, &ws->private_dirty_kb);
}

static bool fk_hungry(exec_t *ex, const struct exec__batch *b)
{
    (void)ex;
    const struct fk_slot *s = (const struct fk_slot *)b;
    struct fk_hdr *h = s->wk->hdr;
    return ck_pr_load_uint(&h->in.p_tail) - ck_pr_load_uint(&h->in.c_head) == 0;
}

/*
 * Consumer. Keeps copies of the last few records of s that ran without error
 * (records that fail on the current context prove nothing about a new one).
 */
static void fk_probe_keep(struct fk *fk, const struct fk_slot *s)
{
    if (pthread_mutex_trylock(&fk->probe_lock) != 0)
        return; /* a swap is reading them: next time */
    unsigned n = 0;
    size_t len = 0;
    for (uint32_t j = s->b.n; j-- > 0 && n < FK_PROBE_N;) {
        const struct exec__rec *r = &s->b.recs[j];
        if (s->b.res[j].status != 0 || r->len > FK_PROBE_BYTES - len)
            continue;
        memcpy(fk->probe_data + len, s->b.data + r->off, r->len);
        fk->probe_rec[n].tag = r->tag;
        fk->probe_rec[n].off = (uint32_t)len;
        fk->probe_rec[n].len = r->len;
        len += r->len;
        n++;
    }
    if (n)
        fk->probe_n = n;
    pthread_mutex_unlock(&fk->probe_lock);
}

static struct exec__batch *fk_reap(exec_t *ex)
{
    struct fk *fk = ex->be_priv;
    if (ck_pr_load_32(&fk->dead_pending))
        fk_deaths(fk);
    for (unsigned k = 0; k <= FK_MAXGEN; k++) {
        if (fk->done) {
            struct fk_slot *s = fk->done;
            fk->done = s->next_done;
            return &s->b;
        }
        if (k == FK_MAXGEN)
            break;
        struct fk_gen *g = &fk->gens[(fk->reap_g + k) % FK_MAXGEN];
        uint32_t gs = ck_pr_load_32(&g->state);
        if (gs != G_ACTIVE && gs != G_RETIRING)
            continue;
        exec__tsan_acquire(g);
        if (gs == G_RETIRING && ck_pr_load_32(&g->held) == 0) {
            fk_drained(fk, g);
            continue;
        }
        for (unsigned i = 0; i < g->nw; i++) {
            struct fk_worker *wk = &g->w[(g->reap_w + i) % g->nw];
            if (ck_pr_load_32(&wk->gone)) {
                pthread_mutex_lock(&wk->lock);
                fk_fail_all(fk, wk, EXEC_EWORKER);
                pthread_mutex_unlock(&wk->lock);
                continue;
            }
            struct fk_slot *s = fk_pull(fk, wk);
            if (s) {
                if (fk->probe_data && fk->probe_tick++ % FK_PROBE_EVERY == 0)
                    fk_probe_keep(fk, s);
                /* Start after this worker next time: fair to every ring. */
                fk->reap_g = (fk->reap_g + k) % FK_MAXGEN;
                g->reap_w = wk->idx + 1 == g->nw ? 0 : wk->idx + 1;
                return &s->b;
            }
        }
    }
    return NULL;
}

static void fk_batch_put(exec_t *ex, struct exec__batch *b)
{
    struct fk *fk = ex->be_priv;
    struct fk_slot *s = (struct fk_slot *)b;
    struct fk_gen *g = s->g;
    exec__tsan_release(s);
    ck_ring_enqueue_spsc(&s->wk->freer, s->wk->freebuf, s);
    ck_pr_dec_32(&g->held);
    ck_pr_dec_32(&fk->held_all);
    if (ck_pr_load_32(&g->state) == G_RETIRING && ck_pr_load_32(&g->held) == 0)
        fk_drained(fk, g);
}

static void fk_stop(exec_t *ex);

static int fk_start(exec_t *ex)
{
    struct fk *fk = calloc(1, sizeof *fk);
    if (!fk)
        return EXEC_ENOMEM;
    ex->be_priv = fk;
    fk->ex = ex;
    fk->maxb = exec__max_batches(ex);
    fk->sup_efd = -1;
    pthread_mutex_init(&fk->lock, NULL);
    pthread_mutex_init(&fk->probe_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&fk->cond, &ca);
    pthread_condattr_destroy(&ca);
    for (unsigned k = 0; k < FK_MAXGEN; k++)
        fk->gens[k].zpidfd = fk->gens[k].zsock = -1;

    void *ctl = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (ctl == MAP_FAILED)
        return -errno;
    fk->ctl = ctl;
    fk->ctl->armed = ck_pr_load_32(ex->armed);
    ex->armed = &fk->ctl->armed;
    fk->sup_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fk->sup_efd < 0)
        return -errno;
    fk->npfd_max = 1 + FK_MAXGEN * (2 + (size_t)ex->opt.workers);
    fk->watch = ex->opt.timeout_ms || (ex->opt.slow_ms && ex->opt.on_slow);
    fk->seed = fk_mix(exec__now_ns() ^ (uint64_t)(uintptr_t)fk);
    if (ex->opt.slow_ms && ex->opt.on_slow) {
        fk->slow_cap = ex->opt.workers < 64 ? 2 * ex->opt.workers : 128;
        fk->slow = calloc(fk->slow_cap, sizeof *fk->slow);
        if (!fk->slow)
            return EXEC_ENOMEM;
    }
    fk->pfd = calloc(fk->npfd_max, sizeof *fk->pfd);
    fk->ptag = calloc(fk->npfd_max, sizeof *fk->ptag);
    if (!(ex->opt.flags & EXEC_NO_REPLAY))
        fk->probe_data = malloc(FK_PROBE_BYTES);
    if (!fk->pfd || !fk->ptag || (!(ex->opt.flags & EXEC_NO_REPLAY) && !fk->probe_data))
        return EXEC_ENOMEM;

    struct fk_gen *g = &fk->gens[0];
    int rc = fk_gen_init(fk, g, ex->ctx0, 0, ex->opt.workers);
    if (rc)
        return rc;
    g->release_ctx = true; /* if exec_create succeeds (ex->started) */

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = -pthread_create(&fk->sup, NULL, fk_sup_main, fk);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc)
        return rc;
    fk->sup_started = true;
    rc = fk_gen_wait(fk, g, g->nw);
    if (rc)
        return rc;
    fk->cur = g;
    exec__tsan_release(g);
    pthread_mutex_lock(&fk->lock);
    ck_pr_store_32(&g->state, G_ACTIVE);
    ck_pr_store_32(&fk->dead_pending, 1);
    pthread_mutex_unlock(&fk->lock);
    return 0;
}

/*
 * The canary (g's first worker, ready) replays records that ran well on the
 * current context; their results are dropped. 0 when it sent them all back
 * (whatever their status), else why it failed: EXEC_ECRASHED (it died),
 * EXEC_ERECTIMEOUT (past timeout_ms, or start_timeout_ms without a timeout),
 * EXEC_EWORKER (it broke the protocol). Nothing to replay: 0.
 */
static int fk_canary(exec_t *ex, struct fk *fk, struct fk_gen *g)
{
    struct fk_worker *wk = &g->w[0];
    struct fk_slot *s;
    if (!fk->probe_data || !ck_ring_dequeue_spsc(&wk->freer, wk->freebuf, &s))
        return 0;
    exec__tsan_acquire(s);
    pthread_mutex_lock(&fk->probe_lock);
    unsigned n = fk->probe_n < s->b.cap ? fk->probe_n : s->b.cap;
    size_t len = 0;
    for (unsigned j = 0; j < n; j++) {
        const struct exec__rec *r = &fk->probe_rec[j];
        memcpy(s->b.data + len, fk->probe_data + r->off, r->len);
        s->b.recs[j] = (struct exec__rec){.tag = r->tag, .off = (uint32_t)len, .len = r->len};
        s->b.rflags[j] = 0;
        len += r->len;
    }
    pthread_mutex_unlock(&fk->probe_lock);
    int rc = 0;
    if (n) {
        s->b.n = n;
        s->b.data_len = len;
        s->from = 0;
        s->copied = false;
        s->rbuf_len = 0;
        pthread_mutex_lock(&wk->lock);
        bool ok = fk_enqueue(wk, s);
        pthread_mutex_unlock(&wk->lock);
        if (!ok)
            fk_kill_req(fk, wk);
        const exec_options_t *o = &ex->opt;
        uint64_t ms = o->timeout_ms ? (uint64_t)o->timeout_ms + o->grace_ms + 1000
                                    : o->start_timeout_ms;
        uint64_t deadline = exec__now_ns() + ms * 1000000u;
        for (;;) {
            /* The consumer leaves a starting generation alone: we read it. */
            struct fk_slot *back = fk_pull(fk, wk);
            if (back == s && !wk->distrust)
                break;
            pthread_mutex_lock(&fk->lock);
            bool dead = wk->state != W_LIVE || g->nfailed || wk->exited;
            bool timed_out = wk->kill_why == K_TIMEOUT || wk->soft_at;
            pthread_mutex_unlock(&fk->lock);
            if (dead || wk->distrust) {
                rc = wk->distrust ? EXEC_EWORKER : timed_out ? EXEC_ERECTIMEOUT : EXEC_ECRASHED;
                break;
            }
            if (exec__now_ns() >= deadline) {
                fk_kill_req(fk, wk);
                rc = EXEC_ERECTIMEOUT;
                break;
            }
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
    }
    if (rc == 0) {
        /* Its figures start with the records it will really run. */
        ck_pr_store_64(&wk->records, 0);
        ck_pr_store_64(&wk->batches, 0);
        wk->completed = 0;
        exec__tsan_release(s);
        ck_ring_enqueue_spsc(&wk->freer, wk->freebuf, s);
    }
    return rc; /* on failure the slot goes with the generation */
}

static int fk_swap(exec_t *ex, void *new_ctx, uint64_t generation)
{
    struct fk *fk = ex->be_priv;
    struct fk_gen *g = NULL;
    pthread_mutex_lock(&fk->lock);
    for (unsigned k = 0; k < FK_MAXGEN && !g; k++)
        if (ck_pr_load_32(&fk->gens[k].state) == G_FREE && !fk->gens[k].base)
            g = &fk->gens[k];
    pthread_mutex_unlock(&fk->lock);
    if (!g)
        return EXEC_EBUSY; /* too many generations still draining */
    /* One canary first: its worker_init, then a replay of recent records;
     * only then the rest of the generation. */
    int rc = fk_gen_init(fk, g, new_ctx, generation, 1);
    if (rc == 0)
        rc = fk_gen_wait(fk, g, 1);
    if (rc == 0)
        rc = fk_canary(ex, fk, g);
    if (rc == 0) {
        pthread_mutex_lock(&fk->lock);
        for (unsigned i = 0; i < g->nw; i++)
            if (g->w[i].state == W_HOLD)
                g->w[i].state = W_NONE;
        pthread_mutex_unlock(&fk->lock);
        fk_wake_sup(fk);
        rc = fk_gen_wait(fk, g, g->nw);
    }
    if (rc) {
        if (ck_pr_load_32(&g->state) == G_STARTING) {
            fk_gen_abandon(fk, g);
        } else {
            /* Never reached the supervisor: free it here. */
            g->release_ctx = false;
            fk_gen_free(fk, g, false);
        }
        return rc;
    }
    /* Records already in the open batch were submitted before this call
     * returns: send them to the old generation now, then switch. */
    pthread_mutex_lock(&ex->submit_lock);
    struct exec__batch *b = ex->open;
    if (b && b->n) {
        ex->open = NULL;
        ck_pr_store_64(&ex->batches, ex->batches + 1);
        fk_dispatch(ex, b);
    }
    struct fk_gen *old = fk->cur;
    ck_pr_store_ptr(&fk->cur, g);
    pthread_mutex_unlock(&ex->submit_lock);
    exec__tsan_release(g);
    pthread_mutex_lock(&fk->lock);
    g->release_ctx = true;
    ck_pr_store_32(&g->state, G_ACTIVE);
    ck_pr_store_32(&old->state, G_RETIRING);
    ck_pr_store_32(&fk->dead_pending, 1);
    pthread_mutex_unlock(&fk->lock);
    exec__notify(ex); /* let the consumer see the old generation drain */
    return 0;
}

static void fk_stop(exec_t *ex)
{
    struct fk *fk = ex->be_priv;
    if (!fk)
        return;
    if (fk->sup_started) {
        pthread_mutex_lock(&fk->lock);
        fk->stopping = true;
        pthread_mutex_unlock(&fk->lock);
        fk_wake_sup(fk);
        pthread_join(fk->sup, NULL);
    }
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *g = &fk->gens[k];
        if (g->base || g->w)
            fk_gen_free(fk, g, g->release_ctx && ex->started);
    }
    free(fk->pfd);
    free(fk->probe_data);
    pthread_mutex_destroy(&fk->probe_lock);
    free(fk->slow);
    free(fk->ptag);
    if (fk->sup_efd >= 0)
        close(fk->sup_efd);
    ex->armed = &ex->armed_local;
    if (fk->ctl)
        munmap(fk->ctl, 4096);
    pthread_mutex_destroy(&fk->lock);
    pthread_cond_destroy(&fk->cond);
    free(fk);
    ex->be_priv = NULL;
}

const struct exec__backend exec__fork_backend = {
    .version = 1,
    .id = EXEC_FORK,
    .name = "fork",
    .start = fk_start,
    .batch_get = fk_batch_get,
    .dispatch = fk_dispatch,
    .hungry = fk_hungry,
    .reap = fk_reap,
    .batch_put = fk_batch_put,
    .swap = fk_swap,
    .cancel_flags = true,
    .cancel = fk_cancel,
    .worker_stats = fk_worker_stats,
    .stop = fk_stop,
};
