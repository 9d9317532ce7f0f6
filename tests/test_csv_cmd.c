/*
 * The executor-map command (programs/) and the seed example, run as programs: with both
 * example plugins on every backend, ordered and not, the output rows are the
 * same multiset as a sequential run of the plugin done here (dlopen, ctx_build,
 * process() in a loop); errors exit 1 (or 2 for usage) with a clear message.
 * A backend not built (EXEC_FORK answers EXEC_ENOTSUP until it lands) must
 * give its own clear error; the test checks that instead of the rows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "executor_records.h"
#include "exec_internal.h"
#include "suite.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static char bin[PATH_MAX];   /* build dir's examples/ (the plugins, seed) */
static char progs[PATH_MAX]; /* build dir's programs/ (executor-map) */
static char data[PATH_MAX]; /* tests/data/ */
static char input[64], out_path[64], err_path[64], bad_path[64], hdr_path[64];
static bool fork_built;
static bool have_examples; /* built unless EXEC_BUILD_EXAMPLES or _PROGRAMS=OFF */

/* ------------------------------------------------------------------------- */

static char *slurp(const char *p, size_t *len)
{
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    char *b = malloc((size_t)st.st_size + 1);
    assert_non_null(b);
    assert_int_equal(read(fd, b, (size_t)st.st_size), st.st_size);
    b[st.st_size] = '\0';
    close(fd);
    if (len)
        *len = (size_t)st.st_size;
    return b;
}

/* What a test runs executor-map with: the program, a plugin of the examples'
 * build, and a word-table spec over tests/data/words.txt with these columns. */
struct map_cmd {
    char prog[PATH_MAX + 16], so[PATH_MAX + 32], spec[PATH_MAX + 64];
};

static void map_cmd(struct map_cmd *c, const char *plugin, const char *columns)
{
    snprintf(c->prog, sizeof c->prog, "%s/executor-map", progs);
    snprintf(c->so, sizeof c->so, "%s/%s", bin, plugin);
    snprintf(c->spec, sizeof c->spec, "table=%s/words.txt,%s", data, columns);
}

/* Runs argv with stdout and stderr in files; returns the exit status. */
static int run(char *const argv[])
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, argv[0], &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st)) {
        char *e = slurp(err_path, NULL);
        fail_msg("%s died with signal %d; stderr was: %s", argv[0], WTERMSIG(st), e);
    }
    return WEXITSTATUS(st);
}

static bool err_has(const char *s)
{
    char *e = slurp(err_path, NULL);
    bool r = strstr(e, s) != NULL;
    if (!r) {
        fputs("stderr was: ", stderr);
        fputs(e, stderr);
    }
    free(e);
    return r;
}

/* The records of a CSV text, sorted (or not), as one NUL-separated list. */
struct rows {
    char **r;
    size_t n;
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static struct rows csv_rows(const char *p, bool sort)
{
    exec_source_t *s;
    assert_int_equal(exec_source_open(&s, p, NULL), 0);
    struct rows rs = {0};
    size_t cap = 0;
    const void *rec;
    size_t len;
    while (exec_source_next(s, &rec, &len, NULL) == 1) {
        if (rs.n == cap) {
            cap = cap ? cap * 2 : 1024;
            rs.r = realloc(rs.r, cap * sizeof *rs.r);
        }
        rs.r[rs.n] = strndup(rec, len);
        rs.n++;
    }
    exec_source_close(s);
    if (sort)
        qsort(rs.r, rs.n, sizeof *rs.r, cmp_str);
    return rs;
}

static void rows_free(struct rows *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        free(rs->r[i]);
    free(rs->r);
}

static void rows_equal(const struct rows *a, const struct rows *b, const char *what)
{
    if (a->n != b->n)
        fail_msg("%s: %zu rows, want %zu", what, a->n, b->n);
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->r[i], b->r[i]) != 0)
            fail_msg("%s: row %zu is '%s', want '%s'", what, i, a->r[i], b->r[i]);
}

/* ------------------------------------------------------------------------- */
/* The sequential reference: the plugin's process() in a plain loop.          */
/* ------------------------------------------------------------------------- */

