/*
 * Executor: one exec_t over a C plugin (LX_PLUGIN: its ctx built from a
 * spec) or a Python callable (LX_PYTHON: the context is any object, never
 * pickled; EXEC_FORK with the fork hooks of classifier.c, or EXEC_THREADS
 * when asked for). One stream (an iterator, a file map) runs at a time;
 * stats(), worker_stats() and cancel() may come from any thread meanwhile.
 *
 * Every call into the library goes between lx_ex_enter() and lx_ex_leave()
 * with the GIL released; close() waits for those in flight (each is at most a
 * slice long, or a swap's canary), then destroys the executor. An executor
 * is the process's that made it: a forked child of the host neither uses it
 * nor destroys it (the library's region and pidfds belong to the parent).
 */
#include "lx.h"

#include <structmember.h>

#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <unistd.h>

/* ------------------------------------------------------------------------- */
/* Calls in flight                                                           */
/* ------------------------------------------------------------------------- */

/* GIL held. 0, or -1 with an exception when the executor cannot be used. */
int lx_ex_usable(ExecutorObject *self)
{
    lx_state *st = lx_state_of(self->module);
    if (self->pid != getpid())
        return lx_raise(st, EXEC_ESTATE,
                        "this executor belongs to process %d: a forked child cannot use it",
                        (int)self->pid),
               -1;
    if (!self->ex || self->closing) {
        lx_raise(st, EXEC_ESTATE, "the executor is closed");
        return -1;
    }
    return 0;
}

void lx_ex_enter(ExecutorObject *self) { self->calls++; }
void lx_ex_leave(ExecutorObject *self) { self->calls--; }

/* GIL held, after a library call: contexts to release, the warning about
 * threads at a fork. -1 when that warning became an exception. */
int lx_ex_after_call(ExecutorObject *self)
{
    lx_relq_drain(&self->relq);
    return lx_hooks_warn(self->hooks);
}

static int lx_live_discard(ExecutorObject *self)
{
    lx_state *st = lx_state_of(self->module);
    if (!st || !st->live)
        return 0;
    PyObject *ref = PyWeakref_NewRef((PyObject *)self, NULL);
    if (!ref)
        return -1;
    int rc = PySet_Discard(st->live, ref);
    Py_DECREF(ref);
    return rc < 0 ? -1 : 0;
}

/* GIL held. Stops the workers and frees what the executor holds; waits for
 * calls of other threads still in flight. Never fails; idempotent. */
void lx_ex_close(ExecutorObject *self)
{
    if (!self->ex || self->closing)
        return;
    self->closing = true;
    if (self->pid != getpid()) {
        self->ex = NULL; /* the parent's: leave it alone */
        return;
    }
    PyObject *exc = lx_err_take();
    while (self->calls > 0) {
        Py_BEGIN_ALLOW_THREADS
        lx_sleep_ms(1);
        Py_END_ALLOW_THREADS
    }
    exec_t *ex = self->ex;
    Py_BEGIN_ALLOW_THREADS
    exec_destroy(ex);
    Py_END_ALLOW_THREADS
    self->ex = NULL;
    /* The current context was released by the destroy, and queued. */
    lx_relq_drain(&self->relq);
    self->pyctx = NULL;
    if (self->pctx) {
        void *ctx = self->pctx;
        const exec_plugin_t *pl = self->plugin->pl;
        self->pctx = NULL;
        Py_BEGIN_ALLOW_THREADS
        pl->ctx_free(ctx);
        Py_END_ALLOW_THREADS
    }
    exec_csv_header_free(self->header);
    self->header = NULL;
    if (lx_live_discard(self) < 0)
        PyErr_Clear();
    lx_err_put(exc);
}

/* ------------------------------------------------------------------------- */
/* Creation                                                                  */
/* ------------------------------------------------------------------------- */

/* Seconds (None: 0) as milliseconds for an option. */
static int lx_ms(PyObject *o, unsigned *out, const char *name)
{
    if (!o || o == Py_None) {
        *out = 0;
        return 0;
    }
    double s = PyFloat_AsDouble(o);
    if (s == -1.0 && PyErr_Occurred())
        return -1;
    if (!(s >= 0) || s * 1000.0 > (double)UINT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s is seconds, >= 0 and not NaN", name);
        return -1;
    }
    double ms = ceil(s * 1000.0);
    *out = (unsigned)(ms < 1 && s > 0 ? 1 : ms);
    return 0;
}

