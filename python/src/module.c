/*
 * The module _libexecutor: its state (types, exceptions, the executors still
 * open), helpers the other files share, and the functions that need no
 * executor: records(), csv_fields(), map_file(). An atexit hook closes every
 * executor still open before the interpreter finalizes (their workers and
 * zygotes end with them).
 */
#include "lx.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <time.h>
#include <unistd.h>

static struct PyModuleDef lx_module;

lx_state *lx_state_of(PyObject *module) { return PyModule_GetState(module); }

PyObject *lx_module_by_type(PyTypeObject *t) { return PyType_GetModuleByDef(t, &lx_module); }

lx_state *lx_state_by_type(PyTypeObject *t)
{
    PyObject *m = PyType_GetModuleByDef(t, &lx_module);
    return m ? PyModule_GetState(m) : NULL;
}

void lx_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------------- */
/* Errors                                                                    */
/* ------------------------------------------------------------------------- */

static PyObject *lx_vraise(PyObject *type, int code, const char *fmt, va_list ap)
{
    PyObject *msg = PyUnicode_FromFormatV(fmt, ap);
    if (!msg)
        return NULL;
    PyObject *e = PyObject_CallOneArg(type, msg);
    Py_DECREF(msg);
    if (!e)
        return NULL;
    PyObject *c = PyLong_FromLong(code), *n = PyUnicode_FromString(exec_err_name(code));
    if (!c || !n || PyObject_SetAttrString(e, "code", c) < 0 ||
        PyObject_SetAttrString(e, "name", n) < 0) {
        Py_XDECREF(c);
        Py_XDECREF(n);
        Py_DECREF(e);
        return NULL;
    }
    Py_DECREF(c);
    Py_DECREF(n);
    PyErr_SetObject(type, e);
    Py_DECREF(e);
    return NULL;
}

PyObject *lx_raise_as(PyObject *type, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lx_vraise(type, code, fmt, ap);
    va_end(ap);
    return NULL;
}

/* Raises ExecutorError(code) with a message (a system error's too: its text
 * is in exec_strerror()). */
PyObject *lx_raise(lx_state *st, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lx_vraise(st->ExecutorError, code, fmt, ap);
    va_end(ap);
    return NULL;
}

/* Sets o.name = v and drops v (NULL: an exception is set). */
static int lx_set_attr(PyObject *o, const char *name, PyObject *v)
{
    if (!v)
        return -1;
    int rc = PyObject_SetAttrString(o, name, v);
    Py_DECREF(v);
    return rc;
}

/* A RecordError for a failed record (not raised): tag, index (its place in
 * its stream), status (a name), code, user_code, signal, exit_status, text
 * (what the worker wrote: a Python traceback, a plugin's message; or None). */
