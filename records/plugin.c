/*
 * Plugins from shared objects: one loader for every host (executor-map,
 * executor-serve, the Python module), so that each checks the same things
 * and says the same things when a file is not a plugin. A loaded plugin is a
 * copy of the object's exec_plugin_t, kept beside its dlopen handle: the
 * caller holds a plain const exec_plugin_t * and gives it back to close.
 */
#include "executor_records.h"
#include "rec_alloc.h"

#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

struct plugin_lib {
    exec_plugin_t pl; /* first: the caller's pointer */
    void *dl;
};

/* Why it failed, into the caller's buffer (which may be NULL). */
#define plugin_say(err, errlen, ...)                                                               \
    do {                                                                                           \
        if ((err) && (errlen))                                                                     \
            snprintf((err), (errlen), __VA_ARGS__);                                                \
    } while (0)

int exec_plugin_open(const exec_plugin_t **plugin, const char *path, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (plugin)
        *plugin = NULL;
    if (!plugin || !path) {
        plugin_say(err, errlen, "no plugin path");
        return EXEC_EINVAL;
    }
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        const char *why = dlerror();
        plugin_say(err, errlen, "cannot load plugin: %s", why ? why : path);
        return EXEC_ENOENT;
    }
    int rc = 0;
    dlerror();
    const exec_plugin_t *pl = dlsym(dl, EXEC_PLUGIN_SYMBOL);
    if (!pl) {
        plugin_say(err, errlen, "%s: not a plugin (no symbol " EXEC_PLUGIN_SYMBOL ")", path);
        rc = EXEC_EINVAL;
    } else if (pl->abi != EXEC_PLUGIN_ABI) {
        plugin_say(err, errlen, "%s: plugin ABI %u, this library speaks %u", path, pl->abi,
                   (unsigned)EXEC_PLUGIN_ABI);
        rc = EXEC_EVERSION;
    } else if (!pl->ops || !pl->ops->process || !pl->ctx_build || !pl->ctx_free) {
        char miss[48] = "";
        if (!pl->ops)
            strcat(miss, ", ops");
        else if (!pl->ops->process)
            strcat(miss, ", process");
        if (!pl->ctx_build)
            strcat(miss, ", ctx_build");
        if (!pl->ctx_free)
            strcat(miss, ", ctx_free");
        plugin_say(err, errlen,
                   "%s: plugin %s has no %s: a host needs ops with process, ctx_build (the "
                   "context from a spec) and ctx_free (EXEC_ECAPS)",
                   path, pl->name ? pl->name : "(unnamed)", miss + 2);
        rc = EXEC_ECAPS;
    } else if (pl->ops->version != EXEC_OPS_VERSION) {
        plugin_say(err, errlen, "%s: plugin ops version %u, this library speaks %u", path,
                   pl->ops->version, (unsigned)EXEC_OPS_VERSION);
        rc = EXEC_EVERSION;
    }
    struct plugin_lib *lib = rc ? NULL : rec_malloc(sizeof *lib);
    if (!rc && !lib) {
        plugin_say(err, errlen, "out of memory");
        rc = EXEC_ENOMEM;
    }
    if (rc) {
        dlclose(dl);
        return rc;
    }
    lib->pl = *pl;
    lib->dl = dl;
    *plugin = &lib->pl;
    return 0;
}

void exec_plugin_close(const exec_plugin_t *plugin)
{
    if (!plugin)
        return;
    struct plugin_lib *lib = (struct plugin_lib *)((char *)plugin - offsetof(struct plugin_lib, pl));
    dlclose(lib->dl);
    free(lib);
}