static int lx_choice(const char *s, const char *const *names, const char *what)
{
    for (int i = 0; names[i]; i++)
        if (!strcmp(s, names[i]))
            return i;
    PyErr_Format(PyExc_ValueError, "unknown %s: %s", what, s);
    return -1;
}

static int lx_keep_fds(PyObject *o, exec_options_t *eo, int **fds)
{
    *fds = NULL;
    if (!o || o == Py_None)
        return 0;
    PyObject *seq = PySequence_Fast(o, "keep_fds is a sequence of descriptors");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > 1024) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "keep_fds: at most 1024 descriptors");
        return -1;
    }
    *fds = PyMem_Malloc((size_t)(n ? n : 1) * sizeof **fds);
    if (!*fds) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int fd = PyObject_AsFileDescriptor(PySequence_Fast_GET_ITEM(seq, i));
        if (fd < 0) {
            Py_DECREF(seq);
            return -1;
        }
        (*fds)[i] = fd;
    }
    Py_DECREF(seq);
    eo->keep_fds = *fds;
    eo->n_keep_fds = (unsigned)n;
    return 0;
}

/* Why exec_create() refused, as an exception. */
static void lx_create_failed(lx_state *st, int rc, const char *backend, bool python)
{
    switch (rc) {
    case EXEC_EINIT:
        lx_raise(st, rc,
                 "a worker could not start: worker_init %s, crashed or ran past start_timeout",
                 python ? "raised (its traceback is on stderr)" : "refused");
        break;
    case EXEC_ECAPS:
        lx_raise(st, rc, "the classifier cannot run on backend \"%s\" (see Plugin.caps)",
                 backend);
        break;
    case EXEC_EINVAL:
        lx_raise(st, rc, "an option is out of range: %s", exec_strerror(rc));
        break;
    default:
        lx_raise(st, rc, "cannot start the executor: %s", exec_strerror(rc));
        break;
    }
}

