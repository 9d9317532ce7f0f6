/*
 * Streams: rows in, results out, on the calling thread.
 *
 * A Stream (what imap, imap_unordered and map_file(src) return) takes rows
 * from a Python iterable (bytes, or str as UTF-8) or from a file through the
 * library's reader, hands them to the library a batch at a time
 * (exec_try_submit_many) and takes results a batch at a time
 * (exec_next_many), each call with the GIL released and no wait longer than
 * LX_SLICE_MS, signals checked between waits. Rows are never pickled; a
 * result becomes bytes, str, or (result="pickle") the object. Each row
 * yields exactly one item: its result, or a RecordError (raised, or yielded
 * with errors="return"). An input that raises, or a malformed record of a
 * file, ends the stream after the rows before it have yielded theirs.
 * Interrupted (Ctrl-C, an error), a stream cancels what it has in flight
 * and takes it back before the exception goes on, so the executor is clean
 * for the next stream; a stream dropped half-way does the same.
 *
 * The file-to-file map (lx_map_fd) runs exec_map_fd() on a thread of its
 * own, every signal blocked there, while the calling thread waits in slices
 * and checks signals; on Ctrl-C it cancels the map's records (the map's
 * on_failed then stops it) and waits for the thread.
 */
#include "lx.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>

typedef struct {
    PyObject_HEAD
    ExecutorObject *ex;
    PyObject *it;        /* rows from Python, or NULL */
    exec_source_t *src;  /* rows from a file, or NULL */
    bool tags, reorder;  /* yield (tag, result); in input order */
    bool skip_bad;       /* a malformed record of the file is skipped */
    bool running;        /* holds ex->streaming */
    bool input_done, over;
    PyObject *input_exc; /* raised once every row before it yielded */
    uint64_t base;       /* the first row's tag */
    uint64_t taken;      /* rows taken from the input */
    uint64_t sent;       /* of which the library accepted */
    uint64_t back;       /* results the library gave back */
    uint64_t local;      /* rows that failed here (too big) */
    /* Staged rows: taken, not yet accepted: [istage, nstage). */
    exec_record_t recs[LX_BATCH];
    PyObject *hold[LX_BATCH];
    size_t soff[LX_BATCH];
    size_t nstage, istage;
    char *sbuf; /* file rows' bytes */
    size_t slen, scap;
    /* Items ready: ready[rpos:], then (reorder) pending by index. */
    PyObject *ready;
    Py_ssize_t rpos;
    PyObject *pending;
    uint64_t next_out;
    PyObject *loads; /* pickle.loads */
    exec_result_t res[LX_BATCH];
} StreamObject;

/* ------------------------------------------------------------------------- */
/* Items                                                                     */
/* ------------------------------------------------------------------------- */

/* A result as the object handed out (new reference). */
static PyObject *lx_result(StreamObject *s, const exec_result_t *res, uint64_t index)
{
    ExecutorObject *ex = s->ex;
    if (res->status != 0)
        return lx_record_error(lx_state_of(ex->module), res, index);
    switch (ex->result) {
    case LX_STR:
        return PyUnicode_DecodeUTF8(res->data, (Py_ssize_t)res->len, "surrogateescape");
    case LX_PICKLE: {
        if (!s->loads) {
            PyObject *p = PyImport_ImportModule("pickle");
            s->loads = p ? PyObject_GetAttrString(p, "loads") : NULL;
            Py_XDECREF(p);
            if (!s->loads)
                return NULL;
        }
        PyObject *b = PyBytes_FromStringAndSize(res->data, (Py_ssize_t)res->len);
        PyObject *o = b ? PyObject_CallOneArg(s->loads, b) : NULL;
        Py_XDECREF(b);
        return o;
    }
    default:
        return PyBytes_FromStringAndSize(res->data, (Py_ssize_t)res->len);
    }
}