PyObject *lx_record_error(lx_state *st, const exec_result_t *res, uint64_t index)
{
    PyObject *text = Py_None;
    Py_INCREF(text);
    if (res->len && res->data) {
        Py_DECREF(text);
        text = PyUnicode_DecodeUTF8(res->data, (Py_ssize_t)res->len, "replace");
        if (!text)
            return NULL;
    }
    /* The message: the record, the status, and the text's last line (the
     * exception itself, for a traceback). */
    PyObject *msg;
    const char *name = exec_err_name(res->status);
    if (text != Py_None) {
        PyObject *stripped = PyObject_CallMethod(text, "rstrip", NULL);
        PyObject *last = NULL;
        if (stripped) {
            Py_ssize_t n = PyUnicode_GetLength(stripped);
            Py_ssize_t nl = PyUnicode_FindChar(stripped, '\n', 0, n, -1);
            last = PyUnicode_Substring(stripped, nl < 0 ? 0 : nl + 1, n);
            Py_DECREF(stripped);
        }
        if (!last) {
            Py_DECREF(text);
            return NULL;
        }
        msg = PyUnicode_FromFormat("record %llu: %s: %U", (unsigned long long)index, name, last);
        Py_DECREF(last);
    } else if (res->status == EXEC_ECRASHED && res->signal) {
        msg = PyUnicode_FromFormat("record %llu: %s: the worker died of signal %d",
                                   (unsigned long long)index, name, res->signal);
    } else if (res->status == EXEC_ECRASHED) {
        msg = PyUnicode_FromFormat("record %llu: %s: the worker exited with status %d",
                                   (unsigned long long)index, name, res->exit_status);
    } else {
        msg = PyUnicode_FromFormat("record %llu: %s: %s", (unsigned long long)index, name,
                                   exec_strerror(res->status));
    }
    if (!msg) {
        Py_DECREF(text);
        return NULL;
    }
    PyObject *e = PyObject_CallOneArg(st->RecordError, msg);
    Py_DECREF(msg);
    if (!e) {
        Py_DECREF(text);
        return NULL;
    }
    if (lx_set_attr(e, "text", text) < 0 || /* first: text is taken either way */
        lx_set_attr(e, "tag", PyLong_FromUnsignedLongLong(res->tag)) < 0 ||
        lx_set_attr(e, "index", PyLong_FromUnsignedLongLong(index)) < 0 ||
        lx_set_attr(e, "status", PyUnicode_FromString(name)) < 0 ||
        lx_set_attr(e, "name", PyUnicode_FromString(name)) < 0 ||
        lx_set_attr(e, "code", PyLong_FromLong(res->status)) < 0 ||
        lx_set_attr(e, "user_code", PyLong_FromLong(res->user_code)) < 0 ||
        lx_set_attr(e, "signal", PyLong_FromLong(res->signal)) < 0 ||
        lx_set_attr(e, "exit_status", PyLong_FromLong(res->exit_status)) < 0) {
        Py_DECREF(e);
        return NULL;
    }
    return e;
}

/* ------------------------------------------------------------------------- */
/* Files and sources                                                         */
/* ------------------------------------------------------------------------- */

/*
 * A descriptor from what the caller gave: an int (theirs), a path (opened
 * here with flags: *own set), or an object with fileno() (a file object:
 * flushed first).
 */
int lx_path_or_fd(PyObject *o, int flags, int *fd, bool *own, const char *what)
{
    *own = false;
    *fd = -1;
    if (PyLong_Check(o)) {
        int v = PyLong_AsInt_compat(o);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (v < 0) {
            PyErr_Format(PyExc_ValueError, "%s: a negative descriptor", what);
            return -1;
        }
        *fd = v;
        return 0;
    }
    if (PyObject_HasAttrString(o, "fileno") && !PyUnicode_Check(o) && !PyBytes_Check(o)) {
        if (PyObject_HasAttrString(o, "flush")) {
            PyObject *r = PyObject_CallMethod(o, "flush", NULL);
            if (!r)
                return -1;
            Py_DECREF(r);
        }
        int v = PyObject_AsFileDescriptor(o);
        if (v < 0)
            return -1;
        *fd = v;
        return 0;
    }
    PyObject *path;
    if (!PyUnicode_FSConverter(o, &path))
        return -1;
    int v;
    Py_BEGIN_ALLOW_THREADS
    v = open(PyBytes_AS_STRING(path), flags | O_CLOEXEC, 0666);
    Py_END_ALLOW_THREADS
    if (v < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, o);
        Py_DECREF(path);
        return -1;
    }
    Py_DECREF(path);
    *fd = v;
    *own = true;
    return 0;
}

/* A delimiter: one character or byte, or its code. */
static int lx_delim(PyObject *d, int *out)
{
    if (!d || d == Py_None) {
        *out = ',';
        return 0;
    }
    if (PyLong_Check(d)) {
        *out = PyLong_AsInt_compat(d);
        return *out == -1 && PyErr_Occurred() ? -1 : 0;
    }
    if (PyUnicode_Check(d) && PyUnicode_GetLength(d) == 1) {
        Py_UCS4 c = PyUnicode_ReadChar(d, 0);
        if (c < 256) {
            *out = (int)c;
            return 0;
        }
    }
    if (PyBytes_Check(d) && PyBytes_GET_SIZE(d) == 1) {
        *out = (unsigned char)PyBytes_AS_STRING(d)[0];
        return 0;
    }
    PyErr_SetString(PyExc_ValueError, "delim is one character (a byte)");
    return -1;
}

