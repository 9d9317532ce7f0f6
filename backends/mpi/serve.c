/*
 * EXEC_MPI on a worker rank: exec_mpi_serve(). One session: the HELLO from
 * the host, this rank's first context and executor, READY, then the rank's
 * loop (take messages, feed the executors, send results, a heartbeat) until
 * END, then BYE. Waits by polling MPI between short sleeps on the
 * executors' descriptors, never by spinning in MPI.
 */
#include "serve.h"

#include <ck_pr.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MS_NAP_MAX_NS 100000u   /* longest nap with records in flight, and for 10 ms
                                   after the last: the next batch is likely near */
#define MS_IDLE_NAP_NS 1000000u /* ... with none, for a second after the last */
#define MS_REST_NAP_NS 5000000u /* ... with none for longer */
#define MS_RESULT_DELAY_US 50   /* results reach this thread within this (see
                                   options.result_delay_us) */
#define MS_PUSH_NAP_NS 50000u   /* ... while a RESULT is being sent (see progress.c) */

static void ms_reply(struct ms *s, int tag, const void *msg, size_t len)
{
    MPI_Request req;
    if (MPI_Isend(msg, (int)len, MPI_BYTE, 0, tag, s->comm, &req) != MPI_SUCCESS)
        s->fatal = EXEC_EFATAL;
    else
        mx_wait(&req, 0);
}

/* HELLO: the options of this rank's executors, the plugin check, the header. */
static int ms_hello(struct ms *s, size_t len, char **spec, char *err, size_t errlen)
{
    struct mx_hello *m = &s->hello;
    if (len < sizeof *m) {
        mx_err(err, errlen, "a malformed HELLO from rank 0");
        return EXEC_EFATAL;
    }
    memcpy(m, s->scratch, sizeof *m);
    s->session = m->h.session;
    if (m->mode != MX_ACTIVE)
        return 0;
    if (m->proto != MX_PROTO) {
        mx_err(err, errlen, "rank 0 speaks protocol %u, this rank %u: not the same library",
               m->proto, MX_PROTO);
        return EXEC_EVERSION;
    }
    if ((uint64_t)m->name_len + m->spec_len + m->header_len != len - sizeof *m) {
        mx_err(err, errlen, "a malformed HELLO from rank 0");
        return EXEC_EFATAL;
    }
    const char *p = s->scratch + sizeof *m;
    const char *mine = s->plugin->name ? s->plugin->name : "";
    if (strlen(mine) != m->name_len || memcmp(mine, p, m->name_len) != 0) {
        mx_err(err, errlen, "this rank serves plugin '%s', rank 0 runs '%.*s'", mine,
               (int)m->name_len, p);
        return EXEC_EINIT;
    }
    *spec = strndup(p + m->name_len, m->spec_len);
    if (!*spec) {
        mx_err(err, errlen, "out of memory");
        return EXEC_EINIT;
    }
    if (m->header_delim >= 0) {
        int rc = exec_csv_header_create(&s->header, p + m->name_len + m->spec_len,
                                        m->header_len, m->header_delim);
        if (rc) {
            mx_err(err, errlen, "cannot rebuild rank 0's header: %s", exec_strerror(rc));
            return EXEC_EINIT;
        }
    }
    s->lo = (exec_options_t){
        .workers = m->rank_workers,
        .batch = m->batch,
        .flags = m->flags & EXEC_NO_REPLAY,
        .max_record = m->max_record,
        .max_result = m->max_result,
        .timeout_ms = m->timeout_ms,
        .grace_ms = m->grace_ms,
        .max_records_per_worker = m->max_records_per_worker,
        .start_timeout_ms = m->start_timeout_ms,
        .max_worker_growth_kb = m->max_worker_growth_kb,
        .result_delay_us = MS_RESULT_DELAY_US,
    };
    return 0;
}

