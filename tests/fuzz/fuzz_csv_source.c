/*
 * Fuzz target: the CSV record source at several read sizes (1, 2, 3, 7, 64,
 * the default, and from a pipe) against the byte-at-a-time reference, and
 * every record it returns against the field splitter (csv_ref.h). They must
 * agree on every input: records, boundaries, errors and fields.
 *
 * Input: one byte of settings (delimiter, skip empty lines, a small
 * max_record), then the CSV text (at most CSV_REF_MAXIN bytes are used).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "csv_ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void csv_ref_fail(const char *msg)
{
    fprintf(stderr, "fuzz_csv_source: %s\n", msg);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static const unsigned char delims[] = {',', ';', '\t', '|', ' ', 'a', 0xfe, 0x01};
    if (size < 1)
        return 0;
    if (fd < 0 && (fd = memfd_create("fuzz-csv", MFD_CLOEXEC)) < 0)
        abort();
    uint8_t set = data[0];
    struct run_cfg c = {.delim = delims[set & 7], .skip_empty = (set >> 3) & 1};
    if (set & 0x10)
        c.max = 1 + (set >> 5); /* 1..8: records often too long */
    size_t n = size - 1;
    if (n > CSV_REF_MAXIN)
        n = CSV_REF_MAXIN;
    diff_one(fd, (const char *)data + 1, n, &c);
    return 0;
}
