/*
 * executor-serve's log and clocks: every file writes its messages through
 * serve_log() and reads the time through serve_now_ns() (monotonic: for
 * durations and deadlines) or serve_stamp() (the wall clock, as the access
 * log writes it). Messages go to stderr, one line each, unbuffered; text
 * from outside (a client's target, a plugin's words) goes through
 * serve_escape() first, so that it cannot forge a line.
 *
 * On a terminal or a file a message is "executor-serve: what happened". When
 * stderr is the journal's stream (systemd names it in JOURNAL_STREAM), the
 * journal stamps each line with the time, the program and its pid: a
 * message is then the text alone, and the access log, when it goes to a
 * stdout that is the journal's too, leaves its own time out.
 */
#include "serve.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

uint64_t serve_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t serve_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The wall clock in UTC to the millisecond, 2024-05-01T12:00:00.123Z. */
const char *serve_stamp(char *buf, size_t cap)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, cap, "%s.%03ldZ", when, ts.tv_nsec / 1000000);
    return buf;
}

/* Whether fd is the stream systemd connected to the journal. */
bool serve_on_journal(int fd)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    return js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(fd, &st) == 0 &&
           (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static int to_journal = -1; /* stderr is the journal's: 1, or 0; -1: not known yet */

void serve_log(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (to_journal < 0)
        to_journal = serve_on_journal(STDERR_FILENO);
    if (to_journal)
        fprintf(stderr, "%s\n", line);
    else
        fprintf(stderr, PROG ": %s\n", line);
}

/*
 * Untrusted text (a client's target, a spec from a request, a plugin's
 * message about it) as it may go into a log line: printable ASCII as it is,
 * backslash and every other byte as \xNN, cut to fit cap (with "..."). A
 * newline in it cannot forge a line of the log.
 */
const char *serve_escape(char *buf, size_t cap, const char *text, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && text; i++) {
        unsigned char c = (unsigned char)text[i];
        bool plain = c >= 0x20 && c < 0x7f && c != '\\';
        if (o + (plain ? 1 : 4) + 4 > cap) {
            if (cap >= 4) {
                memcpy(buf + (o < cap - 4 ? o : cap - 4), "...", 4);
                return buf;
            }
            break;
        }
        if (plain)
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
    }
    if (cap)
        buf[o < cap ? o : cap - 1] = '\0';
    return buf;
}
