/*
 * EXEC_FORK: the layout of a generation's shared region (one memfd, mapped
 * MAP_SHARED by the parent and inherited by the zygote and the workers).
 *
 *   [input section: read-only in workers]
 *     per worker, per slot: struct fk_sin, recs[batch], data[dcap]
 *   [output section: written by workers]
 *     per worker: struct fk_hdr, then per slot: struct fk_sout, res[batch], rdata[rcap]
 *
 * Ring entries are slot indices, never pointers. The parent treats everything
 * in the output section as untrusted input: it never uses a worker's ring mask,
 * and it bounds-checks every index, count, offset and length it reads.
 */
#ifndef EXEC_FORK_SHM_H
#define EXEC_FORK_SHM_H

#include <ck_ec.h>
#include <ck_ring.h>
#include <stdint.h>

#define FK_RING 64u      /* ring entries (power of two, > slots per worker) */
#define FK_NOSLOT 0xffffffffu

/* Worker states in fk_hdr.state. */
#define FK_W_STARTING 0u
#define FK_W_READY 1u
#define FK_W_INITFAIL 2u
#define FK_W_RETIRED 3u /* left on purpose (records-per-worker limit) */

/* Recycling hand-off, in fk_hdr.handoff. */
#define FK_H_NONE 0u  /* no successor ready */
#define FK_H_READY 1u /* parent: a successor is ready; leave at your records limit */
#define FK_H_NOW 2u   /* parent: a successor is ready; leave at the next batch boundary */
#define FK_H_GO 3u    /* leaving worker (or parent): the place is the successor's */

/* One worker place's header. Written by its worker except `stop`, `admit`,
 * `handoff` and the producer side of `in` (the parent's). While a successor
 * waits for the place (recycling) it writes only `succ_state`, until
 * `handoff` reads FK_H_GO: from then on the place is its own. The parent
 * reads what a worker wrote as hints only (where it is, whether it is busy):
 * it never waits on them without a deadline of its own. */
struct fk_hdr {
    uint32_t state;
    uint32_t busy;     /* 1 while a batch is being run */
    uint32_t cur_slot; /* the slot it is on */
    uint32_t cur_rec;  /* the record index it is on */
    uint32_t tick;     /* seqlock over cur_slot/cur_rec: odd while they change */
    int32_t pid;
    uint32_t stop; /* parent: leave at the next batch boundary */
    uint32_t want_out;   /* worker: near its records limit, asks for a successor */
    uint32_t handoff;    /* FK_H_* */
    uint32_t succ_state; /* the successor's FK_W_STARTING/READY/INITFAIL */
    uint32_t admit;      /* parent: the pid it watches (has its pidfd); a new
                            worker runs no record before it reads its own pid here */
    /* Parent: a timeout's or cancel's signal aimed at the record of tick
     * aim_tick. While aim_busy, a worker leaving that record waits; aim_sig is
     * what was sent. */
    uint32_t aim_tick, aim_busy, aim_sig;
    char pad0[64 - 14 * sizeof(uint32_t)];
    struct ck_ec32 ec; /* the parent bumps it after each enqueue on `in` */
    char pad1[64 - sizeof(struct ck_ec32)];
    struct ck_ring in;  /* parent -> worker: slots to run */
    struct ck_ring out; /* worker -> parent: slots done */
    ck_ring_buffer_t inbuf[FK_RING];
    ck_ring_buffer_t outbuf[FK_RING];
    /* Figures for display only (the parent trusts them for nothing else):
     * this process's start (fork to the end of worker_init), and time spent
     * running batches and waiting for them, in ns. */
    uint64_t startup_ns, busy_ns, idle_ns;
    uint64_t idle_since; /* CLOCK_MONOTONIC ns when it began waiting, or 0 */
    /* Parent-written: how long the last successor of this place took from the
     * ask to ready (ns), so that the next one is asked for early enough. */
    uint64_t lead_ns;
};

/* Parent-written, read-only in the worker. */
struct fk_sin {
    uint32_t n;    /* records in the slot */
    uint32_t from; /* first record to run in this pass */
    /* 0: the records follow this struct. Else where they are: a run of the
     * host's array in the records buffer (mapped at the same address in
     * every process), which is where their bytes lie too. */
    uint64_t view;
    char pad[48];
};

/* Worker-written (the parent zeroes done and cur before each pass). */
struct fk_sout {
    uint32_t done;      /* records [from, done) have results: the pass is over */
    uint32_t cur;       /* 1 + the record the pass is on (a hint for blame) */
    uint64_t rdata_len; /* bytes of rdata used by this pass */
    char pad[48];
};

#endif /* EXEC_FORK_SHM_H */
