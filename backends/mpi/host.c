/*
 * EXEC_MPI on rank 0: the seam core calls (exec_internal.h), on core's
 * threads: options, start (the session, HELLO, every rank's READY), batches,
 * dispatch to the progress thread, reap, cancel of what is still here, swap
 * by spec, figures, stop. progress.c does the sending and receiving.
 */
#include "host.h"

#include <ck_pr.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MH_DEFAULT_TIMEOUT_MS 10000u
#define MH_DEFAULT_BATCH 1024u /* a batch crosses a network: more records per trip */

struct mh_rank *mh_rank_of(struct mh *h, int rank)
{
    return rank >= 1 && rank <= h->nranks ? &h->r[rank - 1] : NULL;
}

int mh_configure(exec_options_t *o)
{
    int rank, size;
    int rc = mx_check(true, &rank, &size);
    if (rc)
        return rc;
    if (rank != 0 || size < 2)
        return EXEC_EINVAL;
    if (o->workers == 0)
        o->workers = (unsigned)size - 1 > EXEC__MAX_WORKERS ? EXEC__MAX_WORKERS
                                                           : (unsigned)size - 1;
    if (o->workers > (unsigned)size - 1)
        return EXEC_EINVAL;
    if (o->window == 0) {
        uint64_t w = 16384ull * o->workers;
        o->window = w > EXEC__MAX_WINDOW ? EXEC__MAX_WINDOW : (unsigned)w;
    }
    if (o->rank_timeout_ms == 0)
        o->rank_timeout_ms = MH_DEFAULT_TIMEOUT_MS;
    if (o->batch == 0)
        o->batch = MH_DEFAULT_BATCH;
    return 0;
}

static unsigned mh_pow2(unsigned n)
{
    unsigned p = 2;
    while (p < n)
        p <<= 1;
    return p;
}

/* The HELLO message for every rank (mode set per rank before sending). */
static int mh_hello(struct mh *h, char **out, size_t *len)
{
    const exec_options_t *o = h->o;
    const char *name = o->plugin->name ? o->plugin->name : "";
    char *row = NULL;
    size_t rowlen = 0;
    if (o->header && mx_header_row(o->header, &row, &rowlen) != 0)
        return EXEC_ENOMEM;
    size_t nl = strlen(name), sl = strlen(o->spec);
    struct mx_hello m = {
        .h.session = h->session,
        .proto = MX_PROTO,
        .rank_workers = o->rank_workers,
        .rank_backend = (uint32_t)o->rank_backend,
        .batch = o->batch,
        .flags = o->flags & EXEC_NO_REPLAY,
        .timeout_ms = o->timeout_ms,
        .grace_ms = o->grace_ms,
        .max_records_per_worker = o->max_records_per_worker,
        .start_timeout_ms = o->start_timeout_ms,
        .max_worker_growth_kb = o->max_worker_growth_kb,
        .beat_ms = o->rank_timeout_ms / 4 ? o->rank_timeout_ms / 4 : 1,
        .name_len = (uint32_t)nl,
        .spec_len = (uint32_t)sl,
        .header_len = (uint32_t)rowlen,
        .header_delim = o->header ? exec_csv_header_delim(o->header) : -1,
        .max_record = o->max_record,
        .max_result = o->max_result,
    };
    *len = sizeof m + nl + sl + rowlen;
    char *p = malloc(*len);
    if (!p) {
        free(row);
        return EXEC_ENOMEM;
    }
    memcpy(p, &m, sizeof m);
    /* Lengths travel in the message, no NUL. */
    memcpy(p + sizeof m, name, nl);         /* NOLINT(bugprone-not-null-terminated-result) */
    memcpy(p + sizeof m + nl, o->spec, sl); /* NOLINT(bugprone-not-null-terminated-result) */
    if (rowlen)
        memcpy(p + sizeof m + nl + sl, row, rowlen);
    free(row);
    *out = p;
    return 0;
}

/* Sends HELLO (msg[0] for active ranks, msg[1] for idle ones) to every
 * rank, waits for each active one's READY. Fails only with EXEC_EINIT (a rank
 * refused or did not answer) or EXEC_EFATAL (MPI failed): the session has
 * happened either way. */