/* Queues an item for the row at index (steals obj). */
static int lx_push(StreamObject *s, uint64_t index, PyObject *obj)
{
    if (!obj)
        return -1;
    if (s->tags) {
        unsigned long long tag = s->base + index;
        PyObject *t = Py_BuildValue("(KN)", tag, obj);
        if (!t)
            return -1;
        obj = t;
    }
    if (!s->reorder || index == s->next_out) {
        int rc = PyList_Append(s->ready, obj);
        Py_DECREF(obj);
        if (rc < 0)
            return -1;
        if (!s->reorder)
            return 0;
        s->next_out++;
        /* What waited for it. */
        while (PyDict_GET_SIZE(s->pending)) {
            PyObject *k = PyLong_FromUnsignedLongLong(s->next_out);
            if (!k)
                return -1;
            PyObject *v = PyDict_GetItemWithError(s->pending, k);
            if (!v) {
                Py_DECREF(k);
                return PyErr_Occurred() ? -1 : 0;
            }
            rc = PyList_Append(s->ready, v);
            if (rc == 0)
                rc = PyDict_DelItem(s->pending, k);
            Py_DECREF(k);
            if (rc < 0)
                return -1;
            s->next_out++;
        }
        return 0;
    }
    PyObject *k = PyLong_FromUnsignedLongLong(index);
    int rc = k ? PyDict_SetItem(s->pending, k, obj) : -1;
    Py_XDECREF(k);
    Py_DECREF(obj);
    return rc;
}

/* A row that failed here, as the library would have said it. */
static int lx_push_local(StreamObject *s, uint64_t tag, int status, const char *text)
{
    exec_result_t r;
    memset(&r, 0, sizeof r);
    r.tag = tag;
    r.status = status;
    r.seq = UINT64_MAX;
    if (text) {
        r.data = text;
        r.len = strlen(text);
    }
    s->local++;
    return lx_push(s, tag - s->base, lx_record_error(lx_state_of(s->ex->module), &r,
                                                     tag - s->base));
}

/* ------------------------------------------------------------------------- */
/* Ending                                                                    */
/* ------------------------------------------------------------------------- */

static void lx_unstage(StreamObject *s)
{
    for (size_t i = s->istage; i < s->nstage; i++)
        Py_CLEAR(s->hold[i]);
    s->istage = s->nstage = 0;
    s->slen = 0;
}

static void lx_stream_release(StreamObject *s)
{
    s->over = true;
    if (s->running) {
        s->running = false;
        s->ex->streaming = false;
    }
}

/*
 * GIL held, an exception maybe set (kept). Cancels the records in flight and
 * takes their results back (dropped), so that none reaches the next stream.
 */
static void lx_stream_abort(StreamObject *s)
{
    PyObject *exc = lx_err_take();
    lx_unstage(s);
    s->input_done = true;
    ExecutorObject *ex = s->ex;
    if (s->running && ex->ex && !ex->closing && ex->pid == getpid() && s->back < s->sent) {
        exec_t *e = ex->ex;
        lx_ex_enter(ex);
        Py_BEGIN_ALLOW_THREADS
        exec_cancel_all(e);
        while (s->back < s->sent) {
            size_t n = 0;
            int rc = exec_next_many(e, s->res, LX_BATCH, &n, LX_SLICE_MS);
            if (rc == 0)
                s->back += n;
            else if (rc != EXEC_ETIMEDOUT && rc != EXEC_EAGAIN)
                break;
        }
        exec_release(e);
        Py_END_ALLOW_THREADS
        lx_ex_leave(ex);
        lx_relq_drain(&ex->relq);
    }
    if (s->ready)
        PyList_SetSlice(s->ready, 0, PyList_GET_SIZE(s->ready), NULL);
    s->rpos = 0;
    if (s->pending)
        PyDict_Clear(s->pending);
    lx_stream_release(s);
    PyErr_Clear();
    lx_err_put(exc);
}

/* ------------------------------------------------------------------------- */
/* Feeding                                                                   */
/* ------------------------------------------------------------------------- */

/* Takes up to a batch of rows from the Python iterator. 0, or -1 with an
 * exception of ours (the input's own is kept for the end). */
