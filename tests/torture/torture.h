/*
 * executor-torture: what its parts share. classifier.c owns the records, the
 * contexts and the classifier that runs them; round.c runs one round (an
 * executor under load until it is finished or destroyed), with side.c's
 * canceller, swapper and monitor beside it; check.c checks results, tags and
 * contexts; main.c owns the options, the rounds of a run and the report.
 */
#ifndef EXEC_TORTURE_H
#define EXEC_TORTURE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "executor.h"

/* ------------------------------------------------------------------------- */
/* Options and counters                                                      */
/* ------------------------------------------------------------------------- */

/* Features a run can leave out (--skip), e.g. to get past a known defect. */
enum {
    SKIP_CANCEL = 1u << 0,          /* no exec_cancel() at all */
    SKIP_CANCEL_RUNNING = 1u << 1,  /* no cancels aimed at running records */
    SKIP_CONCURRENT_NEXT = 1u << 2, /* consumers take turns at exec_next() */
    SKIP_WORKER_STATS = 1u << 3,    /* no checks on exec_worker_stats() figures */
    SKIP_SWAP = 1u << 4,            /* no exec_swap_context() */
    SKIP_BAD_SWAP = 1u << 5,        /* only swaps to good contexts */
    SKIP_DESTROY = 1u << 6,         /* every round drains; none is destroyed mid-stream */
    SKIP_CRASH = 1u << 7,           /* no record crashes its worker */
    SKIP_HANG = 1u << 8,            /* no record hangs */
    SKIP_RECYCLE = 1u << 9,         /* no max_records_per_worker */
    SKIP_CANCEL_ALL = 1u << 10,     /* no exec_cancel_all() */
    SKIP_FORK_RERUN = 1u << 11,     /* EXEC_FORK: no check that process() ran once a record */
};

/* A fault the self-test puts in on purpose, to see the checks catch it. */
enum inject {
    INJ_NONE,
    INJ_DUP,     /* one result is checked twice */
    INJ_WRONG,   /* one result's bytes are altered before the check */
    INJ_LOST,    /* one result is dropped before the check */
    INJ_RELEASE, /* the context is released once more before destroy */
    INJ_LEAK,    /* a descriptor is left open over a round */
};

struct opts {
    double duration; /* seconds, all backends together */
    uint64_t seed;
    int backends[2];
    unsigned nbackends;
    unsigned submitters, consumers, workers; /* workers 0: drawn per round */
    unsigned timeout_ms;                     /* EXEC_FORK record timeout */
    unsigned skip;                           /* SKIP_* */
    enum inject inject;
    bool verbose;
};

/* What a run counted, per backend. */
struct counts {
    atomic_uint_fast64_t rounds, destroyed, drained, cancel_all_rounds;
    atomic_uint_fast64_t submitted, delivered, abandoned;
    atomic_uint_fast64_t ok, user, crashed, timed_out, cancelled, cancelled_early;
    atomic_uint_fast64_t cancel_calls, cancel_hits, cancel_enoent, cancel_running;
    atomic_uint_fast64_t swaps, swaps_refused, swaps_busy;
    atomic_uint_fast64_t refused_einit, refused_crashed, refused_timeout, refused_other;
    atomic_uint_fast64_t respawns, recycled, slow_reports;
    /* Failures: any of these non-zero fails the run. */
    atomic_uint_fast64_t lost, dup, wrong, rerun, bad_release, bad_stats, leaks, bad_api;
};

/* ------------------------------------------------------------------------- */
/* Records (classifier.c)                                                    */
/* ------------------------------------------------------------------------- */

enum kind {
    K_LIGHT,  /* a hash of its bytes: a few hundred ns */
    K_HEAVY,  /* the same after 0.1 to 1.5 ms of spinning (polls exec_cancelled) */
    K_USER,   /* returns a user error */
    K_SEGV,   /* its worker dies of SIGSEGV */
    K_ABORT,  /* abort() */
    K_EXIT,   /* _exit(T_EXIT_CODE) */
    K_HANG,   /* sleeps for ever: the record timeout stops it */
    K_STICKY, /* runs until cancelled, at most T_STICKY_MS, then a user error; on
                 EXEC_FORK every other one is deaf: it never polls exec_cancelled()
                 and runs deaf_ms, so only the kill a cancel owes it stops it */
};