static void ms_ready(struct ms *s, int rc, const char *err, uint64_t t0)
{
    struct mx_ready m = {.h.session = s->session, .rc = rc, .pid = getpid(),
                         .startup_ns = exec__now_ns() - t0};
    exec_options_t o;
    if (s->gens && exec_get_options(s->gens->ex, &o) == 0)
        m.workers = o.workers;
    gethostname(m.host, sizeof m.host - 1);
    mx_err(m.err, sizeof m.err, "%s", err ? err : "");
    s->figs.startup_ns = m.startup_ns;
    ms_reply(s, MX_READY, &m, sizeof m);
}

static void ms_message(struct ms *s, int tag, size_t len)
{
    struct mx_head h;
    if (tag == MX_BATCH) { /* its BDATA follows whatever it holds */
        ms_batch(s, len);
        return;
    }
    if (len < sizeof h)
        return;
    memcpy(&h, s->scratch, sizeof h);
    if (h.session != s->session)
        return;
    if (tag == MX_END) {
        s->ended = true;
    } else if (tag == MX_PREPARE && len >= sizeof(struct mx_prepare)) {
        struct mx_prepare m;
        memcpy(&m, s->scratch, sizeof m);
        if (m.spec_len != len - sizeof m)
            return;
        s->scratch[len] = '\0'; /* mx_recv_any leaves a byte for it */
        ms_prepare(s, m.generation, s->scratch + sizeof m);
    } else if (tag == MX_ABORT && len == sizeof(struct mx_gen)) {
        struct mx_gen m;
        memcpy(&m, s->scratch, sizeof m);
        ms_abort(s, m.generation);
    }
}

/* The loop: until END (or an MPI failure). */
static void ms_loop(struct ms *s)
{
    uint64_t nap = 0, last_work = exec__now_ns();
    struct mx_beat beat;
    while (!s->ended && !s->fatal) {
        bool did = false;
        for (int k = 0; k < 64 && !s->ended && !s->fatal; k++) {
            size_t len;
            int from, tag;
            int got = mx_recv_any(s->comm, 0, MPI_ANY_TAG, &s->scratch, &s->scratch_cap, &len,
                                  &from, &tag, 0, NULL, NULL);
            if (got < 0) {
                s->fatal = got == EXEC_ENOMEM ? EXEC_ENOMEM : EXEC_EFATAL;
                break;
            }
            if (!got)
                break;
            ms_message(s, tag, len);
            did = true;
        }
        did |= ms_builder_poll(s);
        did |= ms_work(s);
        ms_retire(s);
        uint64_t now = exec__now_ns();
        if (now >= s->next_beat) {
            int done = 1;
            if (s->beat_req != MPI_REQUEST_NULL)
                MPI_Test(&s->beat_req, &done, MPI_STATUS_IGNORE);
            if (done) {
                ms_update_figs(s);
                beat = (struct mx_beat){.h.session = s->session, .figs = s->figs};
                if (MPI_Isend(&beat, (int)sizeof beat, MPI_BYTE, 0, MX_BEAT, s->comm,
                              &s->beat_req) != MPI_SUCCESS)
                    s->fatal = EXEC_EFATAL;
            }
            s->next_beat = now + (uint64_t)s->hello.beat_ms * 1000000u;
        }
        if (did) {
            nap = 0;
            last_work = now;
            continue;
        }
        bool busy = s->b.running, sending = false;
        for (uint32_t k = 0; k < s->nslots; k++) {
            busy |= s->slots[k].used;
            sending |= s->slots[k].sending;
        }
        uint64_t idle = now - last_work;
        uint64_t cap = sending                    ? MS_PUSH_NAP_NS
                       : busy || idle < 10000000u ? MS_NAP_MAX_NS
                       : idle < 1000000000u       ? MS_IDLE_NAP_NS
                                                  : MS_REST_NAP_NS;
        nap = mx_backoff(nap, cap);
        int fds[4];
        int nfds = 0;
        for (struct ms_gen *g = s->gens; g && nfds < 4; g = g->next)
            fds[nfds++] = exec_fd(g->ex);
        mx_nap(nap, fds, nfds);
    }
    if (s->beat_req != MPI_REQUEST_NULL && !mx_wait(&s->beat_req, exec__now_ns() + 1000000000u))
        MPI_Request_free(&s->beat_req);
}

/* END: every executor ends (records in flight are dropped), the results on
 * their way are taken by the host, then BYE. */
