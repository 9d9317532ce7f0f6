/* EXEC_FORK and EXEC_AUTO over real third-party state that is not
 * thread-safe: one libmagic cookie in the context, used by every worker. The
 * library is loaded at run time (libmagic.so.1); without it the test skips. */
#include "forkutil.h"

#include <dlfcn.h>

#define MAGIC_NONE 0
#define MAGIC_MIME_TYPE 0x10

struct magic_api {
    void *so;
    void *(*open)(int);
    int (*load)(void *, const char *);
    const char *(*buffer)(void *, const void *, size_t);
    void (*close)(void *);
};

struct mctx {
    struct magic_api *api;
    void *cookie;
};

static int magic_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    struct mctx *c = ctx;
    const char *t = c->api->buffer(c->cookie, rec, len);
    if (!t)
        return 1;
    return exec_write(out, t, strlen(t));
}

static const exec_ops_t magic_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_FORK_SAFE, /* not THREAD_SAFE: a cookie is not shareable */
    .process = magic_process,
};

#define S(lit) {lit, sizeof(lit) - 1}
static const struct {
    const char *p;
    size_t n;
} samples[] = {
    S("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"),
    S("\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x06\0\0\0"),
    S("GIF89a\x10\0\x10\0\x80\0\0"),
    S("#!/bin/sh\necho hello\n"),
    S("<?xml version=\"1.0\"?>\n<a><b/></a>\n"),
    S("PK\x03\x04\x14\0\0\0\x08\0"),
    S("plain words in a line of text\n"),
    S("\x7f" "ELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0"),
};
#define NSAMPLES (sizeof samples / sizeof samples[0])

static void run_magic(exec_backend_t be)
{
    struct magic_api api;
    api.so = dlopen("libmagic.so.1", RTLD_NOW);
    if (!api.so) {
        skip();
        return;
    }
    *(void **)&api.open = dlsym(api.so, "magic_open");
    *(void **)&api.load = dlsym(api.so, "magic_load");
    *(void **)&api.buffer = dlsym(api.so, "magic_buffer");
    *(void **)&api.close = dlsym(api.so, "magic_close");
    assert_true(api.open && api.load && api.buffer && api.close);
    struct mctx c = {.api = &api, .cookie = api.open(MAGIC_MIME_TYPE)};
    assert_non_null(c.cookie);
    assert_int_equal(api.load(c.cookie, NULL), 0);

    /* What one thread gets, sample by sample. */
    char want[NSAMPLES][128];
    for (size_t i = 0; i < NSAMPLES; i++) {
        const char *t = api.buffer(c.cookie, samples[i].p, samples[i].n);
        assert_non_null(t);
        snprintf(want[i], sizeof want[i], "%s", t);
    }

    exec_options_t o = {.workers = 2};
    exec_t *ex;
    assert_int_equal(exec_create(&ex, &magic_ops, &c, be, &o), 0);
    assert_int_equal(exec_backend(ex), EXEC_FORK);
    const uint64_t n = fu_sanitized() ? 2000 : 20000;
    uint64_t got = 0;
    exec_result_t res;
    for (uint64_t i = 0; i < n; i++) {
        size_t k = i % NSAMPLES;
        int rc;
        while ((rc = exec_try_submit(ex, samples[k].p, samples[k].n, i)) == EXEC_EAGAIN) {
            assert_int_equal(exec_next(ex, &res, 20000), 0);
            got++;
            assert_int_equal(res.status, 0);
            assert_int_equal(res.len, strlen(want[res.tag % NSAMPLES]));
            assert_memory_equal(res.data, want[res.tag % NSAMPLES], res.len);
        }
        assert_int_equal(rc, 0);
    }
    assert_int_equal(exec_finish(ex), 0);
    while (exec_next(ex, &res, 20000) == 0) {
        got++;
        assert_int_equal(res.status, 0);
        assert_int_equal(res.len, strlen(want[res.tag % NSAMPLES]));
        assert_memory_equal(res.data, want[res.tag % NSAMPLES], res.len);
    }
    assert_int_equal(got, n);
    exec_destroy(ex);
    api.close(c.cookie);
    dlclose(api.so);
}

static void test_magic_fork(void **state)
{
    (void)state;
    run_magic(EXEC_FORK);
}

static void test_magic_auto(void **state)
{
    (void)state;
    run_magic(EXEC_AUTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_magic_fork),
        cmocka_unit_test(test_magic_auto),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
