/*
 * Allocation failures on demand, for tests (EXEC_FAULTS builds only: in
 * other builds this file compiles to nothing and the library keeps no such
 * state). exec_test_fail_alloc(n) makes the nth allocation from now fail
 * (and, with `every`, each one after it), 0 turns it off; it returns how
 * many allocations were counted since the last call.
 */
#include "alloc.h"

#ifdef EXEC_FAULTS
#include <stdint.h>

static int64_t fault_countdown; /* allocations left before the failing one; <= 0: off */
static int fault_every;
static int64_t fault_counted;

int64_t exec_test_fail_alloc(int64_t nth, int every);

int64_t exec_test_fail_alloc(int64_t nth, int every)
{
    int64_t counted = __atomic_exchange_n(&fault_counted, 0, __ATOMIC_ACQ_REL);
    __atomic_store_n(&fault_every, every, __ATOMIC_RELAXED);
    __atomic_store_n(&fault_countdown, nth > 0 ? nth : 0, __ATOMIC_RELEASE);
    return counted;
}

bool exec__fault(void)
{
    __atomic_add_fetch(&fault_counted, 1, __ATOMIC_RELAXED);
    int64_t left = __atomic_load_n(&fault_countdown, __ATOMIC_ACQUIRE);
    if (left <= 0)
        return false;
    left = __atomic_sub_fetch(&fault_countdown, 1, __ATOMIC_ACQ_REL);
    if (left == 0) {
        if (__atomic_load_n(&fault_every, __ATOMIC_RELAXED))
            __atomic_store_n(&fault_countdown, 1, __ATOMIC_RELEASE);
        return true;
    }
    return false;
}
#endif
