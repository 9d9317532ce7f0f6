/*
 * executor-torture: the threads beside the stream of a round. The canceller
 * cancels queued records and records it knows are running; the swapper swaps
 * the context every few milliseconds (on EXEC_FORK sometimes to a bad one the
 * canary must refuse); the monitor watches the figures, notes the worker
 * processes, and ends the run if the stream stalls.
 */
#include "torture.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define STALL_S 30 /* no result for this long with records in flight: a stall */

/* ------------------------------------------------------------------------- */
/* Canceller                                                                 */
/* ------------------------------------------------------------------------- */

/* Cancels tag (submitted, and never cancelled before) and checks the answer;
 * slot >= 0 for a K_STICKY record that may be running. */
static void cancel_one(struct round *r, uint64_t tag, int slot)
{
    struct counts *c = r->c;
    uint8_t old = __atomic_fetch_or(&r->st[tag], (uint8_t)S_REQ, __ATOMIC_ACQ_REL);
    if (old & S_REQ)
        return;
    uint64_t mark = tag + 1, later = atomic_load(&r->next_tag) - tag - 1;
    bool running = slot >= 0 && atomic_load(&t_sh->slot[slot].running) == mark &&
                   atomic_load(&t_sh->slot[slot].done) != mark;
    int rc = exec_cancel(r->ex, tag);
    atomic_fetch_add(&c->cancel_calls, 1);
    if (rc == 1) {
        atomic_fetch_add(&c->cancel_hits, 1);
        __atomic_fetch_or(&r->st[tag], (uint8_t)S_HIT, __ATOMIC_ACQ_REL);
        if (running) {
            atomic_fetch_add(&c->cancel_running, 1);
            __atomic_fetch_or(&r->st[tag], (uint8_t)S_RUNHIT, __ATOMIC_ACQ_REL);
        }
        if (old & S_DEL)
            t_fail(&c->wrong,
                   "round %" PRIu64 " (%s) tag %" PRIu64
                   ": exec_cancel counted a record already delivered",
                   r->no, t_bname(r), tag);
    } else if (rc == EXEC_ENOENT) {
        atomic_fetch_add(&c->cancel_enoent, 1);
        uint8_t now = __atomic_fetch_or(&r->st[tag], (uint8_t)S_MISS, __ATOMIC_ACQ_REL);
        if ((now & S_DELC) && !atomic_load(&r->cancel_all))
            t_fail(&c->wrong,
                   "round %" PRIu64 " (%s) tag %" PRIu64
                   ": exec_cancel said EXEC_ENOENT, the result reads EXEC_ECANCELLED",
                   r->no, t_bname(r), tag);
        /* Running before the call and still running after it: in flight
         * all along. */
        if (running && atomic_load(&t_sh->slot[slot].done) != mark)
            t_fail(&c->wrong,
                   "round %" PRIu64 " (%s) tag %" PRIu64
                   ": exec_cancel said EXEC_ENOENT for a record running all along "
                   "(%" PRIu64 " records handed out after it, batch %u)",
                   r->no, t_bname(r), tag, later, r->eo.batch);
    } else {
        t_fail(&c->bad_api, "round %" PRIu64 " (%s): exec_cancel returned %s", r->no, t_bname(r),
               exec_err_name(rc));
    }
}

/* A deaf K_STICKY record runs this long: well within the record timeout, and
 * long enough that a kill at the cancel lands first. */
static uint32_t deaf_ms(const struct round *r)
{
    uint32_t ms = r->eo.timeout_ms * 3 / 4;
    return ms > 300 ? 300 : ms;
}

/* Submits a K_STICKY record, waits (a little) until it runs, cancels it. */
static void cancel_running(struct round *r, uint64_t *slot_tag)
{
    uint64_t tag = atomic_fetch_add(&r->next_tag, 1);
    if (tag + 1 > T_MAX_TAGS)
        return;
    unsigned s = t_sticky_slot(tag);
    if (slot_tag[s] && !(__atomic_load_n(&r->st[slot_tag[s] - 1], __ATOMIC_ACQUIRE) & S_DEL))
        return; /* the slot's last record is still out: this tag goes unused */
    unsigned char rec[T_REC_MAX];
    bool deaf = t_sticky_deaf(r->fork, tag);
    size_t len = t_rec_build(r->seed, tag, K_STICKY, atomic_load(&r->gen),
                             deaf ? deaf_ms(r) : 0, rec);
    __atomic_fetch_or(&r->st[tag], (uint8_t)S_STICKY, __ATOMIC_ACQ_REL);
    int rc = exec_submit(r->ex, rec, len, tag);
    if (rc) {
        t_api_error(r, "exec_submit (sticky)", rc);
        return;
    }
    __atomic_fetch_or(&r->st[tag], (uint8_t)S_SUB, __ATOMIC_ACQ_REL);
    atomic_fetch_add(&r->submitted, 1);
    atomic_fetch_add(&r->c->submitted, 1);
    slot_tag[s] = tag + 1;
    uint64_t end = t_now_ns() + 50 * 1000000ull;
    while (atomic_load(&t_sh->slot[s].running) != tag + 1 && t_now_ns() < end &&
           !atomic_load(&r->stop_side))
        t_sleep_us(100);
    cancel_one(r, tag, (int)s);
}

