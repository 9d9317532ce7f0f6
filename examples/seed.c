/*
 * The seed problem in C: build a classifier once, stream the rows of a CSV
 * file through it on all cores, print each row's result. No global variable:
 * the context is handed to the executor, which hands it to every worker.
 *
 *     seed data.csv        (a header row with columns "id" and "text")
 *
 * Rows may hold quoted fields with commas, "" and newlines: the reader only
 * finds where rows end; each worker splits its own rows into fields.
 */
#include "executor_records.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* The classifier: a word list per label, and the columns it reads. */
struct classifier {
    const char *const *words[3];
    const char *labels[3];
    int id_col, text_col; /* resolved once from the header */
};

static const char *const fruit[] = {"apple", "pear", "plum", "cherry", NULL};
static const char *const animal[] = {"cat", "dog", "horse", "owl", NULL};
static const char *const tool[] = {"hammer", "saw", "drill", "wrench", NULL};

/* Runs in the workers, concurrently: reads ctx, never writes it. */
static int classify(void *ctx, void *wstate, const void *rec, size_t len, exec_writer_t *out)
{
    const struct classifier *c = ctx;
    char buf[4096];
    exec_field_t id, text;
    if (len > sizeof buf / 2 ||
        exec_csv_field(rec, len, ',', (size_t)c->id_col, &id, buf, sizeof buf / 2) ||
        exec_csv_field(rec, len, ',', (size_t)c->text_col, &text, buf + sizeof buf / 2,
                       sizeof buf / 2))
        return 1; /* reported for this row; the stream goes on */
    unsigned votes[3] = {0};
    for (const char *p = text.data, *e = p + text.len; p < e;) {
        while (p < e && !isalpha((unsigned char)*p))
            p++;
        const char *w = p;
        while (p < e && isalpha((unsigned char)*p))
            p++;
        for (int l = 0; l < 3; l++)
            for (const char *const *k = c->words[l]; *k; k++)
                if (strlen(*k) == (size_t)(p - w) && strncasecmp(*k, w, (size_t)(p - w)) == 0)
                    votes[l]++;
    }
    int best = votes[0] >= votes[1] ? 0 : 1;
    best = votes[best] >= votes[2] ? best : 2;
    exec_writef(out, "%.*s,%s", (int)id.len, id.data, votes[best] ? c->labels[best] : "unknown");
    return 0;
}

static const exec_ops_t classifier_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "seed",
    .process = classify,
};

/* Runs in the calling thread, one result at a time, in input order. */
static int print_result(void *arg, const exec_result_t *res)
{
    (void)arg;
    if (res->status == 0)
        printf("%.*s\n", (int)res->len, (const char *)res->data);
    else
        fprintf(stderr, "row %llu: %s\n", (unsigned long long)res->tag,
                exec_strerror(res->status));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: seed data.csv\n");
        return 2;
    }
    exec_source_options_t so = {.format = EXEC_SOURCE_CSV, .flags = EXEC_SOURCE_HEADER};
    exec_source_t *src;
    int rc = exec_source_open(&src, argv[1], &so);
    if (rc) {
        fprintf(stderr, "%s: %s\n", argv[1], exec_strerror(rc));
        return 1;
    }

    /* Build the classifier once; resolve column names before any worker runs. */
    struct classifier c = {.words = {fruit, animal, tool}, .labels = {"fruit", "animal", "tool"}};
    const void *h;
    size_t hlen;
    exec_csv_header_t *hdr = NULL;
    c.id_col = c.text_col = -1;
    if (exec_source_header(src, &h, &hlen) == 0 && exec_csv_header_create(&hdr, h, hlen, ',') == 0) {
        c.id_col = exec_csv_header_index(hdr, "id");
        c.text_col = exec_csv_header_index(hdr, "text");
        exec_csv_header_free(hdr);
    }
    if (c.id_col < 0 || c.text_col < 0) {
        fprintf(stderr, "%s: needs a header row with columns id and text\n", argv[1]);
        exec_source_close(src);
        return 1;
    }

    /* Stream the rows through the workers; results come back in input order. */
    exec_t *ex;
    exec_options_t eo = {.flags = EXEC_ORDERED};
    rc = exec_create(&ex, &classifier_ops, &c, EXEC_AUTO, &eo);
    if (rc == 0) {
        rc = exec_map_source(ex, src, print_result, NULL, NULL, NULL);
        exec_destroy(ex);
    }
    exec_source_close(src);
    if (rc) {
        fprintf(stderr, "%s: %s\n", argv[1], exec_strerror(rc));
        return 1;
    }
    return 0;
}
