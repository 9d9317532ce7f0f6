/*
 * EXEC_FORK: the worker process. Forked by its generation's zygote, it runs
 * worker_init, waits until the supervisor watches it (admit), then takes
 * slot indices from its `in` ring, runs their records through the shared
 * per-record loop (exec__run_batch) with the results written straight into
 * the slot's output part, and sends the index back over `out`. It leaves at
 * a batch boundary when told to stop, or hands its place to a ready
 * successor (recycling). Everything here runs in the worker process.
 */
#include "fork.h"

#include <ck_pr.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

static bool fk_w_take(struct fk_hdr *h, uint32_t *si)
{
    void *v;
    if (!ck_ring_dequeue_spsc(&h->in, h->inbuf, &v))
        return false;
    *si = (uint32_t)(uintptr_t)v;
    return true;
}

/* Leaves on purpose (asked to, or at its records limit): not a crash. */
static __attribute__((noreturn)) void fk_w_leave(const struct fk *fk, struct fk_gen *g,
                                                 struct fk_hdr *h, void *ws)
{
    ck_pr_store_32(&h->state, FK_W_RETIRED);
    if (fk->ops->worker_fini)
        fk->ops->worker_fini(g->ctx, ws);
    _exit(0);
}

/*
 * Recycling: a successor is ready. Leaves at a batch boundary (nothing taken,
 * every slot it took sent back) and gives the place to the successor.
 */
static __attribute__((noreturn)) void fk_w_handoff(const struct fk *fk, struct fk_gen *g,
                                                   struct fk_hdr *h, void *ws)
{
    ck_pr_store_64(&h->idle_since, 0);
    ck_pr_store_32(&h->state, FK_W_RETIRED);
    ck_pr_fence_store();
    ck_pr_store_32(&h->handoff, FK_H_GO);
    ck_ec32_inc(&h->ec, &exec__ec_procs);
    if (fk->ops->worker_fini)
        fk->ops->worker_fini(g->ctx, ws);
    _exit(0);
}

/*
 * Is it time to ask for a successor? About when the records left would take
 * twice a start-up plus 1 ms (busy time per record so far; the start-up is
 * this process's own, or the last successor's as the parent saw it): the
 * successor is then ready near the limit, and the one recycling slot is held
 * no longer than that.
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

/* Waits for `word` to read `want` (parent-written), or for stop. */
static bool fk_w_await(struct fk_hdr *h, const uint32_t *word, uint32_t want)
{
    for (;;) {
        uint32_t snap = ck_ec32_value(&h->ec);
        if (ck_pr_load_32(word) == want)
            return true;
        if (ck_pr_load_32(&h->stop))
            return false;
        ck_ec32_wait(&h->ec, &exec__ec_procs, snap, NULL);
    }
}

/* Where the worker is, published per record under a seqlock on its tick,
 * and in the slot's own output (two hints: a scribble rarely hits both).
 * Where a signal may be aimed at it (timeouts on, or its cancel flag up) the
 * tick also goes odd as soon as a record is over. */
struct fk_w_pos {
    struct fk_hdr *h;
    struct fk_sout *out;
    const uint8_t *rflags;
    uint32_t tick;
    bool timeouts;
};

static void fk_w_on_record(void *arg, uint32_t i)
{
    struct fk_w_pos *p = arg;
    ck_pr_store_32(&p->out->cur, i + 1);
    if (!(p->tick & 1u))
        ck_pr_store_32(&p->h->tick, ++p->tick);
    ck_pr_fence_store();
    ck_pr_store_32(&p->h->cur_rec, i);
    ck_pr_fence_store();
    ck_pr_store_32(&p->h->tick, ++p->tick);
}

/*
 * The supervisor is aiming a signal at the record just left (see fk_aim):
 * wait for its decision with SIGTERM blocked, so that a SIGTERM it sends is
 * taken here and never ends the next record; after a SIGKILL, wait for it. The wait is a few system calls of the supervisor's; bounded anyway.
 */
static void fk_w_absorb(struct fk_hdr *h)
{
    sigset_t term, old;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, &old);
    const uint64_t t0 = exec__now_ns();
    for (unsigned spins = 0; ck_pr_load_32(&h->aim_busy); spins++) {
        if (spins < 256) {
            ck_pr_stall();
            continue;
        }
        if (exec__now_ns() - t0 > 1000000000ull)
            break;
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
    ck_pr_fence_load();
    if (ck_pr_load_32(&h->aim_sig) == SIGKILL)
        for (;;)
            pause();
    struct timespec zero = {0, 0};
    while (sigtimedwait(&term, NULL, &zero) == SIGTERM)
        ;
    sigprocmask(SIG_SETMASK, &old, NULL);
}