static int lx_take_py(StreamObject *s)
{
    ExecutorObject *ex = s->ex;
    while (s->nstage < LX_BATCH) {
        PyObject *row = PyIter_Next(s->it);
        if (!row) {
            s->input_done = true;
            /* An Exception waits for the rows before it; KeyboardInterrupt,
             * SystemExit and their kin go on at once. */
            if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception))
                return -1;
            if (PyErr_Occurred())
                s->input_exc = lx_err_take();
            return 0;
        }
        const char *p;
        Py_ssize_t n;
        if (PyBytes_CheckExact(row)) {
            p = PyBytes_AS_STRING(row);
            n = PyBytes_GET_SIZE(row);
        } else if (PyUnicode_Check(row)) {
            p = PyUnicode_AsUTF8AndSize(row, &n);
        } else if (PyObject_CheckBuffer(row)) {
            PyObject *b = PyBytes_FromObject(row);
            Py_DECREF(row);
            if (!(row = b))
                return -1;
            p = PyBytes_AS_STRING(row);
            n = PyBytes_GET_SIZE(row);
        } else {
            PyErr_Format(PyExc_TypeError, "a row is bytes or str, not %.100s",
                         Py_TYPE(row)->tp_name);
            p = NULL;
        }
        if (!p) {
            /* A row we cannot send ends the input, as a raising iterator
             * would. */
            Py_DECREF(row);
            s->input_done = true;
            s->input_exc = lx_err_take();
            return 0;
        }
        size_t i = s->nstage++;
        s->hold[i] = row;
        s->recs[i] = (exec_record_t){.data = p, .len = (size_t)n, .tag = ex->next_tag++};
        s->taken++;
    }
    return 0;
}

/* Takes up to a batch of records from the file, copied (a record's bytes are
 * the source's only until its next call). GIL released meanwhile. */
static int lx_take_file(StreamObject *s)
{
    ExecutorObject *ex = s->ex;
    exec_source_t *src = s->src;
    int rc = 0;
    size_t got = 0, first = s->nstage;
    uint64_t tag0 = ex->next_tag;
    bool nomem = false;
    exec_source_error_t bad;
    memset(&bad, 0, sizeof bad);
    Py_BEGIN_ALLOW_THREADS
    while (s->nstage + got < LX_BATCH && s->slen < ((size_t)4 << 20)) {
        const void *rec;
        size_t len;
        rc = exec_source_next(src, &rec, &len, NULL);
        if (rc != 1)
            break;
        if (s->slen + len > s->scap) {
            size_t cap = s->scap ? s->scap : 65536;
            while (cap < s->slen + len)
                cap *= 2;
            char *nb = PyMem_RawRealloc(s->sbuf, cap);
            if (!nb) {
                nomem = true;
                break;
            }
            s->sbuf = nb;
            s->scap = cap;
        }
        memcpy(s->sbuf + s->slen, rec, len);
        s->soff[first + got] = s->slen;
        s->recs[first + got] = (exec_record_t){.len = len, .tag = tag0 + got};
        s->slen += len;
        got++;
    }
    if (rc < 0)
        bad = *exec_source_error(src);
    Py_END_ALLOW_THREADS
    if (nomem) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = first; i < first + got; i++) {
        s->recs[i].data = s->sbuf + s->soff[i];
        s->hold[i] = NULL;
    }
    s->nstage += got;
    s->taken += got;
    ex->next_tag += got;
    if (rc == 0) {
        s->input_done = true;
    } else if (rc < 0 && rc != EXEC_E2BIG && rc != EXEC_EUNTERMINATED && rc != EXEC_EBADQUOTE &&
               rc != EXEC_ETRUNCATED) {
        s->input_done = true;
        errno = -rc;
        PyErr_SetFromErrno(PyExc_OSError);
        s->input_exc = lx_err_take();
    } else if (rc < 0) {
        /* One that cannot be a row: too big for the reader (a RecordError
         * in its place), or malformed (skipped with skip_bad, else the end). */
        char text[160];
        snprintf(text, sizeof text, "record %llu at byte %llu: %s",
                 (unsigned long long)bad.record, (unsigned long long)bad.offset,
                 exec_strerror(rc));
        if (rc == EXEC_E2BIG) {
            uint64_t tag = ex->next_tag++;
            s->taken++;
            return lx_push_local(s, tag, rc, text);
        }
        if (s->skip_bad)
            return 0;
        s->input_done = true;
        lx_raise(lx_state_of(ex->module), rc, "%s", text);
        s->input_exc = lx_err_take();
    }
    return 0;
}

/* Hands the staged rows to the library: 0 when it took them all, 1 when the
 * window is full, -1 with an exception. */
