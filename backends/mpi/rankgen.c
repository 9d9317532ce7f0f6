/*
 * EXEC_MPI on a worker rank: contexts and the executors that run them
 * (one per generation: a swap builds the next on a builder thread while the
 * current one serves, and a generation ends once a newer one has started
 * and its last batch is done), and the batches from the host: records
 * submitted to their generation's executor, results gathered into the
 * batch's RESULT message and sent when the batch is complete.
 */
#include "serve.h"

#include <ck_pr.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MS_PENDING INT32_MIN /* a result entry not filled yet */
#define MS_TAKE 256          /* results taken per exec_next_many call */

int ms_build(struct ms *s, uint64_t generation, const char *spec, struct ms_gen **out, char *err,
             size_t errlen)
{
    *out = NULL;
    void *ctx = NULL;
    char why[MX_ERRLEN] = "";
    if (s->plugin->ctx_build(spec, s->header, &ctx, why, sizeof why) != 0) {
        mx_err(err, errlen, "cannot build the context from spec '%s': %s", spec,
               why[0] ? why : "(no reason given)");
        return EXEC_EINIT;
    }
    exec_t *ex = NULL;
    int rc = exec_create(&ex, s->plugin->ops, ctx, (exec_backend_t)s->hello.rank_backend, &s->lo);
    if (rc) {
        s->plugin->ctx_free(ctx);
        mx_err(err, errlen, "its %s executor did not start: %s (%s)",
               exec_backend_name((exec_backend_t)s->hello.rank_backend), exec_strerror(rc),
               exec_err_name(rc));
        return EXEC_EINIT;
    }
    struct ms_gen *g = calloc(1, sizeof *g);
    if (!g) {
        exec_destroy(ex);
        s->plugin->ctx_free(ctx);
        mx_err(err, errlen, "out of memory");
        return EXEC_EINIT;
    }
    g->generation = generation;
    g->ex = ex;
    g->ctx = ctx;
    *out = g;
    return 0;
}

void ms_gen_free(struct ms *s, struct ms_gen *g)
{
    exec_stats_t st;
    if (exec_stats(g->ex, &st) == 0) {
        s->retired_busy += st.busy_ns;
        s->retired_idle += st.idle_ns;
        s->retired_respawns += st.respawns;
    }
    exec_destroy(g->ex);
    s->plugin->ctx_free(g->ctx);
    free(g);
}

void ms_update_figs(struct ms *s)
{
    s->figs.busy_ns = s->retired_busy;
    s->figs.idle_ns = s->retired_idle;
    s->figs.respawns = s->retired_respawns;
    for (struct ms_gen *g = s->gens; g; g = g->next) {
        exec_stats_t st;
        if (exec_stats(g->ex, &st) == 0) {
            s->figs.busy_ns += st.busy_ns;
            s->figs.idle_ns += st.idle_ns;
            s->figs.respawns += st.respawns;
        }
    }
}

/* ------------------------------------------------------------------------- */
/* Swaps                                                                     */
/* ------------------------------------------------------------------------- */

static void *ms_builder_main(void *arg)
{
    struct ms_builder *b = arg;
    b->rc = ms_build(b->s, b->generation, b->spec, &b->g, b->err, sizeof b->err);
    ck_pr_store_32(&b->finished, 1);
    return NULL;
}

static void ms_send_prepared(struct ms *s, uint64_t generation, int rc, const char *err)
{
    struct mx_ready m = {.h.session = s->session, .generation = generation, .rc = rc,
                         .pid = getpid()};
    mx_err(m.err, sizeof m.err, "%s", err);
    MPI_Request req;
    if (MPI_Isend(&m, (int)sizeof m, MPI_BYTE, 0, MX_PREPARED, s->comm, &req) != MPI_SUCCESS)
        s->fatal = EXEC_EFATAL;
    else
        mx_wait(&req, 0);
}

