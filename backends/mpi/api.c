/*
 * libexecutor_mpi's public calls (executor_mpi.h) and the EXEC_MPI backend's
 * table. They share this object on purpose: libexecutor's registry refers to
 * exec__mpi_backend weakly, and a program that calls any of these links this
 * object in (statically too), and with it the backend.
 */
#include "executor_mpi.h"
#include "host.h"
#include "serve.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((visibility("default"))) const struct exec__backend exec__mpi_backend = {
    .version = 1,
    .id = EXEC_MPI,
    .name = "mpi",
    .priv_size = sizeof(struct mh),
    .start = mh_start,
    .batch_get = mh_batch_get,
    .dispatch = mh_dispatch,
    .hungry = mh_hungry,
    .reap = mh_reap,
    .batch_put = mh_batch_put,
    .swap_commit = mh_swap_commit,
    .cancel = mh_cancel,
    .refs = false,
    .worker_stats = mh_worker_stats,
    .stop = mh_stop,
    .configure = mh_configure,
    .swap_spec = mh_swap_spec,
    .forget = mh_forget,
};

int exec_mpi_check(int *rank, int *size)
{
    int r = 0;
    int rc = mx_check(false, &r, size);
    if (rc == 0 && r == 0)
        rc = mx_check(true, NULL, NULL);
    if (rc == 0 && rank)
        *rank = r;
    return rc;
}

int exec_mpi_serve(const exec_plugin_t *plugin, char *err, size_t errlen)
{
    return ms_serve(plugin, err, errlen);
}

int exec_mpi_dismiss(void)
{
    int rank, size;
    int rc = mx_check(true, &rank, &size);
    if (rc)
        return rc;
    if (rank != 0)
        return EXEC_EINVAL;
    MPI_Comm comm;
    rc = mx_session_comm(&comm);
    if (rc)
        return rc;
    struct mx_hello m = {.h.session = exec__now_ns() ^ ((uint64_t)getpid() << 40),
                         .proto = MX_PROTO,
                         .mode = MX_DISMISS,
                         .header_delim = -1};
    for (int r = 1; r < size && rc == 0; r++) {
        MPI_Request req;
        if (MPI_Isend(&m, (int)sizeof m, MPI_BYTE, r, MX_HELLO, comm, &req) != MPI_SUCCESS)
            rc = EXEC_EFATAL;
        else
            mx_wait(&req, 0);
    }
    MPI_Comm_free(&comm);
    return rc;
}

int exec_mpi_barrier(int timeout_ms)
{
    int rc = mx_check(false, NULL, NULL);
    if (rc)
        return rc;
    MPI_Request req;
    if (MPI_Ibarrier(MPI_COMM_WORLD, &req) != MPI_SUCCESS)
        return EXEC_EFATAL;
    uint64_t deadline = exec__now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
    uint64_t nap = 0;
    for (;;) {
        int done = 0;
        if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return EXEC_EFATAL;
        if (done)
            return 0;
        /* A rank that never comes leaves the request pending: MPI cannot
         * cancel a collective, and the job ends by MPI_Abort() anyway. */
        if (timeout_ms >= 0 && exec__now_ns() >= deadline)
            return EXEC_ETIMEDOUT;
        nap = mx_backoff(nap, 1000000);
        mx_nap(nap, NULL, 0);
    }
}
