/*
 * The suites' runner: tu_run_group_tests() runs a cmocka group as
 * cmocka_run_group_tests() does, and after each test (its own teardown
 * included) checks that the process is back to what it held before the test:
 * no extra descriptor, thread, child process or memfd mapping (resources.h).
 * A test that leaves one behind fails with what it left.
 */
#ifndef EXEC_SUITE_H
#define EXEC_SUITE_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "resources.h"

/* How long a test's leftovers may take to go (threads being joined, children
 * being reaped) before they count as leaked. */
#ifndef TU_SETTLE_MS
#define TU_SETTLE_MS 5000
#endif

struct tu__case {
    CMFixtureFunction setup, teardown;
    void *state;
    tu_res_t base;
};

static struct tu__case *tu__cases, *tu__current;
static size_t tu__ncases, tu__next;

static int tu__case_setup(void **state)
{
    static bool warm;
    /* The case comes as the test's initial state; a group setup that sets a
     * state of its own hides it, and then tests run in order anyway. */
    struct tu__case *c = *state;
    uintptr_t at = (uintptr_t)c, lo = (uintptr_t)tu__cases;
    if (at < lo || at >= lo + tu__ncases * sizeof *c || (at - lo) % sizeof *c) {
        c = &tu__cases[tu__next < tu__ncases ? tu__next : tu__ncases - 1];
    } else {
        *state = c->state;
    }
    tu__current = c;
    tu__next = (size_t)(c - tu__cases) + 1;
    if (!warm) {
        tu_res_warm_up();
        warm = true;
    }
    c->base = tu_res_now();
    return c->setup ? c->setup(state) : 0;
}

static int tu__case_teardown(void **state)
{
    struct tu__case *c = tu__current;
    int rc = c->teardown ? c->teardown(state) : 0;
    char why[256];
    if (!tu_res_settle(&c->base, TU_SETTLE_MS, why, sizeof why)) {
        print_error("%s\n", why);
        return -1;
    }
    return rc;
}

static inline int tu__run_group(const char *name, const struct CMUnitTest *tests, size_t n,
                                CMFixtureFunction group_setup, CMFixtureFunction group_teardown)
{
    struct CMUnitTest *t = calloc(n, sizeof *t);
    struct tu__case *c = calloc(n, sizeof *c);
    if (!t || !c) {
        free(t);
        free(c);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        c[i].setup = tests[i].setup_func;
        c[i].teardown = tests[i].teardown_func;
        c[i].state = tests[i].initial_state;
        t[i] = tests[i];
        t[i].setup_func = tu__case_setup;
        t[i].teardown_func = tu__case_teardown;
        t[i].initial_state = &c[i];
    }
    tu__cases = c;
    tu__ncases = n;
    tu__next = 0;
    int rc = _cmocka_run_group_tests(name, t, n, group_setup, group_teardown);
    tu__cases = NULL;
    tu__ncases = 0;
    free(t);
    free(c);
    return rc;
}

/* Valgrind 3.19 lacks pidfd_open(), which EXEC_FORK needs: the valgrind run
 * of the suites leaves the fork suites out, and other suites skip their
 * EXEC_FORK cases when this says they run under it. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define TU_HAVE_VALGRIND_H 1
#endif
#endif

static inline bool tu_under_valgrind(void)
{
#ifdef TU_HAVE_VALGRIND_H
    return RUNNING_ON_VALGRIND != 0;
#else
    const char *p = getenv("LD_PRELOAD"); /* valgrind preloads its vgpreload_*.so */
    return p && strstr(p, "vgpreload") != NULL;
#endif
}

/* Which sanitizer the build has (gcc says __SANITIZE_*__, clang
 * __has_feature): TU_ASAN, TU_TSAN. */
#if defined(__SANITIZE_ADDRESS__)
#define TU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TU_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif

/* True in a TSan build. */
static inline bool tu_tsan(void)
{
#ifdef TU_TSAN
    return true;
#else
    return false;
#endif
}

/* True in an ASan or TSan build: suites that push millions of records for counts
 * and memory figures push fewer there (the sanitizers look at the paths, not at how
 * often they are taken). */
static inline bool tu_sanitized(void)
{
#if defined(TU_ASAN) || defined(TU_TSAN)
    return true;
#else
    return false;
#endif
}

/* True (and says so) when an EXEC_FORK case is to be left out: under valgrind. */
static inline bool tu_fork_left_out(bool is_fork)
{
    if (!is_fork || !tu_under_valgrind())
        return false;
    print_message("under valgrind (no pidfd_open): the EXEC_FORK case is left out\n");
    return true;
}

/* cmocka_run_group_tests() with a leak check after every test. */
#define tu_run_group_tests(tests, group_setup, group_teardown)                                     \
    tu__run_group(#tests, tests, sizeof(tests) / sizeof((tests)[0]), group_setup, group_teardown)

#endif /* EXEC_SUITE_H */