int lx_source_options(PyObject *format, int header, PyObject *delim, exec_source_options_t *so)
{
    memset(so, 0, sizeof *so);
    const char *f = format && format != Py_None ? PyUnicode_AsUTF8(format) : "csv";
    if (!f)
        return -1;
    if (!strcmp(f, "csv"))
        so->format = EXEC_SOURCE_CSV;
    else if (!strcmp(f, "lines"))
        so->format = EXEC_SOURCE_LINES;
    else if (!strcmp(f, "len32le"))
        so->format = EXEC_SOURCE_LEN32LE;
    else if (!strcmp(f, "len32be"))
        so->format = EXEC_SOURCE_LEN32BE;
    else {
        PyErr_Format(PyExc_ValueError,
                     "format is \"csv\", \"lines\", \"len32le\" or \"len32be\", not %R", format);
        return -1;
    }
    if (header)
        so->flags |= EXEC_SOURCE_HEADER;
    return lx_delim(delim, &so->delim);
}

/* Opens a record source on src: a path (the source opens and closes it), or
 * a descriptor or file object (read from where it stands; stays open). */
static exec_source_t *lx_source_open(lx_state *st, PyObject *src, const exec_source_options_t *so)
{
    exec_source_t *s = NULL;
    int rc;
    if (PyLong_Check(src) || (PyObject_HasAttrString(src, "fileno") && !PyUnicode_Check(src) &&
                              !PyBytes_Check(src))) {
        int fd;
        bool own;
        if (lx_path_or_fd(src, O_RDONLY, &fd, &own, "src") < 0)
            return NULL;
        Py_BEGIN_ALLOW_THREADS
        rc = exec_source_open_fd(&s, fd, so);
        Py_END_ALLOW_THREADS
    } else {
        PyObject *path;
        if (!PyUnicode_FSConverter(src, &path))
            return NULL;
        Py_BEGIN_ALLOW_THREADS
        rc = exec_source_open(&s, PyBytes_AS_STRING(path), so);
        Py_END_ALLOW_THREADS
        Py_DECREF(path);
    }
    if (lx_errno(rc) && rc != EXEC_E2BIG && rc != EXEC_EINVAL && rc != EXEC_ENOMEM) {
        errno = -rc;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, src);
        return NULL;
    }
    if (rc) {
        lx_raise(st, rc, "%R: %s", src, exec_strerror(rc));
        return NULL;
    }
    return s;
}

exec_source_t *lx_open_source(lx_state *st, PyObject *src, PyObject *format, int header,
                              PyObject *delim)
{
    exec_source_options_t so;
    if (lx_source_options(format, header, delim, &so) < 0)
        return NULL;
    return lx_source_open(st, src, &so);
}

PyObject *lx_report_dict(const exec_map_report_t *rep, PyObject *errors)
{
    return Py_BuildValue("{sKsKsKsKsKsKsdsO}", "records", (unsigned long long)rep->records, "ok",
                         (unsigned long long)rep->ok, "failed", (unsigned long long)rep->failed,
                         "too_big", (unsigned long long)rep->too_big, "bad",
                         (unsigned long long)rep->bad, "bytes", (unsigned long long)rep->bytes,
                         "seconds", rep->seconds, "errors", errors ? errors : Py_None);
}

/* ------------------------------------------------------------------------- */
/* Module functions                                                          */
/* ------------------------------------------------------------------------- */

PyDoc_STRVAR(csv_fields_doc, "csv_fields(row, delim=b',')\n--\n\n"
                             "The fields of one CSV record, as a list of bytes (quotes removed, "
                             "\"\" turned into \").");