static int executor_init(ExecutorObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"target", "context", "spec", "header", "delim", "backend",
                             "workers", "ordered", "batch", "window", "max_record",
                             "max_result", "timeout", "grace", "start_timeout",
                             "max_records_per_worker", "max_worker_growth_kb", "result",
                             "errors", "freeze_gc", "thread_safe", "worker_init",
                             "worker_fini", "replay", "close_fds", "keep_fds",
                             "result_delay_us", NULL};
    PyObject *target, *context = Py_None, *spec = Py_None, *header = Py_None, *delim = NULL;
    const char *backend = "auto", *result = "bytes", *errors = "raise";
    PyObject *workers = Py_None, *timeout = Py_None, *grace = Py_None, *start_timeout = Py_None;
    PyObject *worker_init = Py_None, *worker_fini = Py_None, *keep_fds = Py_None;
    int ordered = 0, freeze_gc = 1, thread_safe = 0, replay = 1, close_fds = 0;
    unsigned batch = 0, window = 0, mrpw = 0, growth = 0, delay = 0;
    Py_ssize_t max_record = 64 << 10, max_result = 64 << 10;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O$OOOsOpIInnOOOIIssppOOppOI:Executor", kwlist,
                                     &target, &context, &spec, &header, &delim, &backend,
                                     &workers, &ordered, &batch, &window, &max_record,
                                     &max_result, &timeout, &grace, &start_timeout, &mrpw,
                                     &growth, &result, &errors, &freeze_gc, &thread_safe,
                                     &worker_init, &worker_fini, &replay, &close_fds, &keep_fds,
                                     &delay))
        return -1;
    lx_state *st = lx_state_by_type(Py_TYPE(self));
    if (self->ex || self->closing) {
        PyErr_SetString(PyExc_RuntimeError, "Executor.__init__ called twice");
        return -1;
    }
    static const char *const backends[] = {"auto", "threads", "fork", NULL};
    static const char *const results[] = {"bytes", "str", "pickle", NULL};
    static const char *const errs[] = {"raise", "return", NULL};
    int b = lx_choice(backend, backends, "backend"), r = lx_choice(result, results, "result"),
        e = lx_choice(errors, errs, "errors");
    if (b < 0 || r < 0 || e < 0)
        return -1;
    if (max_record <= 0 || max_result <= 0) {
        PyErr_SetString(PyExc_ValueError, "max_record and max_result are > 0");
        return -1;
    }
    exec_options_t o;
    memset(&o, 0, sizeof o);
    if (workers != Py_None) {
        long w = PyLong_AsLong(workers);
        if (w == -1 && PyErr_Occurred())
            return -1;
        if (w < 1 || w > 1024) {
            PyErr_SetString(PyExc_ValueError, "workers is 1 to 1024 (None: one per CPU)");
            return -1;
        }
        o.workers = (unsigned)w;
    }
    o.batch = batch;
    o.window = window;
    o.max_record = (size_t)max_record;
    o.max_result = (size_t)max_result;
    o.max_records_per_worker = mrpw;
    o.max_worker_growth_kb = growth;
    o.result_delay_us = delay;
    o.flags = (ordered ? EXEC_ORDERED : 0) | (replay ? 0 : EXEC_NO_REPLAY) |
              (close_fds ? EXEC_CLOSE_FDS : 0);
    if (lx_ms(timeout, &o.timeout_ms, "timeout") < 0 || lx_ms(grace, &o.grace_ms, "grace") < 0 ||
        lx_ms(start_timeout, &o.start_timeout_ms, "start_timeout") < 0)
        return -1;
    int *fds = NULL;
    if (lx_keep_fds(keep_fds, &o, &fds) < 0) {
        PyMem_Free(fds);
        return -1;
    }
    self->pid = getpid();
    self->result = r;
    self->errors_return = e == 1;
    self->ordered = ordered;
    self->max_record = (size_t)max_record;
    int rc;
    exec_t *ex = NULL;

    if (PyObject_TypeCheck(target, st->plugin_type)) {
        /* (a) A C plugin: its context is built here from spec. */
        PluginObject *pl = (PluginObject *)target;
        if (context != Py_None || worker_init != Py_None || worker_fini != Py_None) {
            PyErr_SetString(PyExc_TypeError,
                            "a plugin builds its own context from spec: no context, "
                            "worker_init or worker_fini");
            goto fail;
        }
        if (r == LX_PICKLE) {
            PyErr_SetString(PyExc_ValueError, "result=\"pickle\" is for Python classifiers");
            goto fail;
        }
        if (!PyUnicode_Check(spec)) {
            PyErr_SetString(PyExc_TypeError, "a plugin needs spec=\"...\" (a str)");
            goto fail;
        }
        const char *sp = PyUnicode_AsUTF8(spec);
        if (!sp)
            goto fail;
        if (header != Py_None) {
            Py_buffer hb;
            PyObject *hbytes = PyUnicode_Check(header) ? PyUnicode_AsUTF8String(header)
                                                       : Py_NewRef(header);
            if (!hbytes || PyObject_GetBuffer(hbytes, &hb, PyBUF_SIMPLE) < 0) {
                Py_XDECREF(hbytes);
                goto fail;
            }
            exec_source_options_t so;
            rc = lx_source_options(NULL, 0, delim, &so);
            if (rc == 0)
                rc = exec_csv_header_create(&self->header, hb.buf, (size_t)hb.len, so.delim);
            PyBuffer_Release(&hb);
            Py_DECREF(hbytes);
            if (rc < 0 && PyErr_Occurred())
                goto fail;
            if (rc) {
                lx_raise(st, rc, "header: %s", exec_strerror(rc));
                goto fail;
            }
        }
        self->kind = LX_PLUGIN;
        self->plugin = (PluginObject *)Py_NewRef(target);
        char err[1024] = "";
        void *ctx = NULL;
        const exec_plugin_t *p = pl->pl;
        const exec_csv_header_t *h = self->header;
        Py_BEGIN_ALLOW_THREADS
        rc = p->ctx_build(sp, h, &ctx, err, sizeof err);
        Py_END_ALLOW_THREADS
        if (rc) {
            lx_raise(st, EXEC_EINVAL, "plugin %s: bad spec '%s': %s", p->name ? p->name : "?", sp,
                     err[0] ? err : "(no reason given)");
            goto fail;
        }
        self->pctx = ctx;
        self->ops = *p->ops;
        self->ops.ctx_release = NULL; /* ctx_free after the destroy, ours */
        exec_backend_t want = b == 0 ? EXEC_AUTO : b == 1 ? EXEC_THREADS : EXEC_FORK;
        Py_BEGIN_ALLOW_THREADS
        rc = exec_create(&ex, &self->ops, ctx, want, &o);
        Py_END_ALLOW_THREADS
        PyMem_Free(fds);
        fds = NULL;
        if (rc) {
            lx_create_failed(st, rc, backend, false);
            goto fail;
        }
    } else if (PyCallable_Check(target)) {
        /* (b) A Python callable: process(context, row). */
        if (spec != Py_None || header != Py_None) {
            PyErr_SetString(PyExc_TypeError, "spec and header are for plugins");
            goto fail;
        }
        if ((worker_init != Py_None && !PyCallable_Check(worker_init)) ||
            (worker_fini != Py_None && !PyCallable_Check(worker_fini))) {
            PyErr_SetString(PyExc_TypeError, "worker_init and worker_fini are callables");
            goto fail;
        }
        bool threads = b == 1;
        if (threads && !thread_safe) {
            PyErr_SetString(PyExc_ValueError,
                            "backend=\"threads\" runs process() on several threads at once: "
                            "say thread_safe=True if it may (fork is the default)");
            goto fail;
        }
        self->kind = LX_PYTHON;
        self->pyctx = lx_pyctx_new(target, context, worker_init == Py_None ? NULL : worker_init,
                                   worker_fini == Py_None ? NULL : worker_fini, r, threads,
                                   o.max_result, &self->relq);
        if (!self->pyctx)
            goto fail;
        if (!threads) {
            self->hooks = lx_hooks_new(freeze_gc);
            if (!self->hooks)
                goto fail;
            lx_hooks_set(&o, self->hooks);
        }
        const exec_ops_t *ops = threads ? &lx_py_ops_threads : &lx_py_ops_fork;
        lx_pyctx *ctx = self->pyctx;
        Py_BEGIN_ALLOW_THREADS
        rc = exec_create(&ex, ops, ctx, threads ? EXEC_THREADS : EXEC_FORK, &o);
        Py_END_ALLOW_THREADS
        PyMem_Free(fds);
        fds = NULL;
        if (rc) {
            lx_create_failed(st, rc, threads ? "threads" : "fork", true);
            goto fail;
        }
    } else {
        PyErr_Format(PyExc_TypeError,
                     "Executor(target, ...): a Plugin or a callable process(context, row), "
                     "not %.100s",
                     Py_TYPE(target)->tp_name);
        goto fail;
    }
    self->ex = ex;
    self->backend = exec_backend(ex);
    exec_options_t got;
    exec_get_options(ex, &got);
    self->workers = got.workers;
    PyObject *ref = PyWeakref_NewRef((PyObject *)self, NULL);
    if (!ref || PySet_Add(st->live, ref) < 0) {
        Py_XDECREF(ref);
        lx_ex_close(self);
        return -1;
    }
    Py_DECREF(ref);
    if (lx_ex_after_call(self) < 0) {
        lx_ex_close(self);
        return -1;
    }
    return 0;