/* Writes the plugin's rows for the input, in input order, to out_path. */
static void sequential(const char *plugin, const char *spec)
{
    char so[PATH_MAX + 64];
    snprintf(so, sizeof so, "%s/%s", bin, plugin);
    void *dl = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    assert_non_null(dl);
    const exec_plugin_t *pl = dlsym(dl, EXEC_PLUGIN_SYMBOL);
    assert_non_null(pl);
    assert_int_equal(pl->abi, EXEC_PLUGIN_ABI);
    exec_source_options_t o = {.flags = EXEC_SOURCE_HEADER};
    exec_source_t *s;
    assert_int_equal(exec_source_open(&s, input, &o), 0);
    const void *h;
    size_t hl;
    assert_int_equal(exec_source_header(s, &h, &hl), 0);
    exec_csv_header_t *hdr;
    assert_int_equal(exec_csv_header_create(&hdr, h, hl, 0), 0);
    void *ctx;
    char err[256];
    assert_int_equal(pl->ctx_build(spec, hdr, &ctx, err, sizeof err), 0);
    void *ws = NULL;
    if (pl->ops->worker_init)
        assert_int_equal(pl->ops->worker_init(ctx, &ws), 0);
    exec_writer_t *w = exec_writer_new((size_t)1 << 20);
    assert_non_null(w);
    FILE *f = fopen(out_path, "we");
    assert_non_null(f);
    const void *rec;
    size_t len;
    while (exec_source_next(s, &rec, &len, NULL) == 1) {
        size_t off, n;
        assert_int_equal(exec_writer_run(w, pl->ops, ctx, ws, rec, len, &off, &n, NULL), 0);
        fwrite((const char *)exec_writer_data(w) + off, 1, n, f);
        fputc('\n', f);
        exec_writer_clear(w);
    }
    fclose(f);
    exec_writer_free(w);
    if (pl->ops->worker_fini)
        pl->ops->worker_fini(ctx, ws);
    pl->ctx_free(ctx);
    exec_csv_header_free(hdr);
    exec_source_close(s);
    dlclose(dl);
}

/* ------------------------------------------------------------------------- */

static int noop(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ctx, (void)ws, (void)rec, (void)len, (void)out;
    return 0;
}

static void gen_input(void)
{
    static const char *const w[] = {"apple", "cat", "saw", "river", "pear", "owl",
                                    "Hammer", "plum", "blue", "DOG", "drill", "stone"};
    FILE *f = fopen(input, "we");
    assert_non_null(f);
    fputs("id,text,extra\r\n", f);
    uint64_t s = 12345;
    for (unsigned i = 0; i < 20000; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        if (s % 50 == 0)
            fprintf(f, "\"id %u, \"\"q\"\"\",", i); /* an id that must be quoted */
        else
            fprintf(f, "%u,", i);
        bool quoted = s % 20 < 2;
        fputs(quoted ? "\"" : "", f);
        for (unsigned k = 0; k < 1 + (s >> 8) % 6; k++)
            fprintf(f, "%s%s", k ? (quoted && k == 2 ? ",\n " : " ") : "",
                    w[(s >> (12 + 2 * k)) % 12]);
        fputs(quoted ? "\"" : "", f);
        fprintf(f, ",%u%s", i * 7, i % 3 ? "\n" : "\r\n");
    }
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    const char *dir = dirname(self);
    snprintf(bin, sizeof bin, "%s/../examples", dir);
    snprintf(progs, sizeof progs, "%s/../programs", dir);
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s", __FILE__);
    snprintf(data, sizeof data, "%s/data", dirname(src));
    char probe_path[PATH_MAX + 16];
    snprintf(probe_path, sizeof probe_path, "%s/executor-map", progs);
    have_examples = access(probe_path, X_OK) == 0;
    snprintf(probe_path, sizeof probe_path, "%s/seed", bin);
    have_examples = have_examples && access(probe_path, X_OK) == 0;
    int pid = (int)getpid();
    snprintf(input, sizeof input, "/tmp/exec-cmd-in-%d.csv", pid);
    snprintf(out_path, sizeof out_path, "/tmp/exec-cmd-out-%d", pid);
    snprintf(err_path, sizeof err_path, "/tmp/exec-cmd-err-%d", pid);
    snprintf(bad_path, sizeof bad_path, "/tmp/exec-cmd-bad-%d.csv", pid);
    snprintf(hdr_path, sizeof hdr_path, "/tmp/exec-cmd-hdr-%d.csv", pid);
    gen_input();
    static const exec_ops_t probe = {.version = EXEC_OPS_VERSION, .caps = EXEC_CAP_FORK_SAFE,
                                     .process = noop};
    exec_t *ex;
    exec_options_t o = {.workers = 1};
    int rc = exec_create(&ex, &probe, NULL, EXEC_FORK, &o);
    fork_built = rc != EXEC_ENOTSUP;
    if (rc == 0)
        exec_destroy(ex);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(input);
    unlink(out_path);
    unlink(err_path);
    unlink(bad_path);
    unlink(hdr_path);
    return 0;
}