#define T_EXIT_CODE 42
#define T_STICKY_CODE 77
#define T_STICKY_MS 100
#define T_REC_MAX 2048 /* largest record built */

/* A record's fixed part; bytes drawn from (round seed, tag) follow. */
struct t_hdr {
    uint32_t magic;
    uint8_t kind;
    uint8_t pad[3];
    uint64_t tag;
    uint64_t min_gen; /* the generation current when it was submitted */
    uint32_t slot;    /* K_STICKY: its marker slot */
    uint32_t spin_us; /* K_HEAVY: how long it spins; a deaf K_STICKY: how long it runs */
};
#define T_REC_MAGIC 0x746f7274u

/* Memory shared with forked workers (mapped before any executor exists). */
#define T_MAX_TAGS (1u << 20) /* records a round may submit, at most */
#define T_SLOTS 256           /* K_STICKY marker slots */
struct t_shared {
    atomic_uint calls[T_MAX_TAGS]; /* process() calls per tag */
    struct {
        atomic_uint_fast64_t running, done; /* tag + 1 of the record there */
    } slot[T_SLOTS];
};
extern struct t_shared *t_sh;

/* Rates of the record mix, in records per million. */
struct mix {
    unsigned heavy, user, crash, hang;
};

/* The kind a planned (not sticky) record of tag gets. */
enum kind t_plan_kind(uint64_t round_seed, uint64_t tag, const struct mix *m);
/* Builds the record of tag into buf (T_REC_MAX bytes); returns its length.
 * deaf_ms: a K_STICKY record that ignores cancels and runs that long (0: not). */
size_t t_rec_build(uint64_t round_seed, uint64_t tag, enum kind k, uint64_t min_gen,
                   uint32_t deaf_ms, unsigned char *buf);
/* A K_STICKY record's marker slot, and whether it is deaf (EXEC_FORK only). */
static inline uint32_t t_sticky_slot(uint64_t tag)
{
    return (uint32_t)(tag % T_SLOTS);
}
static inline bool t_sticky_deaf(bool fork, uint64_t tag)
{
    return fork && (tag & 1);
}
/* The salt of the context installed as generation gen. */
uint64_t t_salt(uint64_t round_seed, uint64_t gen);
/* Checks the data of a successful (K_LIGHT/K_HEAVY) result; NULL when right,
 * else what is wrong. */
const char *t_check_ok_data(uint64_t round_seed, enum kind k, const exec_result_t *r);

/* ------------------------------------------------------------------------- */
/* Contexts (classifier.c)                                                   */
/* ------------------------------------------------------------------------- */

enum bad {
    B_GOOD,
    B_CRASH,       /* process() dies on every record */
    B_HANG,        /* process() hangs on every record */
    B_INIT_REFUSE, /* worker_init() returns non-zero */
    B_INIT_CRASH,  /* worker_init() dies */
};

struct round;

struct t_ctx {
    uint64_t magic;
    uint64_t salt;
    enum bad bad;
    struct round *round;
    atomic_uint released; /* ctx_release calls */
    atomic_int leaving;   /* a swap away from it is under way */
    atomic_int installed; /* it was current at some point */
    struct t_ctx *next;   /* the round's list of contexts */
};
#define T_CTX_MAGIC 0x6374787475726f74ull

extern const exec_ops_t t_ops;
/* ops->ctx_release: counts and checks each release (round.c). */
void t_released(void *ctx);

/* ------------------------------------------------------------------------- */
/* Rounds (round.c)                                                          */
/* ------------------------------------------------------------------------- */