void ms_prepare(struct ms *s, uint64_t generation, const char *spec)
{
    struct ms_builder *b = &s->b;
    char *copy = strdup(spec);
    if (!copy) {
        ms_send_prepared(s, generation, EXEC_EINIT, "out of memory");
        return;
    }
    if (b->running) { /* the host asks again only after an ABORT: one waits */
        free(b->q_spec);
        b->queued = true;
        b->q_generation = generation;
        b->q_spec = copy;
        return;
    }
    *b = (struct ms_builder){.running = true, .generation = generation, .spec = copy, .s = s};
    int rc = exec__spawn(&b->tid, ms_builder_main, b);
    if (rc) {
        b->running = false;
        free(b->spec);
        b->spec = NULL;
        ms_send_prepared(s, generation, EXEC_EINIT, "cannot start a thread to build on");
    }
}

void ms_abort(struct ms *s, uint64_t generation)
{
    struct ms_builder *b = &s->b;
    if (b->running && b->generation == generation)
        b->aborted = true;
    if (b->queued && b->q_generation == generation) {
        b->queued = false;
        free(b->q_spec);
        b->q_spec = NULL;
    }
    /* Built and answered, then refused elsewhere: never used. */
    for (struct ms_gen **pp = &s->gens; *pp; pp = &(*pp)->next) {
        struct ms_gen *g = *pp;
        if (g->generation == generation && g->batches == 0 && g->next == NULL && g != s->gens) {
            *pp = NULL;
            ms_gen_free(s, g);
            break;
        }
    }
}

bool ms_builder_poll(struct ms *s)
{
    struct ms_builder *b = &s->b;
    if (!b->running || !ck_pr_load_32(&b->finished))
        return false;
    pthread_join(b->tid, NULL);
    b->running = false;
    if (b->aborted) {
        if (b->g)
            ms_gen_free(s, b->g);
    } else {
        ms_send_prepared(s, b->generation, b->rc, b->err);
        if (b->g) {
            struct ms_gen **pp = &s->gens;
            while (*pp)
                pp = &(*pp)->next;
            *pp = b->g;
        }
    }
    b->g = NULL;
    free(b->spec);
    b->spec = NULL;
    if (b->queued) {
        char *spec = b->q_spec;
        uint64_t gen = b->q_generation;
        b->queued = false;
        b->q_spec = NULL;
        ms_prepare(s, gen, spec);
        free(spec);
    }
    return true;
}

/* ------------------------------------------------------------------------- */
/* Batches                                                                   */
/* ------------------------------------------------------------------------- */

static struct mx_res *ms_entries(struct ms_slot *sl)
{
    return (struct mx_res *)(void *)(sl->out + sizeof(struct mx_result));
}

static size_t ms_bytes_at(const struct ms_slot *sl)
{
    return sizeof(struct mx_result) + (size_t)sl->n * sizeof(struct mx_res);
}

/* Record i of sl has its outcome (status alone, or a result's bytes too). */
static void ms_put(struct ms_slot *sl, uint32_t i, int status, const exec_result_t *r)
{
    struct mx_res e = {.status = status};
    if (r) {
        e.user_code = r->user_code;
        e.signal = r->signal;
        e.exit_status = r->exit_status;
        e.flags = r->flags;
        if (r->len && (status == 0 || status == EXEC_EUSER)) {
            if (mx_reserve(&sl->out, &sl->out_cap, sl->out_len + r->len) != 0) {
                e = (struct mx_res){.status = EXEC_ENOMEM};
            } else {
                memcpy(sl->out + sl->out_len, r->data, r->len);
                e.off = sl->out_len - ms_bytes_at(sl);
                e.len = (uint32_t)r->len;
                sl->out_len += r->len;
            }
        }
    }
    ms_entries(sl)[i] = e;
    sl->done++;
}

static struct ms_slot *ms_free_slot(struct ms *s)
{
    for (uint32_t i = 0; i < s->nslots; i++)
        if (!s->slots[i].used)
            return &s->slots[i];
    struct ms_slot *p = realloc(s->slots, (s->nslots + 1) * sizeof *p);
    if (!p)
        return NULL;
    s->slots = p;
    memset(&p[s->nslots], 0, sizeof *p);
    p[s->nslots].req = MPI_REQUEST_NULL;
    return &p[s->nslots++];
}