void *t_canceller(void *arg)
{
    struct round *r = arg;
    uint64_t x = t_mix(r->seed ^ 0xca11ca11ca11ca11ull) | 1;
    uint64_t *slot_tag = calloc(T_SLOTS, sizeof *slot_tag);
    if (!slot_tag)
        return NULL;
    while (!atomic_load(&r->stop_side)) {
        t_sleep_us(200 + (unsigned)(t_rnd(&x) % 1800));
        unsigned what = (unsigned)(t_rnd(&x) % 10);
        if (what < 6) {
            unsigned i = (unsigned)(t_rnd(&x) % r->o->submitters);
            uint64_t t = atomic_load(&r->last_tag[i]);
            if (t)
                cancel_one(r, t - 1, -1);
        } else if (what == 6) {
            /* Never handed out: nothing to cancel. */
            uint64_t t = atomic_load(&r->next_tag) + 1000000u;
            int rc = exec_cancel(r->ex, t);
            atomic_fetch_add(&r->c->cancel_calls, 1);
            if (rc != EXEC_ENOENT)
                t_fail(&r->c->wrong,
                       "round %" PRIu64 " (%s): exec_cancel of a tag never submitted gave %s",
                       r->no, t_bname(r), exec_err_name(rc));
        } else if (!(r->o->skip & SKIP_CANCEL_RUNNING)) {
            cancel_running(r, slot_tag);
        }
    }
    free(slot_tag);
    return NULL;
}

/* ------------------------------------------------------------------------- */
/* Swapper                                                                   */
/* ------------------------------------------------------------------------- */

struct t_ctx *t_new_ctx(struct round *r, enum bad bad, uint64_t gen)
{
    struct t_ctx *x = calloc(1, sizeof *x);
    if (!x)
        abort();
    x->magic = T_CTX_MAGIC;
    x->salt = t_salt(r->seed, gen);
    x->bad = bad;
    x->round = r;
    x->next = r->ctxs;
    r->ctxs = x;
    return x;
}

static enum bad pick_bad(struct round *r, uint64_t *x)
{
    if (!r->fork || (r->o->skip & SKIP_BAD_SWAP) || t_rnd(x) % 5)
        return B_GOOD;
    /* The canary replays records that ran well; it keeps them from every
     * 64th batch collected (docs/fork.md), so a context bad only on records
     * is offered once that many batches went by. */
    bool replay = !r->no_replay && atomic_load(&r->ok) > 64ull * r->eo.batch + 1;
    unsigned k = (unsigned)(t_rnd(x) % 8);
    if (replay && k < 3)
        return B_CRASH;
    if (replay && k == 3)
        return B_HANG; /* costs the swapper a record timeout */
    return k % 2 ? B_INIT_REFUSE : B_INIT_CRASH;
}

