/*
 * EXEC_FORK: a successor copies, before it is ready, the inherited pages its
 * predecessor wrote. A context whose code writes its own memory (an
 * interpreter's collector marks every object of its heap) makes each new
 * worker take a copy-on-write fault per page of it, on its first records:
 * one fault at a time, each an exception, a page copy and a page-table
 * update. Where the predecessor is still there (recycling), the pages it
 * holds exclusively in its private writable mappings (/proc/PID/pagemap,
 * bit 56) are the ones this context writes; the successor breaks sharing of
 * the same pages in bulk (MADV_POPULATE_WRITE, a few system calls) and reads
 * each once, while its predecessor still serves, so that its first records
 * run at full speed. It takes no more memory than the predecessor had: the
 * same pages would be copied anyway. Everything is best effort: a page that
 * is not there, a kernel without MADV_POPULATE_WRITE (before 5.14), or a
 * predecessor already gone only leaves the faults to the records. Runs in the
 * successor process only.
 */
#include "fork.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define FK_PM_PRESENT (1ull << 63)
#define FK_PM_EXCLUSIVE (1ull << 56)
#define FK_PM_BATCH 512 /* pagemap entries read at once */
/* Address space looked at, at most: a mapping larger than FK_PF_HUGE is a
 * reservation (a sanitizer's shadow, a runtime's reserved heap), not a context
 * that was written page by page, and the scan stops after FK_PF_BUDGET. */
#define FK_PF_HUGE ((uintptr_t)64 << 30)
#define FK_PF_BUDGET ((uintptr_t)8 << 30)

#define FK_PF_MAPS 256 /* our own private writable mappings looked at, at most */

/* Our private writable mappings: the successor's, which may be smaller than
 * its predecessor's (a heap that grew after the fork). */
struct fk_pf_self {
    uintptr_t lo[FK_PF_MAPS], hi[FK_PF_MAPS];
    unsigned n;
};

/* The read of each page touches memory that no object of ours covers (a
 * sanitizer's redzones among it): not instrumented. */
#if defined(__clang__)
#define FK_PF_RAW __attribute__((no_sanitize("address", "thread")))
#elif defined(__GNUC__)
#define FK_PF_RAW __attribute__((no_sanitize_address, no_sanitize_thread))
#else
#define FK_PF_RAW
#endif

/* [a, b) where it is ours and writable: copied now, then read once. */
FK_PF_RAW static size_t fk_pf_range(const struct fk_pf_self *me, uintptr_t a, uintptr_t b,
                                    size_t page)
{
    size_t n = 0;
    for (unsigned k = 0; k < me->n; k++) {
        uintptr_t lo = a > me->lo[k] ? a : me->lo[k], hi = b < me->hi[k] ? b : me->hi[k];
        if (lo >= hi || madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE) != 0)
            continue; /* (or no such advice: the records take the faults) */
        for (uintptr_t p = lo; p < hi; p += page, n++)
            (void)*(volatile const char *)p;
    }
    return n;
}

static void fk_pf_own(struct fk_pf_self *me)
{
    me->n = 0;
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return;
    char line[512];
    while (me->n < FK_PF_MAPS && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && strcmp(perms, "rw-p") == 0) {
            me->lo[me->n] = lo;
            me->hi[me->n++] = hi;
        }
    }
    fclose(f);
}

size_t fk_prefault(pid_t pred, pid_t zygote)
{
    char path[64];
    /* Still the predecessor: a child of our zygote. */
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pred);
    FILE *st = fopen(path, "re");
    if (!st)
        return 0;
    char buf[512];
    size_t got = fread(buf, 1, sizeof buf - 1, st);
    fclose(st);
    buf[got] = 0;
    const char *rp = strrchr(buf, ')');
    int ppid = 0;
    char state;
    if (!rp || sscanf(rp + 1, " %c %d", &state, &ppid) != 2 || ppid != zygote)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pred);
    FILE *maps = fopen(path, "re");
    snprintf(path, sizeof path, "/proc/%d/pagemap", (int)pred);
    int pm = open(path, O_RDONLY | O_CLOEXEC);
    if (!maps || pm < 0) {
        if (maps)
            fclose(maps);
        if (pm >= 0)
            close(pm);
        return 0;
    }
    long pg = sysconf(_SC_PAGESIZE);
    const size_t page = pg > 0 ? (size_t)pg : 4096;
    static struct fk_pf_self me; /* (one successor per process) */
    fk_pf_own(&me);
    size_t copied = 0;
    uintptr_t budget = FK_PF_BUDGET;
    char line[512];
    uint64_t ent[FK_PM_BATCH];
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || strcmp(perms, "rw-p") != 0 ||
            hi - lo > FK_PF_HUGE)
            continue;
        if (hi - lo > budget)
            break;
        budget -= hi - lo;
        uintptr_t run = 0, at = lo; /* run: where exclusive pages began (0: none) */
        while (at < hi) {
            size_t n = (hi - at) / page;
            if (n > FK_PM_BATCH)
                n = FK_PM_BATCH;
            ssize_t r = pread(pm, ent, n * sizeof *ent, (off_t)(at / page * sizeof *ent));
            if (r <= 0)
                break;
            n = (size_t)r / sizeof *ent;
            for (size_t i = 0; i < n; i++, at += page) {
                bool mine = (ent[i] & FK_PM_PRESENT) && (ent[i] & FK_PM_EXCLUSIVE);
                if (mine && !run)
                    run = at;
                if (!mine && run) {
                    copied += fk_pf_range(&me, run, at, page);
                    run = 0;
                }
            }
        }
        if (run)
            copied += fk_pf_range(&me, run, at, page);
    }
    fclose(maps);
    close(pm);
    return copied;
}