void ms_batch(struct ms *s, size_t len)
{
    struct mx_batch m;
    size_t dmax = s->lo.max_record > 65536 ? s->lo.max_record : 65536;
    if (len < sizeof m) {
        s->fatal = EXEC_EFATAL;
        return;
    }
    memcpy(&m, s->scratch, sizeof m);
    struct ms_slot *sl = ms_free_slot(s);
    if (!sl || m.data_len > dmax || mx_reserve(&sl->data, &sl->data_cap, m.data_len + 1) != 0) {
        s->fatal = EXEC_ENOMEM; /* the data that follows cannot be taken */
        return;
    }
    if (MPI_Recv(sl->data, (int)m.data_len, MPI_BYTE, 0, MX_BDATA, s->comm, MPI_STATUS_IGNORE) !=
        MPI_SUCCESS) {
        s->fatal = EXEC_EFATAL;
        return;
    }
    uint32_t n = m.n;
    if (m.h.session != s->session || n == 0 || n > EXEC__MAX_BATCH ||
        len != sizeof m + 5 * (size_t)n)
        return; /* not the host's: dropped */
    /* The message stays the slot's: lens and flags are read from it. */
    char *t = sl->in;
    size_t tc = sl->in_cap;
    sl->in = s->scratch;
    sl->in_cap = s->scratch_cap;
    s->scratch = t;
    s->scratch_cap = tc;
    if (sl->recs_cap < n) {
        exec_record_t *r = realloc(sl->recs, n * sizeof *r);
        if (!r) {
            s->fatal = EXEC_ENOMEM;
            return;
        }
        sl->recs = r;
        sl->recs_cap = n;
    }
    sl->n = n;
    sl->out_len = ms_bytes_at(sl);
    if (mx_reserve(&sl->out, &sl->out_cap, sl->out_len + 4096) != 0) {
        s->fatal = EXEC_ENOMEM;
        return;
    }
    sl->used = true;
    sl->sending = false;
    sl->id = m.id;
    sl->done = sl->queued = 0;
    uint64_t slot = (uint64_t)(sl - s->slots);
    const char *lens = sl->in + sizeof m;
    uint64_t at = 0;
    bool sane = true;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t l;
        memcpy(&l, lens + 4 * (size_t)i, 4);
        sane &= l <= m.data_len - at;
        if (!sane)
            l = 0;
        sl->recs[i] = (exec_record_t){.data = sl->data + at, .len = l, .tag = slot << 32 | i};
        at += l;
        ms_entries(sl)[i].status = MS_PENDING;
    }
    sl->g = NULL;
    for (struct ms_gen *g = s->gens; g; g = g->next) {
        if (g->generation < m.generation)
            g->retired = true; /* the host has moved on: no more batches for it */
        else if (g->generation == m.generation)
            sl->g = g;
    }
    if (!sane || at != m.data_len || !sl->g) {
        for (uint32_t i = 0; i < n; i++)
            ms_put(sl, i, EXEC_EWORKER, NULL);
        sl->queued = n;
        return;
    }
    sl->g->batches++;
}

/* Submits a slot's records, as many as its executor takes now. False when
 * the executor's window is full. */
static bool ms_submit(struct ms_slot *sl, bool *did)
{
    const uint8_t *flags = (const uint8_t *)sl->in + sizeof(struct mx_batch) + 4 * (size_t)sl->n;
    while (sl->queued < sl->n) {
        uint32_t i = sl->queued, j = i;
        if (flags[i] & EXEC__RF_CANCEL) {
            ms_put(sl, i, EXEC_ECANCELLED, NULL);
            sl->queued++;
            *did = true;
            continue;
        }
        while (j < sl->n && !(flags[j] & EXEC__RF_CANCEL))
            j++;
        size_t acc = 0;
        int rc = exec_try_submit_many(sl->g->ex, sl->recs + i, j - i, &acc);
        sl->queued += (uint32_t)acc;
        *did |= acc > 0;
        if (rc == EXEC_EAGAIN)
            return false;
        if (rc) { /* refused by the rank's executor (EXEC_EFATAL): that record only */
            ms_put(sl, sl->queued, EXEC_EWORKER, NULL);
            sl->queued++;
        }
    }
    return true;
}