static void test_seed(void **state)
{
    (void)state;
    if (!have_examples)
        skip();
    char prog[PATH_MAX + 8], file[PATH_MAX + 16];
    snprintf(prog, sizeof prog, "%s/seed", bin);
    snprintf(file, sizeof file, "%s/seed.csv", data);
    char *argv[] = {prog, file, NULL};
    assert_int_equal(run(argv), 0);
    char *out = slurp(out_path, NULL);
    assert_string_equal(out, "1,fruit\n2,animal\n3,tool\n4,unknown\n5,fruit\n");
    free(out);
}

/* Every plugin x backend x order x workers against the sequential rows. */
static void test_plugins_all_backends(void **state)
{
    (void)state;
    if (!have_examples)
        skip();
    static const char *const plugins[] = {"libwordtable.so", "libscratch.so"};
    static const char *const backends[] = {"auto", "threads", "fork"};
    char spec[PATH_MAX + 64];
    snprintf(spec, sizeof spec, "table=%s/words.txt,column=text,id=id", data);
    char prog[PATH_MAX + 16];
    snprintf(prog, sizeof prog, "%s/executor-map", progs);
    for (size_t p = 0; p < 2; p++) {
        sequential(plugins[p], spec);
        struct rows want_ordered = csv_rows(out_path, false);
        struct rows want = csv_rows(out_path, true);
        assert_int_equal(want.n, 20000);
        char so[PATH_MAX + 32];
        snprintf(so, sizeof so, "%s/%s", bin, plugins[p]);
        bool thread_safe = p == 0;
        for (size_t b = 0; b < 3; b++) {
            for (int ordered = 0; ordered < 2; ordered++) {
                for (int workers = 1; workers <= 3; workers += 2) {
                    char wn[8];
                    snprintf(wn, sizeof wn, "%d", workers);
                    char *argv[] = {prog,  "--plugin", so, "--spec", spec, "--backend",
                                    (char *)backends[b], "--workers", wn, "--quiet",
                                    ordered ? "--ordered" : input, ordered ? input : NULL,
                                    NULL};
                    int rc = run(argv);
                    char what[128];
                    snprintf(what, sizeof what, "%s --backend %s --workers %d%s", plugins[p],
                             backends[b], workers, ordered ? " --ordered" : "");
                    bool on_fork = b == 2 || (b == 0 && !thread_safe);
                    if (b == 1 && !thread_safe) {
                        assert_int_equal(rc, 1);
                        assert_true(err_has("is not thread-safe"));
                        continue;
                    }
                    if (on_fork && !fork_built) {
                        if (rc != 1 || !err_has("does not have (EXEC_ENOTSUP)"))
                            fail_msg("%s: exit %d without the fork backend", what, rc);
                        continue;
                    }
                    if (rc != 0) {
                        err_has("");
                        fail_msg("%s: exit %d", what, rc);
                    }
                    struct rows got = csv_rows(out_path, !ordered);
                    rows_equal(&got, ordered ? &want_ordered : &want, what);
                    rows_free(&got);
                }
            }
        }
        rows_free(&want);
        rows_free(&want_ordered);
    }
}

/* AUTO picks fork for the plugin that is not thread-safe, threads for the other. */
static void test_auto_choice(void **state)
{
    (void)state;
    if (!have_examples)
        skip();
    struct map_cmd c;
    map_cmd(&c, "libwordtable.so", "column=text,id=id");
    char *ts[] = {c.prog, "--plugin", c.so, "--spec", c.spec, "--stats", input, NULL};
    assert_int_equal(run(ts), 0);
    assert_true(err_has("backend threads"));
    snprintf(c.so, sizeof c.so, "%s/libscratch.so", bin);
    char *fs[] = {c.prog, "--plugin", c.so, "--spec", c.spec, "--stats", input, NULL};
    if (!fork_built) {
        assert_int_equal(run(fs), 1);
        assert_true(err_has("needs the fork backend"));
        return;
    }
    assert_int_equal(run(fs), 0);
    assert_true(err_has("backend fork"));
    assert_true(err_has("20000 records, 20000 ok"));
}