fail:
    PyMem_Free(fds);
    if (self->pctx) {
        void *ctx = self->pctx;
        const exec_plugin_t *p = self->plugin->pl;
        self->pctx = NULL;
        p->ctx_free(ctx);
    }
    exec_csv_header_free(self->header);
    self->header = NULL;
    lx_pyctx_free(self->pyctx); /* never reached the library, or it was refused */
    self->pyctx = NULL;
    return -1;
}

/* ------------------------------------------------------------------------- */
/* Methods                                                                   */
/* ------------------------------------------------------------------------- */

static PyObject *lx_stream_method(ExecutorObject *self, PyObject *args, PyObject *kw,
                                  bool ordered, const char *fmt)
{
    static char *kwlist[] = {"rows", "tags", NULL};
    PyObject *rows;
    int tags = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &rows, &tags))
        return NULL;
    if (lx_ex_usable(self) < 0)
        return NULL;
    PyObject *it = PyObject_GetIter(rows);
    if (!it)
        return NULL;
    PyObject *s = lx_stream_new(self, it, NULL, tags, ordered, false);
    Py_DECREF(it);
    return s;
}

static PyObject *executor_imap_unordered(ExecutorObject *self, PyObject *args, PyObject *kw)
{
    return lx_stream_method(self, args, kw, false, "O|$p:imap_unordered");
}