static PyObject *lx_csv_fields(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"row", "delim", NULL};
    Py_buffer row;
    PyObject *delim = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|O:csv_fields", kwlist, &row, &delim))
        return NULL;
    int d;
    if (lx_delim(delim, &d) < 0) {
        PyBuffer_Release(&row);
        return NULL;
    }
    exec_field_t small[32], *f = small;
    size_t max = 32;
    char sbuf[512], *buf = sbuf;
    if ((size_t)row.len > sizeof sbuf) {
        buf = PyMem_Malloc((size_t)row.len);
        if (!buf) {
            PyBuffer_Release(&row);
            return PyErr_NoMemory();
        }
    }
    int n = exec_csv_split(row.buf, (size_t)row.len, d, f, max, buf, (size_t)row.len);
    if (n > (int)max) {
        f = PyMem_Malloc((size_t)n * sizeof *f);
        if (f)
            n = exec_csv_split(row.buf, (size_t)row.len, d, f, (size_t)n, buf, (size_t)row.len);
    }
    PyObject *out = NULL;
    if (!f) {
        PyErr_NoMemory();
    } else if (n < 0) {
        lx_raise(lx_state_of(module), n, "csv_fields: %s", exec_strerror(n));
    } else if ((out = PyList_New(n))) {
        for (int i = 0; i < n; i++) {
            PyObject *b = PyBytes_FromStringAndSize(f[i].data, (Py_ssize_t)f[i].len);
            if (!b) {
                Py_CLEAR(out);
                break;
            }
            PyList_SET_ITEM(out, i, b);
        }
    }
    if (f != small)
        PyMem_Free(f);
    if (buf != sbuf)
        PyMem_Free(buf);
    PyBuffer_Release(&row);
    return out;
}

PyDoc_STRVAR(records_doc,
             "records(src, *, format='csv', header=False, delim=',', skip_empty=False)\n--\n\n"
             "The raw records of a file, as bytes, cut by the library's reader.");

static PyObject *lx_records(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"src", "format", "header", "delim", "skip_empty", NULL};
    PyObject *src, *format = NULL, *delim = NULL;
    int header = 0, skip_empty = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$OpOp:records", kwlist, &src, &format, &header,
                                     &delim, &skip_empty))
        return NULL;
    lx_state *st = lx_state_of(module);
    exec_source_options_t so;
    if (lx_source_options(format, header, delim, &so) < 0)
        return NULL;
    if (skip_empty)
        so.flags |= EXEC_SOURCE_SKIP_EMPTY;
    exec_source_t *s = lx_source_open(st, src, &so);
    if (!s)
        return NULL;
    return lx_records_new(st, s);
}

PyDoc_STRVAR(map_file_doc,
             "map_file(plugin, spec, src, dst, *, format='csv', header=True, delim=',', "
             "skip_bad=False, **options)\n--\n\n"
             "executor-map in one call: every record of src through the plugin, results to dst.");

