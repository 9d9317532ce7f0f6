/*
 * EXEC_FORK: a generation's shared region (one memfd mapped MAP_SHARED; the
 * layout is in fork_shm.h), and small helpers every process uses.
 */
#include "fork.h"

#include <ck_pr.h>
#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define FK_MIB ((size_t)1 << 20)

/* ------------------------------------------------------------------------- */
/* Layout                                                                    */
/* ------------------------------------------------------------------------- */

static size_t fk_align(size_t x, size_t a)
{
    return (x + a - 1) & ~(a - 1);
}

struct fk_sin *fk_sin_at(const struct fk_gen *g, unsigned w, unsigned s)
{
    return (struct fk_sin *)(g->base + ((size_t)w * g->nslot + s) * g->in_slot);
}

struct fk_hdr *fk_hdr_at(const struct fk_gen *g, unsigned w)
{
    return (struct fk_hdr *)(g->base + g->in_size + (size_t)w * g->out_worker);
}

struct fk_sout *fk_sout_at(const struct fk_gen *g, unsigned w, unsigned s)
{
    return (struct fk_sout *)((char *)fk_hdr_at(g, w) + g->hdr_size + (size_t)s * g->out_slot);
}

void *fk_private(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    madvise(p, bytes, MADV_DONTFORK);
    return p;
}

void fk_private_free(void *p, size_t bytes)
{
    if (p)
        munmap(p, bytes);
}

/* Sizes g's region for g->nw workers and maps it; 0 or -errno. */
int fk_region_map(struct fk_gen *g, const exec_options_t *o)
{
    g->dcap = o->max_record > 65536 ? o->max_record : 65536;
    g->rcap = o->max_result + 65536;
    /* recs[batch], then the cancel flags (one byte per record). */
    g->recs_size =
        fk_align(sizeof(struct fk_sin) + o->batch * (sizeof(struct exec__rec) + 1), 64);
    g->res_size = fk_align(sizeof(struct fk_sout) + o->batch * sizeof(struct exec__res), 64);
    g->in_slot = g->recs_size + fk_align(g->dcap, 64);
    g->out_slot = g->res_size + fk_align(g->rcap, 64);
    size_t per = g->in_slot + g->out_slot;
    size_t ns = 64 * FK_MIB / per;
    g->nslot = ns > FK_MAX_SLOTS ? FK_MAX_SLOTS : ns < 4 ? 4 : (unsigned)ns;
    g->hdr_size = fk_align(sizeof(struct fk_hdr), 64);
    long pg = sysconf(_SC_PAGESIZE);
    size_t page = pg > 0 ? (size_t)pg : 4096;
    g->in_size = fk_align((size_t)g->nw * g->nslot * g->in_slot, page);
    g->out_worker = fk_align(g->hdr_size + (size_t)g->nslot * g->out_slot, 4096);
    g->size = g->in_size + (size_t)g->nw * g->out_worker;

    int mfd = memfd_create("exec-fork", MFD_CLOEXEC);
    if (mfd < 0)
        return -errno;
    if (ftruncate(mfd, (off_t)g->size) < 0) {
        int e = -errno;
        close(mfd);
        return e;
    }
    void *base = mmap(NULL, g->size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    int e = -errno;
    close(mfd); /* the mapping keeps the memory; no descriptor to leak */
    if (base == MAP_FAILED)
        return e;
    g->base = base;
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------- */

void fk_wake_sup(struct fk *fk)
{
    uint64_t one = 1;
    ssize_t r = write(fk->sup_efd, &one, sizeof one);
    (void)r;
}

uint64_t fk_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* From /proc/PID/smaps_rollup: Pss and Private_Dirty, in kB (unchanged if
 * unknown: e.g. no descriptor free to read it). */
void fk_smaps(int pid, uint64_t *pss, uint64_t *dirty)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    unsigned long long v;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "Pss: %llu kB", &v) == 1)
            *pss = v;
        else if (sscanf(line, "Private_Dirty: %llu kB", &v) == 1)
            *dirty = v;
    }
    fclose(f);
}
