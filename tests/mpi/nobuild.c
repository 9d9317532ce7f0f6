/*
 * A plugin without ctx_build, for map_messages.sh: it has ops and ctx_free,
 * but nothing builds its classifier from a spec, so executor-map refuses it
 * (with --backend mpi: once, on every rank).
 */
#include "executor_records.h"

static int nobuild_process(void *ctx, void *wstate, const void *rec, size_t len,
                           exec_writer_t *out)
{
    (void)ctx;
    (void)wstate;
    return exec_write(out, rec, len);
}

static const exec_ops_t nobuild_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "nobuild",
    .process = nobuild_process,
};

static void nobuild_free(void *ctx)
{
    (void)ctx;
}

__attribute__((visibility("default"))) const exec_plugin_t exec_plugin_v1 = {
    .abi = EXEC_PLUGIN_ABI,
    .name = "nobuild",
    .ops = &nobuild_ops,
    .ctx_free = nobuild_free,
};
