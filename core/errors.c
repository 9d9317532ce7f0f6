/* Error code names and texts. */
#include "executor.h"

#include <string.h>

struct exec__errdesc {
    int code;
    const char *name;
    const char *text;
};

static const struct exec__errdesc exec__errors[] = {
    {0, "EXEC_OK", "success"},
    {EXEC_EINVAL, "EXEC_EINVAL", "invalid argument"},
    {EXEC_ENOMEM, "EXEC_ENOMEM", "out of memory"},
    {EXEC_EAGAIN, "EXEC_EAGAIN", "would block: window full or no result ready"},
    {EXEC_ETIMEDOUT, "EXEC_ETIMEDOUT", "no result within the timeout"},
    {EXEC_E2BIG, "EXEC_E2BIG", "record larger than max_record"},
    {EXEC_ENOTSUP, "EXEC_ENOTSUP", "not supported by this backend or build"},
    {EXEC_EBUSY, "EXEC_EBUSY", "executor already in use"},
    {EXEC_ENOENT, "EXEC_ENOENT", "no such file, field, column or tag in flight"},
    {EXEC_ENOBUFS, "EXEC_ENOBUFS", "buffer too small"},
    {EXEC_EOF, "EXEC_EOF", "end of stream"},
    {EXEC_ESTATE, "EXEC_ESTATE", "call out of order (e.g. submit after finish)"},
    {EXEC_ECAPS, "EXEC_ECAPS", "classifier lacks a capability this backend needs"},
    {EXEC_EVERSION, "EXEC_EVERSION", "ops->version is not EXEC_OPS_VERSION"},
    {EXEC_EUSER, "EXEC_EUSER", "process() reported an error"},
    {EXEC_ECRASHED, "EXEC_ECRASHED", "worker crashed"},
    {EXEC_ERECTIMEOUT, "EXEC_ERECTIMEOUT", "record timed out"},
    {EXEC_ERESULT2BIG, "EXEC_ERESULT2BIG", "result larger than max_result"},
    {EXEC_ECANCELLED, "EXEC_ECANCELLED", "record cancelled"},
    {EXEC_EINIT, "EXEC_EINIT", "a worker failed to start (worker_init)"},
    {EXEC_EWORKER, "EXEC_EWORKER",
     "a worker failed outside the record (garbage output, a stall, or its place given up)"},
    {EXEC_EFATAL, "EXEC_EFATAL", "executor gave up: workers keep dying"},
    {EXEC_ELIMIT, "EXEC_ELIMIT",
     "cannot start a thread or process: a resource limit was reached (RLIMIT_NPROC, "
     "threads-max, pid_max, or memory for its stack)"},
    {EXEC_ELOST, "EXEC_ELOST", "the MPI rank holding the record died or stopped answering"},
    {EXEC_EUNTERMINATED, "EXEC_EUNTERMINATED", "input ends inside a quoted field"},
    {EXEC_EBADQUOTE, "EXEC_EBADQUOTE", "quote inside an unquoted field, or text after a closing quote"},
    {EXEC_ETRUNCATED, "EXEC_ETRUNCATED", "input ends inside a length-prefixed record"},
};

static const struct exec__errdesc *exec__find(int err)
{
    for (size_t i = 0; i < sizeof exec__errors / sizeof exec__errors[0]; i++)
        if (exec__errors[i].code == err)
            return &exec__errors[i];
    return NULL;
}

const char *exec_strerror(int err)
{
    const struct exec__errdesc *d = exec__find(err);
    if (d)
        return d->text;
    /* A negated errno from a failed system call. strerror() is not thread-safe
     * for unknown codes only; for known ones glibc returns a constant string. */
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}

const char *exec_err_name(int err)
{
    const struct exec__errdesc *d = exec__find(err);
    if (d)
        return d->name;
    if (err < 0 && err > -4096) {
        const char *n = strerrorname_np(-err);
        if (n)
            return n;
    }
    return "EXEC_EUNKNOWN";
}
