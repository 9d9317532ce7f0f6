/*
 * A Python callable as the classifier: process(context, row) -> result.
 *
 * EXEC_FORK (the default): every worker is a fork of the executor's zygote,
 * which was forked from the host's thread that created the executor (or
 * swapped its context) while it held the GIL, between PyOS_BeforeFork() and
 * PyOS_AfterFork_Child(): each worker has its own interpreter, its own GIL,
 * held by its only thread for its whole life, and a copy-on-write view of the
 * context, which is never pickled. The fork hooks below are what make that
 * true: the library calls them on the forking thread around each fork.
 *
 * EXEC_THREADS (backend="threads", asked for explicitly): process() runs on
 * the library's worker threads and takes the GIL for each record, so only
 * code that releases the GIL gains; worker_init keeps the thread's state
 * for its life.
 *
 * A Python exception is the record's error: status EXEC_EUSER, user_code
 * LX_UC_RAISED, and the formatted traceback as the result bytes (the library
 * delivers what process() wrote before a non-zero return). A result of the
 * wrong type is LX_UC_TYPE with a message.
 */
#include "lx.h"

#include <signal.h>
#include <string.h>

/* ------------------------------------------------------------------------- */
/* Contexts, and their release on a Python thread                           */
/* ------------------------------------------------------------------------- */

lx_pyctx *lx_pyctx_new(PyObject *process, PyObject *context, PyObject *init, PyObject *fini,
                       int result, bool threads, size_t max_result, lx_relq *q)
{
    lx_pyctx *c = PyMem_RawCalloc(1, sizeof *c);
    if (!c) {
        PyErr_NoMemory();
        return NULL;
    }
    c->process = Py_NewRef(process);
    c->context = Py_NewRef(context);
    c->init = Py_XNewRef(init);
    c->fini = Py_XNewRef(fini);
    c->result = result;
    c->threads = threads;
    c->max_result = max_result;
    c->relq = q;
    return c;
}

/* GIL held. */
void lx_pyctx_free(lx_pyctx *c)
{
    if (!c)
        return;
    Py_XDECREF(c->process);
    Py_XDECREF(c->context);
    Py_XDECREF(c->init);
    Py_XDECREF(c->fini);
    PyMem_RawFree(c);
}

int lx_pyctx_traverse(lx_pyctx *c, visitproc visit, void *arg)
{
    if (c) {
        Py_VISIT(c->process);
        Py_VISIT(c->context);
        Py_VISIT(c->init);
        Py_VISIT(c->fini);
    }
    return 0;
}

void lx_relq_init(lx_relq *q)
{
    pthread_mutex_init(&q->lock, NULL);
    q->head = NULL;
    q->pending = 0;
}

/* GIL held: releases every context the library let go of. */
void lx_relq_drain(lx_relq *q)
{
    if (!__atomic_load_n(&q->pending, __ATOMIC_ACQUIRE))
        return;
    pthread_mutex_lock(&q->lock);
    lx_pyctx *c = q->head;
    q->head = NULL;
    __atomic_store_n(&q->pending, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&q->lock);
    while (c) {
        lx_pyctx *next = c->next;
        lx_pyctx_free(c);
        c = next;
    }
}

/* ctx_release: a library thread (the supervisor or the reclaimer, no GIL, no
 * thread state), or exec_destroy() in a thread that let the GIL go. Queued
 * for the executor's next call. */
static void lx_release(void *ctx)
{
    lx_pyctx *c = ctx;
    lx_relq *q = c->relq;
    pthread_mutex_lock(&q->lock);
    c->next = q->head;
    q->head = c;
    __atomic_store_n(&q->pending, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&q->lock);
}

/* ------------------------------------------------------------------------- */
/* The ops                                                                   */
/* ------------------------------------------------------------------------- */

/* Writes text (the tail when it is longer than the result may be). */
static void lx_write_text(exec_writer_t *out, size_t max, const char *s, size_t n)
{
    exec_write_reset(out);
    if (n > max) {
        static const char cut[] = "...\n";
        if (max <= sizeof cut)
            return;
        exec_write(out, cut, sizeof cut - 1);
        s += n - (max - (sizeof cut - 1));
        n = max - (sizeof cut - 1);
    }
    exec_write(out, s, n);
}

