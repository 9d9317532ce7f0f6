/*
 * Event counts (ck_ec) need a clock and futex calls from their user. Workers
 * of one process use private futexes; workers that are other processes wait
 * on a shared mapping, where only the shared kind works (a private futex
 * there loses wake-ups between processes).
 */
#include "exec_internal.h"

#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int exec__ec_time(const struct ck_ec_ops *ops, struct timespec *out)
{
    (void)ops;
    return clock_gettime(CLOCK_MONOTONIC, out);
}

/* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, as ck_ec gives. */
static void exec__ec_wait_private(const struct ck_ec_wait_state *st, const uint32_t *addr,
                                  uint32_t expected, const struct timespec *deadline)
{
    (void)st;
    syscall(SYS_futex, addr, FUTEX_WAIT_BITSET_PRIVATE, expected, deadline, NULL,
            FUTEX_BITSET_MATCH_ANY);
}

static void exec__ec_wake_private(const struct ck_ec_ops *ops, const uint32_t *addr)
{
    (void)ops;
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static void exec__ec_wait_shared(const struct ck_ec_wait_state *st, const uint32_t *addr,
                                 uint32_t expected, const struct timespec *deadline)
{
    (void)st;
    syscall(SYS_futex, addr, FUTEX_WAIT_BITSET, expected, deadline, NULL, FUTEX_BITSET_MATCH_ANY);
}

static void exec__ec_wake_shared(const struct ck_ec_ops *ops, const uint32_t *addr)
{
    (void)ops;
    syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static const struct ck_ec_ops exec__ec_private_ops = {
    .gettime = exec__ec_time,
    .wait32 = exec__ec_wait_private,
    .wake32 = exec__ec_wake_private,
    .busy_loop_iter = 64,
};

static const struct ck_ec_ops exec__ec_shared_ops = {
    .gettime = exec__ec_time,
    .wait32 = exec__ec_wait_shared,
    .wake32 = exec__ec_wake_shared,
    .busy_loop_iter = 64,
};

const struct ck_ec_mode exec__ec_threads = {.ops = &exec__ec_private_ops, .single_producer = false};
const struct ck_ec_mode exec__ec_procs = {.ops = &exec__ec_shared_ops, .single_producer = false};
