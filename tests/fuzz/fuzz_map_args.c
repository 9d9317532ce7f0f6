/*
 * Fuzz target: executor-map's command line (programs/map_args.c) and the
 * word-table plugin's spec (examples/wordtable.h), the two texts a user
 * types. The first byte picks which.
 *
 *   command line: the rest, cut at NUL bytes, is argv[1..]. map_args_parse()
 *   returns 0 or 2, and on 0 every value is one the program documents: a
 *   known backend and format, workers and ranks 1..1024 (or unset), a record
 *   limit 1..64 MiB (or unset), a delimiter that is one byte and not a quote
 *   or line end, --ranks, --rank-backend and --rank-timeout (1 ms..1 day)
 *   only with mpi, no header flag outside CSV, at most one input.
 *
 *   spec: "table=<tests/data/words.txt>," then the rest (inputs that name
 *   another table or a CPU cost are skipped: they would read any file, or
 *   spin). wt_build() succeeds with a context or fails with a message; a
 *   built context classifies a few records into "<id>,<label>" or a user
 *   error, and frees without a leak (LeakSanitizer).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "executor_records.h"
#include "map_args.h"
#include "wordtable.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                \
    do {                                                                                        \
        if (!(c)) {                                                                             \
            fprintf(stderr, "fuzz_map_args: %s:%d: %s\n", __FILE__, __LINE__, #c);             \
            abort();                                                                            \
        }                                                                                       \
    } while (0)

#define MAX_ARGS 24

static void fuzz_args(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    CHECK(buf);
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    argv[argc++] = "executor-map";
    for (size_t i = 0; i <= size && argc <= MAX_ARGS;) {
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    argv[argc] = NULL;
    struct map_args a;
    int rc = map_args_parse(argc, argv, &a);
    CHECK(rc == 0 || rc == 2);
    if (rc == 0) {
        CHECK(a.backend == EXEC_AUTO || a.backend == EXEC_THREADS || a.backend == EXEC_FORK ||
              a.backend == EXEC_MPI);
        CHECK(a.eo.workers <= 1024 && a.ranks <= 1024);
        CHECK(a.eo.max_record <= (64u << 20));
        CHECK((a.eo.flags & ~EXEC_ORDERED) == 0);
        CHECK(a.so.format == EXEC_SOURCE_CSV || a.so.format == EXEC_SOURCE_LINES ||
              a.so.format == EXEC_SOURCE_LEN32LE || a.so.format == EXEC_SOURCE_LEN32BE);
        CHECK(a.so.format == EXEC_SOURCE_CSV || !(a.so.flags & EXEC_SOURCE_HEADER));
        CHECK(a.so.delim != '"' && a.so.delim != '\n' && a.so.delim != '\r');
        CHECK(a.backend == EXEC_MPI ||
              (a.ranks == 0 && a.eo.rank_backend == EXEC_AUTO && a.eo.rank_timeout_ms == 0));
        CHECK(a.eo.rank_timeout_ms <= 86400000u);
        CHECK((a.mo.flags & ~(EXEC_MAPS_SKIP_BAD | EXEC_MAPS_PROGRESS | EXEC_MAPS_QUIET)) == 0);
        /* Every string it kept is one of argv's. */
        const char *kept[] = {a.plugin_path, a.spec, a.input, a.status_file};
        for (size_t k = 0; k < 4; k++) {
            if (!kept[k])
                continue;
            bool found = false;
            for (int i = 1; i < argc; i++)
                found |= kept[k] >= argv[i] && kept[k] <= argv[i] + strlen(argv[i]);
            CHECK(found);
        }
    }
    free(buf);
}

static void fuzz_spec(const uint8_t *data, size_t size)
{
    static const char prefix[] = "table=" FUZZ_WORDS ",";
    if (memchr(data, '\0', size))
        return;
    char *spec = malloc(sizeof prefix + size);
    CHECK(spec);
    memcpy(spec, prefix, sizeof prefix - 1);
    memcpy(spec + sizeof prefix - 1, data, size);
    spec[sizeof prefix - 1 + size] = '\0';
    const char *rest = spec + sizeof prefix - 1;
    if (strstr(rest, "table=") || strstr(rest, "cost_us=")) {
        free(spec);
        return;
    }
    exec_csv_header_t *hdr = NULL;
    CHECK(exec_csv_header_create(&hdr, "id,text", 7, ',') == 0);
    void *ctx = NULL;
    char err[256];
    memset(err, 'x', sizeof err);
    int rc = wt_build(spec, size & 1 ? hdr : NULL, &ctx, err, sizeof err);
    if (rc != 0) {
        CHECK(rc == -1 && ctx == NULL);
        CHECK(memchr(err, '\0', sizeof err) && err[0] != '\0');
    } else {
        CHECK(ctx != NULL);
        struct wt_table *t = ctx;
        if (!t->crash && !t->hang) {
            static const char *const recs[] = {"1,an apple and a pear", "2,\"the dog\"", "3",
                                               "4,\"unterminated", ""};
            exec_writer_t *w = exec_writer_new(4096);
            CHECK(w);
            for (size_t i = 0; i < sizeof recs / sizeof recs[0]; i++) {
                size_t len = strlen(recs[i]);
                char *buf = malloc(len + 1);
                CHECK(buf);
                exec_writer_clear(w);
                int r = wt_classify(t, recs[i], len, buf, w);
                CHECK(r == 0 || r == 1 || r == 2);
                free(buf);
            }
            exec_writer_free(w);
        }
        wt_free(ctx);
    }
    exec_csv_header_free(hdr);
    free(spec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] & 1)
        fuzz_spec(data + 1, size - 1);
    else
        fuzz_args(data + 1, size - 1);
    return 0;
}