static PyObject *executor_imap(ExecutorObject *self, PyObject *args, PyObject *kw)
{
    return lx_stream_method(self, args, kw, true, "O|$p:imap");
}

static PyObject *executor_map_file(ExecutorObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"src", "dst", "format", "header", "delim", "skip_bad", "tags", NULL};
    PyObject *src, *dst = Py_None, *format = NULL, *delim = NULL;
    int header = 1, skip_bad = 0, tags = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O$OpOpp:map_file", kwlist, &src, &dst, &format,
                                     &header, &delim, &skip_bad, &tags))
        return NULL;
    if (lx_ex_usable(self) < 0)
        return NULL;
    lx_state *st = lx_state_of(self->module);
    int fd = -1;
    bool own = false;
    if (dst != Py_None && lx_path_or_fd(dst, O_WRONLY | O_CREAT | O_TRUNC, &fd, &own, "dst") < 0)
        return NULL;
    exec_source_t *s = lx_open_source(st, src, format, header, delim);
    if (!s) {
        if (own)
            close(fd);
        return NULL;
    }
    if (dst == Py_None)
        return lx_stream_new(self, NULL, s, tags, self->ordered, skip_bad);
    PyObject *rep = lx_map_fd(self, s, fd, skip_bad);
    if (own)
        close(fd);
    Py_BEGIN_ALLOW_THREADS
    exec_source_close(s);
    Py_END_ALLOW_THREADS
    return rep;
}

static PyObject *executor_swap_context(ExecutorObject *self, PyObject *context)
{
    lx_state *st = lx_state_of(self->module);
    if (lx_ex_usable(self) < 0)
        return NULL;
    if (self->kind != LX_PYTHON) {
        PyErr_SetString(PyExc_TypeError,
                        "swap_context() is for Python classifiers; a plugin's context comes "
                        "from its spec: make a new Executor");
        return NULL;
    }
    lx_pyctx *cur = self->pyctx;
    lx_pyctx *c = lx_pyctx_new(cur->process, context, cur->init, cur->fini, cur->result,
                               cur->threads, cur->max_result, &self->relq);
    if (!c)
        return NULL;
    int rc;
    exec_t *ex = self->ex;
    lx_ex_enter(self);
    Py_BEGIN_ALLOW_THREADS
    rc = exec_swap_context(ex, c);
    Py_END_ALLOW_THREADS
    lx_ex_leave(self);
    if (rc) {
        lx_pyctx_free(c); /* a refused context is not released by the library */
        if (lx_ex_after_call(self) < 0)
            return NULL;
        const char *why = rc == EXEC_EINIT       ? "worker_init raised, crashed or hung"
                          : rc == EXEC_ECRASHED   ? "the canary died on a replayed record"
                          : rc == EXEC_ERECTIMEOUT ? "the canary hung on a replayed record"
                          : rc == EXEC_EWORKER    ? "the canary broke the protocol"
                                                  : exec_strerror(rc);
        return lx_raise_as(st->SwapRejected, rc, "the new context was refused (%s); the old "
                                                 "one keeps serving",
                           why);
    }
    self->pyctx = c;
    if (lx_ex_after_call(self) < 0)
        return NULL;
    exec_stats_t s;
    exec_stats(self->ex, &s);
    return PyLong_FromUnsignedLongLong(s.generation);
}

static PyObject *lx_cancel_common(ExecutorObject *self, bool all, uint64_t tag)
{
    if (lx_ex_usable(self) < 0)
        return NULL;
    int rc;
    exec_t *ex = self->ex;
    lx_ex_enter(self);
    Py_BEGIN_ALLOW_THREADS
    rc = all ? exec_cancel_all(ex) : exec_cancel(ex, tag);
    Py_END_ALLOW_THREADS
    lx_ex_leave(self);
    if (lx_ex_after_call(self) < 0)
        return NULL;
    if (rc == EXEC_ENOENT)
        rc = 0;
    if (rc < 0)
        return lx_raise(lx_state_of(self->module), rc, "cancel: %s", exec_strerror(rc));
    return PyLong_FromLong(rc);
}