static int lx_submit(StreamObject *s)
{
    ExecutorObject *ex = s->ex;
    while (s->istage < s->nstage) {
        if (lx_ex_usable(ex) < 0) /* closed by another thread meanwhile */
            return -1;
        size_t acc = 0, n = s->nstage - s->istage;
        exec_record_t *r = s->recs + s->istage;
        exec_t *e = ex->ex;
        int rc;
        lx_ex_enter(ex);
        Py_BEGIN_ALLOW_THREADS
        rc = exec_try_submit_many(e, r, n, &acc);
        Py_END_ALLOW_THREADS
        lx_ex_leave(ex);
        for (size_t i = s->istage; i < s->istage + acc; i++)
            Py_CLEAR(s->hold[i]);
        s->istage += acc;
        s->sent += acc;
        if (rc == EXEC_E2BIG) {
            /* This row is refused; the rest go on. */
            char text[96];
            snprintf(text, sizeof text, "a row of %zu bytes; max_record is %zu",
                     s->recs[s->istage].len, ex->max_record);
            uint64_t tag = s->recs[s->istage].tag;
            Py_CLEAR(s->hold[s->istage]);
            s->istage++;
            if (lx_push_local(s, tag, EXEC_E2BIG, text) < 0)
                return -1;
            continue;
        }
        if (rc == EXEC_EAGAIN)
            return 1;
        if (rc) {
            lx_raise(lx_state_of(ex->module), rc, "submit: %s", exec_strerror(rc));
            return -1;
        }
    }
    s->istage = s->nstage = 0;
    s->slen = 0;
    return 0;
}

/* Takes results (waiting up to wait_ms). 1 when some came, 0 when none, -1
 * with an exception. */
static int lx_collect(StreamObject *s, int wait_ms)
{
    ExecutorObject *ex = s->ex;
    if (lx_ex_usable(ex) < 0)
        return -1;
    exec_t *e = ex->ex;
    size_t n = 0;
    int rc;
    lx_ex_enter(ex);
    Py_BEGIN_ALLOW_THREADS
    rc = exec_next_many(e, s->res, LX_BATCH, &n, wait_ms);
    Py_END_ALLOW_THREADS
    lx_ex_leave(ex);
    if (rc == EXEC_EAGAIN || rc == EXEC_ETIMEDOUT)
        return 0;
    if (rc) {
        lx_raise(lx_state_of(ex->module), rc, "%s", exec_strerror(rc));
        return -1;
    }
    s->back += n;
    for (size_t i = 0; i < n; i++) {
        const exec_result_t *r = &s->res[i];
        if (lx_push(s, r->tag - s->base, lx_result(s, r, r->tag - s->base)) < 0)
            return -1;
    }
    return 1;
}

/* ------------------------------------------------------------------------- */
/* The iterator                                                              */
/* ------------------------------------------------------------------------- */

/* The next ready item: a new reference, NULL (none, or an exception). */
static PyObject *lx_pop(StreamObject *s)
{
    Py_ssize_t n = PyList_GET_SIZE(s->ready);
    if (s->rpos >= n)
        return NULL;
    PyObject *item = Py_NewRef(PyList_GET_ITEM(s->ready, s->rpos));
    if (++s->rpos == n) {
        PyList_SetSlice(s->ready, 0, n, NULL);
        s->rpos = 0;
    }
    return item;
}

/* Hands an item out: a RecordError is raised unless errors="return". */
static PyObject *lx_hand_out(StreamObject *s, PyObject *item)
{
    PyObject *v = s->tags ? PyTuple_GET_ITEM(item, 1) : item;
    if (PyBytes_CheckExact(v) || PyUnicode_CheckExact(v) || s->ex->errors_return)
        return item;
    lx_state *st = lx_state_of(s->ex->module);
    if (PyObject_TypeCheck(v, (PyTypeObject *)st->RecordError)) {
        PyErr_SetObject(st->RecordError, v);
        Py_DECREF(item);
        return NULL;
    }
    return item;
}