static int mh_greet(struct mh *h, char *msg[2], size_t len, MPI_Request *reqs)
{
    uint64_t deadline = exec__now_ns() + (uint64_t)h->o->start_timeout_ms * 1000000u;
    for (int r = 1; r < h->world; r++)
        if (MPI_Isend(msg[r <= h->nranks ? 0 : 1], (int)len, MPI_BYTE, r, MX_HELLO, h->comm,
                      &reqs[r]) != MPI_SUCCESS)
            reqs[r] = MPI_REQUEST_NULL;

    /* Every active rank answers, or the deadline passes. */
    int answered = 0, refused = 0;
    uint64_t nap = 0;
    int rc = 0;
    while (answered < h->nranks) {
        size_t n;
        int from, tag;
        int got = mh_recv(h, MX_READY, &n, &from, &tag);
        if (got > 0) {
            struct mh_rank *rk = mh_rank_of(h, from);
            struct mx_ready m;
            if (!rk || n != sizeof m || rk->last_heard)
                continue;
            memcpy(&m, h->scratch, sizeof m);
            if (m.h.session != h->session)
                continue;
            m.err[MX_ERRLEN - 1] = '\0';
            m.host[MX_HOSTLEN - 1] = '\0';
            answered++;
            rk->last_heard = exec__now_ns();
            rk->pid = m.pid;
            rk->workers = m.workers;
            memcpy(rk->host, m.host, sizeof rk->host);
            ck_pr_store_64(&rk->figs.startup_ns, m.startup_ns);
            if (m.rc && refused++ == 0) {
                rc = EXEC_EINIT;
                mx_err(h->o->err, h->o->errlen, "rank %d (%s): %s", from, m.host,
                       m.err[0] ? m.err : exec_strerror(m.rc));
            }
            nap = 0;
            continue;
        }
        if (got < 0 || exec__now_ns() >= deadline)
            break;
        nap = mx_backoff(nap, 2000000);
        mx_nap(nap, NULL, 0);
    }
    if (refused > 1) /* the first one's words, and how many more */
        mx_err_more(h->o->err, h->o->errlen, " (and %d more rank%s)", refused - 1,
                    refused > 2 ? "s" : "");
    if (answered < h->nranks && rc == 0) {
        rc = EXEC_EINIT;
        for (int i = 0; i < h->nranks; i++) {
            if (!h->r[i].last_heard) {
                h->r[i].lost = true; /* not waited for at shutdown */
                mx_err(h->o->err, h->o->errlen,
                       "rank %d did not answer within start_timeout_ms (%u ms)", i + 1,
                       h->o->start_timeout_ms);
            }
        }
    }
    /* HELLO to an idle rank completes at once; to a silent one, not: drop it. */
    for (int r = 1; r < h->world; r++) {
        if (reqs[r] == MPI_REQUEST_NULL)
            continue;
        if (!mx_wait(&reqs[r], exec__now_ns() + 100000000u))
            MPI_Request_free(&reqs[r]);
    }
    return rc;
}

/* A session without work (every rank sits it out), for a start that failed
 * before asking the ranks: their exec_mpi_serve() returns all the same. */
static void mh_idle_session(struct mh *h)
{
    if (h->comm == MPI_COMM_NULL && mx_session_comm(&h->comm) != 0)
        return;
    struct mx_hello m = {.h.session = h->session, .proto = MX_PROTO, .mode = MX_IDLE,
                         .header_delim = -1};
    for (int r = 1; r < h->world; r++) {
        MPI_Request req;
        if (MPI_Isend(&m, (int)sizeof m, MPI_BYTE, r, MX_HELLO, h->comm, &req) == MPI_SUCCESS)
            mx_wait(&req, 0);
    }
}

