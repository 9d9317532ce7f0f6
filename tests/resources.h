/*
 * What the process holds, for leak checks after a test or a torture round:
 * open descriptors, threads, descendant processes (zombies included) and
 * mappings of memfd regions, read from /proc. A snapshot taken before is
 * compared with the process after, polling to a deadline: a joined thread may
 * stay listed for a moment, and a child is counted until it is reaped.
 *
 * Plain C, no test framework: the suites (through suite.h) and the torture
 * program use it alike.
 */
#ifndef EXEC_RESOURCES_H
#define EXEC_RESOURCES_H

#include <dirent.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct tu_res {
    int fds;        /* open descriptors */
    int threads;    /* threads of this process */
    int children;   /* descendant processes, zombies included */
    int memfd_maps; /* mappings of memfd regions */
} tu_res_t;

/* Entries of a directory, less `own` (the descriptor opendir itself holds). */
static inline int tu_res__count_dir(const char *path, int own)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - own;
}

/* Descendants of pid: the children of each of its threads, and theirs, up to
 * depth levels down (a forked worker's own helpers included). */
static inline int tu_res__descendants(long pid, int depth)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return 0; /* gone meanwhile */
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char cpath[320];
        snprintf(cpath, sizeof cpath, "/proc/%ld/task/%s/children", pid, e->d_name);
        FILE *f = fopen(cpath, "r");
        if (!f)
            continue;
        long kid;
        while (fscanf(f, "%ld", &kid) == 1)
            n += 1 + (depth > 1 ? tu_res__descendants(kid, depth - 1) : 0);
        fclose(f);
    }
    closedir(d);
    return n;
}

static inline int tu_res__memfd_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "/memfd:"))
            n++;
    fclose(f);
    return n;
}

static inline tu_res_t tu_res_now(void)
{
    tu_res_t r;
    r.fds = tu_res__count_dir("/proc/self/fd", 1);
    r.threads = tu_res__count_dir("/proc/self/task", 0);
    r.children = tu_res__descendants((long)getpid(), 3);
    r.memfd_maps = tu_res__memfd_maps();
    return r;
}

/* Says in why (if not NULL) what now holds more than base; true when nothing does. */
static inline bool tu_res_within(const tu_res_t *base, const tu_res_t *now, char *why,
                                 size_t whylen)
{
    bool ok = now->fds <= base->fds && now->threads <= base->threads &&
              now->children <= base->children && now->memfd_maps <= base->memfd_maps;
    if (!ok && why)
        snprintf(why, whylen,
                 "left behind: fds %d -> %d, threads %d -> %d, child processes %d -> %d, "
                 "memfd mappings %d -> %d",
                 base->fds, now->fds, base->threads, now->threads, base->children,
                 now->children, base->memfd_maps, now->memfd_maps);
    return ok;
}

/* Polls until the process holds no more than base, for up to limit_ms. True
 * when it got there; else false, with the last difference in why. */
static inline bool tu_res_settle(const tu_res_t *base, unsigned limit_ms, char *why,
                                 size_t whylen)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        tu_res_t now = tu_res_now();
        if (tu_res_within(base, &now, why, whylen))
            return true;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long ms = (long)(t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms >= (long)limit_ms)
            return false;
        struct timespec nap = {0, 5 * 1000000L};
        nanosleep(&nap, NULL);
    }
}

static void *tu_res__nop(void *arg) { return arg; }

/*
 * Starts and joins one thread, so that the threads a sanitizer runtime starts
 * with the process's first pthread_create() exist before a snapshot and are
 * not taken for the library's. Call once before the first snapshot.
 */
static inline void tu_res_warm_up(void)
{
    pthread_t th;
    if (pthread_create(&th, NULL, tu_res__nop, NULL) == 0)
        pthread_join(th, NULL);
}

#endif /* EXEC_RESOURCES_H */
