/*
 * Helpers for the EXEC_FORK suites: a classifier whose records say what the
 * worker should do (answer, crash, hang, write garbage), a driver that runs a
 * stream and checks every result and exactly-once delivery, and probes of the
 * process (children, fds, mappings).
 */
#ifndef EXEC_FORKUTIL_H
#define EXEC_FORKUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "executor.h"
#include "suite.h"
#include "exec_internal.h"

/*
 * FU_HOOKS=1 in the environment (ctest runs some fork suites so a second
 * time): every executor the suite creates gets fork hooks that do nothing
 * (unless it sets its own). Its zygotes are then forked on the suite's own
 * threads, watch the host through a pidfd and are forked again by the
 * consumer, and the suite proves that its guarantees hold that way too.
 */
static inline void fu_nop_prepare(void *arg) { (void)arg; }
static inline void fu_nop_parent(void *arg, int pid) { (void)arg, (void)pid; }
static inline void fu_nop_child(void *arg) { (void)arg; }

static inline int fu_create(exec_t **exp, const exec_ops_t *ops, void *ctx, exec_backend_t backend,
                            const exec_options_t *opts)
{
    const char *h = getenv("FU_HOOKS");
    if (!h || strcmp(h, "1") != 0)
        return exec_create(exp, ops, ctx, backend, opts);
    exec_options_t o;
    if (opts)
        o = *opts;
    else
        memset(&o, 0, sizeof o);
    if (!o.fork_hooks.prepare && !o.fork_hooks.parent && !o.fork_hooks.child)
        o.fork_hooks = (exec_fork_hooks_t){fu_nop_prepare, fu_nop_parent, fu_nop_child, NULL};
    return exec_create(exp, ops, ctx, backend, &o);
}
#define exec_create fu_create

/* What a record asks its worker to do (first byte of the record). */
enum {
    FU_OK = 0,
    FU_SEGV,    /* SIGSEGV */
    FU_ABORT,   /* abort(): SIGABRT */
    FU_EXIT,    /* _exit(FU_EXIT_CODE) */
    FU_HANG,    /* sleeps for ever */
    FU_GARBAGE, /* corrupts its writer: its shared result entry is garbage */
    FU_USER,    /* returns a user error */
    FU_BIG      /* a result of `big` bytes (in the record) */
};
#define FU_EXIT_CODE 42
#define FU_USER_CODE 17

/* A record: action, then the 64-bit value it is about, then padding. */
struct fu_rec {
    uint8_t action;
    uint8_t pad[3];
    uint32_t big;
    uint64_t value;
};

static inline uint64_t fu_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* The expected result of a FU_OK record, as the worker must compute it. */
static inline uint64_t fu_expect(uint64_t value, uint64_t salt)
{
    return fu_mix(value ^ salt);
}

/*
 * The context: a salt (changes per context, so a result says which context it
 * ran against) and a scratch buffer that process() writes: not thread-safe.
 */
struct fu_ctx {
    uint64_t salt;
    char scratch[64];
    unsigned released;
};

static inline int fu_process(void *ctx, void *ws, const void *rec, size_t len,
                             exec_writer_t *out)
{
    (void)ws;
    struct fu_ctx *c = ctx;
    struct fu_rec r;
    if (len != sizeof r)
        return 99;
    memcpy(&r, rec, sizeof r);
    switch (r.action) {
    case FU_SEGV: {
        volatile uintptr_t bad = 16; /* the first page is never mapped */
        *(volatile int *)bad = 1;
        break;
    }
    case FU_ABORT:
        abort();
    case FU_EXIT:
        _exit(FU_EXIT_CODE);
    case FU_HANG:
        for (;;)
            pause();
    case FU_GARBAGE:
        /* Offsets far outside the area land in this record's shared entry. */
        out->start = (size_t)0x7fff0000u;
        out->len = out->start + 0x1000;
        return 0;
    case FU_USER:
        return FU_USER_CODE;
    case FU_BIG: {
        char *p = exec_write_reserve(out, r.big);
        if (!p)
            return 0;
        memset(p, (int)(r.value & 0xff), r.big);
        return 0;
    }
    default:
        break;
    }
    /* Not thread-safe on purpose: the answer goes through ctx's scratch. */
    uint64_t v = fu_expect(r.value, c->salt);
    memcpy(c->scratch, &v, sizeof v);
    for (int i = 0; i < 8; i++)
        c->scratch[8 + i] = c->scratch[i];
    return exec_write(out, c->scratch + 8, sizeof v);
}