static PyObject *executor_cancel(ExecutorObject *self, PyObject *arg)
{
    unsigned long long tag = PyLong_AsUnsignedLongLong(arg);
    if (tag == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    return lx_cancel_common(self, false, tag);
}

static PyObject *executor_cancel_all(ExecutorObject *self, PyObject *unused)
{
    (void)unused;
    return lx_cancel_common(self, true, 0);
}

static PyObject *executor_stats(ExecutorObject *self, PyObject *unused)
{
    (void)unused;
    if (lx_ex_usable(self) < 0)
        return NULL;
    exec_stats_t s;
    exec_t *ex = self->ex;
    lx_ex_enter(self);
    Py_BEGIN_ALLOW_THREADS
    exec_stats(ex, &s);
    Py_END_ALLOW_THREADS
    lx_ex_leave(self);
    if (lx_ex_after_call(self) < 0)
        return NULL;
    PyObject *hist = PyList_New(EXEC_LAT_BUCKETS);
    if (!hist)
        return NULL;
    for (int i = 0; i < EXEC_LAT_BUCKETS; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(s.lat_hist[i]);
        if (!v) {
            Py_DECREF(hist);
            return NULL;
        }
        PyList_SET_ITEM(hist, i, v);
    }
#define U(f) #f, (unsigned long long)s.f
    PyObject *d = Py_BuildValue(
        "{sssIsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsdsN}", "backend",
        exec_backend_name(s.backend), "workers", s.workers, U(submitted), U(delivered),
        U(in_flight), U(ok), U(user_errors), U(crashed), U(timed_out), U(too_big), U(cancelled),
        U(worker_errors), U(batches), U(swaps), U(generation), U(respawns), U(lat_samples),
        U(lat_p50_ns), U(lat_p99_ns), U(lat_p999_ns), U(busy_ns), U(idle_ns), "utilisation",
        s.utilisation, "lat_hist", hist);
#undef U
    return d;
}

static PyObject *executor_worker_stats(ExecutorObject *self, PyObject *unused)
{
    (void)unused;
    if (lx_ex_usable(self) < 0)
        return NULL;
    unsigned n = self->workers;
    exec_worker_stats_t *ws = PyMem_Calloc(n, sizeof *ws);
    if (!ws)
        return PyErr_NoMemory();
    exec_t *ex = self->ex;
    lx_ex_enter(self);
    Py_BEGIN_ALLOW_THREADS
    for (unsigned i = 0; i < n; i++)
        exec_worker_stats(ex, i, &ws[i]);
    Py_END_ALLOW_THREADS
    lx_ex_leave(self);
    PyObject *list = lx_ex_after_call(self) < 0 ? NULL : PyList_New(n);
    for (unsigned i = 0; list && i < n; i++) {
#define U(f) #f, (unsigned long long)ws[i].f
        PyObject *d = Py_BuildValue(
            "{sIsisKsKsKsKsKsKsKsKsKsKsKsO}", "index", ws[i].index, "pid", ws[i].pid,
            U(records), U(batches), U(busy_ns), U(idle_ns), U(startup_ns), U(respawns_crash),
            U(respawns_timeout), U(respawns_recycle), U(respawns_cancel), U(pss_kb),
            U(private_dirty_kb), "gone", ws[i].flags & EXEC_WORKER_GONE ? Py_True : Py_False);
#undef U
        if (!d)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, d);
    }
    PyMem_Free(ws);
    return list;
}

static PyObject *executor_close(ExecutorObject *self, PyObject *unused)
{
    (void)unused;
    lx_ex_close(self);
    Py_RETURN_NONE;
}

static PyObject *executor_enter(ExecutorObject *self, PyObject *unused)
{
    (void)unused;
    if (lx_ex_usable(self) < 0)
        return NULL;
    return Py_NewRef(self);
}

static PyObject *executor_exit(ExecutorObject *self, PyObject *args)
{
    (void)args;
    lx_ex_close(self);
    Py_RETURN_FALSE;
}

static PyObject *executor_get_backend(ExecutorObject *self, void *c)
{
    (void)c;
    return PyUnicode_FromString(exec_backend_name(self->backend));
}

static PyObject *executor_get_workers(ExecutorObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLong(self->workers);
}

static PyObject *executor_get_closed(ExecutorObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(!self->ex || self->closing);
}

