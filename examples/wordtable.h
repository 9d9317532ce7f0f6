/*
 * The word-table classifier shared by the example plugins: a read-only table
 * of words and their labels, built once from a spec; a record's text column
 * is cut into words, each word votes for its label, the label with most votes
 * wins ("unknown" when none). The result row is "<id>,<label>".
 *
 * Spec: comma-separated key=value pairs:
 *   table=FILE    required: lines of "word label" (blank lines and # comments ignored)
 *   column=COL    the text column, a header name or a 0-based index (default 1)
 *   id=COL        the id column (default 0)
 *   work=N        extra rounds of hashing per record, to make records heavier (default 0)
 *   cost_us=N     extra CPU work per record, calibrated when the table is built (on
 *                 the thread's CPU time) to take about N microseconds (default 0)
 * Faults on demand, to show what a host does when a classifier misbehaves:
 *   crash=WORD    a record whose text holds the word WORD aborts its worker (SIGABRT);
 *                 crash=* aborts on every record
 *   hang=WORD     a record holding WORD runs until it is cancelled or times out
 *   init=MODE     worker_init: ok (default), fail (refuses), crash (aborts), hang
 *
 * Everything is static: each plugin includes this file and adds its ops.
 */
#ifndef WORDTABLE_H
#define WORDTABLE_H

#include "executor_records.h"

#include <ctype.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WT_MAX_LABELS 64
#define WT_MAX_WORD 64

enum { WT_INIT_OK, WT_INIT_FAIL, WT_INIT_CRASH, WT_INIT_HANG };

struct wt_slot {
    uint64_t hash; /* 0: empty */
    char *word;
    unsigned label;
};

struct wt_table {
    struct wt_slot *slots;
    size_t mask;
    size_t n;
    char *labels[WT_MAX_LABELS];
    unsigned nlabels;
    size_t text_col, id_col;
    int delim;
    unsigned work;
    uint64_t spin;       /* cost_us, in rounds of wt_spin() */
    char *crash, *hang;  /* words that abort or hang a record; "*": every record */
    int init;            /* WT_INIT_* */
    /* Not thread-safe plugins keep a scratch buffer here (see scratch.c). */
    char *scratch;
    size_t scratch_cap;
};

static uint64_t wt_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ? h : 1;
}

static void wt_free(void *ctx)
{
    struct wt_table *t = ctx;
    if (!t)
        return;
    for (size_t i = 0; t->slots && i <= t->mask; i++)
        free(t->slots[i].word);
    free(t->slots);
    for (unsigned i = 0; i < t->nlabels; i++)
        free(t->labels[i]);
    free(t->scratch);
    free(t->crash);
    free(t->hang);
    free(t);
}

/* n rounds of a generator the compiler cannot shorten: the cost_us work. */
static uint64_t wt_spin(uint64_t n, uint64_t x)
{
    for (uint64_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        __asm__ volatile("" : "+r"(x));
    }
    return x;
}

/* This thread's CPU time: a run the scheduler interrupts does not look longer. */
static uint64_t wt_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Rounds of wt_spin() in us microseconds of CPU: the fastest of a few timed
 * runs, so that a busy machine makes records no lighter than asked. */
static uint64_t wt_calibrate(unsigned us)
{
    const uint64_t n = 1000000;
    uint64_t best = UINT64_MAX, x = 1;
    for (int k = 0; k < 5; k++) {
        uint64_t t0 = wt_cpu_ns();
        x = wt_spin(n, x);
        uint64_t d = wt_cpu_ns() - t0;
        if (d < best)
            best = d;
    }
    if (best == 0 || x == 42)
        best = 1;
    return (uint64_t)((double)n * (double)us * 1000.0 / (double)best + 0.5);
}

/* worker_init's part of the faults on demand: 0 or -1 (refused). */
__attribute__((unused)) static int wt_init_faults(const struct wt_table *t)
{
    switch (t->init) {
    case WT_INIT_FAIL: return -1;
    case WT_INIT_CRASH: abort();
    case WT_INIT_HANG:
        for (;;)
            pause();
    default: return 0;
    }
}

static void wt_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void wt_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int wt_label(struct wt_table *t, const char *l)
{
    for (unsigned i = 0; i < t->nlabels; i++)
        if (strcmp(t->labels[i], l) == 0)
            return (int)i;
    if (t->nlabels == WT_MAX_LABELS)
        return -1;
    t->labels[t->nlabels] = strdup(l);
    return t->labels[t->nlabels] ? (int)t->nlabels++ : -1;
}

