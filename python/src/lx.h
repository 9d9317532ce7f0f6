/*
 * _libexecutor: the CPython extension over libexecutor (the pure-Python
 * package libexecutor wraps it). Written as the standard library's _csv and
 * _sqlite3 are: multi-phase init, state per module object, heap types.
 *
 * Files:
 *   module.c      the module: its state, exceptions, atexit, helpers,
 *                 records(), csv_fields(), map_file().
 *   plugin.c      Plugin: a C plugin, loaded with exec_plugin_open().
 *   classifier.c  a Python callable as the classifier: the ops the library
 *                 calls (in forked workers, or on its threads) and the fork
 *                 hooks that keep the interpreter whole across each fork.
 *   executor.c    Executor: one exec_t, its options, swaps, figures, close.
 *   stream.c      the iterators (rows in, results out) and the file-to-file
 *                 map on a thread of its own.
 *
 * Rules every file keeps:
 *   - The GIL is released around every call into the library that may wait,
 *     read a file or take a lock (only pure functions such as
 *     exec_csv_split() and exec_strerror() run with it), so a library lock is
 *     never waited for while the GIL is held; a callback of the library may
 *     then take the GIL without a deadlock.
 *   - No Python runs on a library thread: a context that leaves an executor
 *     (ctx_release, from the supervisor or the reclaimer) is queued and
 *     released by the executor's next call on a Python thread; there is no
 *     on_slow. The only exception is a Python classifier on EXEC_THREADS,
 *     which asks for it (backend="threads"): its process() takes the GIL.
 *   - Waits are cut into slices of at most LX_SLICE_MS, with signals checked
 *     between them (Ctrl-C works), and leave nothing behind when interrupted.
 */
#ifndef LX_H
#define LX_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "executor_records.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define LX_SLICE_MS 100 /* longest wait without a look at signals */
#define LX_BATCH 256    /* results taken, rows handed over, per library call */

/* The exception set now, taken (a new reference, or NULL), and put back. */
static inline PyObject *lx_err_take(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (!t)
        return NULL;
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb && v)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
#endif
}

static inline void lx_err_put(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    if (exc)
        PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

static inline int PyLong_AsInt_compat(PyObject *o)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < INT32_MIN || v > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "out of the range of a C int");
        return -1;
    }
    return (int)v;
}

/* A system call's -errno (the library's own codes are -4095 and up). */
static inline bool lx_errno(int rc) { return rc < 0 && rc > -4000; }

/* Executor kinds. */
enum { LX_PLUGIN = 1, LX_PYTHON };
/* How results come back (result=). */
enum { LX_BYTES = 0, LX_STR, LX_PICKLE };
/* Python classifier's own codes for EXEC_EUSER (its bytes say more). */
enum { LX_UC_RAISED = 1, LX_UC_TYPE = 2 };

typedef struct lx_state {
    PyTypeObject *plugin_type, *executor_type, *stream_type, *records_type;
    PyObject *ExecutorError, *RecordError, *SwapRejected, *PluginError;
    PyObject *live; /* set of weak references to open executors (atexit) */
} lx_state;

/* Contexts the library let go of, for a Python thread to release. */
typedef struct lx_relq {
    pthread_mutex_t lock;
    struct lx_pyctx *head;
    int pending; /* atomic: something is queued */
} lx_relq;

/* A Python classifier's context, as the library sees it (ctx). Raw memory:
 * the forked workers inherit it. Its references are owned; they are dropped
 * under the GIL (lx_relq_drain). */
typedef struct lx_pyctx {
    PyObject *process, *context, *init, *fini;
    int result;   /* LX_BYTES, LX_STR or LX_PICKLE */
    bool threads; /* on EXEC_THREADS: each call takes the GIL */
    size_t max_result;
    lx_relq *relq;
    struct lx_pyctx *next; /* in relq */
} lx_pyctx;