static void ms_send_result(struct ms *s, struct ms_slot *sl)
{
    if (sl->out_len > INT_MAX) { /* one MPI message holds at most 2 GiB */
        for (uint32_t i = 0; i < sl->n; i++) {
            struct mx_res *e = &ms_entries(sl)[i];
            if (e->len)
                *e = (struct mx_res){.status = EXEC_ERESULT2BIG};
        }
        sl->out_len = ms_bytes_at(sl);
    }
    s->figs.records += sl->n;
    s->figs.batches++;
    ms_update_figs(s);
    struct mx_result m = {.h.session = s->session, .id = sl->id, .n = sl->n, .figs = s->figs};
    memcpy(sl->out, &m, sizeof m);
    if (MPI_Isend(sl->out, (int)sl->out_len, MPI_BYTE, 0, MX_RESULT, s->comm, &sl->req) !=
        MPI_SUCCESS) {
        s->fatal = EXEC_EFATAL;
        sl->req = MPI_REQUEST_NULL;
    }
    sl->sending = true;
    if (sl->g)
        sl->g->batches--;
}

/* Results of one executor, as many as are ready. */
static bool ms_collect(struct ms *s, struct ms_gen *g)
{
    exec_result_t res[MS_TAKE];
    bool did = false;
    for (;;) {
        size_t got = 0;
        int rc = exec_next_many(g->ex, res, MS_TAKE, &got, 0);
        if (rc == EXEC_EFATAL) {
            /* Its workers are gone: what it held will not come back. */
            for (uint32_t k = 0; k < s->nslots; k++) {
                struct ms_slot *sl = &s->slots[k];
                if (!sl->used || sl->sending || sl->g != g)
                    continue;
                for (uint32_t i = 0; i < sl->queued; i++)
                    if (ms_entries(sl)[i].status == MS_PENDING)
                        ms_put(sl, i, EXEC_EWORKER, NULL);
                for (; sl->queued < sl->n; sl->queued++)
                    ms_put(sl, sl->queued, EXEC_EWORKER, NULL);
            }
            return true;
        }
        if (rc)
            return did;
        for (size_t k = 0; k < got; k++) {
            uint64_t slot = res[k].tag >> 32;
            uint32_t i = (uint32_t)res[k].tag;
            if (slot >= s->nslots)
                continue;
            struct ms_slot *sl = &s->slots[slot];
            if (!sl->used || sl->sending || i >= sl->n ||
                ms_entries(sl)[i].status != MS_PENDING)
                continue;
            ms_put(sl, i, res[k].status, &res[k]);
        }
        did = true;
    }
}

bool ms_work(struct ms *s)
{
    bool did = false, room = true;
    for (uint32_t k = 0; k < s->nslots; k++) {
        struct ms_slot *sl = &s->slots[k];
        if (sl->used && !sl->sending && sl->queued < sl->n && room)
            room = ms_submit(sl, &did);
    }
    for (struct ms_gen *g = s->gens; g; g = g->next)
        did |= ms_collect(s, g);
    for (uint32_t k = 0; k < s->nslots; k++) {
        struct ms_slot *sl = &s->slots[k];
        if (sl->used && !sl->sending && sl->done == sl->n) {
            ms_send_result(s, sl);
            did = true;
        }
        if (sl->used && sl->sending) {
            int done = 1;
            if (sl->req != MPI_REQUEST_NULL &&
                MPI_Test(&sl->req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
                s->fatal = EXEC_EFATAL;
            if (done)
                sl->used = sl->sending = false;
        }
    }
    return did;
}

void ms_retire(struct ms *s)
{
    struct ms_gen **pp = &s->gens;
    while (*pp) {
        struct ms_gen *g = *pp;
        if (g->retired && g->batches == 0) {
            *pp = g->next;
            ms_gen_free(s, g);
        } else {
            pp = &g->next;
        }
    }
}