/* Other formats: plain lines (a quote is data), length-prefixed records. */
static void test_formats(void **state)
{
    (void)state;
    if (!have_examples)
        skip();
    struct map_cmd c;
    map_cmd(&c, "libwordtable.so", "column=1,id=0");
    FILE *f = fopen(bad_path, "we");
    fputs("1,apple pie\n2,a cat\n", f);
    fclose(f);
    char *lines[] = {c.prog, "--plugin", c.so, "--spec", c.spec, "--format", "lines", "--ordered",
                     bad_path, NULL};
    assert_int_equal(run(lines), 0);
    char *out = slurp(out_path, NULL);
    assert_string_equal(out, "1,fruit\n2,animal\n");
    free(out);
    f = fopen(bad_path, "we");
    fwrite("\x07\0\0\0" "7,\"owl\"" "\x08\0\0\0" "8,drill", 1, 4 + 7 + 4 + 7, f);
    fclose(f);
    char *len32[] = {c.prog, "--plugin", c.so, "--spec", c.spec, "--format", "len32le", "--ordered",
                     bad_path, NULL};
    assert_int_equal(run(len32), 1); /* the second length is one too long: truncated */
    assert_true(err_has("record 2 (byte 11): input ends inside a length-prefixed record"));
    out = slurp(out_path, NULL);
    assert_string_equal(out, "7,animal\n");
    free(out);
    char *bad_format[] = {c.prog,   "--plugin", c.so,     "--spec", c.spec,
                          "--format", "xml",      bad_path, NULL};
    assert_int_equal(run(bad_format), 2);
}

static void test_errors(void **state)
{
    (void)state;
    if (!have_examples)
        skip();
    struct map_cmd c;
    map_cmd(&c, "libwordtable.so", "column=text,id=id");

    char *help[] = {c.prog, "--help", NULL};
    assert_int_equal(run(help), 0);
    char *out = slurp(out_path, NULL);
    assert_non_null(strstr(out, "usage: executor-map"));
    free(out);
    char *help2[] = {c.prog, "--plugin", c.so, "--help", NULL};
    assert_int_equal(run(help2), 0);
    out = slurp(out_path, NULL);
    assert_non_null(strstr(out, "plugin wordtable: spec table=FILE"));
    free(out);

    char *unknown[] = {c.prog, "--frobnicate", NULL};
    assert_int_equal(run(unknown), 2);
    assert_true(err_has("unknown option"));
    char *no_spec[] = {c.prog, "--plugin", c.so, input, NULL};
    assert_int_equal(run(no_spec), 2);
    assert_true(err_has("--spec are required"));
    char *bad_backend[] = {c.prog,    "--plugin", c.so,  "--spec", c.spec,
                           "--backend", "gpu",      input, NULL};
    assert_int_equal(run(bad_backend), 2);
    assert_true(err_has("--backend"));
    char *bad_workers[] = {c.prog,    "--plugin", c.so,  "--spec", c.spec,
                           "--workers", "0",        input, NULL};
    assert_int_equal(run(bad_workers), 2);
    char *two_inputs[] = {c.prog, "--plugin", c.so, "--spec", c.spec, input, input, NULL};
    assert_int_equal(run(two_inputs), 2);

    char *missing[] = {c.prog, "--plugin", "./no-such-plugin.so", "--spec", c.spec, input, NULL};
    assert_int_equal(run(missing), 1);
    assert_true(err_has("cannot load plugin"));
    char *not_plugin[] = {c.prog, "--plugin", "libc.so.6", "--spec", c.spec, input, NULL};
    assert_int_equal(run(not_plugin), 1);
    assert_true(err_has("not a plugin"));
    char *bad_spec[] = {c.prog, "--plugin", c.so, "--spec", "tabel=x", input, NULL};
    assert_int_equal(run(bad_spec), 1);
    assert_true(err_has("bad spec"));
    char *bad_table[] = {c.prog, "--plugin", c.so, "--spec", "table=/no/such/table", input, NULL};
    assert_int_equal(run(bad_table), 1);
    assert_true(err_has("cannot open table"));
    char bad_col[PATH_MAX + 64];
    snprintf(bad_col, sizeof bad_col, "table=%s/words.txt,column=nope", data);
    char *no_col[] = {c.prog, "--plugin", c.so, "--spec", bad_col, input, NULL};
    assert_int_equal(run(no_col), 1);
    assert_true(err_has("no column named 'nope'"));
    char *unreadable[] = {c.prog, "--plugin", c.so, "--spec", c.spec, "/no/such/file.csv", NULL};
    assert_int_equal(run(unreadable), 1);
    assert_true(err_has("/no/such/file.csv: No such file or directory"));
    char *dir[] = {c.prog, "--plugin", c.so, "--spec", c.spec, "/", NULL};
    assert_int_equal(run(dir), 1);
    assert_true(err_has("Is a directory"));
}

