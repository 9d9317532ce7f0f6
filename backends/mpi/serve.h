/*
 * EXEC_MPI on a worker rank, internal: what serve.c (the session and the
 * rank's loop) and rankgen.c (contexts, local executors, the batches they
 * run) share. Everything runs in the thread that called exec_mpi_serve(),
 * which alone calls MPI; a builder thread (no MPI) builds a swap's context
 * and executor while the current one keeps serving.
 */
#ifndef EXEC_MPI_SERVE_H
#define EXEC_MPI_SERVE_H

#include "wire.h"

#include <pthread.h>

/* A context and the executor running on it. */
struct ms_gen {
    uint64_t generation;
    exec_t *ex;
    void *ctx;
    uint32_t batches; /* batches of it not yet done */
    bool retired;     /* a newer one serves: ends once batches is 0 */
    struct ms_gen *next;
};

/* A batch from the host, from BATCH until its RESULT is sent. */
struct ms_slot {
    bool used, sending;
    uint64_t id;
    struct ms_gen *g;
    uint32_t n, done, queued; /* records; with a result; submitted or settled */
    char *in;                 /* the BATCH message */
    size_t in_cap;
    char *data;               /* the BDATA message */
    size_t data_cap;
    exec_record_t *recs;
    size_t recs_cap;
    char *out;                /* RESULT: head, mx_res[n], bytes as they come */
    size_t out_cap, out_len;
    MPI_Request req;
};

/* A swap's context, built off the loop. */
struct ms_builder {
    bool running;
    uint32_t finished;   /* set by the builder thread */
    bool aborted;        /* ABORT came while it built */
    pthread_t tid;
    uint64_t generation;
    char *spec;
    int rc;
    char err[MX_ERRLEN];
    struct ms_gen *g;
    struct ms *s;
    /* A PREPARE that came while another build ran. */
    bool queued;
    uint64_t q_generation;
    char *q_spec;
};

struct ms {
    const exec_plugin_t *plugin;
    MPI_Comm comm;
    uint64_t session;
    struct mx_hello hello;
    exec_csv_header_t *header;
    exec_options_t lo; /* the rank's executors' options */
    struct ms_gen *gens;
    struct ms_slot *slots;
    uint32_t nslots;
    struct ms_builder b;
    char *scratch;
    size_t scratch_cap;
    bool ended;   /* END came */
    int fatal;    /* an MPI call failed: the code exec_mpi_serve returns */
    /* Figures sent to the host. */
    struct mx_figs figs;
    uint64_t retired_busy, retired_idle, retired_respawns;
    MPI_Request beat_req;
    uint64_t next_beat;
};

/* rankgen.c */
/* Builds a context from spec and starts an executor on it. 0, or EXEC_EINIT
 * with err set (ctx_build refused, or the executor did not start). */
int ms_build(struct ms *s, uint64_t generation, const char *spec, struct ms_gen **out, char *err,
             size_t errlen);
/* Ends a generation's executor and frees its context. */
void ms_gen_free(struct ms *s, struct ms_gen *g);
/* Starts building spec on the builder thread (or queues it). */
void ms_prepare(struct ms *s, uint64_t generation, const char *spec);
/* ABORT: drops that generation, built or being built. */
void ms_abort(struct ms *s, uint64_t generation);
/* The builder finished: PREPARED goes out (unless aborted). True if it did. */
bool ms_builder_poll(struct ms *s);
/* Takes a BATCH (in s->scratch, len bytes) and its BDATA. */
void ms_batch(struct ms *s, size_t len);
/* Submits what waits, collects results, sends finished batches. True if
 * anything moved. */
bool ms_work(struct ms *s);
/* Ends generations that were replaced and have nothing left. */
void ms_retire(struct ms *s);
/* Fills s->figs from the executors. */
void ms_update_figs(struct ms *s);

/* serve.c */
int ms_serve(const exec_plugin_t *plugin, char *err, size_t errlen);

#endif /* EXEC_MPI_SERVE_H */