void *t_swapper(void *arg)
{
    struct round *r = arg;
    struct counts *c = r->c;
    uint64_t x = t_mix(r->seed ^ 0x5a5a5a5a5a5a5a5aull) | 1;
    static const char *bad_names[] = {"is good", "crashes", "hangs", "refuses worker_init",
                                      "crashes in worker_init"};
    static const int bad_code[] = {0, EXEC_ECRASHED, EXEC_ERECTIMEOUT, EXEC_EINIT, EXEC_EINIT};
    while (!atomic_load(&r->stop_side)) {
        t_sleep_us(1000 + (unsigned)(t_rnd(&x) % 7000));
        enum bad bad = pick_bad(r, &x);
        uint64_t gen = atomic_load(&r->gen);
        struct t_ctx *nc = t_new_ctx(r, bad, gen + 1);
        struct t_ctx *cur = atomic_load(&r->cur);
        atomic_store(&cur->leaving, 1);
        int rc = exec_swap_context(r->ex, nc);
        if (rc == 0) {
            atomic_store(&nc->installed, 1);
            atomic_store(&r->cur, nc);
            atomic_store(&r->gen, gen + 1);
            r->swaps++;
            atomic_fetch_add(&c->swaps, 1);
            if (bad)
                t_fail(&c->wrong,
                       "round %" PRIu64 " (%s): the canary let through a context that %s",
                       r->no, t_bname(r), bad_names[bad]);
            continue;
        }
        atomic_store(&cur->leaving, 0);
        if (rc == EXEC_EBUSY) {
            atomic_fetch_add(&c->swaps_busy, 1);
        } else if (!bad) {
            t_fail(&c->wrong, "round %" PRIu64 " (%s): a good context refused: %s", r->no,
                   t_bname(r), exec_err_name(rc));
        } else {
            atomic_fetch_add(&c->swaps_refused, 1);
            atomic_fetch_add(rc == EXEC_EINIT         ? &c->refused_einit
                             : rc == EXEC_ECRASHED    ? &c->refused_crashed
                             : rc == EXEC_ERECTIMEOUT ? &c->refused_timeout
                                                      : &c->refused_other,
                             1);
            if (rc != bad_code[bad])
                t_fail(&c->wrong,
                       "round %" PRIu64 " (%s): a context that %s refused with %s, not %s",
                       r->no, t_bname(r), bad_names[bad], exec_err_name(rc),
                       exec_err_name(bad_code[bad]));
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------- */
/* Monitor                                                                   */
/* ------------------------------------------------------------------------- */

static void keep_pid(struct round *r, int pid)
{
    if (pid <= 0)
        return;
    pthread_mutex_lock(&r->pid_lock);
    bool known = false;
    for (unsigned i = 0; i < r->npids && !known; i++)
        known = r->pids[i].pid == pid;
    if (!known && r->npids < sizeof r->pids / sizeof r->pids[0]) {
        unsigned long long st = t_proc_start(pid);
        if (st) {
            r->pids[r->npids].pid = pid;
            r->pids[r->npids].start = st;
            r->npids++;
        }
    }
    pthread_mutex_unlock(&r->pid_lock);
}

void *t_monitor(void *arg)
{
    struct round *r = arg;
    struct counts *c = r->c;
    exec_stats_t prev = {0};
    unsigned nw = r->eo.workers;
    exec_worker_stats_t *wprev = calloc(nw, sizeof *wprev);
    uint64_t last_progress = t_now_ns(), last_delivered = 0;
    if (!wprev)
        return NULL;
    while (!atomic_load(&r->stop_monitor)) {
        uint64_t t0 = t_now_ns();
        t_sleep_us(20000);
        uint64_t late = (t_now_ns() - t0) / 1000000u;
        if (late > 20 && late - 20 > atomic_load(&r->max_gap_ms))
            atomic_store(&r->max_gap_ms, late - 20);
        exec_stats_t st;
        if (exec_stats(r->ex, &st) != 0)
            continue;
        if (st.submitted < prev.submitted || st.delivered < prev.delivered ||
            st.swaps < prev.swaps)
            t_fail(&c->bad_stats, "round %" PRIu64 " (%s): exec_stats() went back", r->no,
                   t_bname(r));
        prev = st;
        for (unsigned w = 0; w < nw; w++) {
            exec_worker_stats_t ws;
            if (exec_worker_stats(r->ex, w, &ws) != 0) {
                t_fail(&c->bad_api, "round %" PRIu64 ": exec_worker_stats(%u) failed", r->no, w);
                continue;
            }
            keep_pid(r, ws.pid);
            const exec_worker_stats_t *p = &wprev[w];
            bool back = ws.records < p->records || ws.batches < p->batches ||
                        ws.respawns_crash < p->respawns_crash ||
                        ws.respawns_recycle < p->respawns_recycle;
            /* Recycled workers, counted from the figure's rises (from 0 after it
             * went back). */
            uint64_t was = ws.respawns_recycle >= p->respawns_recycle ? p->respawns_recycle : 0;
            atomic_fetch_add(&c->recycled, ws.respawns_recycle - was);
            if (back && !(r->o->skip & SKIP_WORKER_STATS))
                t_fail(&c->bad_stats,
                       "round %" PRIu64 " (%s): worker %u's figures went back (records %" PRIu64
                       " -> %" PRIu64 ", batches %" PRIu64 " -> %" PRIu64 ")",
                       r->no, t_bname(r), w, p->records, ws.records, p->batches, ws.batches);
            wprev[w] = ws;
        }
        uint64_t d = atomic_load(&r->delivered), now = t_now_ns();
        if (d != last_delivered || st.in_flight == 0 || atomic_load(&r->stop_consume)) {
            last_delivered = d;
            last_progress = now;
        } else if (now - last_progress > STALL_S * 1000000000ull) {
            fprintf(stderr,
                    "executor-torture: FAIL: round %" PRIu64 " (%s): stalled: no result for %d s "
                    "with %" PRIu64 " records in flight (seed %" PRIu64 ")\n",
                    r->no, t_bname(r), STALL_S, st.in_flight, r->o->seed);
            _exit(3);
        }
    }
    free(wprev);
    return NULL;
}

void t_on_slow(void *arg, const exec_slow_t *s)
{
    struct round *r = arg;
    atomic_fetch_add(&r->c->slow_reports, 1);
    if (s->tag >= atomic_load(&r->next_tag))
        t_fail(&r->c->wrong, "round %" PRIu64 ": on_slow names tag %" PRIu64 ", never submitted",
               r->no, s->tag);
}