static void ms_end(struct ms *s)
{
    if (s->b.running) {
        pthread_join(s->b.tid, NULL);
        if (s->b.g)
            ms_gen_free(s, s->b.g);
        free(s->b.spec);
    }
    free(s->b.q_spec);
    while (s->gens) {
        struct ms_gen *g = s->gens;
        s->gens = g->next;
        ms_gen_free(s, g);
    }
    uint64_t deadline = exec__now_ns() + 30000000000u;
    for (uint32_t k = 0; k < s->nslots; k++) {
        struct ms_slot *sl = &s->slots[k];
        if (sl->req != MPI_REQUEST_NULL && !mx_wait(&sl->req, deadline))
            MPI_Request_free(&sl->req);
    }
    if (!s->fatal) {
        ms_update_figs(s);
        struct mx_beat m = {.h.session = s->session, .figs = s->figs};
        ms_reply(s, MX_BYE, &m, sizeof m);
    }
}

static void ms_free(struct ms *s)
{
    for (uint32_t k = 0; k < s->nslots; k++) {
        free(s->slots[k].in);
        free(s->slots[k].data);
        free(s->slots[k].recs);
        free(s->slots[k].out);
    }
    free(s->slots);
    free(s->scratch);
    exec_csv_header_free(s->header);
    if (s->comm != MPI_COMM_NULL)
        MPI_Comm_free(&s->comm);
}

int ms_serve(const exec_plugin_t *plugin, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!plugin || !plugin->ops || !plugin->ctx_build || !plugin->ctx_free) {
        mx_err(err, errlen, "exec_mpi_serve: a plugin with ops, ctx_build and ctx_free is needed");
        return EXEC_EINVAL;
    }
    int rank;
    int rc = mx_check(false, &rank, NULL);
    if (rc) {
        mx_err(err, errlen, "exec_mpi_serve: MPI is not initialized, or at too low a thread level");
        return rc;
    }
    if (rank == 0) {
        mx_err(err, errlen, "exec_mpi_serve: rank 0 hosts the executor; it does not serve");
        return EXEC_EINVAL;
    }
    struct ms s = {.plugin = plugin, .comm = MPI_COMM_NULL, .beat_req = MPI_REQUEST_NULL};
    rc = mx_session_comm(&s.comm);
    if (rc) {
        mx_err(err, errlen, "exec_mpi_serve: cannot duplicate MPI_COMM_WORLD");
        return rc;
    }
    /* HELLO, waited for without spinning. */
    size_t len = 0;
    int from, tag, got;
    uint64_t nap = 0;
    while ((got = mx_recv_any(s.comm, 0, MX_HELLO, &s.scratch, &s.scratch_cap, &len, &from,
                              &tag, 0, NULL, NULL)) == 0) {
        nap = mx_backoff(nap, MS_IDLE_NAP_NS);
        mx_nap(nap, NULL, 0);
    }
    char *spec = NULL;
    rc = got < 0 ? EXEC_EFATAL : ms_hello(&s, len, &spec, err, errlen);
    if (rc == 0 && s.hello.mode != MX_ACTIVE) {
        free(spec);
        ms_free(&s);
        return s.hello.mode == MX_DISMISS ? EXEC_EOF : 0;
    }
    uint64_t t0 = exec__now_ns();
    if (rc == 0) {
        struct ms_gen *g = NULL;
        rc = ms_build(&s, 0, spec, &g, err, errlen);
        s.gens = g;
    }
    free(spec);
    if (rc != EXEC_EFATAL)
        ms_ready(&s, rc, err, t0);
    if (rc == 0 || rc == EXEC_EINIT || rc == EXEC_EVERSION) {
        ms_loop(&s); /* after a refusal: until the host's END */
        ms_end(&s);
    }
    int fatal = s.fatal;
    ms_free(&s);
    if (rc == 0 && fatal) {
        rc = fatal;
        mx_err(err, errlen, "exec_mpi_serve: %s", fatal == EXEC_ENOMEM ? "out of memory"
                                                                       : "an MPI call failed");
    }
    return rc;
}