/* The exception set now, as its formatted traceback, is the record's result.
 * Returns the user code. */
static int lx_raised(lx_pyctx *c, exec_writer_t *out)
{
    PyObject *exc = lx_err_take();
    PyObject *text = NULL;
    PyObject *tb = PyImport_ImportModule("traceback");
    if (tb) {
        PyObject *lines = PyObject_CallMethod(tb, "format_exception", "O", exc);
        if (lines) {
            PyObject *empty = PyUnicode_FromStringAndSize("", 0);
            if (empty)
                text = PyUnicode_Join(empty, lines);
            Py_XDECREF(empty);
            Py_DECREF(lines);
        }
        Py_DECREF(tb);
    }
    if (!text) {
        PyErr_Clear();
        text = PyObject_Repr(exc);
    }
    Py_ssize_t n = 0;
    const char *s = text ? PyUnicode_AsUTF8AndSize(text, &n) : NULL;
    if (s)
        lx_write_text(out, c->max_result, s, (size_t)n);
    else
        lx_write_text(out, c->max_result, "(an exception that cannot be shown)\n", 36);
    PyErr_Clear();
    Py_XDECREF(text);
    Py_XDECREF(exc);
    return LX_UC_RAISED;
}

/* Writes the result object r. 0, or a user code. */
static int lx_put(lx_pyctx *c, PyObject *r, exec_writer_t *out)
{
    if (c->result == LX_PICKLE) {
        PyObject *pickle = PyImport_ImportModule("pickle");
        PyObject *b = pickle ? PyObject_CallMethod(pickle, "dumps", "Oi", r, 5) : NULL;
        Py_XDECREF(pickle);
        if (!b)
            return lx_raised(c, out);
        exec_write(out, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
        Py_DECREF(b);
        return 0;
    }
    if (PyBytes_CheckExact(r)) {
        exec_write(out, PyBytes_AS_STRING(r), (size_t)PyBytes_GET_SIZE(r));
        return 0;
    }
    if (PyUnicode_Check(r)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(r, &n);
        if (!s)
            return lx_raised(c, out); /* lone surrogates */
        exec_write(out, s, (size_t)n);
        return 0;
    }
    if (r == Py_None)
        return 0;
    if (PyObject_CheckBuffer(r)) {
        Py_buffer view;
        if (PyObject_GetBuffer(r, &view, PyBUF_SIMPLE) < 0)
            return lx_raised(c, out);
        exec_write(out, view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
        return 0;
    }
    char msg[256];
    int n = snprintf(msg, sizeof msg,
                     "TypeError: process() returned %.100s: a result is bytes, str or None "
                     "(result=\"pickle\" for other objects)\n",
                     Py_TYPE(r)->tp_name);
    lx_write_text(out, c->max_result, msg, (size_t)n);
    return LX_UC_TYPE;
}

static int lx_run(lx_pyctx *c, const void *rec, size_t len, exec_writer_t *out)
{
    PyObject *row = PyBytes_FromStringAndSize(rec, (Py_ssize_t)len);
    if (!row)
        return lx_raised(c, out);
    PyObject *args[2] = {c->context, row};
    PyObject *r = PyObject_Vectorcall(c->process, args, 2, NULL);
    Py_DECREF(row);
    if (!r)
        return lx_raised(c, out);
    int rc = lx_put(c, r, out);
    Py_DECREF(r);
    return rc;
}

/* EXEC_FORK: in a worker, whose only thread holds the GIL. */
static int lx_process_fork(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    return lx_run(ctx, rec, len, out);
}

/* Prints the exception a worker_init raised: the worker refuses and its
 * host reads EXEC_EINIT. */
static int lx_init_failed(void)
{
    PySys_WriteStderr("libexecutor: worker_init raised in worker %d:\n", (int)getpid());
    PyErr_Print();
    PyObject *err = PySys_GetObject("stderr");
    if (err) {
        PyObject *r = PyObject_CallMethod(err, "flush", NULL);
        Py_XDECREF(r);
    }
    PyErr_Clear();
    return 1;
}

/* Drops the exception set now; a KeyboardInterrupt (a handler that ran in
 * Python code called here) is asked for again, so that Ctrl-C is not lost. */
static void lx_err_drop(void)
{
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        PyErr_SetInterruptEx(SIGINT);
    PyErr_Clear();
}

static void lx_flush_std(void)
{
    static const char *const names[] = {"stdout", "stderr"};
    for (int i = 0; i < 2; i++) {
        PyObject *f = PySys_GetObject(names[i]); /* borrowed */
        if (f && f != Py_None) {
            PyObject *r = PyObject_CallMethod(f, "flush", NULL);
            if (!r)
                lx_err_drop();
            Py_XDECREF(r);
        }
    }
}

static int lx_init_fork(void *ctx, void **ws)
{
    (void)ws;
    lx_pyctx *c = ctx;
    if (!c->init)
        return 0;
    PyObject *r = PyObject_CallOneArg(c->init, c->context);
    if (!r)
        return lx_init_failed();
    Py_DECREF(r);
    return 0;
}

/* worker_fini, then what _exit() skips: the streams' buffers. */
static void lx_fini_fork(void *ctx, void *ws)
{
    (void)ws;
    lx_pyctx *c = ctx;
    if (c->fini) {
        PyObject *r = PyObject_CallOneArg(c->fini, c->context);
        if (!r)
            PyErr_Print();
        Py_XDECREF(r);
    }
    lx_flush_std();
}

/* EXEC_THREADS: each worker thread keeps a thread state from worker_init to
 * worker_fini (PyGILState_Ensure without Release), and takes the GIL for
 * each record. */
struct lx_tws {
    PyGILState_STATE outer;
    PyThreadState *ts;
};

static int lx_init_threads(void *ctx, void **ws)
{
    lx_pyctx *c = ctx;
    struct lx_tws *t = PyMem_RawMalloc(sizeof *t);
    if (!t)
        return 1;
    t->outer = PyGILState_Ensure();
    int rc = 0;
    if (c->init) {
        PyObject *r = PyObject_CallOneArg(c->init, c->context);
        if (!r)
            rc = lx_init_failed();
        Py_XDECREF(r);
    }
    if (rc) {
        PyGILState_Release(t->outer);
        PyMem_RawFree(t);
        return rc;
    }
    t->ts = PyEval_SaveThread();
    *ws = t;
    return 0;
}

static int lx_process_threads(void *ctx, void *ws, const void *rec, size_t len,
                              exec_writer_t *out)
{
    (void)ws;
    PyGILState_STATE g = PyGILState_Ensure();
    int rc = lx_run(ctx, rec, len, out);
    PyGILState_Release(g);
    return rc;
}

static void lx_fini_threads(void *ctx, void *ws)
{
    lx_pyctx *c = ctx;
    struct lx_tws *t = ws;
    if (!t)
        return;
    PyEval_RestoreThread(t->ts);
    if (c->fini) {
        PyObject *r = PyObject_CallOneArg(c->fini, c->context);
        if (!r)
            PyErr_Print();
        Py_XDECREF(r);
    }
    PyGILState_Release(t->outer);
    PyMem_RawFree(t);
}

const exec_ops_t lx_py_ops_fork = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_FORK_SAFE,
    .name = "python",
    .process = lx_process_fork,
    .worker_init = lx_init_fork,
    .worker_fini = lx_fini_fork,
    .ctx_release = lx_release,
};

const exec_ops_t lx_py_ops_threads = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE | EXEC_CAP_FORK_SAFE,
    .name = "python",
    .process = lx_process_threads,
    .worker_init = lx_init_threads,
    .worker_fini = lx_fini_threads,
    .ctx_release = lx_release,
};

