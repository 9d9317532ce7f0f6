/*
 * Fuzz target: what the parent decodes from a fork worker's shared memory.
 * A worker may write anything there (a scribbler, a stray pointer), so the
 * bytes of a slot's pass header (done, rdata_len), its result entries and its
 * result area come from the input, and fk_take_pass() (backends/fork/queue.c,
 * what fk_pull() runs on every returned slot) must:
 *
 *   - refuse a header whose done is not in (from, n] or whose length passes
 *     the area, and take any other;
 *   - give each record of the pass one documented status: a cancel or soft
 *     timeout the parent asked for wins, an entry that claims bytes outside
 *     the area or an unknown status reads EXEC_EWORKER (and the pass is not
 *     clean), anything else keeps the worker's status;
 *   - hand out, for 0 and EXEC_EUSER, exactly the bytes the entry names,
 *     whether they stay in place or are copied apart over several passes;
 *   - read nothing outside the slot (ASan, with every buffer sized exactly).
 *
 * Input: n, from, a rcap and rflags, then per pass: done, rdata_len, the
 * entries of [from, n) and the area's bytes.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fork.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct in {
    const uint8_t *p;
    size_t left;
};

static void take(struct in *in, void *out, size_t n)
{
    size_t k = n < in->left ? n : in->left;
    memset(out, 0, n);
    memcpy(out, in->p, k);
    in->p += k;
    in->left -= k;
}

static uint32_t take_u32(struct in *in, uint32_t mod)
{
    uint32_t v;
    take(in, &v, sizeof v);
    return mod ? v % mod : v;
}

#define CHECK(c)                                                                                \
    do {                                                                                        \
        if (!(c)) {                                                                             \
            fprintf(stderr, "fuzz_fork_results: %s:%d: %s\n", __FILE__, __LINE__, #c);         \
            abort();                                                                            \
        }                                                                                       \
    } while (0)

static bool documented(int32_t st)
{
    return st == 0 || st == EXEC_EUSER || st == EXEC_ERESULT2BIG || st == EXEC_ECANCELLED ||
           st == EXEC_ERECTIMEOUT || st == EXEC_EWORKER;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in in = {data, size};
    uint8_t head[3];
    take(&in, head, sizeof head);
    uint32_t n = 1 + head[0] % 64;
    uint32_t from = head[1] % n;
    /* Small areas make lengths past the end likely; 0 is legal (no bytes). */
    uint64_t rcap = (uint64_t)head[2] * 4;

    struct fk_slot s;
    memset(&s, 0, sizeof s);
    struct fk_sout sout;
    memset(&sout, 0, sizeof sout);
    s.b.n = s.b.cap = n;
    s.b.res = calloc(n, sizeof *s.b.res);
    s.b.rflags = malloc(n);
    s.sres = malloc((size_t)n * sizeof *s.sres);
    s.srdata = malloc(rcap ? rcap : 1);
    s.sout = &sout;
    s.from = from;
    /* A slot whose earlier passes were copied apart, or a fresh one. */
    s.copied = from > 0;
    CHECK(s.b.res && s.b.rflags && s.sres && s.srdata);
    take(&in, s.b.rflags, n);
    for (uint32_t i = 0; i < n; i++)
        s.b.rflags[i] &= EXEC__RF_CANCEL | EXEC__RF_SOFT;

    struct exec__res want[64];
    char *area = malloc(rcap ? rcap : 1);
    CHECK(area);
    for (int pass = 0; pass < 4 && s.from < n; pass++) {
        uint32_t done_in = take_u32(&in, n + 2);
        uint64_t rlen_in;
        take(&in, &rlen_in, sizeof rlen_in);
        rlen_in %= rcap + 8;
        sout.done = done_in;
        sout.rdata_len = rlen_in;
        take(&in, &s.sres[s.from], (size_t)(n - s.from) * sizeof *s.sres);
        for (uint32_t j = s.from; j < n; j++) {
            /* Mostly statuses a worker may write, some garbage. */
            int32_t st = s.sres[j].status;
            static const int32_t pick[] = {0, EXEC_EUSER, EXEC_ERESULT2BIG, EXEC_ECANCELLED,
                                           EXEC_ERECTIMEOUT, EXEC_EWORKER, EXEC_ECRASHED};
            if ((uint32_t)st % 8 < 7)
                s.sres[j].status = pick[(uint32_t)st % 8];
            s.sres[j].off %= rcap + 16;
            s.sres[j].len %= (uint32_t)rcap + 16;
            want[j] = s.sres[j];
        }
        take(&in, s.srdata, rcap);
        memcpy(area, s.srdata, rcap);
        size_t rbuf_before = s.rbuf_len;
        bool was_copied = s.copied;

        bool clean = true;
        uint32_t done = fk_take_pass(&s, rcap, &clean);
        bool valid = done_in > s.from && done_in <= n && rlen_in <= rcap;
        CHECK(valid == (done != 0));
        if (!done) {
            CHECK(!clean);
            break;
        }
        CHECK(done == done_in);
        bool in_place = !was_copied && s.from == 0 && done == n;
        bool any_bad = false;
        for (uint32_t j = s.from; j < done; j++) {
            const struct exec__res *o = &s.b.res[j], *w = &want[j];
            uint8_t rf = s.b.rflags[j];
            CHECK(documented(o->status));
            if ((rf & EXEC__RF_SOFT) && w->status == EXEC_ERECTIMEOUT) {
                CHECK(o->status == EXEC_ERECTIMEOUT);
                continue;
            }
            if (rf & EXEC__RF_CANCEL) {
                CHECK(o->status == EXEC_ECANCELLED);
                continue;
            }
            bool has_data = w->status == 0 || w->status == EXEC_EUSER;
            bool fits = w->off <= rlen_in && w->len <= rlen_in - w->off;
            if ((!has_data && w->status != EXEC_ERESULT2BIG) || (has_data && !fits)) {
                CHECK(o->status == EXEC_EWORKER);
                any_bad = true;
                continue;
            }
            CHECK(o->status == w->status);
            CHECK(o->user_code == (w->status == EXEC_EUSER ? w->user_code : 0));
            if (!has_data)
                continue;
            CHECK(o->len == w->len);
            if (in_place) {
                CHECK(s.b.rdata == s.srdata && o->off == w->off);
            } else {
                CHECK(s.b.rdata == s.rbuf && o->off >= rbuf_before &&
                      o->off + o->len <= s.rbuf_len);
            }
            CHECK(o->len == 0 || memcmp(s.b.rdata + o->off, area + w->off, o->len) == 0);
        }
        CHECK(clean == !any_bad);
        s.from = done;
    }
    free(area);
    free(s.rbuf);
    free(s.srdata);
    free(s.sres);
    free(s.b.rflags);
    free(s.b.res);
    return 0;
}
