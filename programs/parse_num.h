/*
 * The commands' numeric options, parsed one way.
 */
#ifndef EXEC_PROGRAMS_PARSE_NUM_H
#define EXEC_PROGRAMS_PARSE_NUM_H

#include <errno.h>
#include <stdlib.h>

/* A decimal number in 0..max making up all of s (no sign, no blanks): 0, or
 * -1 with *out untouched. */
static inline int prog_parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || v > max || *s == '-')
        return -1;
    *out = v;
    return 0;
}

#endif /* EXEC_PROGRAMS_PARSE_NUM_H */