static inline void fu_release(void *ctx)
{
    /* From the library's thread (swapped out) or from exec_destroy(). */
    __atomic_fetch_add(&((struct fu_ctx *)ctx)->released, 1, __ATOMIC_ACQ_REL);
}

static const exec_ops_t fu_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_FORK_SAFE,
    .name = "forkutil",
    .process = fu_process,
    .ctx_release = fu_release,
};

/* Which action record number i of a run gets. */
typedef uint8_t (*fu_plan_fn)(uint64_t i, void *arg);

struct fu_run {
    uint64_t n;
    fu_plan_fn plan;
    void *plan_arg;
    uint64_t salt; /* expected salt for FU_OK results (unless salt_of is set) */
    /* Optional: the salt a result must carry, from its generation. */
    uint64_t (*salt_of)(uint64_t generation, void *arg);
    bool ordered;
    /* Optional hook after each submitted record (e.g. swap after k records). */
    void (*after_submit)(exec_t *ex, uint64_t i, void *arg);
    /* Counts, filled by fu_drive. */
    uint64_t ok, user, crashed, timed_out, worker_err, too_big, other;
    uint64_t bad; /* results that were wrong (count; first described in why) */
    char why[256];
    unsigned char *seen;
};

static inline __attribute__((format(printf, 2, 3))) void fu_bad(struct fu_run *r, const char *fmt,
                                                               ...)
{
    if (r->bad++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->why, sizeof r->why, fmt, ap);
        va_end(ap);
    }
}

static inline void fu_check(struct fu_run *r, const exec_result_t *res, uint64_t *next_seq)
{
    uint64_t i = res->tag;
    if (i >= r->n) {
        fu_bad(r, "tag %" PRIu64 " out of range", i);
        return;
    }
    if (r->seen[i]++) {
        fu_bad(r, "tag %" PRIu64 " delivered twice", i);
        return;
    }
    if (r->ordered) {
        if (res->seq != *next_seq)
            fu_bad(r, "ordered: seq %" PRIu64 " where %" PRIu64 " was due", res->seq, *next_seq);
        (*next_seq)++;
    }
    uint8_t a = r->plan ? r->plan(i, r->plan_arg) : FU_OK;
    int want = 0;
    switch (a) {
    case FU_SEGV:
    case FU_ABORT:
    case FU_EXIT:
        want = EXEC_ECRASHED;
        break;
    case FU_HANG:
        want = EXEC_ERECTIMEOUT;
        break;
    case FU_GARBAGE:
        want = EXEC_EWORKER;
        break;
    case FU_USER:
        want = EXEC_EUSER;
        break;
    default:
        break;
    }
    switch (res->status) {
    case 0: r->ok++; break;
    case EXEC_EUSER: r->user++; break;
    case EXEC_ECRASHED: r->crashed++; break;
    case EXEC_ERECTIMEOUT: r->timed_out++; break;
    case EXEC_EWORKER: r->worker_err++; break;
    case EXEC_ERESULT2BIG: r->too_big++; break;
    default: r->other++; break;
    }
    if (res->status != want) {
        fu_bad(r, "tag %" PRIu64 " (action %u): status %s, want %s", i, a,
               exec_err_name(res->status), exec_err_name(want));
        return;
    }
    if (a == FU_SEGV && res->signal != SIGSEGV)
        fu_bad(r, "tag %" PRIu64 ": signal %d, want SIGSEGV", i, res->signal);
    if (a == FU_ABORT && res->signal != SIGABRT)
        fu_bad(r, "tag %" PRIu64 ": signal %d, want SIGABRT", i, res->signal);
    if (a == FU_EXIT && (res->signal != 0 || res->exit_status != FU_EXIT_CODE))
        fu_bad(r, "tag %" PRIu64 ": signal %d exit %d, want exit %d", i, res->signal,
               res->exit_status, FU_EXIT_CODE);
    /* SIGTERM at the timeout, SIGKILL after the grace. */
    if (a == FU_HANG && res->signal != SIGTERM && res->signal != SIGKILL)
        fu_bad(r, "tag %" PRIu64 ": timed out with signal %d", i, res->signal);
    if (a == FU_USER && res->user_code != FU_USER_CODE)
        fu_bad(r, "tag %" PRIu64 ": user code %d", i, res->user_code);
    if (a == FU_OK) {
        uint64_t salt = r->salt_of ? r->salt_of(res->generation, r->plan_arg) : r->salt;
        uint64_t want_v = fu_expect(i, salt), got;
        if (res->len != sizeof got) {
            fu_bad(r, "tag %" PRIu64 ": %zu result bytes", i, res->len);
            return;
        }
        memcpy(&got, res->data, sizeof got);
        if (got != want_v)
            fu_bad(r, "tag %" PRIu64 ": wrong result (generation %" PRIu64 ")", i,
                   res->generation);
    }
}