/* The fork hooks' state: one per executor, raw memory (inherited). */
typedef struct lx_hooks {
    int role; /* LX_HOST, LX_ZYGOTE or LX_WORKER: where this copy lives */
    bool freeze_gc;
    bool froze;                 /* the host's prepare froze: its parent unfreezes */
    PyGILState_STATE gstate;    /* host: prepare to parent (the GIL orders them) */
    int threads_seen;           /* other Python threads at the last zygote fork */
    int warn;                   /* atomic: threads were seen, not yet warned about */
    bool warned;                /* the warning was given (once per executor) */
    bool ign_pipe, ign_xfsz;    /* SIG_IGN in the host: restored in children */
} lx_hooks;
enum { LX_HOST = 0, LX_ZYGOTE, LX_WORKER };

typedef struct ExecutorObject ExecutorObject;

typedef struct {
    PyObject_HEAD
    const exec_plugin_t *pl;
    PyObject *path;
} PluginObject;

struct ExecutorObject {
    PyObject_HEAD
    PyObject *module;
    exec_t *ex;
    int kind;
    exec_backend_t backend;
    pid_t pid; /* the process that made it: a forked child must not touch it */
    /* LX_PLUGIN */
    PluginObject *plugin;
    void *pctx;
    exec_csv_header_t *header;
    /* LX_PYTHON */
    lx_pyctx *pyctx; /* the current one */
    lx_hooks *hooks;
    lx_relq relq;
    exec_ops_t ops;
    /* Options kept for streams. */
    int result;
    bool errors_return;
    bool ordered;
    size_t max_record;
    unsigned workers;
    /* Calls into the library in flight (the GIL released), and state. */
    int calls;
    bool streaming; /* a stream holds it */
    bool finished;  /* exec_finish() was called: no stream may start */
    bool closing;
    uint64_t next_tag; /* tags are counted per executor, across streams */
    PyObject *weakreflist;
};

/* module.c */
PyMODINIT_FUNC PyInit__libexecutor(void);
lx_state *lx_state_of(PyObject *module);
lx_state *lx_state_by_type(PyTypeObject *t);
PyObject *lx_module_by_type(PyTypeObject *t); /* borrowed */
PyObject *lx_raise(lx_state *st, int code, const char *fmt, ...);
PyObject *lx_raise_as(PyObject *type, int code, const char *fmt, ...);
PyObject *lx_record_error(lx_state *st, const exec_result_t *res, uint64_t index);
int lx_path_or_fd(PyObject *o, int flags, int *fd, bool *own, const char *what);
int lx_source_options(PyObject *format, int header, PyObject *delim, exec_source_options_t *so);
void lx_sleep_ms(int ms);
PyObject *lx_report_dict(const exec_map_report_t *rep, PyObject *errors);
exec_source_t *lx_open_source(lx_state *st, PyObject *src, PyObject *format, int header,
                              PyObject *delim);

/* plugin.c */
extern PyType_Spec lx_plugin_spec;

/* classifier.c */
extern const exec_ops_t lx_py_ops_fork, lx_py_ops_threads;
lx_pyctx *lx_pyctx_new(PyObject *process, PyObject *context, PyObject *init, PyObject *fini,
                       int result, bool threads, size_t max_result, lx_relq *q);
void lx_pyctx_free(lx_pyctx *c);
int lx_pyctx_traverse(lx_pyctx *c, visitproc visit, void *arg);
void lx_relq_init(lx_relq *q);
void lx_relq_drain(lx_relq *q);
lx_hooks *lx_hooks_new(bool freeze_gc);
void lx_hooks_set(exec_options_t *o, lx_hooks *h);
int lx_hooks_warn(lx_hooks *h);

/* executor.c */
extern PyType_Spec lx_executor_spec;
int lx_ex_usable(ExecutorObject *self);
void lx_ex_enter(ExecutorObject *self);
void lx_ex_leave(ExecutorObject *self);
int lx_ex_after_call(ExecutorObject *self);
void lx_ex_close(ExecutorObject *self);

/* stream.c */
extern PyType_Spec lx_stream_spec, lx_records_spec;
PyObject *lx_stream_new(ExecutorObject *ex, PyObject *rows, exec_source_t *src, bool tags,
                        bool ordered, bool skip_bad);
PyObject *lx_map_fd(ExecutorObject *ex, exec_source_t *src, int out_fd, bool skip_bad);
PyObject *lx_records_new(lx_state *st, exec_source_t *src);

#endif /* LX_H */