/* The record is over. Where a signal may be aimed at it, the tick goes odd at
 * once (the supervisor aims only at a tick it reads after announcing the aim:
 * store, fence, load on both sides, so one of the two sees the other). */
static void fk_w_on_return(void *arg, uint32_t i)
{
    struct fk_w_pos *p = arg;
    if (!p->timeouts && !(__atomic_load_n(&p->rflags[i], __ATOMIC_RELAXED) & EXEC__RF_CANCEL))
        return;
    const uint32_t was = p->tick;
    ck_pr_store_32(&p->h->tick, ++p->tick);
    ck_pr_fence_memory();
    if (ck_pr_load_32(&p->h->aim_tick) == was)
        fk_w_absorb(p->h);
}

void fk_worker_main(struct fk *fk, struct fk_gen *g, unsigned idx, bool successor, int zsock,
                    int sfd, int hostfd, pid_t zygote)
{
    const exec_ops_t *ops = fk->ops;
    const exec_options_t *o = fk->o;
    const uint64_t t_fork = exec__now_ns();
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* the zygote's only thread forked us */
    if (getppid() != zygote)
        _exit(FK_EXIT_ORPHAN);
    close(zsock);
    close(sfd);
    if (hostfd >= 0)
        close(hostfd);
    /* A worker that scribbles over its input faults instead. */
    mprotect(g->base, g->in_size, PROT_READ);
    /* The host's part of the fork, every signal still blocked. */
    if (o->fork_hooks.child)
        o->fork_hooks.child(o->fork_hooks.arg);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    struct fk_hdr *h = fk_hdr_at(g, idx);
    const uint32_t me = (uint32_t)getpid();
    if (!successor)
        ck_pr_store_32((uint32_t *)&h->pid, me);
    void *ws = NULL;
    int rc = ops->worker_init ? ops->worker_init(g->ctx, &ws) : 0;
    uint64_t busy_ns = 0, idle_ns = 0, startup_ns = exec__now_ns() - t_fork;
    const uint64_t my_startup_ns = startup_ns;
    if (successor) {
        ck_pr_store_32(&h->succ_state, rc ? FK_W_INITFAIL : FK_W_READY);
        fk_wake_sup(fk);
        if (rc)
            _exit(FK_EXIT_INIT);
        /* Ready; the worker in the place leaves at a batch boundary. */
        if (!fk_w_await(h, &h->handoff, FK_H_GO)) {
            if (ops->worker_fini)
                ops->worker_fini(g->ctx, ws);
            _exit(0);
        }
        ck_pr_fence_load();
        /* The place's figures go on from its predecessor's. */
        busy_ns = ck_pr_load_64(&h->busy_ns);
        idle_ns = ck_pr_load_64(&h->idle_ns);
        startup_ns += ck_pr_load_64(&h->startup_ns);
        ck_pr_store_32((uint32_t *)&h->pid, me);
        ck_pr_store_32(&h->want_out, 0);
    }
    ck_pr_store_64(&h->busy_ns, busy_ns);
    ck_pr_store_64(&h->idle_ns, idle_ns);
    ck_pr_store_64(&h->startup_ns, startup_ns);
    const uint64_t busy0_ns = busy_ns; /* the place's, before this process */
    if (!successor) {
        ck_pr_store_32(&h->state, rc ? FK_W_INITFAIL : FK_W_READY);
        fk_wake_sup(fk);
        if (rc)
            _exit(FK_EXIT_INIT);
        /* No record before the supervisor watches this process. */
        if (!fk_w_await(h, &h->admit, me))
            fk_w_leave(fk, g, h, ws);
    } else {
        ck_pr_store_32(&h->state, FK_W_READY);
    }

    const size_t max_result = o->max_result;
    /* Each worker its own limit in [N, N + N/10]: restarts spread out. */
    uint32_t limit = o->max_records_per_worker;
    if (limit)
        limit += (uint32_t)(fk_mix(fk->seed ^ ((uint64_t)idx << 32) ^ (uint64_t)me) %
                            (limit / 10 + 1));
    bool asked = false;
    const unsigned wake_out = g->nslot / 2 > 4 ? g->nslot / 2 : 4;
    const uint64_t wake_age_ns = (uint64_t)o->result_delay_us * 1000u;
    uint64_t records = 0;
    /* Even: (cur_slot, cur_rec) are stable. A predecessor may have died mid-way. */
    struct fk_w_pos pos = {.h = h,
                           .tick = (ck_pr_load_32(&h->tick) + 1) & ~1u,
                           .timeouts = o->timeout_ms != 0};
    struct exec__run_hooks hooks = {
        .on_record = fk_w_on_record, .on_return = fk_w_on_return, .arg = &pos};
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
            unsigned spins = 0;
            uint64_t look_from = t_idle;
            while (!fk_w_take(h, &si)) {
                if (ck_pr_load_32(&h->stop))
                    fk_w_leave(fk, g, h, ws);
                if (fk_w_handing(h, records, limit)) {
                    ck_pr_store_64(&h->idle_ns, idle_ns + exec__now_ns() - t_idle);
                    fk_w_handoff(fk, g, h, ws);
                }
                /* The next record of a server often comes within microseconds:
                 * a short look costs less than a sleep and a wake-up. */
                if ((++spins & 31) || exec__now_ns() - look_from < FK_SPIN_NS) {
                    ck_pr_stall();
                    continue;
                }
                if (ck_ring_size(&h->out))
                    exec__notify(fk->ex);
                ck_ec32_wait(&h->ec, &exec__ec_procs, snap, NULL);
                snap = ck_ec32_value(&h->ec);
                look_from = exec__now_ns();
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
        if (n > o->batch || from >= n)
            _exit(FK_EXIT_ORPHAN); /* not what the parent writes: it is gone */
        wb.recs = (struct exec__rec *)(in + 1);
        wb.rflags = (uint8_t *)(wb.recs + o->batch); /* read-only here */
        wb.data = (char *)in + g->recs_size;
        wb.res = (struct exec__res *)(out + 1);
        wb.n = n;
        wb.cap = n;
        w.buf = (char *)out + g->res_size;
        w.cap = g->rcap;
        w.len = 0;
        pos.out = out;
        pos.rflags = wb.rflags;
        if (!(pos.tick & 1u))
            ck_pr_store_32(&h->tick, ++pos.tick);
        ck_pr_fence_store();
        ck_pr_store_32(&h->cur_slot, si);
        ck_pr_store_32(&h->cur_rec, from);
        ck_pr_fence_store();
        ck_pr_store_32(&h->tick, ++pos.tick);
        ck_pr_store_32(&h->busy, 1);
        hooks.broken = false;
        uint32_t done = exec__run_batch(ops, g->ctx, ws, &wb, from, &w, max_result, &hooks);
        /* The length first: a `done` the parent reads means the pass is over
         * and its length is there. (A broken writer's record is garbage:
         * the parent says so.) */
        ck_pr_store_64(&out->rdata_len, hooks.good);
        ck_pr_fence_store();
        ck_pr_store_32(&out->done, done);
        busy_ns += exec__now_ns() - t_busy;
        ck_pr_store_64(&h->busy_ns, busy_ns);
        ck_pr_store_32(&h->busy, 0);
        ck_pr_fence_store();
        ck_ring_enqueue_spsc(&h->out, h->outbuf, (void *)(uintptr_t)si);
        records += done - from;
        if (limit && !asked && fk_w_ask(h, records, limit, busy_ns - busy0_ns, my_startup_ns)) {
            asked = true;
            ck_pr_store_32(&h->want_out, 1);
            fk_wake_sup(fk);
        }
        if (fk_w_handing(h, records, limit))
            fk_w_handoff(fk, g, h, ws);
        /* As on threads: wake a sleeping consumer when a good share is done,
         * we run dry, or results have waited long enough. */
        if (exec__armed(fk->ex)) {
            uint64_t now = exec__now_ns();
            if (ck_ring_size(&h->out) >= wake_out || ck_ring_size(&h->in) <= FK_LOW ||
                now - ck_pr_load_64(&fk->ctl->last_wake) > wake_age_ns) {
                ck_pr_store_64(&fk->ctl->last_wake, now);
                exec__notify(fk->ex);
            }
        }
        if (ck_pr_load_32(&h->stop))
            fk_w_leave(fk, g, h, ws);
    }
}