/* A tag's state bits (struct round.st). */
enum {
    S_SUB = 0x01,    /* submit returned success */
    S_REQ = 0x02,    /* a cancel of it was asked for (set before the call) */
    S_HIT = 0x04,    /* exec_cancel() counted it */
    S_MISS = 0x08,   /* exec_cancel() said EXEC_ENOENT */
    S_DEL = 0x10,    /* its result was delivered */
    S_DELC = 0x20,   /* ... with status EXEC_ECANCELLED */
    S_STICKY = 0x40, /* a K_STICKY record */
    S_RUNHIT = 0x80, /* exec_cancel() counted it while it was running */
};

enum end { END_DRAIN, END_CANCEL_ALL, END_DESTROY };

#define T_MAX_THREADS 64

struct round {
    const struct opts *o;
    struct counts *c;
    exec_backend_t backend;
    exec_t *ex;
    uint64_t no, seed;
    struct mix mix;
    exec_options_t eo;
    bool fork, no_replay;
    enum end end;

    uint8_t *st;                      /* per tag: S_* */
    atomic_uint_fast64_t next_tag;    /* tags handed out so far */
    atomic_uint_fast64_t gen;         /* generation current since the last swap returned */
    atomic_int stop_submit, stop_side, stop_consume, stop_monitor, full;
    atomic_int cancel_all;            /* exec_cancel_all() was called */
    atomic_int destroying, destroyed;
    atomic_uint_fast64_t last_tag[T_MAX_THREADS]; /* per submitter: its last tag + 1 */

    struct t_ctx *ctxs;               /* every context of the round (swapper, then main) */
    struct t_ctx *_Atomic cur;
    uint64_t swaps;                   /* swaps that returned 0 */

    pthread_mutex_t next_lock;        /* SKIP_CONCURRENT_NEXT: consumers take turns */
    uint64_t next_seq;                /* ... and then ordered results come in seq order */

    /* The longest the monitor waited past its 20 ms nap: how starved of CPU
     * this process was, to tell a busy machine from a late timeout. */
    atomic_uint_fast64_t max_gap_ms;

    /* This round's tallies, compared with exec_stats() at its end. */
    atomic_uint_fast64_t submitted, delivered, ok, user, crashed, timed_out, cancelled;

    /* Worker processes seen (EXEC_FORK), to see that none outlives destroy. */
    pthread_mutex_t pid_lock;
    struct {
        int pid;
        unsigned long long start;
    } pids[4096];
    unsigned npids;
};

/* Checks one result (check.c); res->data is read here, before the next call. */
void t_check_result(struct round *r, const exec_result_t *res, uint64_t *last_seq);
/* The end-of-round checks on tags, process() calls and contexts (check.c). */
void t_check_round(struct round *r);
/* A process's start time from /proc/PID/stat, or 0 when it is gone (check.c). */
unsigned long long t_proc_start(int pid);

/* The threads beside the stream (side.c), each with the round as argument. */
void *t_canceller(void *round);
void *t_swapper(void *round);
void *t_monitor(void *round);
void t_on_slow(void *round, const exec_slow_t *s);
/* A context of the round's, on its list (the swapper's and main's only). */
struct t_ctx *t_new_ctx(struct round *r, enum bad bad, uint64_t gen);
/* An API call failed as it must not: counted, and the round stops submitting. */
bool t_api_error(struct round *r, const char *call, int rc);

static inline uint64_t t_rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static inline const char *t_bname(const struct round *r)
{
    return exec_backend_name(r->backend);
}

/* Runs one round on backend for about seconds; counts into c. Returns false
 * when it could not go on (the executor could not be created). */
bool t_round(const struct opts *o, exec_backend_t backend, uint64_t round_no, double seconds,
             struct counts *c);

/* A failure: counted in *counter, described on stderr (the first few). */
void t_fail(atomic_uint_fast64_t *counter, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

uint64_t t_mix(uint64_t x);
uint64_t t_now_ns(void);
void t_sleep_us(unsigned us);

#endif /* EXEC_TORTURE_H */