int mh_start(exec_t *ex)
{
    struct mh *h = exec__priv(ex);
    h->ex = ex;
    h->o = exec__opts(ex);
    h->comm = MPI_COMM_NULL;
    h->wake_fd = -1;
    exec__mutex_init(&h->lock);
    pthread_cond_init(&h->cond, NULL);
    if (h->o->err && h->o->errlen)
        h->o->err[0] = '\0';
    int rank;
    int rc = mx_check(true, &rank, &h->world);
    if (rc)
        return rc;
    h->nranks = (int)h->o->workers;
    h->maxb = exec__max_batches(ex);
    unsigned rsz = mh_pow2(h->maxb + 1);
    h->session = (exec__now_ns() << 16) ^ ((uint64_t)getpid() << 40) ^ (uintptr_t)h;
    h->r = calloc((size_t)h->nranks, sizeof *h->r);
    h->all = calloc(h->maxb, sizeof *h->all); /* NOLINT(bugprone-sizeof-expression): pointers */
    h->inbuf = calloc(rsz, sizeof *h->inbuf);
    h->outbuf = calloc(rsz, sizeof *h->outbuf);
    h->unconf = calloc(h->maxb, sizeof *h->unconf); /* NOLINT(bugprone-sizeof-expression) */
    if (!h->r || !h->all || !h->inbuf || !h->outbuf || !h->unconf) {
        mh_idle_session(h);
        return EXEC_ENOMEM;
    }
    ck_ring_init(&h->in, rsz);
    ck_ring_init(&h->out, rsz);
    ck_stack_init(&h->free);
    h->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (h->wake_fd < 0) {
        rc = -errno;
        mh_idle_session(h);
        return rc;
    }
    for (int i = 0; i < h->nranks; i++)
        h->r[i].rank = i + 1;
    /* Whatever may fail for want of memory happens before the session: once
     * the ranks take part, only they (EXEC_EINIT) or MPI can fail it. */
    char *msg[2] = {NULL, NULL};
    size_t len;
    MPI_Request *reqs = calloc((size_t)h->world, sizeof *reqs); /* NOLINT(bugprone-sizeof-expression): MPI_Request is a handle */
    rc = reqs ? mh_hello(h, &msg[0], &len) : EXEC_ENOMEM;
    if (rc == 0 && !(msg[1] = malloc(len)))
        rc = EXEC_ENOMEM;
    if (rc == 0) {
        memcpy(msg[1], msg[0], len);
        ((struct mx_hello *)(void *)msg[0])->mode = MX_ACTIVE;
        ((struct mx_hello *)(void *)msg[1])->mode = MX_IDLE;
        rc = mx_session_comm(&h->comm);
    }
    if (rc == 0) {
        rc = mh_greet(h, msg, len, reqs);
        if (rc)
            mh_shutdown(h);
    } else if (rc == EXEC_ENOMEM) {
        mh_idle_session(h);
    }
    free(reqs);
    free(msg[0]);
    free(msg[1]);
    if (rc)
        return rc;
    uint32_t room = 0;
    for (int i = 0; i < h->nranks; i++) {
        struct mh_rank *rk = &h->r[i];
        rk->depth = h->o->rank_batches ? h->o->rank_batches : 2 * rk->workers + 4;
        room += rk->depth;
    }
    h->room = room;
    h->live = h->nranks;
    rc = exec__spawn(&h->thread, mh_progress_main, h);
    if (rc) {
        mh_shutdown(h);
        return rc;
    }
    h->thread_started = true;
    return 0;
}

static void mh_free_batch(struct mh_batch *mb)
{
    free(mb->b.recs);
    free(mb->b.res);
    free(mb->b.data);
    free(mb->b.rflags);
    free(mb->hdr);
    free(mb->rbuf);
    free(mb);
}

struct exec__batch *mh_batch_get(exec_t *ex, int *err)
{
    struct mh *h = exec__priv(ex);
    const exec_options_t *o = h->o;
    ck_stack_entry_t *e = ck_stack_pop_upmc(&h->free);
    if (e) {
        struct mh_batch *mb = (struct mh_batch *)((char *)e - offsetof(struct mh_batch, link));
        return &mb->b;
    }
    EXEC__ASSERT(h->nall <= h->maxb);
    if (h->nall == h->maxb)
        return NULL;
    struct mh_batch *mb = calloc(1, sizeof *mb);
    if (!mb) {
        *err = EXEC_ENOMEM;
        return NULL;
    }
    size_t dcap = o->max_record > 65536 ? o->max_record : 65536;
    mb->b.cap = o->batch;
    mb->b.recs = malloc(o->batch * sizeof *mb->b.recs);
    mb->b.res = malloc(o->batch * sizeof *mb->b.res);
    mb->b.data = malloc(dcap);
    mb->b.rflags = malloc(o->batch);
    mb->hdr_cap = sizeof(struct mx_batch) + 5 * (size_t)o->batch;
    mb->hdr = malloc(mb->hdr_cap);
    if (!mb->b.recs || !mb->b.res || !mb->b.data || !mb->b.rflags || !mb->hdr) {
        mh_free_batch(mb);
        *err = EXEC_ENOMEM;
        return NULL;
    }
    mb->b.data_cap = dcap;
    mb->req[0] = mb->req[1] = MPI_REQUEST_NULL;
    mb->index = h->nall;
    ck_pr_store_ptr(&h->all[h->nall], mb);
    h->nall++;
    return &mb->b;
}

static void mh_wake(struct mh *h)
{
    uint64_t one = 1;
    ssize_t w = write(h->wake_fd, &one, sizeof one);
    (void)w; /* EAGAIN: already readable */
}

void mh_dispatch(exec_t *ex, struct exec__batch *b)
{
    struct mh *h = exec__priv(ex);
    struct mh_batch *mb = (struct mh_batch *)b;
    exec__lock(&h->lock);
    EXEC__ASSERT(mb->state != MH_QUEUED && mb->state != MH_SENT); /* from the free stack */
    mb->state = MH_QUEUED;
    exec__unlock(&h->lock);
    b->generation = h->generation;
    b->worker = 0;
    ck_pr_inc_32(&h->pending);
    MH_PUT(ck_ring_enqueue_spsc(&h->in, h->inbuf, mb));
    ck_pr_fence_memory();
    if (ck_pr_load_32(&h->sleeping))
        mh_wake(h);
}

bool mh_hungry(exec_t *ex, const struct exec__batch *b)
{
    (void)b;
    struct mh *h = exec__priv(ex);
    return ck_pr_load_32(&h->pending) == 0 && ck_pr_load_32(&h->room) > 0;
}

