/*
 * executor-torture: the checks. Each result against what its record and its
 * context generation must give (and against the cancels asked for it), each
 * tag delivered at most once and, in a drained round, exactly once, process()
 * never run twice for a record that may not be replayed, and each context
 * released exactly once, never while current, never after destroy.
 */
#include "torture.h"

#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_uint fail_said;
#define FAILS_SHOWN 20

void t_fail(atomic_uint_fast64_t *counter, const char *fmt, ...)
{
    atomic_fetch_add(counter, 1);
    if (atomic_fetch_add(&fail_said, 1) >= FAILS_SHOWN)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "executor-torture: FAIL: %s\n", line);
}

unsigned long long t_proc_start(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    /* Field 22 (starttime); p is at the end of field 2. */
    unsigned long long start = 0;
    int field = 2;
    for (char *t = strtok(p + 1, " "); t; t = strtok(NULL, " "))
        if (++field == 22) {
            start = strtoull(t, NULL, 10);
            break;
        }
    return start;
}

/* ------------------------------------------------------------------------- */
/* Results                                                                   */
/* ------------------------------------------------------------------------- */

#define WHERE "round %" PRIu64 " (%s) tag %" PRIu64

static bool injected(enum inject what, const struct round *r)
{
    static atomic_int done;
    return r->o->inject == what && atomic_load(&r->delivered) > 100 &&
           atomic_exchange(&done, 1) == 0;
}