/* ------------------------------------------------------------------------- */
/* Fork hooks                                                                */
/* ------------------------------------------------------------------------- */

/* Calls gc.<name>(); returns its result (new reference) or NULL, no error. */
static PyObject *lx_gc(const char *name)
{
    PyObject *gc = PyImport_ImportModule("gc");
    PyObject *r = gc ? PyObject_CallMethod(gc, name, NULL) : NULL;
    Py_XDECREF(gc);
    if (!r)
        lx_err_drop();
    return r;
}

/*
 * Before a fork. In the host (a zygote's fork, on the thread that creates
 * the executor, swaps it, or replaces a dead zygote, the GIL released): takes
 * the GIL, flushes sys.stdout and sys.stderr (else the children would write
 * what is buffered again), notes other Python threads, freezes the garbage
 * collector's objects (freeze_gc), then PyOS_BeforeFork(). In a zygote (a
 * worker's fork; its thread holds the GIL): PyOS_BeforeFork().
 */
static void lx_prepare(void *arg)
{
    lx_hooks *h = arg;
    if (h->role != LX_HOST) {
        PyOS_BeforeFork();
        return;
    }
    h->gstate = PyGILState_Ensure();
    PyObject *exc = lx_err_take();
    lx_flush_std();
    PyThreadState *me = PyThreadState_Get();
    int others = 0;
    for (PyThreadState *t = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(me)); t;
         t = PyThreadState_Next(t))
        if (t != me)
            others++;
    if (others && !h->warned) {
        h->threads_seen = others;
        __atomic_store_n(&h->warn, 1, __ATOMIC_RELAXED);
    }
    h->froze = false;
    if (h->freeze_gc) {
        /* Only objects frozen here are unfrozen after: the host's own stay so. */
        PyObject *n = lx_gc("get_freeze_count");
        bool none = n && PyLong_Check(n) && PyLong_AsLong(n) == 0;
        Py_XDECREF(n);
        PyObject *r = lx_gc("freeze");
        h->froze = r && none;
        Py_XDECREF(r);
    }
    PyErr_Clear();
    lx_err_put(exc);
    PyOS_BeforeFork();
}

