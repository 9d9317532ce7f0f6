/*
 * The leak check every suite runs after each test (suite.h, resources.h):
 * a group whose test leaves a descriptor, a thread, a child process or a
 * memfd mapping behind fails; one that cleans up passes. Each group runs in a
 * child process of its own, so what it leaks goes with it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "executor.h"
/* Leaks here are on purpose: no need to wait for them long. */
#define TU_SETTLE_MS 300
#include "suite.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static int leak_fd = -1;
static void *leak_map;
static pid_t leak_kid;
static pthread_t leak_th;

static void *sleeper(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

static void leaves_fd(void **state)
{
    (void)state;
    leak_fd = open("/dev/null", O_RDONLY);
    assert_true(leak_fd >= 0);
}

static void leaves_thread(void **state)
{
    (void)state;
    assert_int_equal(pthread_create(&leak_th, NULL, sleeper, NULL), 0);
}

static void leaves_child(void **state)
{
    (void)state;
    leak_kid = fork();
    assert_true(leak_kid >= 0);
    if (leak_kid == 0) {
        pause();
        _exit(0);
    }
}

static void leaves_mapping(void **state)
{
    (void)state;
    int fd = memfd_create("leak", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 4096), 0);
    leak_map = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(leak_map != MAP_FAILED);
    close(fd);
}

static void cleans_up(void **state)
{
    (void)state;
    int fd = open("/dev/null", O_RDONLY);
    assert_true(fd >= 0);
    close(fd);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, tu_res__nop, NULL), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    pid_t kid = fork();
    assert_true(kid >= 0);
    if (kid == 0)
        _exit(0);
    assert_int_equal(waitpid(kid, NULL, 0), kid);
}

/* Runs a one-test group in a child; returns the child's exit status (the
 * number of tests that failed), or -1. */
static int run_group(CMUnitTestFunction fn)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* Its own output would read as this suite's: keep it quiet. */
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
            close(devnull);
        }
        /* Threads a runtime starts again in a forked child come first. */
        tu_res_warm_up();
        const struct CMUnitTest one[] = {{"inner", fn, NULL, NULL, NULL}};
        int failed = tu_run_group_tests(one, NULL, NULL);
        if (leak_kid > 0)
            kill(leak_kid, SIGKILL);
        _exit(failed);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

static void test_leaks_fail(void **state)
{
    (void)state;
    assert_int_equal(run_group(leaves_fd), 1);
    assert_int_equal(run_group(leaves_thread), 1);
    assert_int_equal(run_group(leaves_child), 1);
    assert_int_equal(run_group(leaves_mapping), 1);
}

static void test_clean_passes(void **state)
{
    (void)state;
    assert_int_equal(run_group(cleans_up), 0);
}

/* The counts move with what the process holds. */
static void test_counts(void **state)
{
    (void)state;
    tu_res_t a = tu_res_now();
    int fd = open("/dev/null", O_RDONLY);
    assert_true(fd >= 0);
    tu_res_t b = tu_res_now();
    assert_int_equal(b.fds, a.fds + 1);
    char why[256];
    assert_false(tu_res_within(&a, &b, why, sizeof why));
    assert_non_null(strstr(why, "fds"));
    close(fd);
    assert_true(tu_res_settle(&a, 1000, why, sizeof why));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_leaks_fail),
        cmocka_unit_test(test_clean_passes),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