static void check_one(struct round *r, const exec_result_t *res, uint64_t *last_seq)
{
    struct counts *c = r->c;
    uint64_t tag = res->tag;
    if (tag >= atomic_load(&r->next_tag) || tag >= T_MAX_TAGS) {
        t_fail(&c->wrong, WHERE ": a tag never handed out", r->no, t_bname(r), tag);
        return;
    }
    bool cancelled = res->status == EXEC_ECANCELLED;
    uint8_t old = __atomic_fetch_or(&r->st[tag], (uint8_t)(S_DEL | (cancelled ? S_DELC : 0)),
                                    __ATOMIC_ACQ_REL);
    if (old & S_DEL) {
        t_fail(&c->dup, WHERE ": delivered twice", r->no, t_bname(r), tag);
        return;
    }
    atomic_fetch_add(&r->delivered, 1);
    atomic_fetch_add(&c->delivered, 1);
    if (r->eo.flags & EXEC_ORDERED) {
        /* Whatever else runs, one consumer sees seqs rise. */
        if (*last_seq != UINT64_MAX && res->seq <= *last_seq)
            t_fail(&c->wrong, WHERE ": ordered, but seq %" PRIu64 " after %" PRIu64, r->no,
                   t_bname(r), tag, res->seq, *last_seq);
        *last_seq = res->seq;
        if (r->o->skip & SKIP_CONCURRENT_NEXT) {
            if (res->seq != r->next_seq)
                t_fail(&c->wrong, WHERE ": ordered, seq %" PRIu64 " where %" PRIu64 " was due",
                       r->no, t_bname(r), tag, res->seq, r->next_seq);
            r->next_seq = res->seq + 1;
        }
    }
    if (res->worker >= r->eo.workers)
        t_fail(&c->wrong, WHERE ": worker %u of %u", r->no, t_bname(r), tag, res->worker,
               r->eo.workers);
    enum kind k = (old & S_STICKY) ? K_STICKY : t_plan_kind(r->seed, tag, &r->mix);
    bool polls = k == K_HEAVY || k == K_STICKY; /* the kinds that look at exec_cancelled() */
    if (cancelled) {
        bool all = atomic_load(&r->cancel_all);
        if (!(old & S_REQ) && !all)
            t_fail(&c->wrong, WHERE ": EXEC_ECANCELLED, but nobody cancelled it", r->no,
                   t_bname(r), tag);
        else if ((old & S_MISS) && !all)
            t_fail(&c->wrong, WHERE ": EXEC_ECANCELLED after exec_cancel() said EXEC_ENOENT",
                   r->no, t_bname(r), tag);
        bool deaf = k == K_STICKY && t_sticky_deaf(r->fork, tag);
        if ((res->flags & EXEC_RESULT_EARLY) && (!polls || deaf))
            t_fail(&c->wrong, WHERE ": EXEC_RESULT_EARLY, but process() never polled", r->no,
                   t_bname(r), tag);
        /* EXEC_FORK kills the worker of a running record it cancels. */
        if (deaf && (old & S_RUNHIT) &&
            atomic_load(&t_sh->slot[t_sticky_slot(tag)].done) == tag + 1)
            t_fail(&c->wrong,
                   WHERE ": exec_cancel counted it while it ran, but it was not stopped: it "
                         "ran to its end",
                   r->no, t_bname(r), tag);
        atomic_fetch_add(&r->cancelled, 1);
        atomic_fetch_add(&c->cancelled, 1);
        if (res->flags & EXEC_RESULT_EARLY)
            atomic_fetch_add(&c->cancelled_early, 1);
        return;
    }
    if (res->flags & EXEC_RESULT_EARLY)
        t_fail(&c->wrong, WHERE ": EXEC_RESULT_EARLY on status %s", r->no, t_bname(r), tag,
               exec_err_name(res->status));
    int want = 0;
    switch (k) {
    case K_LIGHT:
    case K_HEAVY: want = 0; break;
    case K_USER:
    case K_STICKY: want = EXEC_EUSER; break;
    case K_SEGV:
    case K_ABORT:
    case K_EXIT: want = EXEC_ECRASHED; break;
    case K_HANG: want = EXEC_ERECTIMEOUT; break;
    }
    if (res->status != want) {
        t_fail(&c->wrong,
               WHERE ": kind %d, status %s where %s was due (generation %" PRIu64
                     ", signal %d, exit %d; the monitor once waited %" PRIu64
                     " ms for the CPU this round)",
               r->no, t_bname(r), tag, (int)k, exec_err_name(res->status), exec_err_name(want),
               res->generation, res->signal, res->exit_status, atomic_load(&r->max_gap_ms));
        return;
    }
    const char *why = NULL;
    switch (k) {
    case K_LIGHT:
    case K_HEAVY:
        why = t_check_ok_data(r->seed, k, res);
        atomic_fetch_add(&r->ok, 1);
        atomic_fetch_add(&c->ok, 1);
        break;
    case K_USER: {
        uint64_t v = 0;
        if (res->user_code != 1 + (int)(tag % 1000))
            why = "wrong user code";
        else if (res->len != 8 || !res->data || (memcpy(&v, res->data, 8), v != tag))
            why = "wrong bytes with its user error";
        atomic_fetch_add(&r->user, 1);
        atomic_fetch_add(&c->user, 1);
        break;
    }
    case K_STICKY:
        if (res->user_code != T_STICKY_CODE)
            why = "wrong user code";
        atomic_fetch_add(&r->user, 1);
        atomic_fetch_add(&c->user, 1);
        break;
    case K_SEGV:
    case K_ABORT:
    case K_EXIT:
        if (k == K_SEGV && res->signal != SIGSEGV)
            why = "not SIGSEGV";
        if (k == K_ABORT && res->signal != SIGABRT)
            why = "not SIGABRT";
        if (k == K_EXIT && (res->signal != 0 || res->exit_status != T_EXIT_CODE))
            why = "not its exit status";
        atomic_fetch_add(&r->crashed, 1);
        atomic_fetch_add(&c->crashed, 1);
        break;
    case K_HANG:
        if (res->signal != SIGTERM && res->signal != SIGKILL)
            why = "timed out, but not by SIGTERM or SIGKILL";
        atomic_fetch_add(&r->timed_out, 1);
        atomic_fetch_add(&c->timed_out, 1);
        break;
    }
    if (why)
        t_fail(&c->wrong, WHERE ": %s (status %s, generation %" PRIu64 ", signal %d, exit %d)",
               r->no, t_bname(r), tag, why, exec_err_name(res->status), res->generation,
               res->signal, res->exit_status);
}