static int wt_add(struct wt_table *t, const char *w, unsigned label)
{
    size_t n = strlen(w);
    uint64_t h = wt_hash(w, n);
    size_t i = h & t->mask;
    while (t->slots[i].hash) {
        if (t->slots[i].hash == h && strcmp(t->slots[i].word, w) == 0) {
            t->slots[i].label = label; /* the last line for a word wins */
            return 0;
        }
        i = (i + 1) & t->mask;
    }
    t->slots[i].word = strdup(w);
    if (!t->slots[i].word)
        return -1;
    t->slots[i].hash = h;
    t->slots[i].label = label;
    t->n++;
    return 0;
}

static int wt_lookup(const struct wt_table *t, const char *w, size_t n)
{
    uint64_t h = wt_hash(w, n);
    size_t i = h & t->mask;
    while (t->slots[i].hash) {
        const struct wt_slot *s = &t->slots[i];
        if (s->hash == h && strncmp(s->word, w, n) == 0 && s->word[n] == '\0')
            return (int)s->label;
        i = (i + 1) & t->mask;
    }
    return -1;
}

/* A column given by name (needs a header) or by index. */
static int wt_column(const char *v, const exec_csv_header_t *hdr, size_t *out, char *err,
                     size_t errlen)
{
    char *end;
    errno = 0;
    unsigned long i = strtoul(v, &end, 10);
    if (*v && *end == '\0' && errno == 0) {
        *out = i;
        return 0;
    }
    if (!hdr) {
        wt_err(err, errlen, "column '%s' given by name, but the input has no header", v);
        return -1;
    }
    int k = exec_csv_header_index(hdr, v);
    if (k < 0) {
        wt_err(err, errlen, "no column named '%s' in the header", v);
        return -1;
    }
    *out = (size_t)k;
    return 0;
}

