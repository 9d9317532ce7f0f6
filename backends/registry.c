/* The backends built into the library; core chooses among them by id. */
#include "exec_internal.h"

extern const struct exec__backend exec__threads_backend;
extern const struct exec__backend exec__fork_backend;

const struct exec__backend *const exec__backends[] = {
    &exec__threads_backend,
    &exec__fork_backend,
    NULL,
};