/* Runs r->n records (value = tag = i) through ex from this thread and checks
 * every result. Returns 0 or the first unexpected API error. */
static inline int fu_drive(exec_t *ex, struct fu_run *r)
{
    r->seen = calloc(r->n ? r->n : 1, 1);
    if (!r->seen)
        return EXEC_ENOMEM;
    uint64_t next_seq = 0, got = 0;
    exec_result_t res;
    int rc = 0;
    for (uint64_t i = 0; i < r->n; i++) {
        struct fu_rec rec = {0};
        rec.action = r->plan ? r->plan(i, r->plan_arg) : FU_OK;
        rec.value = i;
        for (;;) {
            rc = exec_try_submit(ex, &rec, sizeof rec, i);
            if (rc != EXEC_EAGAIN)
                break;
            rc = exec_next(ex, &res, 10000);
            if (rc == 0) {
                fu_check(r, &res, &next_seq);
                got++;
            } else if (rc != EXEC_ETIMEDOUT) {
                goto out;
            } else {
                fu_bad(r, "no result for 10 s at record %" PRIu64, i);
                goto out;
            }
        }
        if (rc)
            goto out;
        if (r->after_submit)
            r->after_submit(ex, i, r->plan_arg);
    }
    rc = exec_finish(ex);
    if (rc)
        goto out;
    for (;;) {
        rc = exec_next(ex, &res, 20000);
        if (rc == EXEC_EOF) {
            rc = 0;
            break;
        }
        if (rc == EXEC_ETIMEDOUT) {
            fu_bad(r, "drain: no result for 20 s (%" PRIu64 " of %" PRIu64 ")", got, r->n);
            break;
        }
        if (rc)
            break;
        fu_check(r, &res, &next_seq);
        got++;
    }
out:
    if (rc == 0 && got != r->n)
        fu_bad(r, "%" PRIu64 " results for %" PRIu64 " records", got, r->n);
    free(r->seen);
    r->seen = NULL;
    return rc;
}

#define fu_assert_clean(r)                                                                         \
    do {                                                                                           \
        if ((r)->bad)                                                                              \
            print_error("%" PRIu64 " bad result(s); first: %s\n", (r)->bad, (r)->why);           \
        assert_int_equal((r)->bad, 0);                                                             \
    } while (0)

/* ------------------------------------------------------------------------- */
/* Process probes                                                            */
/* ------------------------------------------------------------------------- */

static inline int fu_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the DIR's own */
}

/* pid's parent from /proc, or -1. */
static inline pid_t fu_ppid_of(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    char st;
    int ppid;
    if (sscanf(p + 2, "%c %d", &st, &ppid) != 2)
        return -1;
    return ppid;
}

/* Processes whose parent is ppid (zombies included). */
static inline int fu_children_of(pid_t ppid, pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        if (fu_ppid_of((pid_t)pid) == ppid) {
            if (n < max)
                out[n] = (pid_t)pid;
            n++;
        }
    }
    closedir(d);
    return n;
}

/* Our children and their children (the zygote's workers). */
static inline int fu_descendants(pid_t *out, int max)
{
    pid_t kids[256];
    int n = fu_children_of(getpid(), kids, 256), total = 0;
    for (int i = 0; i < n && i < 256; i++) {
        if (total < max)
            out[total] = kids[i];
        total++;
        pid_t g[256];
        int m = fu_children_of(kids[i], g, 256);
        for (int j = 0; j < m && j < 256; j++) {
            if (total < max)
                out[total] = g[j];
            total++;
        }
    }
    return total;
}

/* Mappings of a memfd region (shown as "/memfd:" in /proc/self/maps). */
static inline int fu_memfd_maps(void) { return tu_res__memfd_maps(); }

static inline bool fu_sanitized(void) { return tu_sanitized(); }

/* True where a suite sizes its volumes down: under a sanitizer, and in the
 * FU_HOOKS copies, which prove the same guarantees on the other fork path
 * rather than count again at full volume. */
static inline bool fu_light(void)
{
    const char *h = getenv("FU_HOOKS");
    return tu_sanitized() || (h && strcmp(h, "1") == 0);
}

#endif /* EXEC_FORKUTIL_H */