static PyObject *stream_next(StreamObject *s)
{
    for (;;) {
        PyObject *item = lx_pop(s);
        if (item)
            return lx_hand_out(s, item);
        if (s->over)
            return NULL;
        ExecutorObject *ex = s->ex;
        if (lx_ex_usable(ex) < 0) {
            lx_stream_abort(s);
            return NULL;
        }
        bool staged = s->istage < s->nstage;
        if (s->input_done && !staged && s->back == s->sent && PyDict_GET_SIZE(s->pending) == 0) {
            /* Every row has its item: the end, or the input's exception. */
            lx_stream_release(s);
            if (s->input_exc) {
                PyObject *e = s->input_exc;
                s->input_exc = NULL;
                lx_err_put(e);
            }
            return NULL;
        }
        if (!s->input_done && !staged) {
            if ((s->it ? lx_take_py(s) : lx_take_file(s)) < 0) {
                lx_stream_abort(s);
                return NULL;
            }
            staged = s->istage < s->nstage;
        }
        int full = 0;
        if (staged) {
            full = lx_submit(s);
            if (full < 0) {
                lx_stream_abort(s);
                return NULL;
            }
        }
        /* Wait only when there is nothing to feed. */
        bool feed = full == 0 && (s->istage < s->nstage || !s->input_done);
        int got = 0;
        if (s->back < s->sent) {
            got = lx_collect(s, feed ? 0 : LX_SLICE_MS);
            if (got < 0) {
                lx_stream_abort(s);
                return NULL;
            }
        }
        if (lx_ex_after_call(ex) < 0 || (!got && !feed && PyErr_CheckSignals() < 0)) {
            lx_stream_abort(s);
            return NULL;
        }
    }
}

PyObject *lx_stream_new(ExecutorObject *ex, PyObject *rows, exec_source_t *src, bool tags,
                        bool ordered, bool skip_bad)
{
    lx_state *st = lx_state_of(ex->module);
    if (ex->finished || ex->streaming) {
        if (src)
            exec_source_close(src);
        return lx_raise(st, EXEC_EBUSY,
                        ex->finished ? "map_file(src, dst) ran this executor's whole stream: "
                                       "make a new Executor"
                                     : "another stream is running on this executor: finish "
                                       "or close it first");
    }
    StreamObject *s = (StreamObject *)PyType_GenericAlloc(st->stream_type, 0);
    if (!s) {
        if (src)
            exec_source_close(src);
        return NULL;
    }
    s->ex = (ExecutorObject *)Py_NewRef(ex);
    s->it = Py_XNewRef(rows);
    s->src = src;
    s->tags = tags;
    s->skip_bad = skip_bad;
    s->reorder = ordered && !ex->ordered; /* an EXEC_ORDERED executor keeps the order */
    s->ready = PyList_New(0);
    s->pending = PyDict_New();
    if (!s->ready || !s->pending) {
        Py_DECREF(s);
        return NULL;
    }
    s->base = ex->next_tag;
    s->running = true;
    ex->streaming = true;
    return (PyObject *)s;
}

static PyObject *stream_close(StreamObject *s, PyObject *unused)
{
    (void)unused;
    if (!s->over)
        lx_stream_abort(s);
    Py_RETURN_NONE;
}

static int stream_traverse(StreamObject *s, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(s));
    Py_VISIT(s->ex);
    Py_VISIT(s->it);
    Py_VISIT(s->ready);
    Py_VISIT(s->pending);
    Py_VISIT(s->input_exc);
    for (size_t i = s->istage; i < s->nstage; i++)
        Py_VISIT(s->hold[i]);
    return 0;
}

static int stream_clear(StreamObject *s)
{
    if (!s->over && s->ex)
        lx_stream_abort(s);
    lx_unstage(s);
    Py_CLEAR(s->it);
    Py_CLEAR(s->ready);
    Py_CLEAR(s->pending);
    Py_CLEAR(s->input_exc);
    Py_CLEAR(s->loads);
    return 0;
}

static void stream_dealloc(StreamObject *s)
{
    PyTypeObject *tp = Py_TYPE(s);
    PyObject_GC_UnTrack(s);
    stream_clear(s);
    if (s->src) {
        exec_source_t *src = s->src;
        s->src = NULL;
        Py_BEGIN_ALLOW_THREADS
        exec_source_close(src);
        Py_END_ALLOW_THREADS
    }
    PyMem_RawFree(s->sbuf);
    Py_CLEAR(s->ex);
    tp->tp_free(s);
    Py_DECREF(tp);
}