static PyObject *lx_map_file(PyObject *module, PyObject *args, PyObject *kw)
{
    lx_state *st = lx_state_of(module);
    PyObject *plugin, *spec, *src, *dst;
    if (!PyArg_ParseTuple(args, "OOOO:map_file", &plugin, &spec, &src, &dst))
        return NULL;
    /* The source's keywords are ours; the rest go to Executor(). */
    PyObject *opts = kw ? PyDict_Copy(kw) : PyDict_New();
    if (!opts)
        return NULL;
    PyObject *format = NULL, *delim = NULL, *res = NULL, *ex = NULL;
    int header = 1, skip_bad = 0;
    exec_source_t *s = NULL;
    PyObject *v;
    if ((v = PyDict_GetItemString(opts, "format")))
        format = Py_NewRef(v), PyDict_DelItemString(opts, "format");
    if ((v = PyDict_GetItemString(opts, "delim")))
        delim = Py_NewRef(v);
    if ((v = PyDict_GetItemString(opts, "header"))) {
        header = PyObject_IsTrue(v);
        PyDict_DelItemString(opts, "header");
        if (header < 0)
            goto out;
    }
    if ((v = PyDict_GetItemString(opts, "skip_bad"))) {
        skip_bad = PyObject_IsTrue(v);
        PyDict_DelItemString(opts, "skip_bad");
        if (skip_bad < 0)
            goto out;
    }
    if (!PyObject_TypeCheck(plugin, st->plugin_type)) {
        PyObject *targs = PyTuple_Pack(1, plugin);
        PyObject *p = targs ? PyObject_Call((PyObject *)st->plugin_type, targs, NULL) : NULL;
        Py_XDECREF(targs);
        if (!p)
            goto out;
        plugin = p;
    } else {
        Py_INCREF(plugin);
    }
    s = lx_open_source(st, src, format, header, delim);
    if (!s)
        goto out_plugin;
    /* The header row goes to the plugin's ctx_build. */
    const void *hrow;
    size_t hlen;
    if (header && exec_source_header(s, &hrow, &hlen) == 0) {
        PyObject *h = PyBytes_FromStringAndSize(hrow, (Py_ssize_t)hlen);
        if (!h || PyDict_SetItemString(opts, "header", h) < 0) {
            Py_XDECREF(h);
            goto out_plugin;
        }
        Py_DECREF(h);
    }
    if (PyDict_SetItemString(opts, "spec", spec) < 0)
        goto out_plugin;
    PyObject *targs = PyTuple_Pack(1, plugin);
    ex = targs ? PyObject_Call((PyObject *)st->executor_type, targs, opts) : NULL;
    Py_XDECREF(targs);
    if (!ex)
        goto out_plugin;
    {
        int fd;
        bool own;
        if (lx_path_or_fd(dst, O_WRONLY | O_CREAT | O_TRUNC, &fd, &own, "dst") == 0) {
            res = lx_map_fd((ExecutorObject *)ex, s, fd, skip_bad);
            if (own)
                close(fd);
        }
    }
    lx_ex_close((ExecutorObject *)ex);
out_plugin:
    Py_DECREF(plugin);
out:
    Py_XDECREF(ex);
    if (s) {
        Py_BEGIN_ALLOW_THREADS
        exec_source_close(s);
        Py_END_ALLOW_THREADS
    }
    Py_XDECREF(format);
    Py_XDECREF(delim);
    Py_DECREF(opts);
    return res;
}

/* atexit: every executor still open is closed (workers and zygotes end). */
static PyObject *lx_shutdown(PyObject *module, PyObject *unused)
{
    (void)unused;
    lx_state *st = lx_state_of(module);
    if (!st->live)
        Py_RETURN_NONE;
    PyObject *all = PySequence_List(st->live);
    if (!all)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(all); i++) {
        PyObject *ex = PyWeakref_GetObject(PyList_GET_ITEM(all, i)); /* borrowed */
        if (ex && ex != Py_None) {
            Py_INCREF(ex);
            lx_ex_close((ExecutorObject *)ex);
            Py_DECREF(ex);
        }
    }
    Py_DECREF(all);
    PySet_Clear(st->live);
    Py_RETURN_NONE;
}

static PyObject *lx_strerror(PyObject *module, PyObject *arg)
{
    (void)module;
    int code = PyLong_AsInt_compat(arg);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    return Py_BuildValue("(ss)", exec_err_name(code), exec_strerror(code));
}

