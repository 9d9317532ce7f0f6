/* exec_plugin_open()/exec_plugin_close(): a good plugin loads and runs; a
 * missing file, a file that is no shared object, a missing symbol, another
 * ABI, missing ops and another ops version each give their code and say why,
 * and leave nothing loaded. The test plugins are tests/plugins/tplugin.c,
 * built once per kind (TPLUG_DIR). */
#include "suite.h"

#include "executor_records.h"

#include <link.h>
#include <stdio.h>
#include <string.h>

static char so[4096];

static const char *path_of(const char *kind)
{
    snprintf(so, sizeof so, "%s/libtplug_%s.so", TPLUG_DIR, kind);
    return so;
}

/* Is a shared object whose name holds `part` loaded? */
static int seen_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    return info->dlpi_name && strstr(info->dlpi_name, (const char *)arg) ? 1 : 0;
}

static bool loaded(const char *part) { return dl_iterate_phdr(seen_cb, (void *)part) != 0; }

static void test_good(void **state)
{
    (void)state;
    const exec_plugin_t *pl = NULL;
    char err[256] = "x";
    assert_int_equal(exec_plugin_open(&pl, path_of("good"), err, sizeof err), 0);
    assert_non_null(pl);
    assert_string_equal(err, "");
    assert_string_equal(pl->name, "tplugin");
    assert_int_equal(pl->abi, EXEC_PLUGIN_ABI);
    assert_true(loaded("libtplug_good"));
    void *ctx = NULL;
    assert_int_equal(pl->ctx_build("spec", NULL, &ctx, err, sizeof err), 0);
    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, pl->ops, ctx, EXEC_THREADS, &o), 0);
    exec_result_t res;
    assert_int_equal(exec_submit(ex, "abc", 3, 7), 0);
    assert_int_equal(exec_next(ex, &res, 10000), 0);
    assert_int_equal(res.status, 0);
    assert_memory_equal(res.data, "ABC", 3);
    exec_destroy(ex);
    pl->ctx_free(ctx);
    exec_plugin_close(pl);
    assert_false(loaded("libtplug_good"));
    exec_plugin_close(NULL);
}

static void refused(const char *path, int code, const char *says)
{
    const exec_plugin_t *pl = (const exec_plugin_t *)&pl;
    char err[512];
    assert_int_equal(exec_plugin_open(&pl, path, err, sizeof err), code);
    assert_null(pl);
    if (!strstr(err, says))
        print_error("'%s' does not say '%s'\n", err, says);
    assert_non_null(strstr(err, says));
    assert_false(loaded("libtplug_"));
    /* A short buffer, and none. */
    char tiny[8];
    assert_int_equal(exec_plugin_open(&pl, path, tiny, sizeof tiny), code);
    assert_true(strlen(tiny) < sizeof tiny);
    assert_int_equal(exec_plugin_open(&pl, path, NULL, 0), code);
}

static void test_missing_file(void **state)
{
    (void)state;
    refused("/nonexistent/libx.so", EXEC_ENOENT, "cannot load plugin: /nonexistent/libx.so");
    refused(TPLUG_NOT_ELF, EXEC_ENOENT, "cannot load plugin: ");
}

static void test_missing_symbol(void **state)
{
    (void)state;
    refused(path_of("nosym"), EXEC_EINVAL, "not a plugin (no symbol exec_plugin_v1)");
}

static void test_wrong_abi(void **state)
{
    (void)state;
    refused(path_of("abi"), EXEC_EVERSION, "plugin ABI 2, this library speaks 1");
    refused(path_of("opsver"), EXEC_EVERSION, "plugin ops version 2, this library speaks 1");
}

static void test_missing_ops(void **state)
{
    (void)state;
    refused(path_of("noops"), EXEC_ECAPS, "has no ops: a host needs ops with process, ctx_build");
}

static void test_bad_arguments(void **state)
{
    (void)state;
    const exec_plugin_t *pl;
    char err[64];
    assert_int_equal(exec_plugin_open(NULL, path_of("good"), err, sizeof err), EXEC_EINVAL);
    assert_int_equal(exec_plugin_open(&pl, NULL, err, sizeof err), EXEC_EINVAL);
    assert_null(pl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_missing_symbol),
        cmocka_unit_test(test_wrong_abi),
        cmocka_unit_test(test_missing_ops),
        cmocka_unit_test(test_bad_arguments),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
