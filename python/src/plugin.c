/*
 * Plugin: a C classifier from a shared object, loaded and checked by
 * exec_plugin_open() (RTLD_NOW | RTLD_LOCAL, its exec_plugin_v1 symbol, ABI
 * and ops). Executors over it hold a reference, so it is unloaded only after
 * the last of them is gone.
 */
#include "lx.h"

static int plugin_init(PluginObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"path", NULL};
    PyObject *path;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&:Plugin", kwlist, PyUnicode_FSConverter, &path))
        return -1;
    if (self->pl) {
        Py_DECREF(path);
        PyErr_SetString(PyExc_RuntimeError, "Plugin.__init__ called twice");
        return -1;
    }
    lx_state *st = lx_state_by_type(Py_TYPE(self));
    char err[1024];
    int rc;
    const exec_plugin_t *pl = NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = exec_plugin_open(&pl, PyBytes_AS_STRING(path), err, sizeof err);
    Py_END_ALLOW_THREADS
    if (rc) {
        Py_DECREF(path);
        lx_raise_as(st->PluginError, rc, "%s", err);
        return -1;
    }
    self->pl = pl;
    self->path = PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(path), PyBytes_GET_SIZE(path));
    Py_DECREF(path);
    return self->path ? 0 : -1;
}

static void plugin_dealloc(PluginObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    exec_plugin_close(self->pl);
    Py_XDECREF(self->path);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *plugin_get_name(PluginObject *self, void *c)
{
    (void)c;
    if (!self->pl)
        Py_RETURN_NONE;
    return PyUnicode_FromString(self->pl->name ? self->pl->name : "");
}

static PyObject *plugin_get_usage(PluginObject *self, void *c)
{
    (void)c;
    if (!self->pl || !self->pl->usage)
        Py_RETURN_NONE;
    return PyUnicode_FromString(self->pl->usage);
}

static PyObject *plugin_get_caps(PluginObject *self, void *c)
{
    (void)c;
    PyObject *s = PyFrozenSet_New(NULL);
    if (!s || !self->pl)
        return s;
    unsigned caps = self->pl->ops->caps;
    static const struct {
        unsigned cap;
        const char *name;
    } names[] = {{EXEC_CAP_THREAD_SAFE, "threads"}, {EXEC_CAP_FORK_SAFE, "fork"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(caps & names[i].cap))
            continue;
        PyObject *n = PyUnicode_FromString(names[i].name);
        if (!n || PySet_Add(s, n) < 0) {
            Py_XDECREF(n);
            Py_DECREF(s);
            return NULL;
        }
        Py_DECREF(n);
    }
    return s;
}

static PyObject *plugin_get_path(PluginObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->path ? self->path : Py_None);
}

static PyObject *plugin_repr(PluginObject *self)
{
    if (!self->pl)
        return PyUnicode_FromString("<libexecutor.Plugin (not loaded)>");
    return PyUnicode_FromFormat("<libexecutor.Plugin %s from %R>",
                                self->pl->name ? self->pl->name : "?", self->path);
}

static PyGetSetDef plugin_getset[] = {
    {"name", (getter)plugin_get_name, NULL, "The plugin's name.", NULL},
    {"usage", (getter)plugin_get_usage, NULL, "One line on its spec, or None.", NULL},
    {"caps", (getter)plugin_get_caps, NULL,
     "The backends it allows: a frozenset of \"threads\" and \"fork\".", NULL},
    {"path", (getter)plugin_get_path, NULL, "Where it was loaded from.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot plugin_slots[] = {
    {Py_tp_doc, "Plugin(path)\n--\n\nA C classifier plugin (a shared object exporting "
                "exec_plugin_v1), loaded and checked."},
    {Py_tp_init, plugin_init},
    {Py_tp_dealloc, plugin_dealloc},
    {Py_tp_repr, plugin_repr},
    {Py_tp_getset, plugin_getset},
    {Py_tp_new, PyType_GenericNew},
    {0, NULL},
};

PyType_Spec lx_plugin_spec = {
    .name = "libexecutor.Plugin",
    .basicsize = sizeof(PluginObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = plugin_slots,
};
