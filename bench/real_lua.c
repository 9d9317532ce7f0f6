/*
 * Real workload: an interpreter per record. A Lua 5.4 state holds a
 * dictionary (a table of ~40,000 words, a few MB of heap) and a function that
 * scores each line against it; every call allocates strings and tables, so
 * the collector runs all along, and each of its cycles writes to the whole
 * heap (mark bits): in a forked worker that heap, inherited copy-on-write,
 * gets copied page by page.
 *
 * A lua_State is not thread-safe. On EXEC_FORK the workers run the state the
 * parent built (the reason to fork); on threads, and in each OpenMP thread,
 * every thread builds a state of its own from the same script.
 */
#include "real.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef BENCH_HAVE_LUA
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static const char lua_script[] =
    "local dict = {}\n"
    "local words = {'the','user','order','paid','for','with','from','failed','password',\n"
    "  'accepted','client','error','denied','request','mail','server','session','opened',\n"
    "  'closed','invalid','connection','reset','timeout','device','sector','kernel','root',\n"
    "  'admin','guest','alice','bob','carol','dave','erin','frank','grace','get','post',\n"
    "  'put','delete','index','images','api','login','logout','cart','checkout','search'}\n"
    "for i, w in ipairs(words) do dict[w] = {i % 7, i % 11, i % 13} end\n"
    "for i = 1, 40000 do dict['w' .. i] = {i % 7, i % 11, i % 13} end\n"
    "function classify(line)\n"
    "  local s1, s2, s3, n = 0, 0, 0, 0\n"
    "  for w in string.gmatch(string.lower(line), '%a+') do\n"
    "    local e = dict[w]\n"
    "    if e then s1 = s1 + e[1]; s2 = s2 + e[2]; s3 = s3 + e[3] end\n"
    "    n = n + #w\n"
    "  end\n"
    "  return ((s1 * 65536 + s2 * 256 + s3) * 131 + n * 7 + #line) % 4294967291\n"
    "end\n";

struct lu_ctx {
    lua_State *L; /* the parent's state: the context fork workers inherit */
    int own_state; /* threads: each worker builds its own */
};

static lua_State *lu_new_state(void)
{
    lua_State *L = luaL_newstate();
    if (!L)
        return NULL;
    luaL_openlibs(L);
    if (luaL_dostring(L, lua_script) != LUA_OK) {
        lua_close(L);
        return NULL;
    }
    return L;
}

static uint64_t lu_run(void *ctx, void *ws, const char *p, size_t len)
{
    (void)ctx;
    lua_State *L = ws;
    lua_getglobal(L, "classify");
    lua_pushlstring(L, p, len);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_pop(L, 1);
        return 0xbad;
    }
    uint64_t v = (uint64_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

static int lu_state_new(void *ctx, void **ws)
{
    (void)ctx;
    *ws = lu_new_state();
    return *ws ? 0 : -1;
}

static void lu_state_free(void *ctx, void *ws)
{
    (void)ctx;
    lua_close(ws);
}

/* A worker's state: its own on threads, the inherited one on fork. */
static int lu_worker_init(void *ctx, void **ws)
{
    struct lu_ctx *c = ctx;
    if (c->own_state)
        return lu_state_new(ctx, ws);
    *ws = c->L;
    return 0;
}

static void lu_worker_fini(void *ctx, void *ws)
{
    struct lu_ctx *c = ctx;
    if (c->own_state)
        lu_state_free(ctx, ws);
}

static int lu_process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    uint64_t v = lu_run(ctx, ws, rec, len);
    return exec_write(out, &v, sizeof v);
}

static const exec_ops_t lu_ops_threads = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_THREAD_SAFE, /* with a state per worker */
    .name = "bench-lua",
    .process = lu_process,
    .worker_init = lu_worker_init,
    .worker_fini = lu_worker_fini,
};

static const exec_ops_t lu_ops_fork = {
    .version = EXEC_OPS_VERSION,
    .caps = EXEC_CAP_FORK_SAFE, /* one state, not thread-safe */
    .name = "bench-lua",
    .process = lu_process,
    .worker_init = lu_worker_init,
    .worker_fini = lu_worker_fini,
};

static void lu_destroy(struct real_load *l)
{
    struct lu_ctx *c = l->ctx_fork;
    lua_close(c->L);
    free(c);
    free(l->ctx_threads);
}

int real_lua_open(struct real_load *l, char *err, size_t errlen)
{
    struct lu_ctx *cf = calloc(1, sizeof *cf), *ct = calloc(1, sizeof *ct);
    if (cf)
        cf->L = lu_new_state();
    if (!cf || !ct || !cf->L) {
        snprintf(err, errlen, "lua: could not build the state");
        free(cf);
        free(ct);
        return -1;
    }
    ct->own_state = 1;
    *l = (struct real_load){
        .name = "lua",
        .what = "a Lua 5.4 function per line, scoring words against a 40,000-entry table",
        .ctx = cf,
        .ops_threads = &lu_ops_threads,
        .ops_fork = &lu_ops_fork,
        .ctx_threads = ct,
        .ctx_fork = cf,
        .state_new = lu_state_new,
        .state_free = lu_state_free,
        .run = lu_run,
        .destroy = lu_destroy,
        .per_rec_ns = 5000,
        .run_s = 1.5,
        .recycle = 50000,
        .recycle_quick = 5000,
    };
    return 0;
}

#else

int real_lua_open(struct real_load *l, char *err, size_t errlen)
{
    (void)l;
    snprintf(err, errlen, "lua: not built (liblua5.4-dev was not found)");
    return -1;
}

#endif