static PyMethodDef lx_methods[] = {
    {"csv_fields", (PyCFunction)(void (*)(void))lx_csv_fields, METH_VARARGS | METH_KEYWORDS,
     csv_fields_doc},
    {"records", (PyCFunction)(void (*)(void))lx_records, METH_VARARGS | METH_KEYWORDS,
     records_doc},
    {"map_file", (PyCFunction)(void (*)(void))lx_map_file, METH_VARARGS | METH_KEYWORDS,
     map_file_doc},
    {"_shutdown", lx_shutdown, METH_NOARGS, "Closes every executor still open (atexit)."},
    {"_strerror", lx_strerror, METH_O, "(name, text) of a library error code."},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------------- */
/* The module                                                                */
/* ------------------------------------------------------------------------- */

static int lx_add_error(PyObject *m, PyObject **slot, const char *name, const char *doc,
                        PyObject *base)
{
    char full[64];
    snprintf(full, sizeof full, "libexecutor.%s", name);
    *slot = PyErr_NewExceptionWithDoc(full, doc, base, NULL);
    if (!*slot)
        return -1;
    return PyModule_AddObjectRef(m, name, *slot);
}

static int lx_exec(PyObject *m)
{
    lx_state *st = lx_state_of(m);
    st->plugin_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &lx_plugin_spec, NULL);
    st->executor_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &lx_executor_spec, NULL);
    st->stream_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &lx_stream_spec, NULL);
    st->records_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &lx_records_spec, NULL);
    if (!st->plugin_type || !st->executor_type || !st->stream_type || !st->records_type)
        return -1;
    if (PyModule_AddType(m, st->plugin_type) < 0 || PyModule_AddType(m, st->executor_type) < 0)
        return -1;
    if (lx_add_error(m, &st->ExecutorError, "ExecutorError",
                     "An error of libexecutor: .code (the library's code), .name (e.g. "
                     "\"EXEC_EINIT\").",
                     NULL) < 0 ||
        lx_add_error(m, &st->RecordError, "RecordError",
                     "One record failed: .tag, .index, .status, .code, .user_code, .signal, "
                     ".exit_status, .text (a traceback, or what the worker wrote).",
                     st->ExecutorError) < 0 ||
        lx_add_error(m, &st->SwapRejected, "SwapRejected",
                     "swap_context() refused the new context (its canary failed); the old one "
                     "keeps serving.",
                     st->ExecutorError) < 0 ||
        lx_add_error(m, &st->PluginError, "PluginError",
                     "A plugin could not be loaded: no such file, not a plugin, another ABI.",
                     st->ExecutorError) < 0)
        return -1;
    st->live = PySet_New(NULL);
    if (!st->live)
        return -1;
    if (PyModule_AddStringConstant(m, "LIBRARY_VERSION", EXEC_VERSION_STRING) < 0)
        return -1;
    /* The atexit hook: before the interpreter finalizes, while threads and
     * the GIL still work as usual. */
    PyObject *atexit = PyImport_ImportModule("atexit");
    PyObject *fn = PyObject_GetAttrString(m, "_shutdown");
    PyObject *r = atexit && fn ? PyObject_CallMethod(atexit, "register", "O", fn) : NULL;
    Py_XDECREF(atexit);
    Py_XDECREF(fn);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int lx_traverse(PyObject *m, visitproc visit, void *arg)
{
    lx_state *st = lx_state_of(m);
    Py_VISIT(st->plugin_type);
    Py_VISIT(st->executor_type);
    Py_VISIT(st->stream_type);
    Py_VISIT(st->records_type);
    Py_VISIT(st->ExecutorError);
    Py_VISIT(st->RecordError);
    Py_VISIT(st->SwapRejected);
    Py_VISIT(st->PluginError);
    Py_VISIT(st->live);
    return 0;
}

static int lx_clear(PyObject *m)
{
    lx_state *st = lx_state_of(m);
    Py_CLEAR(st->plugin_type);
    Py_CLEAR(st->executor_type);
    Py_CLEAR(st->stream_type);
    Py_CLEAR(st->records_type);
    Py_CLEAR(st->ExecutorError);
    Py_CLEAR(st->RecordError);
    Py_CLEAR(st->SwapRejected);
    Py_CLEAR(st->PluginError);
    Py_CLEAR(st->live);
    return 0;
}

static void lx_free(void *m) { lx_clear((PyObject *)m); }

static PyModuleDef_Slot lx_slots[] = {
    {Py_mod_exec, lx_exec},
#ifdef Py_mod_multiple_interpreters
    /* Forks and the executors' threads belong to the process: one interpreter. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(lx_doc, "The C part of libexecutor (import libexecutor instead).");

static struct PyModuleDef lx_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_libexecutor",
    .m_doc = lx_doc,
    .m_size = sizeof(lx_state),
    .m_methods = lx_methods,
    .m_slots = lx_slots,
    .m_traverse = lx_traverse,
    .m_clear = lx_clear,
    .m_free = lx_free,
};

PyMODINIT_FUNC PyInit__libexecutor(void) { return PyModuleDef_Init(&lx_module); }