/* After a fork, in the process that forked (pid < 0: it failed). */
static void lx_parent(void *arg, int pid)
{
    (void)pid;
    lx_hooks *h = arg;
    PyOS_AfterFork_Parent();
    if (h->role != LX_HOST)
        return;
    if (h->froze) {
        PyObject *exc = lx_err_take();
        PyObject *r = lx_gc("unfreeze");
        Py_XDECREF(r);
        lx_err_put(exc);
        h->froze = false;
    }
    PyGILState_Release(h->gstate);
}

/* In the new process, every signal blocked: the interpreter's part of the
 * fork (threads, locks, os.register_at_fork's after_in_child, random's
 * reseed), then the SIG_IGNs the host had, which the zygote reset. */
static void lx_child(void *arg)
{
    lx_hooks *h = arg;
    PyOS_AfterFork_Child();
    h->role = h->role == LX_HOST ? LX_ZYGOTE : LX_WORKER;
    if (h->ign_pipe)
        signal(SIGPIPE, SIG_IGN);
    if (h->ign_xfsz)
        signal(SIGXFSZ, SIG_IGN);
}

lx_hooks *lx_hooks_new(bool freeze_gc)
{
    lx_hooks *h = PyMem_RawCalloc(1, sizeof *h);
    if (!h) {
        PyErr_NoMemory();
        return NULL;
    }
    h->role = LX_HOST;
    h->freeze_gc = freeze_gc;
    struct sigaction sa;
    h->ign_pipe = sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN;
    h->ign_xfsz = sigaction(SIGXFSZ, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN;
    return h;
}

void lx_hooks_set(exec_options_t *o, lx_hooks *h)
{
    o->fork_hooks = (exec_fork_hooks_t){lx_prepare, lx_parent, lx_child, h};
}

/* GIL held: the warning about other threads at a zygote's fork, once per
 * executor. -1 when the warning was turned into an exception. */
int lx_hooks_warn(lx_hooks *h)
{
    if (!h || !__atomic_exchange_n(&h->warn, 0, __ATOMIC_RELAXED) || h->warned)
        return 0;
    h->warned = true;
    int n = h->threads_seen;
    return PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                            "libexecutor forked a zygote while %d other Python thread%s "
                            "ran: a lock one of them held stays held in the workers; "
                            "build the context and create executors single-threaded",
                            n, n == 1 ? "" : "s");
}
