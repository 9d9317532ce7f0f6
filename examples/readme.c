/* Classify every row of a CSV file on all cores; the README shows this file. */
#include "executor_records.h"

#include <stdio.h>
#include <string.h>

/* Built once, read-only afterwards: the words of each label. */
struct classifier {
    const char *words[3][4];
    const char *labels[3];
};

/* The first label one of whose words occurs in the text. */
static const char *label_of(const struct classifier *c, exec_field_t text)
{
    for (int l = 0; l < 3; l++)
        for (int w = 0; w < 4; w++)
            if (memmem(text.data, text.len, c->words[l][w], strlen(c->words[l][w])))
                return c->labels[l];
    return "unknown";
}

/* Runs on the workers, concurrently. The reader only cut the file into rows;
 * each worker splits its own row (column 1: id, column 2: text). */
static int classify(void *ctx, void *worker_state, const void *row, size_t len,
                    exec_writer_t *out)
{
    const struct classifier *c = ctx;
    char buf[1024];
    exec_field_t id, text;
    if (len > 512 || exec_csv_field(row, len, ',', 0, &id, buf, 512) ||
        exec_csv_field(row, len, ',', 1, &text, buf + 512, 512))
        return 1; /* this row's result says so; the stream goes on */
    return exec_writef(out, "%.*s,%s", (int)id.len, id.data, label_of(c, text));
}

static const exec_ops_t classifier_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .process = classify,
};

static int print_result(void *arg, const exec_result_t *res)
{
    if (res->status == 0)
        printf("%.*s\n", (int)res->len, (const char *)res->data);
    else
        fprintf(stderr, "row %llu: %s\n", (unsigned long long)res->tag,
                exec_strerror(res->status));
    return 0;
}

int main(int argc, char **argv)
{
    struct classifier c = {
        .words = {{"apple", "pear", "plum", "cherry"}, {"cat", "dog", "horse", "owl"},
                  {"hammer", "saw", "drill", "wrench"}},
        .labels = {"fruit", "animal", "tool"},
    };
    exec_source_options_t so = {.format = EXEC_SOURCE_CSV, .flags = EXEC_SOURCE_HEADER};
    exec_source_t *src;
    exec_t *ex;
    exec_options_t eo = {.flags = EXEC_ORDERED}; /* results in input order */
    int rc = argc == 2 ? exec_source_open(&src, argv[1], &so) : EXEC_EINVAL;
    if (rc == 0) {
        rc = exec_create(&ex, &classifier_ops, &c, EXEC_AUTO, &eo);
        if (rc == 0) {
            rc = exec_map_source(ex, src, print_result, NULL, NULL, NULL);
            exec_destroy(ex);
        }
        exec_source_close(src);
    }
    if (rc)
        fprintf(stderr, "readme: %s\n", exec_strerror(rc));
    return rc ? 1 : 0;
}
