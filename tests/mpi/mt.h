/*
 * The EXEC_MPI suites' classifier, built from a spec on every rank: tu_rev's
 * result (the record reversed, then its FNV-1a hash) followed by the spec's
 * salt, so a result says which context it ran on. The spec also makes a
 * rank misbehave on purpose:
 *
 *   salt=N        the salt (8 bytes after tu_rev's result)
 *   fail[=R]      ctx_build refuses (on rank R only, or on every rank)
 *   crash=M       process() dies of SIGSEGV on each record whose tag is a
 *                 multiple of M (run the rank on EXEC_FORK)
 *   die=R:T       on rank R, the first record tagged T or more kills the rank
 *                 (SIGKILL)
 *   sleep=US      each record sleeps US microseconds
 *   needcol=NAME  ctx_build refuses unless the header has a column NAME
 *   ncols=N       ctx_build refuses unless the header has N columns
 *
 * Plugin-shaped (exec_plugin_t), as EXEC_MPI wants.
 */
#ifndef EXEC_MPI_MT_H
#define EXEC_MPI_MT_H

#include "testutil.h"
#include "executor_mpi.h"

#include <mpi.h>
#include <signal.h>

struct mt_ctx {
    uint64_t salt;
    uint64_t crash;
    int die_rank;
    uint64_t die_tag;
    unsigned sleep_us;
};

static int mt_rank(void)
{
    int r = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

static int mt_build(const char *spec, const exec_csv_header_t *hdr, void **out, char *err,
                    size_t errlen)
{
    struct mt_ctx *c = calloc(1, sizeof *c);
    char *copy = strdup(spec);
    int rc = c && copy ? 0 : -1;
    if (c)
        c->die_rank = -1;
    for (char *save = NULL, *kv = rc ? NULL : strtok_r(copy, ",", &save); kv;
         kv = strtok_r(NULL, ",", &save)) {
        unsigned long long a, b;
        if (sscanf(kv, "salt=%llu", &a) == 1) {
            c->salt = a;
        } else if (strcmp(kv, "fail") == 0 ||
                   (sscanf(kv, "fail=%llu", &a) == 1 && (int)a == mt_rank())) {
            snprintf(err, errlen, "asked to fail on rank %d", mt_rank());
            rc = -1;
        } else if (sscanf(kv, "crash=%llu", &a) == 1 && a) {
            c->crash = a;
        } else if (sscanf(kv, "die=%llu:%llu", &a, &b) == 2) {
            c->die_rank = (int)a;
            c->die_tag = b;
        } else if (sscanf(kv, "sleep=%llu", &a) == 1) {
            c->sleep_us = (unsigned)a;
        } else if (sscanf(kv, "ncols=%llu", &a) == 1) {
            if (!hdr || exec_csv_header_count(hdr) != a) {
                snprintf(err, errlen, "the header has not %llu columns", a);
                rc = -1;
            }
        } else if (strncmp(kv, "needcol=", 8) == 0) {
            if (!hdr || exec_csv_header_index(hdr, kv + 8) < 0) {
                snprintf(err, errlen, "no column '%s' in the header", kv + 8);
                rc = -1;
            }
        } else if (strncmp(kv, "fail=", 5) != 0) {
            snprintf(err, errlen, "unknown spec item '%s'", kv);
            rc = -1;
        }
    }
    free(copy);
    if (rc) {
        free(c);
        return -1;
    }
    if (c->die_rank >= 0 && c->die_rank != mt_rank())
        c->die_rank = -1;
    *out = c;
    return 0;
}

static void mt_free(void *ctx) { free(ctx); }

static int mt_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    const struct mt_ctx *c = ctx;
    uint64_t tag = tu_rec_tag(rec, len);
    if (c->sleep_us)
        usleep(c->sleep_us);
    if (c->crash && tag % c->crash == 0)
        raise(SIGSEGV);
    if (c->die_rank >= 0 && tag >= c->die_tag)
        raise(SIGKILL);
    if (tu_rev_write(rec, len, out))
        return 1;
    return exec_write(out, &c->salt, sizeof c->salt) ? 1 : 0;
}

static const exec_ops_t mt_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "mt",
    .process = mt_process,
};

static const exec_plugin_t mt_plugin = {
    .abi = EXEC_PLUGIN_ABI,
    .name = "mt",
    .ops = &mt_ops,
    .ctx_build = mt_build,
    .ctx_free = mt_free,
};

/* True when res is mt's correct result for its tag with this salt. */
static inline bool mt_ok(const exec_result_t *res, uint64_t salt)
{
    unsigned char want[TU_REC_MAX + 16];
    size_t n = tu_rev_expect(res->tag, want);
    memcpy(want + n, &salt, 8);
    n += 8;
    return res->status == 0 && res->data && res->len == n && memcmp(res->data, want, n) == 0;
}

/* The salt a successful result carries (its last 8 bytes). */
static inline uint64_t mt_salt(const exec_result_t *res)
{
    uint64_t s = UINT64_MAX;
    if (res->len >= 8)
        memcpy(&s, (const char *)res->data + res->len - 8, 8);
    return s;
}

#endif /* EXEC_MPI_MT_H */
