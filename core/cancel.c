/*
 * Core: cancel. Every dispatched batch is on the flight list from dispatch
 * until the consumer reaps it, whatever else went out meanwhile, so a record
 * can be found from submit (open batch) until its batch completes; a record
 * whose result exists keeps it.
 */
#include "exec_core.h"

#include <ck_pr.h>
#include <string.h>

void exec__flight_add(exec_t *ex, struct exec__batch *b)
{
    struct exec__batch_core *c = exec__bc(b);
    exec__lock(&ex->flight_lock);
    EXEC__ASSERT(!c->in_flight);
    c->fl_prev = NULL;
    c->fl_next = ex->flight;
    if (ex->flight)
        exec__bc(ex->flight)->fl_prev = b;
    ex->flight = b;
    c->in_flight = true;
    exec__unlock(&ex->flight_lock);
}

void exec__flight_remove(exec_t *ex, struct exec__batch *b)
{
    struct exec__batch_core *c = exec__bc(b);
    exec__lock(&ex->flight_lock);
    if (c->in_flight) {
        if (c->fl_prev)
            exec__bc(c->fl_prev)->fl_next = c->fl_next;
        else
            ex->flight = c->fl_next;
        if (c->fl_next)
            exec__bc(c->fl_next)->fl_prev = c->fl_prev;
        c->fl_prev = c->fl_next = NULL;
        c->in_flight = false;
    }
    exec__unlock(&ex->flight_lock);
}

static void exec__flag(struct exec__batch *b, uint32_t i)
{
    __atomic_fetch_or(&b->rflags[i], EXEC__RF_CANCEL, __ATOMIC_RELAXED);
}

/* submit_lock and flight_lock held. Cancels the unfinished records of b that
 * match (all, or those tagged tag); returns how many it counts. */
static int exec__cancel_batch(exec_t *ex, struct exec__batch *b, bool all, uint64_t tag,
                              bool dispatched)
{
    EXEC__ASSERT_HELD(&ex->submit_lock);
    EXEC__ASSERT_HELD(&ex->flight_lock);
    int n = 0;
    if (!dispatched || ex->be->cancel) {
        for (uint32_t i = 0; i < b->n; i++) {
            if ((!all && b->recs[i].tag != tag) ||
                (__atomic_load_n(&b->rflags[i], __ATOMIC_RELAXED) & EXEC__RF_CANCEL))
                continue; /* not asked for, or already cancelled */
            if (dispatched) {
                n += ex->be->cancel(ex, b, i) > 0;
            } else {
                exec__flag(b, i);
                n++;
            }
        }
        return n;
    }
    /* Running on a backend whose workers read the flags themselves (threads):
     * records before `progress` have results. A worker may run ahead of this
     * loop, and a record it finishes meanwhile keeps its result: after
     * flagging, progress is read again and such a record counts only if its
     * result says cancelled. (A record finishing at this very moment may
     * still keep one: at most the one each running batch is on.) */
    EXEC__ASSERT(b->n <= EXEC__MAX_BATCH);
    uint64_t mine[EXEC__MAX_BATCH / 64];
    memset(mine, 0, (b->n + 63) / 64 * sizeof mine[0]);
    const uint32_t from = __atomic_load_n(&b->progress, __ATOMIC_ACQUIRE);
    for (uint32_t i = from; i < b->n; i++) {
        if (all || b->recs[i].tag == tag) {
            uint8_t old = __atomic_fetch_or(&b->rflags[i], EXEC__RF_CANCEL, __ATOMIC_RELAXED);
            if (!(old & EXEC__RF_CANCEL))
                mine[i / 64] |= 1ull << (i % 64);
        }
    }
    const uint32_t to = __atomic_load_n(&b->progress, __ATOMIC_ACQUIRE);
    for (uint32_t i = from; i < b->n; i++)
        if ((mine[i / 64] >> (i % 64) & 1) && (i >= to || b->res[i].status == EXEC_ECANCELLED))
            n++;
    return n;
}

static int exec__cancel(exec_t *ex, bool all, uint64_t tag)
{
    if (!ex)
        return EXEC_EINVAL;
    if (exec__refuse(ex))
        return EXEC_ESTATE;
    int n = 0;
    exec__lock(&ex->submit_lock);
    exec__lock(&ex->flight_lock);
    if (ex->open)
        n += exec__cancel_batch(ex, ex->open, all, tag, false);
    for (struct exec__batch *b = ex->flight; b; b = exec__bc(b)->fl_next)
        n += exec__cancel_batch(ex, b, all, tag, true);
    exec__unlock(&ex->flight_lock);
    exec__unlock(&ex->submit_lock);
    return n > 0 || all ? n : EXEC_ENOENT;
}

int exec_cancel(exec_t *ex, uint64_t tag)
{
    return exec__cancel(ex, false, tag);
}

int exec_cancel_all(exec_t *ex)
{
    return exec__cancel(ex, true, 0);
}
