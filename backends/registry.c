/*
 * The backends core chooses among by id. EXEC_THREADS and EXEC_FORK are built
 * in; EXEC_MPI lives in libexecutor_mpi, which keeps MPI out of this library:
 * it is referenced weakly, so its address is NULL unless a program links that
 * library (its object also holds exec_mpi_serve(), which every EXEC_MPI
 * program calls, so a static link pulls it in). Listed last: a NULL there
 * ends the list.
 */
#include "exec_internal.h"

extern const struct exec__backend exec__threads_backend;
extern const struct exec__backend exec__fork_backend;
extern const struct exec__backend exec__mpi_backend
    __attribute__((weak, visibility("default")));

const struct exec__backend *const exec__backends[] = {
    &exec__threads_backend,
    &exec__fork_backend,
    &exec__mpi_backend,
    NULL,
};
