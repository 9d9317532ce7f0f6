/*
 * Example plugin that is not thread-safe: the same word-table classifier, but
 * it unquotes fields into one scratch buffer kept in its context, as many
 * libraries do with their handles. Two threads would write that buffer at
 * once, so its caps say FORK_SAFE only: EXEC_AUTO runs it on forked workers
 * (each child writes its own copy-on-write copy of the buffer), and
 * EXEC_THREADS refuses it with EXEC_ECAPS.
 */
#include "wordtable.h"

static int scratch_process(void *ctx, void *state, const void *rec, size_t len,
                           exec_writer_t *out)
{
    (void)state;
    struct wt_table *t = ctx;
    if (t->scratch_cap < len + 1) {
        char *nb = realloc(t->scratch, len + 1);
        if (!nb)
            return 3;
        t->scratch = nb;
        t->scratch_cap = len + 1;
    }
    return wt_classify(t, rec, len, t->scratch, out);
}

static int scratch_worker_init(void *ctx, void **state)
{
    *state = NULL;
    return wt_init_faults(ctx);
}

static const exec_ops_t scratch_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_FORK_SAFE,
    .name = "scratch",
    .process = scratch_process,
    .worker_init = scratch_worker_init,
};

__attribute__((visibility("default"))) const exec_plugin_t exec_plugin_v1 = {
    .abi = EXEC_PLUGIN_ABI,
    .name = "scratch",
    .usage = "table=FILE[,column=COL][,id=COL][,work=N][,cost_us=N][,crash=WORD][,hang=WORD]"
             "[,init=ok|fail|crash|hang]  (not thread-safe: runs on fork)",
    .ops = &scratch_ops,
    .ctx_build = wt_build,
    .ctx_free = wt_free,
};
