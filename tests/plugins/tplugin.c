/*
 * Test plugins for test_plugin (the loader): one source, built once per
 * TPLUG_KIND: a good one (its records come back upper-cased), one without
 * the symbol, one of another ABI, one without ops, one whose ops have
 * another version.
 */
#include "executor_records.h"

#include <stdlib.h>
#include <string.h>

#define TPLUG_GOOD 1
#define TPLUG_NOSYM 2
#define TPLUG_ABI 3
#define TPLUG_NOOPS 4
#define TPLUG_OPSVER 5

static int tp_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ctx, (void)ws;
    char *p = exec_write_reserve(out, len);
    if (!p)
        return 1;
    for (size_t i = 0; i < len; i++) {
        char c = ((const char *)rec)[i];
        p[i] = c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
    }
    return 0;
}

static int tp_build(const char *spec, const exec_csv_header_t *h, void **ctx, char *err, size_t n)
{
    (void)h, (void)err, (void)n;
    *ctx = strdup(spec);
    return *ctx ? 0 : 1;
}

static void tp_free(void *ctx) { free(ctx); }

static const exec_ops_t tp_ops = {
    .version = TPLUG_KIND == TPLUG_OPSVER ? EXEC_OPS_VERSION + 1 : EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "tplugin",
    .process = tp_process,
};

#if TPLUG_KIND != TPLUG_NOSYM
__attribute__((visibility("default"))) const exec_plugin_t exec_plugin_v1 = {
    .abi = TPLUG_KIND == TPLUG_ABI ? EXEC_PLUGIN_ABI + 1 : EXEC_PLUGIN_ABI,
    .name = "tplugin",
    .usage = "any text",
    .ops = TPLUG_KIND == TPLUG_NOOPS ? NULL : &tp_ops,
    .ctx_build = tp_build,
    .ctx_free = tp_free,
};
#else
/* Everything a plugin has, under another name. */
__attribute__((visibility("default"))) const exec_plugin_t exec_plugin_v0 = {
    .abi = EXEC_PLUGIN_ABI, .ops = &tp_ops, .ctx_build = tp_build, .ctx_free = tp_free};
#endif
