/*
 * Fuzz target: executor-serve's HTTP framing check (programs/executor-serve/
 * frame.c), the parser every client byte meets before evhttp. The input is
 * fed twice: whole, and in pieces of 1 to 64 bytes with the buffer drained
 * behind the parser as evhttp would drain it (whole lines, body bytes). Both
 * must agree: the same refusal (status and reason) or the same requests read
 * whole, and the parser never looks before the buffer's first byte.
 *
 * Input: one byte that seeds the piece sizes, then the bytes a client sends.
 */
#include "serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_BODY 4096u

struct fed {
    int rc;
    const char *why;
    uint32_t done;
    uint8_t st;
};

static void fail(const char *msg)
{
    fprintf(stderr, "fuzz_serve_frame: %s\n", msg);
    abort();
}

/* Where evhttp may have drained to: what the parser needs no more. */
static uint64_t drained_to(const struct frame *f)
{
    switch (f->st) {
    case FR_HEAD:
    case FR_TRAILER:
    case FR_CHUNK_SIZE: return f->line < f->pos ? f->line : f->pos;
    default: return f->pos;
    }
}

static struct fed feed(const uint8_t *d, size_t n, unsigned seed, bool pieces)
{
    struct evbuffer *b = evbuffer_new();
    if (!b)
        fail("out of memory");
    struct frame f;
    memset(&f, 0, sizeof f);
    uint64_t base = 0;
    struct fed o = {0, NULL, 0, 0};
    size_t i = 0;
    while (i < n) {
        size_t k = n - i;
        if (pieces) {
            seed = seed * 1103515245u + 12345u;
            size_t p = 1 + (seed >> 16) % 64;
            if (p < k)
                k = p;
        }
        evbuffer_add(b, d + i, k);
        i += k;
        unsigned ev = 0;
        int rc = frame_feed(&f, b, base, MAX_BODY, &ev);
        if (rc) {
            if (rc < 400 || rc > 599 || !f.why || f.st != FR_REFUSED)
                fail("a refusal without a status or a reason");
            o.rc = rc;
            o.why = f.why;
            break;
        }
        if (f.pos < base || f.pos > base + evbuffer_get_length(b))
            fail("the parser's position is outside the buffer");
        if (pieces) {
            uint64_t to = drained_to(&f);
            if (to > base) {
                evbuffer_drain(b, (size_t)(to - base));
                base = to;
            }
        }
    }
    o.done = f.done;
    o.st = o.rc ? FR_REFUSED : f.st;
    evbuffer_free(b);
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct fed whole = feed(data + 1, size - 1, data[0], false);
    struct fed cut = feed(data + 1, size - 1, data[0], true);
    if (whole.rc != cut.rc || whole.done != cut.done || whole.st != cut.st ||
        (whole.why != cut.why && (!whole.why || !cut.why || strcmp(whole.why, cut.why) != 0)))
        fail("whole and in pieces disagree");
    return 0;
}
