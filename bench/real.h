/*
 * executor-bench: real workloads, beside the synthetic one. Code from real
 * libraries over text lines, each line in a string of its own (as a program
 * that reads a file holds them), run the same way by every path: the plain
 * loop, OpenMP's parallel for, and each of libexecutor's calls on both
 * backends (real.c). A workload gives its context, a per-thread state, and
 * one function that turns a line into an 8-byte result: what process() runs
 * on the workers is what the loop and OpenMP run.
 *
 *   real_regex.c  a set of PCRE2 patterns, compiled with JIT (~0.3 us a line)
 *   real_lua.c    a Lua 5.4 function per line, its collector running (~4 us)
 */
#ifndef BENCH_REAL_H
#define BENCH_REAL_H

#include "executor.h"

#include <stddef.h>
#include <stdint.h>

struct real_load {
    const char *name; /* what --workloads names */
    const char *what; /* one line for the table's heading */
    void *ctx;        /* built once, read-only afterwards (Lua: not thread-safe) */
    /* The classifier each backend runs: a per-worker state where the library
     * does not share one (Lua on threads: a state per worker). */
    const exec_ops_t *ops_threads, *ops_fork;
    void *ctx_threads, *ctx_fork; /* what each is created with */
    /* The loop's and each OpenMP thread's state (NULL: none needed). */
    int (*state_new)(void *ctx, void **ws);
    void (*state_free)(void *ctx, void *ws);
    /* The work: a line's result, the same code on every path. */
    uint64_t (*run)(void *ctx, void *ws, const char *p, size_t len);
    void (*destroy)(struct real_load *l);
    double per_rec_ns; /* rough cost of a line here, sizing the runs */
    double run_s; /* loop work a run aims at (--quick: 4 ms) */
    /* fork: an extra row with workers recycled every ~N records (0: none);
     * with --quick every recycle_quick */
    unsigned recycle, recycle_quick;
};

/* Each returns 0, or -1 with err set (not built in, or the library failed). */
int real_regex_open(struct real_load *l, char *err, size_t errlen);
int real_lua_open(struct real_load *l, char *err, size_t errlen);

/* Deterministic text lines: a log of web and mail servers (words, numbers,
 * addresses, dates, URLs), 40 to 160 bytes each. Line i is the same on every
 * machine and every run. Writes at most cap - 1 bytes and a NUL; returns the
 * length. */
size_t real_line(uint64_t i, char *buf, size_t cap);

/* Runs the real workloads (real.c): the tables on stdout and real.csv. */
struct opts;
int run_real(const struct opts *o);
/* True when name[0..len) is one of the real paths (threads-run, fork-source...). */
int real_path_known(const char *name, size_t len);

#endif /* BENCH_REAL_H */