static PyMethodDef stream_methods[] = {
    {"close", (PyCFunction)stream_close, METH_NOARGS,
     "close()\n--\n\nStops the stream: rows in flight are cancelled and dropped."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot stream_slots[] = {
    {Py_tp_doc, "Results of a stream, as they come (imap_unordered) or in input order (imap)."},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, stream_next},
    {Py_tp_dealloc, stream_dealloc},
    {Py_tp_traverse, stream_traverse},
    {Py_tp_clear, stream_clear},
    {Py_tp_methods, stream_methods},
    {0, NULL},
};

PyType_Spec lx_stream_spec = {
    .name = "libexecutor.Stream",
    .basicsize = sizeof(StreamObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = stream_slots,
};

/* ------------------------------------------------------------------------- */
/* records(): a file's raw records                                           */
/* ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    exec_source_t *src;
} RecordsObject;

PyObject *lx_records_new(lx_state *st, exec_source_t *src)
{
    RecordsObject *r = PyObject_New(RecordsObject, st->records_type);
    if (!r) {
        exec_source_close(src);
        return NULL;
    }
    r->src = src;
    return (PyObject *)r;
}

static PyObject *records_next(RecordsObject *r)
{
    if (!r->src)
        return NULL;
    const void *rec;
    size_t len;
    uint64_t no;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = exec_source_next(r->src, &rec, &len, &no);
    Py_END_ALLOW_THREADS
    if (rc == 1)
        return PyBytes_FromStringAndSize(rec, (Py_ssize_t)len);
    if (rc == 0)
        return NULL;
    const exec_source_error_t *e = exec_source_error(r->src);
    if (lx_errno(rc) && rc != EXEC_E2BIG && rc != EXEC_ENOBUFS) {
        errno = -rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return lx_raise(lx_state_by_type(Py_TYPE(r)), rc, "record %llu at byte %llu: %s",
                    (unsigned long long)e->record, (unsigned long long)e->offset,
                    exec_strerror(rc));
}

static void records_dealloc(RecordsObject *r)
{
    PyTypeObject *tp = Py_TYPE(r);
    exec_source_close(r->src);
    PyObject_Free(r);
    Py_DECREF(tp);
}

static PyObject *records_header(RecordsObject *r, PyObject *unused)
{
    (void)unused;
    const void *rec;
    size_t len;
    if (!r->src || exec_source_header(r->src, &rec, &len) != 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(rec, (Py_ssize_t)len);
}

static PyMethodDef records_methods[] = {
    {"header", (PyCFunction)records_header, METH_NOARGS,
     "header()\n--\n\nThe header record (header=True), or None."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot records_slots[] = {
    {Py_tp_doc, "A file's records, as bytes (records())."},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, records_next},
    {Py_tp_dealloc, records_dealloc},
    {Py_tp_methods, records_methods},
    {0, NULL},
};

PyType_Spec lx_records_spec = {
    .name = "libexecutor.Records",
    .basicsize = sizeof(RecordsObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = records_slots,
};

/* ------------------------------------------------------------------------- */
/* File to file, on a thread of its own                                      */
/* ------------------------------------------------------------------------- */

#define LX_MAX_FAILS 100

struct lx_fail {
    exec_result_t res;
    char text[512];
};

struct lx_map_job {
    exec_t *ex;
    exec_source_t *src;
    int fd;
    exec_map_options_t mo;
    exec_map_report_t rep;
    int rc;
    int stop, done; /* atomic */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned nfail;
    struct lx_fail fail[LX_MAX_FAILS];
};

/* The map's thread, core's locks held: keeps the first failures; stops the
 * map once asked to (its records are being cancelled, so failures come). */
static int lx_on_failed(void *arg, const exec_result_t *res)
{
    struct lx_map_job *j = arg;
    if (__atomic_load_n(&j->stop, __ATOMIC_ACQUIRE))
        return 1;
    if (j->nfail < LX_MAX_FAILS) {
        struct lx_fail *f = &j->fail[j->nfail++];
        f->res = *res;
        size_t n = res->data && res->len ? res->len : 0;
        if (n >= sizeof f->text)
            n = sizeof f->text - 1;
        if (n)
            memcpy(f->text, res->data, n);
        f->text[n] = '\0';
        f->res.data = f->text;
        f->res.len = n;
    }
    return 0;
}

static void *lx_map_main(void *arg)
{
    struct lx_map_job *j = arg;
    int rc = exec_map_fd(j->ex, j->src, j->fd, &j->mo, &j->rep);
    pthread_mutex_lock(&j->lock);
    j->rc = rc;
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

/* Waits up to ms for the job's end; true when it is over. */
static bool lx_map_wait(struct lx_map_job *j, int ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_nsec += (long)ms * 1000000L;
    dl.tv_sec += dl.tv_nsec / 1000000000L;
    dl.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&j->lock);
    while (!j->done && pthread_cond_timedwait(&j->cond, &j->lock, &dl) == 0)
        ;
    bool done = j->done;
    pthread_mutex_unlock(&j->lock);
    return done;
}

PyObject *lx_map_fd(ExecutorObject *ex, exec_source_t *src, int out_fd, bool skip_bad)
{
    lx_state *st = lx_state_of(ex->module);
    if (lx_ex_usable(ex) < 0)
        return NULL;
    if (ex->finished || ex->streaming)
        return lx_raise(st, EXEC_EBUSY,
                        "map_file(src, dst) runs on a fresh executor (nothing run before)");
    struct lx_map_job *j = PyMem_RawCalloc(1, sizeof *j);
    if (!j)
        return PyErr_NoMemory();
    j->ex = ex->ex;
    j->src = src;
    j->fd = out_fd;
    j->mo.flags = EXEC_MAPS_QUIET | (skip_bad ? EXEC_MAPS_SKIP_BAD : 0);
    j->mo.on_failed = lx_on_failed;
    j->mo.failed_arg = j;
    pthread_mutex_init(&j->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->cond, &ca);
    pthread_condattr_destroy(&ca);
    /* The thread: every signal blocked, so that Ctrl-C comes to Python's. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_t t;
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int prc = pthread_create(&t, NULL, lx_map_main, j);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (prc) {
        pthread_cond_destroy(&j->cond);
        pthread_mutex_destroy(&j->lock);
        PyMem_RawFree(j);
        errno = prc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    ex->streaming = true;
    lx_ex_enter(ex);
    PyObject *exc = NULL;
    for (;;) {
        bool done;
        Py_BEGIN_ALLOW_THREADS
        done = lx_map_wait(j, LX_SLICE_MS);
        Py_END_ALLOW_THREADS
        if (done)
            break;
        if (PyErr_CheckSignals() < 0 || ex->closing) {
            exc = lx_err_take();
            /* Stop: the records in flight are cancelled, their failures stop
             * the map; again until it is over (more may have been read). */
            __atomic_store_n(&j->stop, 1, __ATOMIC_RELEASE);
            exec_t *e = ex->ex;
            Py_BEGIN_ALLOW_THREADS
            do
                exec_cancel_all(e);
            while (!lx_map_wait(j, LX_SLICE_MS));
            Py_END_ALLOW_THREADS
            break;
        }
    }
    pthread_join(t, NULL);
    lx_ex_leave(ex);
    ex->streaming = false;
    if (j->rc != EXEC_EBUSY)
        ex->finished = true; /* exec_map finished the executor */
    PyObject *out = NULL;
    if (exc) {
        lx_err_put(exc);
    } else if (lx_ex_after_call(ex) == 0) {
        int rc = j->rc;
        if (rc == 0) {
            PyObject *errors = PyList_New(0);
            for (unsigned i = 0; errors && i < j->nfail; i++) {
                PyObject *e = lx_record_error(st, &j->fail[i].res, j->fail[i].res.tag);
                if (!e || PyList_Append(errors, e) < 0)
                    Py_CLEAR(errors);
                Py_XDECREF(e);
            }
            if (errors)
                out = lx_report_dict(&j->rep, errors);
            Py_XDECREF(errors);
        } else if (lx_errno(rc) && rc != EXEC_E2BIG && rc != EXEC_EINVAL &&
                   rc != EXEC_EBUSY && rc != EXEC_ENOMEM) {
            errno = -rc;
            PyErr_SetFromErrno(PyExc_OSError);
        } else {
            const exec_source_error_t *e = exec_source_error(src);
            if (rc == EXEC_EBUSY)
                lx_raise(st, rc, "map_file(src, dst) runs on a fresh executor (nothing run "
                                 "before)");
            else if (e->code == rc)
                lx_raise(st, rc, "record %llu at byte %llu: %s", (unsigned long long)e->record,
                         (unsigned long long)e->offset, exec_strerror(rc));
            else
                lx_raise(st, rc, "map_file: %s", exec_strerror(rc));
        }
    }
    pthread_cond_destroy(&j->cond);
    pthread_mutex_destroy(&j->lock);
    PyMem_RawFree(j);
    return out;
}