static int wt_load(struct wt_table *t, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        wt_err(err, errlen, "cannot open table '%s': %s", path, strerror(errno));
        return -1;
    }
    size_t lines = 0;
    char line[512];
    while (fgets(line, sizeof line, f))
        lines++;
    size_t cap = 16;
    while (cap < lines * 2)
        cap <<= 1;
    t->slots = calloc(cap, sizeof *t->slots);
    if (!t->slots) {
        fclose(f);
        wt_err(err, errlen, "out of memory");
        return -1;
    }
    t->mask = cap - 1;
    rewind(f);
    size_t no = 0;
    while (fgets(line, sizeof line, f)) {
        no++;
        char word[WT_MAX_WORD + 1], label[128];
        char *s = line;
        while (isspace((unsigned char)*s))
            s++;
        if (*s == '\0' || *s == '#')
            continue;
        if (sscanf(s, "%64s %127s", word, label) != 2) {
            wt_err(err, errlen, "%s:%zu: expected \"word label\"", path, no);
            fclose(f);
            return -1;
        }
        for (char *c = word; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        int l = wt_label(t, label);
        if (l < 0 || wt_add(t, word, (unsigned)l) != 0) {
            wt_err(err, errlen, "%s:%zu: too many labels (at most %d) or out of memory", path,
                   no, WT_MAX_LABELS);
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    if (t->n == 0) {
        wt_err(err, errlen, "table '%s' has no words", path);
        return -1;
    }
    return 0;
}

static int wt_build(const char *spec, const exec_csv_header_t *hdr, void **ctx, char *err,
                    size_t errlen)
{
    *ctx = NULL;
    struct wt_table *t = calloc(1, sizeof *t);
    char *copy = strdup(spec ? spec : "");
    if (!t || !copy) {
        free(t);
        free(copy);
        wt_err(err, errlen, "out of memory");
        return -1;
    }
    t->text_col = 1;
    t->delim = hdr ? exec_csv_header_delim(hdr) : ',';
    const char *table = NULL, *col = NULL, *id = NULL;
    int rc = 0;
    for (char *save = NULL, *kv = strtok_r(copy, ",", &save); kv && !rc;
         kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            wt_err(err, errlen, "bad spec item '%s': expected key=value", kv);
            rc = -1;
            break;
        }
        *eq = '\0';
        const char *v = eq + 1;
        if (strcmp(kv, "table") == 0) {
            table = v;
        } else if (strcmp(kv, "column") == 0) {
            col = v;
        } else if (strcmp(kv, "id") == 0) {
            id = v;
        } else if (strcmp(kv, "work") == 0) {
            char *end;
            unsigned long w = strtoul(v, &end, 10);
            if (!*v || *end || w > 1000000) {
                wt_err(err, errlen, "bad work=%s: expected 0..1000000", v);
                rc = -1;
            }
            t->work = (unsigned)w;
        } else if (strcmp(kv, "cost_us") == 0) {
            char *end;
            unsigned long us = strtoul(v, &end, 10);
            if (!*v || *end || us > 1000000) {
                wt_err(err, errlen, "bad cost_us=%s: expected 0..1000000", v);
                rc = -1;
            } else if (us) {
                t->spin = wt_calibrate((unsigned)us);
            }
        } else if (strcmp(kv, "crash") == 0 || strcmp(kv, "hang") == 0) {
            char **w = kv[0] == 'c' ? &t->crash : &t->hang;
            free(*w);
            *w = *v ? strdup(v) : NULL;
            for (char *c = *w; c && *c; c++)
                *c = (char)tolower((unsigned char)*c);
            if (*v && !*w) {
                wt_err(err, errlen, "out of memory");
                rc = -1;
            }
        } else if (strcmp(kv, "init") == 0) {
            static const char *const modes[] = {"ok", "fail", "crash", "hang"};
            t->init = -1;
            for (int m = 0; m < 4; m++)
                if (strcmp(v, modes[m]) == 0)
                    t->init = m;
            if (t->init < 0) {
                wt_err(err, errlen, "bad init=%s: expected ok, fail, crash or hang", v);
                rc = -1;
            }
        } else {
            wt_err(err, errlen,
                   "unknown spec key '%s' (known: table, column, id, work, cost_us, crash, hang, "
                   "init)",
                   kv);
            rc = -1;
        }
    }
    if (!rc && !table) {
        wt_err(err, errlen, "the spec needs table=FILE");
        rc = -1;
    }
    if (!rc && col)
        rc = wt_column(col, hdr, &t->text_col, err, errlen);
    if (!rc && id)
        rc = wt_column(id, hdr, &t->id_col, err, errlen);
    if (!rc)
        rc = wt_load(t, table, err, errlen);
    free(copy);
    if (rc) {
        wt_free(t);
        return -1;
    }
    *ctx = t;
    return 0;
}

/* Does the fault word w ("*": any) name this word? */
static bool wt_is(const char *w, const char *word, size_t n)
{
    return (w[0] == '*' && w[1] == '\0') || (strncmp(w, word, n) == 0 && w[n] == '\0');
}

/*
 * Classifies one record, using buf (at least len bytes) to unquote fields
 * and cut words. Writes "<id>,<label>". Returns 0 or a user error: 1 when the
 * record lacks a column, 2 when it is not valid CSV, 4 when a hang= record was
 * cancelled.
 */
static int wt_classify(const struct wt_table *t, const void *rec, size_t len, char *buf,
                       exec_writer_t *out)
{
    exec_field_t text, id;
    int rc = exec_csv_field(rec, len, t->delim, t->text_col, &text, buf, len);
    if (rc == 0)
        rc = exec_csv_field(rec, len, t->delim, t->id_col, &id, buf + (text.data == buf ? text.len : 0),
                            len - (text.data == buf ? text.len : 0));
    if (rc)
        return rc == EXEC_ENOENT ? 1 : 2;

    unsigned votes[WT_MAX_LABELS] = {0};
    char word[WT_MAX_WORD];
    const char *p = text.data, *e = p + text.len;
    uint64_t spin = 0;
    while (p < e) {
        while (p < e && !isalnum((unsigned char)*p))
            p++;
        size_t n = 0;
        while (p < e && isalnum((unsigned char)*p)) {
            if (n < sizeof word)
                word[n++] = (char)tolower((unsigned char)*p);
            p++;
        }
        if (n == 0)
            continue;
        int l = wt_lookup(t, word, n);
        if (l >= 0)
            votes[l]++;
        if (t->crash && wt_is(t->crash, word, n))
            abort();
        if (t->hang && wt_is(t->hang, word, n)) {
            struct timespec ms = {0, 1000000};
            while (!exec_cancelled(out))
                nanosleep(&ms, NULL);
            return 4;
        }
        for (unsigned k = 0; k < t->work; k++)
            spin += wt_hash(word, n) + k;
    }
    int best = -1;
    for (unsigned i = 0; i < t->nlabels; i++)
        if (votes[i] && (best < 0 || votes[i] > votes[best]))
            best = (int)i;
    const char *label = best >= 0 ? t->labels[best] : "unknown";
    /* The id goes out as a CSV field: quoted when it must be. */
    bool quote = false;
    for (size_t i = 0; i < id.len && !quote; i++)
        quote = id.data[i] == t->delim || id.data[i] == '"' || id.data[i] == '\n' ||
                id.data[i] == '\r';
    if (quote) {
        exec_write(out, "\"", 1);
        for (size_t i = 0; i < id.len; i++) {
            if (id.data[i] == '"')
                exec_write(out, "\"", 1);
            exec_write(out, &id.data[i], 1);
        }
        exec_write(out, "\"", 1);
    } else {
        exec_write(out, id.data, id.len);
    }
    exec_writef(out, ",%s", label);
    if (t->spin)
        spin = wt_spin(t->spin, spin + len);
    if ((t->work || t->spin) && spin == 42) /* keeps the extra work from being optimized out */
        exec_write(out, "!", 1);
    return 0;
}

#endif /* WORDTABLE_H */