/* Malformed input stops at the bad record (exit 1), or is skipped. */
static void test_malformed_input(void **state)
{
    (void)state;
    if (!have_examples)
        skip();
    struct map_cmd c;
    map_cmd(&c, "libwordtable.so", "column=text,id=id");
    FILE *f = fopen(bad_path, "we");
    fputs("id,text\n1,apple\n2,a st\"ray quote\n3,cat\n4,", f);
    for (int i = 0; i < 300; i++)
        fputs("owl ", f);
    fputs("\n5,\"saw\nthe end\n", f);
    fclose(f);

    char *stop[] = {c.prog, "--plugin", c.so, "--spec", c.spec, "--ordered", bad_path, NULL};
    assert_int_equal(run(stop), 1);
    assert_true(err_has("record 3 (byte 16): quote inside an unquoted field"));
    char *out = slurp(out_path, NULL);
    assert_string_equal(out, "1,fruit\n");
    free(out);

    char *skip[] = {c.prog,      "--plugin",     c.so,    "--spec",   c.spec, "--ordered",
                    "--skip-bad", "--max-record", "1000", bad_path, NULL};
    assert_int_equal(run(skip), 1); /* record 5 is too big */
    assert_true(err_has("record 3 (byte 16)"));
    assert_true(err_has("record 5: record larger than max_record"));
    assert_true(err_has("record 6 (byte 1242): input ends inside a quoted field"));
    assert_true(err_has("1 of 5 records failed"));
    out = slurp(out_path, NULL);
    assert_string_equal(out, "1,fruit\n3,animal\n");
    free(out);

    /* The same with a max_record that fits: only malformed ones are skipped: exit 0. */
    char *skip2[] = {c.prog,       "--plugin", c.so,     "--spec", c.spec,
                     "--skip-bad", "--stats",  bad_path, NULL};
    assert_int_equal(run(skip2), 0);
    assert_true(err_has("5 records, 3 ok, 0 failed, 2 malformed"));

    /* Text after a closing quote (a lone CR is data) is malformed for the
     * reader too: reported with its place and skippable, never a classifier
     * error. */
    f = fopen(bad_path, "we");
    fputs("id,text\n1,\"apple\"\rpear\n2,cat\n", f);
    fclose(f);
    char *cr_stop[] = {c.prog, "--plugin", c.so, "--spec", c.spec, "--ordered", bad_path, NULL};
    assert_int_equal(run(cr_stop), 1);
    assert_true(err_has("record 2 (byte 8): quote inside an unquoted field, or text after a "
                        "closing quote (at byte 17)"));
    assert_true(err_has("stopped at the malformed record"));
    char *cr_skip[] = {c.prog,         "--plugin", c.so,      "--spec", c.spec,
                       "--skip-bad", "--stats",  bad_path, NULL};
    assert_int_equal(run(cr_skip), 0);
    assert_true(err_has("2 records, 1 ok, 0 failed, 1 malformed"));
    out = slurp(out_path, NULL);
    assert_string_equal(out, "2,animal\n");
    free(out);
}

/* A header row over the sources' 64 MiB: the library's words for EXEC_E2BIG,
 * not those of the errno it shares a number with. */
static void test_big_header(void **state)
{
    (void)state;
    if (!have_examples)
        skip();
    struct map_cmd c;
    map_cmd(&c, "libwordtable.so", "column=text,id=id");
    int fd = open(hdr_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "id,text", 7), 7);
    /* The rest is a hole: read back as NUL bytes, quick to make and to read. */
    assert_int_equal(ftruncate(fd, ((off_t)64 << 20) + 1), 0);
    close(fd);
    char *argv[] = {c.prog, "--plugin", c.so, "--spec", c.spec, hdr_path, NULL};
    assert_int_equal(run(argv), 1);
    assert_true(err_has("bad header row: record larger than max_record (a header row holds at "
                        "most 64 MiB)"));
    char *err = slurp(err_path, NULL);
    assert_null(strstr(err, "Argument list too long"));
    free(err);
    size_t n;
    char *out = slurp(out_path, &n);
    assert_int_equal(n, 0);
    free(out);
    unlink(hdr_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed),
        cmocka_unit_test(test_plugins_all_backends),
        cmocka_unit_test(test_auto_choice),
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_malformed_input),
        cmocka_unit_test(test_big_header),
    };
    return tu_run_group_tests(tests, setup, teardown);
}
