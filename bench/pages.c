/*
 * executor-bench --pages: what a page costs the first time a process touches
 * it. EXEC_FORK's workers are new processes: every page of the context, the
 * shared region and the records buffer that a worker reads is a first touch
 * for it, once in its life. On bare metal that is a fraction of a
 * microsecond; on a virtual machine whose memory is shadow-paged it can be
 * several, even for a page the kernel has already mapped (no fault at all),
 * and that is what a fresh fork executor's first pass pays. The figures say
 * which kind of machine this is; docs/fork.md says what to do about it.
 */
#include "harness.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

#define PG_PAGES 8192 /* 32 MiB of 4 KiB pages */
#define PG_HUGE ((size_t)2 << 20)

static double pg_touch(volatile char *a, size_t bytes, size_t stride, int write)
{
    double t0 = bench_now();
    unsigned s = 0;
    for (size_t i = 0; i < bytes; i += stride) {
        if (write)
            a[i] = 1;
        else
            s += a[i];
    }
    (void)s;
    return bench_now() - t0;
}

/* In a child: the first and the second read of every page of a, in us a
 * page, written to fd (the parent prints them). */
static void pg_child(int fd, char *a, size_t bytes, size_t stride, int populate)
{
    double f[2];
    if (populate)
        madvise(a, bytes, MADV_POPULATE_READ);
    f[0] = pg_touch(a, bytes, stride, 0) / (double)(bytes / stride) * 1e6;
    f[1] = pg_touch(a, bytes, stride, 0) / (double)(bytes / stride) * 1e6;
    ssize_t w = write(fd, f, sizeof f);
    (void)w;
    _exit(0);
}

static int pg_fork(char *a, size_t bytes, size_t stride, int populate, double f[2])
{
    int p[2];
    if (pipe(p) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        pg_child(p[1], a, bytes, stride, populate);
    }
    close(p[1]);
    ssize_t r = read(p[0], f, 2 * sizeof *f);
    close(p[0]);
    waitpid(pid, NULL, 0);
    return r == (ssize_t)(2 * sizeof *f) ? 0 : -1;
}

int run_pages(void)
{
    const size_t bytes = (size_t)PG_PAGES * 4096;
    say("first touch of a page, in us a 4 KiB page (%d pages; a huge page counts as 512):\n",
        PG_PAGES);
    char *a = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        return 1;
    double t = pg_touch(a, bytes, 4096, 1) / PG_PAGES * 1e6;
    double again = pg_touch(a, bytes, 4096, 1) / PG_PAGES * 1e6;
    say("  this process, a new page written (a fault)      %6.2f   again %5.2f\n", t, again);
    double f[2];
    if (pg_fork(a, bytes, 4096, 0, f) == 0)
        say("  a child, an inherited page read (no fault)      %6.2f   again %5.2f\n", f[0],
            f[1]);
    if (pg_fork(a, bytes, 4096, 1, f) == 0)
        say("  the same after MADV_POPULATE_READ               %6.2f   again %5.2f\n", f[0],
            f[1]);
    munmap(a, bytes);

    int mfd = memfd_create("pages", MFD_CLOEXEC);
    char *s = MAP_FAILED;
    if (mfd >= 0 && ftruncate(mfd, (off_t)bytes) == 0)
        s = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (mfd >= 0)
        close(mfd);
    if (s != MAP_FAILED) {
        memset(s, 1, bytes);
        if (pg_fork(s, bytes, 4096, 0, f) == 0)
            say("  a child, a shared (memfd) page read             %6.2f   again %5.2f\n", f[0],
                f[1]);
        munmap(s, bytes);
    }

    /* The same inherited read where the memory is transparent huge pages. */
    char *h = mmap(NULL, bytes + PG_HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (h != MAP_FAILED) {
        char *al = (char *)(((uintptr_t)h + PG_HUGE - 1) & ~(uintptr_t)(PG_HUGE - 1));
        int huge = madvise(al, bytes, MADV_HUGEPAGE) == 0;
        memset(al, 1, bytes);
        if (huge && pg_fork(al, bytes, 4096, 0, f) == 0)
            say("  a child, an inherited page of MADV_HUGEPAGE     %6.2f   again %5.2f\n",
                f[0], f[1]);
        munmap(h, bytes + PG_HUGE);
    }
    say("a fork worker pays the child's figure once for each page it reads (the context's, the\n"
        "records', its own); where it is several us, keep an executor for the whole stream\n"
        "and give a large context huge pages (docs/fork.md)\n");
    return 0;
}