static PyObject *executor_repr(ExecutorObject *self)
{
    return PyUnicode_FromFormat("<libexecutor.Executor %s, %u workers%s>",
                                exec_backend_name(self->backend), self->workers,
                                !self->ex || self->closing ? ", closed" : "");
}

/* ------------------------------------------------------------------------- */
/* The type                                                                  */
/* ------------------------------------------------------------------------- */

static int executor_traverse(ExecutorObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->module);
    Py_VISIT(self->plugin);
    return lx_pyctx_traverse(self->pyctx, visit, arg);
}

static int executor_clear(ExecutorObject *self)
{
    lx_ex_close(self);
    if (self->pyctx && !self->ex) {
        /* Never started: still ours. */
        lx_pyctx_free(self->pyctx);
        self->pyctx = NULL;
    }
    Py_CLEAR(self->plugin);
    return 0;
}

static void executor_dealloc(ExecutorObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    executor_clear(self);
    lx_relq_drain(&self->relq);
    pthread_mutex_destroy(&self->relq.lock);
    PyMem_RawFree(self->hooks);
    Py_CLEAR(self->module);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *executor_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)args, (void)kw;
    ExecutorObject *self = (ExecutorObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->module = Py_XNewRef(lx_module_by_type(type));
    if (!self->module) {
        Py_DECREF(self);
        return NULL;
    }
    lx_relq_init(&self->relq);
    return (PyObject *)self;
}

static PyMethodDef executor_methods[] = {
    {"imap_unordered", (PyCFunction)(void (*)(void))executor_imap_unordered,
     METH_VARARGS | METH_KEYWORDS,
     "imap_unordered(rows, *, tags=False)\n--\n\nRuns every row, yields results as they "
     "finish."},
    {"imap", (PyCFunction)(void (*)(void))executor_imap, METH_VARARGS | METH_KEYWORDS,
     "imap(rows, *, tags=False)\n--\n\nRuns every row, yields results in input order."},
    {"map_file", (PyCFunction)(void (*)(void))executor_map_file, METH_VARARGS | METH_KEYWORDS,
     "map_file(src, dst=None, *, format='csv', header=True, delim=',', skip_bad=False, "
     "tags=False)\n--\n\nEvery record of a file: results to dst (a report), or yielded."},
    {"swap_context", (PyCFunction)executor_swap_context, METH_O,
     "swap_context(context)\n--\n\nReplaces the context, proved on a canary first."},
    {"cancel", (PyCFunction)executor_cancel, METH_O,
     "cancel(tag)\n--\n\nCancels the record with this tag; how many were cancelled."},
    {"cancel_all", (PyCFunction)executor_cancel_all, METH_NOARGS,
     "cancel_all()\n--\n\nCancels every record in flight; how many."},
    {"stats", (PyCFunction)executor_stats, METH_NOARGS, "stats()\n--\n\nThe executor's figures."},
    {"worker_stats", (PyCFunction)executor_worker_stats, METH_NOARGS,
     "worker_stats()\n--\n\nEach worker's figures."},
    {"close", (PyCFunction)executor_close, METH_NOARGS,
     "close()\n--\n\nStops the workers and frees everything."},
    {"__enter__", (PyCFunction)executor_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)executor_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef executor_getset[] = {
    {"backend", (getter)executor_get_backend, NULL, "\"threads\" or \"fork\".", NULL},
    {"workers", (getter)executor_get_workers, NULL, "How many workers.", NULL},
    {"closed", (getter)executor_get_closed, NULL, "True after close().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef executor_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(ExecutorObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot executor_slots[] = {
    {Py_tp_doc, "Executor(target, context=None, **options)\n--\n\n"
                "Runs records through a C plugin or a Python callable on workers."},
    {Py_tp_new, executor_new},
    {Py_tp_init, executor_init},
    {Py_tp_dealloc, executor_dealloc},
    {Py_tp_traverse, executor_traverse},
    {Py_tp_clear, executor_clear},
    {Py_tp_repr, executor_repr},
    {Py_tp_methods, executor_methods},
    {Py_tp_getset, executor_getset},
    {Py_tp_members, executor_members},
    {0, NULL},
};

PyType_Spec lx_executor_spec = {
    .name = "libexecutor.Executor",
    .basicsize = sizeof(ExecutorObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = executor_slots,
};
