/*
 * executor-torture: the records, the contexts and the classifier. A record
 * says what process() does with it (answer light or heavy, fail, crash, hang,
 * run until cancelled); its bytes are drawn from the round's seed and its tag,
 * so the consumer rebuilds them and knows the one right answer for each
 * context generation without keeping anything per record.
 */
#include "torture.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct t_shared *t_sh;

uint64_t t_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

uint64_t t_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void t_sleep_us(unsigned us)
{
    struct timespec ts = {us / 1000000u, (long)(us % 1000000u) * 1000L};
    nanosleep(&ts, NULL);
}

static uint64_t fnv(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* ------------------------------------------------------------------------- */
/* Records                                                                   */
/* ------------------------------------------------------------------------- */

enum kind t_plan_kind(uint64_t round_seed, uint64_t tag, const struct mix *m)
{
    uint64_t r = t_mix(round_seed ^ (tag + 1) * 0x9e3779b97f4a7c15ull) % 1000000u;
    if (r < m->crash) {
        switch (r % 3) {
        case 0: return K_SEGV;
        case 1: return K_ABORT;
        default: return K_EXIT;
        }
    }
    r -= m->crash;
    if (r < m->hang)
        return K_HANG;
    r -= m->hang;
    if (r < m->user)
        return K_USER;
    r -= m->user;
    if (r < m->heavy)
        return K_HEAVY;
    return K_LIGHT;
}

static size_t payload_len(uint64_t x, enum kind k)
{
    if (k == K_HEAVY)
        return 64 + x % (T_REC_MAX - sizeof(struct t_hdr) - 64);
    return x % 200;
}

size_t t_rec_build(uint64_t round_seed, uint64_t tag, enum kind k, uint64_t min_gen,
                   uint32_t deaf_ms, unsigned char *buf)
{
    uint64_t x = t_mix(round_seed + tag * 0xd1b54a32d192ed03ull);
    struct t_hdr h = {.magic = T_REC_MAGIC, .kind = (uint8_t)k, .tag = tag,
                      .min_gen = min_gen, .slot = t_sticky_slot(tag)};
    if (k == K_HEAVY)
        h.spin_us = 100 + (uint32_t)((x >> 24) % 1400);
    if (k == K_STICKY)
        h.spin_us = deaf_ms * 1000u;
    memcpy(buf, &h, sizeof h);
    size_t n = payload_len(x, k);
    uint64_t y = x | 1;
    for (size_t i = 0; i < n; i++) {
        y ^= y << 13;
        y ^= y >> 7;
        y ^= y << 17;
        buf[sizeof h + i] = (unsigned char)y;
    }
    return sizeof h + n;
}

uint64_t t_salt(uint64_t round_seed, uint64_t gen)
{
    return t_mix(round_seed ^ 0x5bd1e9955bd1e995ull ^ (gen + 1) * 0x9e3779b97f4a7c15ull);
}

/* A successful result: tag, min_gen, a hash of the payload mixed with the
 * context's salt, then the payload's first (up to) 16 bytes reversed. */
#define ECHO 16

static int answer(const struct t_ctx *c, const struct t_hdr *h, const unsigned char *payload,
                  size_t n, exec_writer_t *out)
{
    size_t echo = n < ECHO ? n : ECHO;
    unsigned char *p = exec_write_reserve(out, 24 + echo);
    if (!p)
        return 94;
    uint64_t v = t_mix(fnv(payload, n) ^ c->salt);
    memcpy(p, &h->tag, 8);
    memcpy(p + 8, &h->min_gen, 8);
    memcpy(p + 16, &v, 8);
    for (size_t i = 0; i < echo; i++)
        p[24 + i] = payload[echo - 1 - i];
    return 0;
}

const char *t_check_ok_data(uint64_t round_seed, enum kind k, const exec_result_t *r)
{
    unsigned char rec[T_REC_MAX];
    size_t len = t_rec_build(round_seed, r->tag, k, 0, 0, rec);
    const unsigned char *payload = rec + sizeof(struct t_hdr);
    size_t n = len - sizeof(struct t_hdr);
    size_t echo = n < ECHO ? n : ECHO;
    if (!r->data || r->len != 24 + echo)
        return "result of the wrong length";
    const unsigned char *d = r->data;
    uint64_t tag, min_gen, v;
    memcpy(&tag, d, 8);
    memcpy(&min_gen, d + 8, 8);
    memcpy(&v, d + 16, 8);
    if (tag != r->tag)
        return "result of another record";
    if (r->generation < min_gen)
        return "ran on a context older than the one current at submit";
    if (v != t_mix(fnv(payload, n) ^ t_salt(round_seed, r->generation)))
        return "answer not from its generation's context";
    for (size_t i = 0; i < echo; i++)
        if (d[24 + i] != payload[echo - 1 - i])
            return "result bytes altered";
    return NULL;
}

/* ------------------------------------------------------------------------- */
/* The classifier                                                            */
/* ------------------------------------------------------------------------- */

struct t_ws {
    uint64_t magic;
};
#define T_WS_MAGIC 0x7773777377737773ull

static void crash(enum kind k)
{
    switch (k) {
    case K_SEGV: {
        volatile uintptr_t bad = 16; /* the first page is never mapped */
        *(volatile int *)bad = 1;
        break;
    }
    case K_EXIT:
        _exit(T_EXIT_CODE);
    default:
        break;
    }
    abort();
}

static int t_worker_init(void *ctxp, void **ws)
{
    const struct t_ctx *c = ctxp;
    if (c->bad == B_INIT_REFUSE)
        return 1;
    if (c->bad == B_INIT_CRASH)
        abort();
    struct t_ws *w = malloc(sizeof *w);
    if (!w)
        return 1;
    w->magic = T_WS_MAGIC;
    *ws = w;
    return 0;
}

static void t_worker_fini(void *ctxp, void *ws)
{
    (void)ctxp;
    free(ws);
}

static int spin(const struct t_hdr *h, exec_writer_t *out)
{
    uint64_t end = t_now_ns() + (uint64_t)h->spin_us * 1000u;
    volatile uint64_t x = h->tag;
    while (t_now_ns() < end) {
        for (int i = 0; i < 64; i++)
            x = t_mix(x + 1);
        if (exec_cancelled(out))
            return 1; /* stopped early */
    }
    return 0;
}

static int sticky(const struct t_hdr *h, exec_writer_t *out)
{
    uint32_t s = h->slot % T_SLOTS;
    atomic_store(&t_sh->slot[s].running, h->tag + 1);
    bool deaf = h->spin_us != 0;
    uint64_t end = t_now_ns() + (deaf ? (uint64_t)h->spin_us * 1000u
                                      : (uint64_t)T_STICKY_MS * 1000000u);
    int rc = T_STICKY_CODE;
    while (t_now_ns() < end) {
        if (!deaf && exec_cancelled(out)) {
            rc = 1;
            break;
        }
        t_sleep_us(200);
    }
    atomic_store(&t_sh->slot[s].done, h->tag + 1);
    return rc;
}

static int t_process(void *ctxp, void *wsp, const void *rec, size_t len, exec_writer_t *out)
{
    const struct t_ctx *c = ctxp;
    const struct t_ws *ws = wsp;
    struct t_hdr h;
    if (len < sizeof h)
        return 90;
    memcpy(&h, rec, sizeof h);
    if (h.magic != T_REC_MAGIC)
        return 91;
    if (h.tag < T_MAX_TAGS)
        atomic_fetch_add(&t_sh->calls[h.tag], 1);
    if (c->magic != T_CTX_MAGIC)
        return 92;
    if (!ws || ws->magic != T_WS_MAGIC)
        return 93;
    if (c->bad == B_CRASH)
        crash(K_SEGV);
    if (c->bad == B_HANG)
        for (;;)
            pause();
    const unsigned char *payload = (const unsigned char *)rec + sizeof h;
    size_t n = len - sizeof h;
    switch ((enum kind)h.kind) {
    case K_HEAVY:
        if (spin(&h, out))
            return 1;
        return answer(c, &h, payload, n, out);
    case K_USER:
        exec_write(out, &h.tag, sizeof h.tag);
        return 1 + (int)(h.tag % 1000);
    case K_SEGV:
    case K_ABORT:
    case K_EXIT:
        crash((enum kind)h.kind);
        return 95;
    case K_HANG:
        for (;;)
            pause();
    case K_STICKY:
        return sticky(&h, out);
    case K_LIGHT:
        return answer(c, &h, payload, n, out);
    }
    return 96;
}

const exec_ops_t t_ops = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "torture",
    .process = t_process,
    .worker_init = t_worker_init,
    .worker_fini = t_worker_fini,
    .ctx_release = t_released,
};
