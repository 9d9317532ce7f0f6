/*
 * Real workload: a set of 12 PCRE2 patterns, compiled once with JIT, over
 * each line (what a log scanner or a rule engine does). The compiled patterns
 * are the context, read-only and shared by every thread and worker; each
 * thread matches with its own match data (PCRE2's rule for threads). The
 * result is a checksum of which pattern matched where.
 */
#include "real.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef BENCH_HAVE_PCRE2
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

static const char *const rx_patterns[] = {
    "from (\\d+\\.\\d+\\.\\d+\\.\\d+)",                 /* an IPv4 address */
    "=(\\w+)@(\\w+)\\.org",                          /* a mail address */
    "\\b\\d{4}-\\d\\d-\\d\\d\\b",                      /* a date */
    "(?:error|Failed|denied) ",                       /* trouble */
    "https?://[^\\s\"]+",                             /* a URL */
    "\"(?:GET|POST) (/\\S+)",                          /* a request */
    "\" ([1-5]\\d\\d) \\d+",                          /* its status */
    "\\bport (\\d{1,5})\\b",                          /* a port */
    "\\$\\d+(?:\\.\\d\\d)?",                          /* an amount */
    "#[0-9a-f]{6}\\b",                                /* an order number */
    "\\d\\d:\\d\\d:\\d\\d",                           /* a time */
    "username=(\\w+)",                               /* a login */
};
#define RX_N (sizeof rx_patterns / sizeof rx_patterns[0])

struct rx_ctx {
    pcre2_code *code[RX_N];
};

static uint64_t rx_mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    return x;
}

static uint64_t rx_run(void *ctx, void *ws, const char *p, size_t len)
{
    const struct rx_ctx *c = ctx;
    pcre2_match_data *md = ws;
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (unsigned i = 0; i < RX_N; i++) {
        int rc = pcre2_jit_match(c->code[i], (PCRE2_SPTR)p, len, 0, 0, md, NULL);
        if (rc > 0) {
            const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            h = rx_mix(h + ((uint64_t)i << 56) + ((uint64_t)ov[0] << 24) + ov[1]);
        } else if (rc != PCRE2_ERROR_NOMATCH) {
            h = rx_mix(h + 0xbad); /* never here with these patterns */
        }
    }
    return h;
}

static int rx_state_new(void *ctx, void **ws)
{
    (void)ctx;
    *ws = pcre2_match_data_create(16, NULL);
    return *ws ? 0 : -1;
}

static void rx_state_free(void *ctx, void *ws)
{
    (void)ctx;
    pcre2_match_data_free(ws);
}

static int rx_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    uint64_t v = rx_run(ctx, ws, rec, len);
    return exec_write(out, &v, sizeof v);
}

static const exec_ops_t rx_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "bench-regex",
    .process = rx_process,
    .worker_init = rx_state_new,
    .worker_fini = rx_state_free,
};

static void rx_destroy(struct real_load *l)
{
    struct rx_ctx *c = l->ctx;
    for (unsigned i = 0; i < RX_N; i++)
        pcre2_code_free(c->code[i]);
    free(c);
}

int real_regex_open(struct real_load *l, char *err, size_t errlen)
{
    struct rx_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "regex: out of memory");
        return -1;
    }
    for (unsigned i = 0; i < RX_N; i++) {
        int ec;
        PCRE2_SIZE eo;
        c->code[i] = pcre2_compile((PCRE2_SPTR)rx_patterns[i], PCRE2_ZERO_TERMINATED, 0,
                                   &ec, &eo, NULL);
        int jrc = c->code[i] ? pcre2_jit_compile(c->code[i], PCRE2_JIT_COMPLETE) : -1;
        if (!c->code[i] || jrc != 0) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(c->code[i] ? jrc : ec, msg, sizeof msg);
            snprintf(err, errlen, "regex: pattern %u: %s", i, (const char *)msg);
            l->ctx = c;
            rx_destroy(l);
            return -1;
        }
    }
    *l = (struct real_load){
        .name = "regex",
        .what = "12 PCRE2 patterns (JIT) over each line",
        .ctx = c,
        .ops_threads = &rx_ops,
        .ops_fork = &rx_ops,
        .ctx_threads = c,
        .ctx_fork = c,
        .state_new = rx_state_new,
        .state_free = rx_state_free,
        .run = rx_run,
        .destroy = rx_destroy,
        .per_rec_ns = 300,
        .run_s = 0.15,
    };
    return 0;
}

#else

int real_regex_open(struct real_load *l, char *err, size_t errlen)
{
    (void)l;
    snprintf(err, errlen, "regex: not built (libpcre2-dev was not found)");
    return -1;
}

#endif