void t_check_result(struct round *r, const exec_result_t *res, uint64_t *last_seq)
{
    if (injected(INJ_LOST, r))
        return;
    /* The condition first: injected() fires once, on a result it can spoil. */
    if (res->status == 0 && res->len > 16 && injected(INJ_WRONG, r)) {
        unsigned char copy[64];
        exec_result_t bad = *res;
        size_t n = res->len < sizeof copy ? res->len : sizeof copy;
        memcpy(copy, res->data, n);
        copy[16] ^= 0x40;
        bad.data = copy;
        bad.len = n;
        check_one(r, &bad, last_seq);
        return;
    }
    check_one(r, res, last_seq);
    if (injected(INJ_DUP, r))
        check_one(r, res, last_seq);
}

/* ------------------------------------------------------------------------- */
/* Contexts                                                                  */
/* ------------------------------------------------------------------------- */

void t_released(void *ctx)
{
    struct t_ctx *x = ctx;
    struct round *r = x->round;
    struct counts *c = r->c;
    unsigned n = atomic_fetch_add(&x->released, 1);
    if (n)
        t_fail(&c->bad_release, "round %" PRIu64 " (%s): a context released %u times", r->no,
               t_bname(r), n + 1);
    if (atomic_load(&r->destroyed))
        t_fail(&c->bad_release, "round %" PRIu64 " (%s): a context released after destroy",
               r->no, t_bname(r));
    if (!atomic_load(&x->installed))
        t_fail(&c->bad_release, "round %" PRIu64 " (%s): a context released, never installed",
               r->no, t_bname(r));
    else if (!atomic_load(&x->leaving) && !atomic_load(&r->destroying))
        t_fail(&c->bad_release, "round %" PRIu64 " (%s): the current context released", r->no,
               t_bname(r));
    /* A process() that still used it would now answer wrong. */
    x->salt = ~x->salt;
}

/* ------------------------------------------------------------------------- */
/* The end of a round                                                        */
/* ------------------------------------------------------------------------- */

void t_check_round(struct round *r)
{
    struct counts *c = r->c;
    uint64_t n = atomic_load(&r->next_tag);
    if (n > T_MAX_TAGS)
        n = T_MAX_TAGS;
    for (uint64_t tag = 0; tag < n; tag++) {
        uint8_t s = r->st[tag];
        unsigned calls = atomic_load(&t_sh->calls[tag]);
        if ((s & S_SUB) && !(s & S_DEL)) {
            if (r->end == END_DESTROY)
                atomic_fetch_add(&c->abandoned, 1);
            else
                t_fail(&c->lost, WHERE ": submitted, never delivered", r->no, t_bname(r), tag);
        }
        if (!(s & S_SUB)) {
            if (s & S_DEL)
                t_fail(&c->wrong, WHERE ": delivered, never submitted", r->no, t_bname(r), tag);
            if (calls)
                t_fail(&c->rerun, WHERE ": processed, never submitted", r->no, t_bname(r), tag);
            continue;
        }
        enum kind k = (s & S_STICKY) ? K_STICKY : t_plan_kind(r->seed, tag, &r->mix);
        /* A swap's canary replays records that ran well (EXEC_FORK). */
        bool replayable = r->fork && !r->no_replay && (k == K_LIGHT || k == K_HEAVY);
        bool unchecked = r->fork && (r->o->skip & SKIP_FORK_RERUN);
        if (calls > 1 && !replayable && !unchecked)
            t_fail(&c->rerun, WHERE ": kind %d, process() ran %u times (%s)", r->no, t_bname(r),
                   tag, (int)k, calls,
                   !(s & S_DEL) ? "never delivered" : (s & S_DELC) ? "cancelled" : "delivered");
        if ((s & S_DEL) && !(s & S_DELC) && calls == 0)
            t_fail(&c->wrong, WHERE ": a result, but process() never ran", r->no, t_bname(r),
                   tag);
    }
    for (struct t_ctx *x = r->ctxs; x; x = x->next) {
        unsigned rel = atomic_load(&x->released);
        if (atomic_load(&x->installed) && rel != 1)
            t_fail(&c->bad_release,
                   "round %" PRIu64 " (%s): a context installed, released %u times", r->no,
                   t_bname(r), rel);
        if (!atomic_load(&x->installed) && rel != 0)
            t_fail(&c->bad_release,
                   "round %" PRIu64 " (%s): a context refused, released %u times", r->no,
                   t_bname(r), rel);
    }
}
