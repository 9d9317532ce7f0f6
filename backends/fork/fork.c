/* EXEC_FORK: not built yet; exec_create() answers EXEC_ENOTSUP. */
#include "exec_internal.h"

const struct exec__backend exec__fork_backend = {
    .version = 1,
    .id = EXEC_FORK,
    .name = "fork",
};
