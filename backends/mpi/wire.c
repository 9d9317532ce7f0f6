/*
 * EXEC_MPI: helpers both sides use (see wire.h): the MPI checks, a session's
 * communicator, waiting without spinning, receiving a message of any size,
 * and the CSV header as a row.
 */
#include "wire.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int mx_check(bool host, int *rank, int *size)
{
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin)
        return EXEC_ESTATE;
    int level = MPI_THREAD_SINGLE, is_main = 0;
    MPI_Query_thread(&level);
    MPI_Is_thread_main(&is_main);
    bool ok = level >= MPI_THREAD_SERIALIZED ||
              (!host && level == MPI_THREAD_FUNNELED && is_main);
    if (!ok)
        return EXEC_ESTATE;
    if (rank)
        MPI_Comm_rank(MPI_COMM_WORLD, rank);
    if (size)
        MPI_Comm_size(MPI_COMM_WORLD, size);
    return 0;
}

void mx_nap(uint64_t ns, const int *fds, int nfds)
{
    struct pollfd p[4];
    int k = 0;
    for (int i = 0; i < nfds && k < 4; i++)
        if (fds[i] >= 0)
            p[k++] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};
    (void)ppoll(p, (nfds_t)k, &ts, NULL);
}

bool mx_wait(MPI_Request *req, uint64_t deadline_ns)
{
    uint64_t nap = 0;
    for (;;) {
        int done = 0;
        if (MPI_Test(req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || done)
            return true;
        if (deadline_ns && exec__now_ns() >= deadline_ns)
            return false;
        nap = mx_backoff(nap, 1000000);
        mx_nap(nap, NULL, 0);
    }
}

int mx_session_comm(MPI_Comm *out)
{
    MPI_Request req;
    *out = MPI_COMM_NULL;
    if (MPI_Comm_idup(MPI_COMM_WORLD, out, &req) != MPI_SUCCESS)
        return EXEC_EFATAL;
    mx_wait(&req, 0);
    if (*out == MPI_COMM_NULL)
        return EXEC_EFATAL;
    MPI_Comm_set_errhandler(*out, MPI_ERRORS_RETURN);
    return 0;
}

int mx_reserve(char **buf, size_t *cap, size_t need)
{
    if (*cap >= need)
        return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    char *p = realloc(*buf, n);
    if (!p)
        return EXEC_ENOMEM;
    *buf = p;
    *cap = n;
    return 0;
}

int mx_recv_any(MPI_Comm comm, int source, int tag, char **buf, size_t *cap, size_t *len,
                int *from, int *tag_out, uint64_t limit_ns, bool (*quick)(void *, int), void *arg)
{
    int flag = 0, count = 0;
    MPI_Message msg;
    MPI_Status st;
    if (MPI_Improbe(source, tag, comm, &flag, &msg, &st) != MPI_SUCCESS)
        return EXEC_EFATAL;
    if (!flag)
        return 0;
    *from = st.MPI_SOURCE;
    *tag_out = st.MPI_TAG;
    MPI_Get_count(&st, MPI_BYTE, &count);
    if (count < 0 || mx_reserve(buf, cap, (size_t)count + 1) != 0) {
        /* Taken anyway, truncated, so that it does not block the queue. */
        char sink;
        MPI_Mrecv(&sink, 1, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        return EXEC_ENOMEM;
    }
    MPI_Request req;
    if (MPI_Imrecv(*buf, count, MPI_BYTE, &msg, &req) != MPI_SUCCESS)
        return EXEC_EFATAL;
    /* The rest is on its way: look often, the sender is sending. */
    if (quick && quick(arg, *from))
        limit_ns = 1000000;
    uint64_t deadline = limit_ns ? exec__now_ns() + limit_ns : 0;
    for (unsigned k = 0;; k++) {
        int done = 0;
        if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return EXEC_EFATAL;
        if (done)
            break;
        if (deadline && exec__now_ns() >= deadline) {
            MPI_Cancel(&req);
            MPI_Request_free(&req);
            return EXEC_ETIMEDOUT;
        }
        if (k > 64)
            mx_nap(k > 1000 ? 100000 : 5000, NULL, 0);
    }
    *len = (size_t)count;
    return 1;
}

void mx_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen) {
        /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): started above */
        vsnprintf(err, errlen, fmt, ap);
    }
    va_end(ap);
}

void mx_err_more(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n = err && errlen ? strnlen(err, errlen) : errlen;
    if (n + 1 < errlen) {
        /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): started above */
        vsnprintf(err + n, errlen - n, fmt, ap);
    }
    va_end(ap);
}

int mx_header_row(const exec_csv_header_t *h, char **row, size_t *len)
{
    size_t cap = 256, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return EXEC_ENOMEM;
    int delim = exec_csv_header_delim(h);
    size_t count = exec_csv_header_count(h);
    for (size_t i = 0; i < count; i++) {
        const char *name = exec_csv_header_name(h, i);
        size_t l = strlen(name);
        /* Worst case: every byte a doubled quote, two quotes and a delimiter. */
        if (mx_reserve(&buf, &cap, n + 2 * l + 4) != 0) {
            free(buf);
            return EXEC_ENOMEM;
        }
        if (i)
            buf[n++] = (char)delim;
        bool quote = l == 0 && count == 1;
        for (size_t k = 0; k < l && !quote; k++)
            quote = name[k] == delim || name[k] == '"' || name[k] == '\n' || name[k] == '\r';
        if (quote)
            buf[n++] = '"';
        for (size_t k = 0; k < l; k++) {
            if (name[k] == '"')
                buf[n++] = '"';
            buf[n++] = name[k];
        }
        if (quote)
            buf[n++] = '"';
    }
    *row = buf;
    *len = n;
    return 0;
}
