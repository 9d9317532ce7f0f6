/*
 * Example plugin: the word-table classifier, thread-safe. The table is only
 * read while records run; each worker unquotes fields into a scratch buffer of
 * its own (worker_state), so process() may run on many threads at once.
 *
 *     executor-map --plugin ./libwordtable.so --spec table=words.txt,column=text data.csv
 */
#include "wordtable.h"

struct wt_worker {
    char *buf;
    size_t cap;
};

static int wordtable_worker_init(void *ctx, void **state)
{
    if (wt_init_faults(ctx) != 0)
        return -1;
    struct wt_worker *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    *state = w;
    return 0;
}

static void wordtable_worker_fini(void *ctx, void *state)
{
    (void)ctx;
    struct wt_worker *w = state;
    if (w)
        free(w->buf);
    free(w);
}

static int wordtable_process(void *ctx, void *state, const void *rec, size_t len,
                             exec_writer_t *out)
{
    struct wt_worker *w = state;
    if (w->cap < len + 1) {
        char *nb = realloc(w->buf, len + 1);
        if (!nb)
            return 3;
        w->buf = nb;
        w->cap = len + 1;
    }
    return wt_classify(ctx, rec, len, w->buf, out);
}

static const exec_ops_t wordtable_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "wordtable",
    .process = wordtable_process,
    .worker_init = wordtable_worker_init,
    .worker_fini = wordtable_worker_fini,
};

__attribute__((visibility("default"))) const exec_plugin_t exec_plugin_v1 = {
    .abi = EXEC_PLUGIN_ABI,
    .name = "wordtable",
    .usage = "table=FILE[,column=COL][,id=COL][,work=N][,cost_us=N][,crash=WORD][,hang=WORD]"
             "[,init=ok|fail|crash|hang]  (COL: header name or 0-based index)",
    .ops = &wordtable_ops,
    .ctx_build = wt_build,
    .ctx_free = wt_free,
};