struct exec__batch *mh_reap(exec_t *ex)
{
    struct mh *h = exec__priv(ex);
    struct mh_batch *mb;
    if (ck_ring_dequeue_spsc(&h->out, h->outbuf, &mb))
        return &mb->b;
    return NULL;
}

void mh_batch_put(exec_t *ex, struct exec__batch *b)
{
    struct mh *h = exec__priv(ex);
    struct mh_batch *mb = (struct mh_batch *)b;
    ck_stack_push_upmc(&h->free, &mb->link);
}

/* A record still here (not sent) is cancelled: the rank will not run it. One
 * that a rank holds runs to its end. */
int mh_cancel(exec_t *ex, struct exec__batch *b, uint32_t i)
{
    struct mh *h = exec__priv(ex);
    struct mh_batch *mb = (struct mh_batch *)b;
    int r = 0;
    exec__lock(&h->lock);
    if (mb->state == MH_QUEUED) {
        __atomic_fetch_or(&b->rflags[i], EXEC__RF_CANCEL, __ATOMIC_RELAXED);
        r = 1;
    }
    exec__unlock(&h->lock);
    return r;
}

int mh_swap_spec(exec_t *ex, const char *spec, uint64_t generation, char *err,
                        size_t errlen)
{
    struct mh *h = exec__priv(ex);
    char *copy = strdup(spec);
    if (!copy)
        return EXEC_ENOMEM;
    exec__lock(&h->lock);
    h->swap = (struct mh_swap){.asked = true, .generation = generation, .spec = copy};
    exec__unlock(&h->lock);
    mh_wake(h);
    exec__lock(&h->lock);
    while (!h->swap.done)
        exec__cond_wait(&h->cond, &h->lock);
    int rc = h->swap.rc;
    if (rc)
        mx_err(err, errlen, "%s", h->swap.err);
    free(h->swap.spec);
    h->swap.spec = NULL;
    h->swap.asked = false;
    exec__unlock(&h->lock);
    return rc;
}

void mh_swap_commit(exec_t *ex)
{
    struct mh *h = exec__priv(ex);
    h->generation = h->swap.generation; /* batches from now on: the ranks' new executors */
}

void mh_worker_stats(exec_t *ex, unsigned i, exec_worker_stats_t *ws)
{
    struct mh *h = exec__priv(ex);
    if (!h->r || i >= (unsigned)h->nranks)
        return;
    struct mh_rank *rk = &h->r[i];
    ws->pid = rk->pid;
    ws->records = ck_pr_load_64(&rk->figs.records);
    ws->batches = ck_pr_load_64(&rk->figs.batches);
    ws->busy_ns = ck_pr_load_64(&rk->figs.busy_ns);
    ws->idle_ns = ck_pr_load_64(&rk->figs.idle_ns);
    ws->startup_ns = ck_pr_load_64(&rk->figs.startup_ns);
    ws->respawns_crash = ck_pr_load_64(&rk->figs.respawns);
    if (ck_pr_load_32(&rk->gone))
        ws->flags |= EXEC_WORKER_GONE;
}

/* exec_destroy() in a child of the host's fork(): MPI and the progress
 * thread are the creator's; only this process's copy of our memory goes, and
 * its copy of the wake-up descriptor. No MPI call is made. */
void mh_forget(exec_t *ex)
{
    struct mh *h = exec__priv(ex);
    if (!h->ex)
        return;
    for (uint32_t i = 0; i < h->nall; i++)
        mh_free_batch(h->all[i]);
    free(h->all);
    free(h->inbuf);
    free(h->outbuf);
    free(h->unconf);
    free(h->r);
    free(h->scratch);
    for (size_t i = 0; i < h->ngraves; i++)
        free(h->graves[i]);
    free(h->graves);
    free(h->swap.spec);
    if (h->wake_fd >= 0)
        close(h->wake_fd);
}

void mh_stop(exec_t *ex)
{
    struct mh *h = exec__priv(ex);
    if (!h->ex)
        return; /* start() never ran */
    if (h->thread_started) {
        ck_pr_store_32(&h->stop, 1);
        mh_wake(h);
        pthread_join(h->thread, NULL);
    }
    if (h->comm != MPI_COMM_NULL)
        MPI_Comm_free(&h->comm);
    for (uint32_t i = 0; i < h->nall; i++)
        mh_free_batch(h->all[i]);
    free(h->all);
    free(h->inbuf);
    free(h->outbuf);
    free(h->unconf);
    free(h->r);
    free(h->scratch);
    for (size_t i = 0; i < h->ngraves; i++)
        free(h->graves[i]);
    free(h->graves);
    free(h->swap.spec);
    if (h->wake_fd >= 0)
        close(h->wake_fd);
    exec__mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
}
