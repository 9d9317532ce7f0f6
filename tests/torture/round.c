/*
 * executor-torture: one round. An executor is created with options drawn from
 * the round's seed; submitting threads, consumers, a canceller, a swapper and
 * a monitor run against it until the round's time is up; then it is drained
 * (after exec_cancel_all() in some rounds) or destroyed with records in
 * flight, and checked: every tag, every context, exec_stats() against what
 * the consumers counted, and the process back to the threads, descriptors,
 * children and memfd mappings it had before.
 */
#include "torture.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "resources.h"

/* ------------------------------------------------------------------------- */
/* Submitters                                                                */
/* ------------------------------------------------------------------------- */

struct sub_arg {
    struct round *r;
    unsigned i;
};

#define MANY 32

static void mark_submitted(struct round *r, unsigned i, uint64_t tag)
{
    __atomic_fetch_or(&r->st[tag], (uint8_t)S_SUB, __ATOMIC_ACQ_REL);
    atomic_fetch_add(&r->submitted, 1);
    atomic_fetch_add(&r->c->submitted, 1);
    atomic_store(&r->last_tag[i], tag + 1);
}

bool t_api_error(struct round *r, const char *call, int rc)
{
    t_fail(&r->c->bad_api, "round %" PRIu64 " (%s): %s returned %s", r->no, t_bname(r), call,
           exec_err_name(rc));
    atomic_store(&r->stop_submit, 1);
    return false;
}

/* Submits recs[0, n) the way submitter i does; false on an API error. */
static bool submit_batch(struct round *r, unsigned i, exec_record_t *recs, size_t n, uint64_t *x)
{
    size_t done = 0;
    while (done < n) {
        int rc;
        size_t acc = 0;
        switch (i % 4) {
        case 0:
            rc = exec_submit(r->ex, recs[done].data, recs[done].len, recs[done].tag);
            acc = rc == 0;
            break;
        case 1:
            rc = exec_try_submit(r->ex, recs[done].data, recs[done].len, recs[done].tag);
            acc = rc == 0;
            break;
        case 2:
            rc = exec_submit_many(r->ex, recs + done, n - done, &acc);
            break;
        default:
            rc = exec_try_submit_many(r->ex, recs + done, n - done, &acc);
            break;
        }
        for (size_t k = 0; k < acc; k++)
            mark_submitted(r, i, recs[done + k].tag);
        done += acc;
        if (rc == EXEC_EAGAIN) {
            if (atomic_load(&r->stop_submit))
                return true; /* the rest is never submitted */
            t_sleep_us(20 + (unsigned)(t_rnd(x) % 200));
        } else if (rc != 0) {
            return t_api_error(r, i % 4 < 2 ? "a submit" : "a submit_many", rc);
        }
    }
    return true;
}

static void *submitter(void *arg)
{
    struct sub_arg *a = arg;
    struct round *r = a->r;
    uint64_t x = t_mix(r->seed ^ (a->i + 1) * 0x2545f4914f6cdd1dull) | 1;
    unsigned char *buf = malloc((size_t)MANY * T_REC_MAX);
    exec_record_t recs[MANY];
    if (!buf)
        return NULL;
    while (!atomic_load(&r->stop_submit)) {
        size_t n = a->i % 4 >= 2 ? 1 + t_rnd(&x) % MANY : 1;
        uint64_t t0 = atomic_fetch_add(&r->next_tag, n);
        if (t0 + n + 2 * T_SLOTS > T_MAX_TAGS) {
            atomic_store(&r->full, 1);
            break;
        }
        uint64_t min_gen = atomic_load(&r->gen);
        for (size_t k = 0; k < n; k++) {
            uint64_t tag = t0 + k;
            enum kind kd = t_plan_kind(r->seed, tag, &r->mix);
            unsigned char *p = buf + k * T_REC_MAX;
            recs[k] = (exec_record_t){
                .data = p, .len = t_rec_build(r->seed, tag, kd, min_gen, 0, p), .tag = tag};
        }
        if (!submit_batch(r, a->i, recs, n, &x))
            break;
    }
    free(buf);
    return NULL;
}

