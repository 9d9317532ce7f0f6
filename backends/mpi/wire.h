/*
 * EXEC_MPI: what rank 0 (the host) and the worker ranks say to each other,
 * and the helpers both sides use. The backend's files:
 *
 *   api.c       exec_mpi_check/serve/dismiss/barrier and the backend's table
 *   host.c      rank 0: the seam core calls (batches, reap, cancel, swap)
 *   progress.c  rank 0: the progress thread (sends, receives, liveness)
 *   serve.c     worker ranks: the rank's loop
 *   rankgen.c   worker ranks: contexts and the executor of each generation
 *   wire.c      both sides: these messages, sent and checked
 *
 * Every message is a struct mx_head then its body, in MPI_BYTE on a
 * communicator duplicated from MPI_COMM_WORLD per session (one executor, or
 * one exec_mpi_dismiss()). Ranks share one ABI (a homogeneous cluster): the
 * structs go as they are. Nothing a rank sends is trusted blindly: the host
 * checks every index, count and length.
 */
#ifndef EXEC_MPI_WIRE_H
#define EXEC_MPI_WIRE_H

#include "exec_internal.h"
#include "executor_records.h" /* the plugin and the CSV header */

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MX_PROTO 1u
#define MX_ERRLEN 256
#define MX_HOSTLEN 64

/* MPI tags. host -> rank: HELLO, BATCH (+ BDATA), PREPARE, ABORT, END;
 * rank -> host: READY, RESULT, PREPARED, BEAT, BYE. */
enum {
    MX_HELLO = 1,
    MX_READY,
    MX_BATCH,
    MX_BDATA,
    MX_RESULT,
    MX_PREPARE,
    MX_PREPARED,
    MX_ABORT,
    MX_BEAT,
    MX_END,
    MX_BYE,
};

/* HELLO modes: serve this executor, sit this one out (more ranks than
 * workers), or return EXEC_EOF from exec_mpi_serve (exec_mpi_dismiss). */
enum { MX_ACTIVE = 1, MX_IDLE, MX_DISMISS };

struct mx_head {
    uint64_t session; /* the host's, from HELLO on: stale messages are dropped */
};

/* A rank's figures (in RESULT, BEAT and BYE), cumulative since it started. */
struct mx_figs {
    uint64_t records, batches, busy_ns, idle_ns, startup_ns, respawns;
};

/* HELLO: then name_len + spec_len + header_len bytes. */
struct mx_hello {
    struct mx_head h;
    uint32_t proto, mode;
    uint32_t rank_workers, rank_backend, batch, flags;
    uint32_t timeout_ms, grace_ms, max_records_per_worker, start_timeout_ms;
    uint32_t max_worker_growth_kb, beat_ms;
    uint32_t name_len, spec_len, header_len;
    int32_t header_delim; /* -1: no header */
    uint64_t max_record, max_result;
};

/* READY (after HELLO) and PREPARED (after PREPARE). */
struct mx_ready {
    struct mx_head h;
    uint64_t generation;
    int32_t rc;
    int32_t pid;
    uint32_t workers;
    uint32_t pad;
    uint64_t startup_ns;
    char host[MX_HOSTLEN];
    char err[MX_ERRLEN];
};

/* BATCH: then uint32_t lens[n] and uint8_t flags[n] (EXEC__RF_CANCEL); the
 * records' bytes follow as one BDATA message of data_len bytes. */
struct mx_batch {
    struct mx_head h;
    uint64_t id; /* the host's batch index | send count << 32 */
    uint64_t generation;
    uint32_t n;
    uint32_t pad;
    uint64_t data_len;
};

/* RESULT: then struct mx_res[n], then the result bytes (in the order the
 * records finished: each entry says where its bytes are). */
struct mx_result {
    struct mx_head h;
    uint64_t id;
    uint32_t n;
    uint32_t pad;
    struct mx_figs figs;
};

struct mx_res {
    int32_t status, user_code, signal, exit_status;
    uint32_t len, flags;
    uint64_t off; /* from the first result byte */
};

/* PREPARE: then spec_len bytes. ABORT: the generation alone. */
struct mx_prepare {
    struct mx_head h;
    uint64_t generation;
    uint64_t spec_len;
};

struct mx_gen {
    struct mx_head h;
    uint64_t generation;
};

/* BEAT and BYE. */
struct mx_beat {
    struct mx_head h;
    struct mx_figs figs;
};

/* ------------------------------------------------------------------------- */
/* wire.c                                                                    */
/* ------------------------------------------------------------------------- */

/* MPI is initialized, not finalized, and at a thread level this role needs:
 * rank 0 (host) MPI_THREAD_SERIALIZED, a worker rank SERIALIZED or FUNNELED
 * from the main thread. 0 or EXEC_ESTATE; rank and size may be NULL. */
int mx_check(bool host, int *rank, int *size);

/* Starts a session: duplicates MPI_COMM_WORLD without blocking (every rank
 * calls it, the host in exec_create or exec_mpi_dismiss, the others in
 * exec_mpi_serve) and waits for it by polling with short sleeps, not by
 * spinning. Errors come back as return codes on the new communicator. */
int mx_session_comm(MPI_Comm *out);

/* Sleeps up to ns, or until fd (if >= 0) polls readable. */
void mx_nap(uint64_t ns, const int *fds, int nfds);

/* The next backoff step: 20 us doubling to max_ns. */
static inline uint64_t mx_backoff(uint64_t cur, uint64_t max_ns)
{
    uint64_t n = cur ? cur * 2 : 20000;
    return n > max_ns ? max_ns : n;
}

/* Waits for a request with short sleeps; false if deadline_ns (monotonic,
 * 0: none) passed first (the request is still pending then). */
bool mx_wait(MPI_Request *req, uint64_t deadline_ns);

/* A received message: buf grown to hold it (*cap), its size in *len, its
 * source and tag. 1 when one was taken, 0 when none waits, < 0 on an error.
 * A message past the transport's eager limit arrives in parts once matched:
 * if it is not whole within limit_ns (0: no limit; its sender died), the
 * receive is dropped and EXEC_ETIMEDOUT returned with *from set: *buf may
 * still be written by MPI then, so the caller must neither reuse nor free it
 * before MPI is finalized or the communicator freed (see mh.graves).
 * limit_ns applies to senders for which quick(arg, source) is false; for the
 * others (taken for dead already) a millisecond. */
int mx_recv_any(MPI_Comm comm, int source, int tag, char **buf, size_t *cap, size_t *len,
                int *from, int *tag_out, uint64_t limit_ns, bool (*quick)(void *, int), void *arg);

/* Grows a buffer to hold need bytes; 0 or EXEC_ENOMEM. */
int mx_reserve(char **buf, size_t *cap, size_t need);

/* Writes "fmt..." into err (if any), NUL-terminated. */
void mx_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same, appended to what err holds. */
void mx_err_more(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The CSV header as one row that exec_csv_header_create() reads back into
 * the same names (quoted where needed). 0 or EXEC_ENOMEM; *row malloc'd. */
int mx_header_row(const exec_csv_header_t *h, char **row, size_t *len);

#endif /* EXEC_MPI_WIRE_H */