/* ------------------------------------------------------------------------- */
/* Consumers                                                                 */
/* ------------------------------------------------------------------------- */

static void *consumer(void *arg)
{
    struct sub_arg *a = arg;
    struct round *r = a->r;
    bool serial = r->o->skip & SKIP_CONCURRENT_NEXT, many = a->i % 2;
    uint64_t last_seq = UINT64_MAX;
    exec_result_t res[16];
    for (;;) {
        if (atomic_load(&r->stop_consume))
            break;
        size_t got = 0;
        if (serial)
            pthread_mutex_lock(&r->next_lock);
        int rc = many ? exec_next_many(r->ex, res, 16, &got, 50)
                      : exec_next(r->ex, res, 50);
        if (rc == 0 && !many)
            got = 1;
        for (size_t k = 0; rc == 0 && k < got; k++)
            t_check_result(r, &res[k], &last_seq);
        if (serial)
            pthread_mutex_unlock(&r->next_lock);
        if (rc == EXEC_EOF)
            break;
        if (rc != 0 && rc != EXEC_ETIMEDOUT) {
            t_fail(&r->c->bad_api, "round %" PRIu64 " (%s): exec_next returned %s", r->no,
                   t_bname(r), exec_err_name(rc));
            break;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------- */
/* A round                                                                   */
/* ------------------------------------------------------------------------- */

static uint8_t *tag_states;

static void plan(struct round *r, const struct opts *o)
{
    uint64_t x = r->seed | 1;
    static const unsigned windows[] = {256, 2048, 16384};
    static const unsigned batches[] = {1, 7, 32, 128};
    exec_options_t *eo = &r->eo;
    eo->workers = o->workers ? o->workers : 2 + (unsigned)(t_rnd(&x) % 3);
    eo->window = windows[t_rnd(&x) % 3];
    eo->batch = batches[t_rnd(&x) % 4];
    if (t_rnd(&x) % 4 == 0)
        eo->flags |= EXEC_ORDERED;
    r->mix = (struct mix){.heavy = 40000, .user = 10000};
    if (r->fork) {
        eo->timeout_ms = o->timeout_ms;
        eo->grace_ms = 100;
        eo->slow_ms = o->timeout_ms / 2;
        eo->on_slow = t_on_slow;
        eo->slow_arg = r;
        if (!(o->skip & SKIP_RECYCLE))
            eo->max_records_per_worker = 200 + (unsigned)(t_rnd(&x) % 2800);
        r->no_replay = t_rnd(&x) % 4 == 0;
        if (r->no_replay)
            eo->flags |= EXEC_NO_REPLAY;
        if (!(o->skip & SKIP_CRASH))
            r->mix.crash = 1000; /* 0.1% */
        if (!(o->skip & SKIP_HANG))
            r->mix.hang = 100; /* 0.01% */
    }
    unsigned e = (unsigned)(t_rnd(&x) % 20);
    r->end = e < 9 ? END_DRAIN : e < 12 ? END_CANCEL_ALL : END_DESTROY;
    if (r->end == END_CANCEL_ALL && (o->skip & (SKIP_CANCEL_ALL | SKIP_CANCEL)))
        r->end = END_DRAIN;
    if (r->end == END_DESTROY && ((o->skip & SKIP_DESTROY) || o->inject))
        r->end = END_DRAIN;
}

/* Everything exec_stats() says, against what the consumers counted (only
 * while nobody submits or collects). */
static void check_stats(struct round *r)
{
    exec_stats_t st;
    struct counts *c = r->c;
    if (exec_stats(r->ex, &st) != 0) {
        t_fail(&c->bad_api, "round %" PRIu64 ": exec_stats failed", r->no);
        return;
    }
    uint64_t sub = atomic_load(&r->submitted), del = atomic_load(&r->delivered);
    if (st.submitted != sub || st.delivered != del || st.in_flight != sub - del ||
        st.ok != atomic_load(&r->ok) || st.user_errors != atomic_load(&r->user) ||
        st.crashed != atomic_load(&r->crashed) || st.timed_out != atomic_load(&r->timed_out) ||
        st.cancelled != atomic_load(&r->cancelled) || st.swaps != r->swaps ||
        st.generation != atomic_load(&r->gen))
        t_fail(&c->bad_stats,
               "round %" PRIu64 " (%s): exec_stats says submitted %" PRIu64 " delivered %" PRIu64
               " ok %" PRIu64 " user %" PRIu64 " crashed %" PRIu64 " timed out %" PRIu64
               " cancelled %" PRIu64 " swaps %" PRIu64 "; counted %" PRIu64 " %" PRIu64
               " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64,
               r->no, t_bname(r), st.submitted, st.delivered, st.ok, st.user_errors, st.crashed,
               st.timed_out, st.cancelled, st.swaps, sub, del, atomic_load(&r->ok),
               atomic_load(&r->user), atomic_load(&r->crashed), atomic_load(&r->timed_out),
               atomic_load(&r->cancelled), r->swaps);
    atomic_fetch_add(&c->respawns, st.respawns);
}

static void join_all(pthread_t *th, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}

/* After destroy: nothing of the executor's is left. */
static void check_leftovers(struct round *r, const tu_res_t *base)
{
    char why[256];
    if (!tu_res_settle(base, 5000, why, sizeof why))
        t_fail(&r->c->leaks, "round %" PRIu64 " (%s): after exec_destroy: %s", r->no, t_bname(r),
               why);
    uint64_t end = t_now_ns() + 5000000000ull;
    for (unsigned i = 0; i < r->npids; i++) {
        while (t_proc_start(r->pids[i].pid) == r->pids[i].start && t_now_ns() < end)
            t_sleep_us(5000);
        if (t_proc_start(r->pids[i].pid) == r->pids[i].start)
            t_fail(&r->c->leaks, "round %" PRIu64 " (%s): worker process %d outlived exec_destroy",
                   r->no, t_bname(r), r->pids[i].pid);
    }
}

bool t_round(const struct opts *o, exec_backend_t backend, uint64_t round_no, double seconds,
             struct counts *c)
{
    if (!tag_states && !(tag_states = malloc(T_MAX_TAGS)))
        return false;
    struct round *r = calloc(1, sizeof *r);
    if (!r)
        return false;
    r->o = o;
    r->c = c;
    r->backend = backend;
    r->fork = backend == EXEC_FORK;
    r->no = round_no;
    r->seed = t_mix(o->seed ^ (round_no + 1) * 0x9e3779b97f4a7c15ull ^ (uint64_t)backend << 56);
    r->st = tag_states;
    memset(r->st, 0, T_MAX_TAGS);
    memset(t_sh, 0, sizeof *t_sh);
    pthread_mutex_init(&r->next_lock, NULL);
    pthread_mutex_init(&r->pid_lock, NULL);
    plan(r, o);

    tu_res_t base = tu_res_now();
    int leak_fd = o->inject == INJ_LEAK ? open("/dev/null", O_RDONLY) : -1;
    struct t_ctx *ctx0 = t_new_ctx(r, B_GOOD, 0);
    atomic_store(&ctx0->installed, 1);
    atomic_store(&r->cur, ctx0);
    int rc = exec_create(&r->ex, &t_ops, ctx0, backend, &r->eo);
    if (rc) {
        t_fail(&c->bad_api, "round %" PRIu64 " (%s): exec_create returned %s", round_no,
               t_bname(r), exec_err_name(rc));
        atomic_store(&ctx0->installed, 0);
        t_check_round(r);
        free(ctx0);
        free(r);
        return false;
    }
    atomic_fetch_add(&c->rounds, 1);

    pthread_t sub[T_MAX_THREADS], con[T_MAX_THREADS], side[3];
    struct sub_arg sa[T_MAX_THREADS], ca[T_MAX_THREADS];
    unsigned nside = 0;
    for (unsigned i = 0; i < o->consumers; i++) {
        ca[i] = (struct sub_arg){r, i};
        pthread_create(&con[i], NULL, consumer, &ca[i]);
    }
    for (unsigned i = 0; i < o->submitters; i++) {
        sa[i] = (struct sub_arg){r, i};
        pthread_create(&sub[i], NULL, submitter, &sa[i]);
    }
    pthread_t mon;
    pthread_create(&mon, NULL, t_monitor, r);
    if (!(o->skip & SKIP_CANCEL))
        pthread_create(&side[nside++], NULL, t_canceller, r);
    if (!(o->skip & SKIP_SWAP))
        pthread_create(&side[nside++], NULL, t_swapper, r);

    uint64_t end = t_now_ns() + (uint64_t)(seconds * 1e9);
    while (t_now_ns() < end && !atomic_load(&r->full) && !atomic_load(&r->stop_submit))
        t_sleep_us(2000);
    atomic_store(&r->stop_submit, 1);
    join_all(sub, o->submitters);
    atomic_store(&r->stop_side, 1);
    join_all(side, nside);

    if (r->end == END_DESTROY) {
        atomic_store(&r->stop_consume, 1);
        join_all(con, o->consumers);
    } else {
        if (r->end == END_CANCEL_ALL) {
            atomic_store(&r->cancel_all, 1);
            rc = exec_cancel_all(r->ex);
            if (rc < 0)
                t_fail(&c->bad_api, "round %" PRIu64 ": exec_cancel_all returned %s", round_no,
                       exec_err_name(rc));
            atomic_fetch_add(&c->cancel_all_rounds, 1);
        }
        rc = exec_finish(r->ex);
        if (rc)
            t_fail(&c->bad_api, "round %" PRIu64 ": exec_finish returned %s", round_no,
                   exec_err_name(rc));
        join_all(con, o->consumers); /* each ends at EXEC_EOF */
        atomic_fetch_add(&c->drained, 1);
    }
    atomic_store(&r->stop_monitor, 1);
    pthread_join(mon, NULL);
    check_stats(r);
    if (o->inject == INJ_RELEASE)
        t_released(atomic_load(&r->cur));
    if (r->end == END_DESTROY)
        atomic_fetch_add(&c->destroyed, 1);
    atomic_store(&r->destroying, 1);
    exec_destroy(r->ex);
    atomic_store(&r->destroyed, 1);
    t_check_round(r);
    check_leftovers(r, &base);
    if (leak_fd >= 0)
        close(leak_fd);
    if (o->verbose)
        fprintf(stderr,
                "round %" PRIu64 " %s: workers %u window %u batch %u%s%s recycle %u, %s: "
                "%" PRIu64 " submitted, %" PRIu64 " delivered, %" PRIu64 " swaps; "
                "longest wait for the CPU %" PRIu64 " ms\n",
                round_no, t_bname(r), r->eo.workers, r->eo.window, r->eo.batch,
                (r->eo.flags & EXEC_ORDERED) ? " ordered" : "",
                r->no_replay ? " no-replay" : "", r->eo.max_records_per_worker,
                r->end == END_DESTROY ? "destroyed" : r->end == END_CANCEL_ALL ? "cancel-all"
                                                                               : "drained",
                atomic_load(&r->submitted), atomic_load(&r->delivered), r->swaps,
                atomic_load(&r->max_gap_ms));
    while (r->ctxs) {
        struct t_ctx *x = r->ctxs;
        r->ctxs = x->next;
        free(x);
    }
    pthread_mutex_destroy(&r->next_lock);
    pthread_mutex_destroy(&r->pid_lock);
    free(r);
    return true;
}
