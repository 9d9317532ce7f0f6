/*
 * Live reload: SIGHUP and POST /admin/reload (the admin listener's) rebuild
 * the context and swap it in while requests are in flight. The spec is the
 * operator's (--spec) unless the operator allowed a spec in the request's
 * body (--admin-spec).
 *
 * Building a context (a table to load) and exec_swap_context() (on EXEC_FORK:
 * a new generation of workers, proved by a canary first, which may take up
 * to --start-timeout; on EXEC_THREADS: worker_init run once as a proof) can
 * take long, so both run on a thread of their own, and the loop is told of
 * each outcome through an eventfd. One reload at a time: another asked for
 * while one runs is refused (409), and SIGHUPs meanwhile are coalesced into
 * one reload after it. A refused context is freed and the old one keeps
 * serving.
 *
 * A reload has --reload-timeout. A plugin's ctx_build cannot be stopped (the
 * context cannot cross a process boundary, and a thread cannot be killed),
 * so one that runs past it is abandoned: its request is answered 504, the
 * old context keeps serving, /healthz says the server is unhealthy (so that
 * it gets restarted) and new reloads are refused (503) until the build
 * returns, when what it built is freed unused. SIGTERM still drains and
 * exits 0: the process ends the thread. A swap in progress is never
 * abandoned (it holds the executor): the shutdown waits for it.
 */
#include "serve.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define RL_BAD_SPEC 1 /* ctx_build() refused the spec */

struct job {
    char *spec;
    struct req *r;  /* the request to answer (POST /admin/reload), or NULL */
    void *ctx;      /* --backend inline: the new context, for the loop to swap in */
    int rc;         /* 0, RL_BAD_SPEC, or exec_swap_context()'s code */
    bool abandoned; /* past --reload-timeout, or the server stops: no swap */
    char err[512];
    double ms;
};

struct reloader {
    pthread_t th;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* Under lock. */
    struct job *todo;    /* given to the thread */
    struct job *running; /* the thread's */
    struct job *done;    /* back to the loop */
    bool stop;
    bool in_swap; /* the thread is in exec_swap_context() */
    /* The loop's. */
    struct job *cur;     /* the reload in progress, from request to answer */
    uint64_t cur_start;  /* ns */
    bool timed_out;      /* cur ran past --reload-timeout */
    bool again;          /* a SIGHUP came meanwhile */
    int efd;
    struct event *ev, *ev_timeout;
};

/* The plugin frees a context the executor lets go of (a swapped-out one,
 * once its last reader is done; the current one in exec_destroy()). */
static const exec_plugin_t *wrapped;
static int worker_nice;

static void release_ctx(void *ctx)
{
    wrapped->ctx_free(ctx);
}

/* In each worker (thread or process): --worker-nice, then the plugin's. */
static int worker_init(void *ctx, void **state)
{
    /* Linux: the calling thread's nice value. */
    if (setpriority(PRIO_PROCESS, 0, worker_nice) != 0)
        return -1;
    *state = NULL;
    return wrapped->ops->worker_init ? wrapped->ops->worker_init(ctx, state) : 0;
}

void ops_wrap(struct serve *s)
{
    wrapped = s->pl;
    /* Relative to the server's own nice value, so that the workers go after
     * the loop wherever the server was started (a unit's Nice=, a nice(1)). */
    errno = 0;
    int base = getpriority(PRIO_PROCESS, 0);
    if (base == -1 && errno)
        base = 0;
    worker_nice = base + s->o.worker_nice > 19 ? 19 : base + s->o.worker_nice;
    s->ops = *s->pl->ops;
    s->ops.ctx_release = release_ctx;
    if (s->o.worker_nice && !s->o.inline_run)
        s->ops.worker_init = worker_init; /* inline: the loop is the worker */
}

static void job_free(struct job *j)
{
    free(j->spec);
    free(j);
}

static void *reload_main(void *arg)
{
    struct serve *s = arg;
    struct reloader *rl = s->rl;
    pthread_mutex_lock(&rl->lock);
    for (;;) {
        while (!rl->todo && !rl->stop)
            pthread_cond_wait(&rl->cond, &rl->lock);
        if (!rl->todo)
            break;
        struct job *j = rl->running = rl->todo;
        rl->todo = NULL;
        pthread_mutex_unlock(&rl->lock);

        uint64_t t0 = serve_now_ns();
        void *ctx = NULL;
        bool built = s->pl->ctx_build(j->spec, s->hdr, &ctx, j->err, sizeof j->err) == 0;
        if (!built) {
            j->rc = RL_BAD_SPEC;
            if (!j->err[0])
                snprintf(j->err, sizeof j->err, "(no reason given)");
        }
        pthread_mutex_lock(&rl->lock);
        bool go = built && !j->abandoned && !rl->stop;
        rl->in_swap = go && !s->inl;
        pthread_mutex_unlock(&rl->lock);
        if (built && !go) {
            s->pl->ctx_free(ctx); /* abandoned: never swapped in */
        } else if (go && s->inl) {
            j->ctx = ctx;
        } else if (go) {
            /* EXEC_EBUSY: older generations still draining; they go soon. */
            for (int tries = 0; tries < 250; tries++) {
                j->rc = exec_swap_context(s->ex, ctx);
                if (j->rc != EXEC_EBUSY)
                    break;
                struct timespec ts = {0, 20 * 1000000};
                nanosleep(&ts, NULL);
            }
            if (j->rc)
                s->pl->ctx_free(ctx); /* refused: never the executor's */
        }
        j->ms = (double)(serve_now_ns() - t0) / 1e6;

        pthread_mutex_lock(&rl->lock);
        rl->in_swap = false;
        rl->running = NULL;
        rl->done = j;
        pthread_mutex_unlock(&rl->lock);
        uint64_t one = 1;
        ssize_t w = write(rl->efd, &one, sizeof one);
        (void)w;
        pthread_mutex_lock(&rl->lock);
    }
    pthread_mutex_unlock(&rl->lock);
    return NULL;
}

static void answer(struct serve *s, struct job *j, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Answers j's request (if it still waits) with code and text. */
static void answer(struct serve *s, struct job *j, int code, const char *fmt, ...)
{
    struct req *r = j->r;
    if (!r)
        return;
    j->r = NULL;
    r->reloading = false;
    if (r->conn) {
        char text[800];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        http_reply_text(s, r, code, "%s", text);
    } else {
        req_settle(s, r); /* its client left */
    }
}

/* What the service manager is told once a reload has ended. */
static void tell_ready(struct serve *s, const char *how)
{
    char status[sizeof s->pub.name + 128];
    snprintf(status, sizeof status, "%sserving generation %llu on %.127s", how,
             (unsigned long long)s->generation, s->pub.name);
    systemd_ready(status);
}

/* In the loop: what the thread did. */
static void finish(struct serve *s, struct job *j)
{
    char esc[600], spec[300];
    unsigned long long gen = (unsigned long long)s->generation;
    serve_escape(spec, sizeof spec, j->spec, strlen(j->spec));
    if (j->rc == 0) {
        if (s->inl)
            inline_swap(s->inl, j->ctx);
        s->generation++;
        gen = (unsigned long long)s->generation;
        if (strcmp(j->spec, s->spec) != 0) {
            free(s->spec);
            s->spec = j->spec;
            j->spec = NULL;
        }
        metrics_reload(s, "ok");
        serve_log("reloaded%s: generation %llu (spec %s) in %.1f ms", j->r ? "" : " on SIGHUP",
                  gen, spec, j->ms);
        answer(s, j, 200, "reloaded: generation %llu\n", gen);
        tell_ready(s, "");
        return;
    } else if (j->rc == RL_BAD_SPEC) {
        metrics_reload(s, "bad_spec");
        serve_log("reload failed: bad spec '%s': %s; still serving generation %llu", spec,
                  serve_escape(esc, sizeof esc, j->err, strlen(j->err)), gen);
        /* The plugin's reason may name files: it stays in the log. */
        answer(s, j, 400,
               "bad spec: the plugin refused it (the reason is in the server's log); still "
               "serving generation %llu\n",
               gen);
    } else {
        bool refused = j->rc == EXEC_EINIT || j->rc == EXEC_ECRASHED ||
                       j->rc == EXEC_ERECTIMEOUT || j->rc == EXEC_EWORKER;
        metrics_reload(s, refused ? "refused" : "error");
        serve_log("reload %s: %s: %s; still serving generation %llu", refused ? "refused" : "failed",
                  exec_err_name(j->rc), exec_strerror(j->rc), gen);
        answer(s, j, refused ? 422 : j->rc == EXEC_EBUSY ? 503 : 500,
               "%s: %s: %s; still serving generation %llu\n", refused ? "refused" : "failed",
               exec_err_name(j->rc), exec_strerror(j->rc), gen);
    }
    tell_ready(s, "the last reload failed; ");
}

static void start_job(struct serve *s, struct job *j)
{
    struct reloader *rl = s->rl;
    char status[sizeof s->pub.name + 64];
    snprintf(status, sizeof status, "reloading; serving generation %llu on %.127s",
             (unsigned long long)s->generation, s->pub.name);
    systemd_reloading(status);
    rl->cur = j;
    rl->cur_start = serve_now_ns();
    rl->timed_out = false;
    struct timeval tv = {(time_t)s->o.reload_timeout_s, 0};
    event_add(rl->ev_timeout, &tv);
    pthread_mutex_lock(&rl->lock);
    rl->todo = j;
    pthread_cond_signal(&rl->cond);
    pthread_mutex_unlock(&rl->lock);
}

/* Queues a SIGHUP's reload of --spec; false when out of memory. */
static bool start_sighup(struct serve *s)
{
    struct job *j = calloc(1, sizeof *j);
    if (j && !(j->spec = strdup(s->o.spec))) {
        free(j);
        j = NULL;
    }
    if (!j) {
        serve_log("SIGHUP: no reload (out of memory)");
        return false;
    }
    start_job(s, j);
    return true;
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct serve *s = arg;
    struct reloader *rl = s->rl;
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof v);
    (void)n;
    pthread_mutex_lock(&rl->lock);
    struct job *j = rl->done;
    rl->done = NULL;
    pthread_mutex_unlock(&rl->lock);
    if (!j)
        return;
    event_del(rl->ev_timeout);
    rl->cur = NULL;
    if (j->abandoned) {
        serve_log("the reload abandoned after --reload-timeout returned after %.1f s; what it "
                  "built was freed",
                  j->ms / 1e3);
    } else {
        if (rl->timed_out)
            serve_log("the reload past --reload-timeout ended after %.1f s", j->ms / 1e3);
        finish(s, j);
    }
    job_free(j);
    if (rl->again && !s->draining) {
        rl->again = false;
        start_sighup(s);
    }
    serve_maybe_exit(s);
}

/* --reload-timeout passed: the build is abandoned (a swap is waited for). */
static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct serve *s = arg;
    struct reloader *rl = s->rl;
    struct job *j = rl->cur;
    if (!j)
        return;
    rl->timed_out = true;
    pthread_mutex_lock(&rl->lock);
    bool swapping = rl->in_swap;
    if (!swapping)
        j->abandoned = true;
    pthread_mutex_unlock(&rl->lock);
    unsigned long long gen = (unsigned long long)s->generation;
    metrics_reload(s, "timeout");
    serve_log("reload: still running after --reload-timeout (%u s)%s; still serving generation "
              "%llu; unhealthy until it returns",
              s->o.reload_timeout_s,
              swapping ? " in its swap (waited for)" : ": the context build is abandoned", gen);
    answer(s, j, 504,
           "reload timed out: still running after --reload-timeout (%u s)%s; still serving "
           "generation %llu; the server reports unhealthy until it returns\n",
           s->o.reload_timeout_s, swapping ? " (in its swap)" : " and abandoned", gen);
    tell_ready(s, "a reload ran past --reload-timeout (unhealthy); ");
}

int reload_start(struct serve *s)
{
    struct reloader *rl = calloc(1, sizeof *rl);
    if (!rl)
        return -1;
    s->rl = rl;
    rl->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (rl->efd < 0)
        return -1;
    pthread_mutex_init(&rl->lock, NULL);
    pthread_cond_init(&rl->cond, NULL);
    rl->ev = event_new(s->base, rl->efd, EV_READ | EV_PERSIST, on_done, s);
    rl->ev_timeout = evtimer_new(s->base, on_timeout, s);
    if (!rl->ev || !rl->ev_timeout || event_add(rl->ev, NULL) != 0)
        return -1;
    /* The loop's thread takes the signals (through libevent): none here. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&rl->th, NULL, reload_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc)
        return -1;
    rl->started = true;
    return 0;
}

/*
 * A reload: of spec (spec_len bytes), or of --spec when NULL. r is answered
 * when it is done (r NULL: a SIGHUP). One at a time.
 */
void reload_request(struct serve *s, const char *spec, size_t spec_len, struct req *r)
{
    struct reloader *rl = s->rl;
    if (rl->cur) {
        double secs = (double)(serve_now_ns() - rl->cur_start) / 1e9;
        if (!r) {
            if (!rl->again)
                serve_log("SIGHUP while a reload runs (%.1f s so far): one more reload follows it",
                          secs);
            rl->again = !rl->timed_out;
            return;
        }
        metrics_reload(s, "busy");
        if (rl->timed_out)
            http_reply_text(s, r, 503,
                            "a reload is stuck: running for %.0f s, past --reload-timeout; "
                            "restart the server\n",
                            secs);
        else
            http_reply_text(s, r, 409,
                            "a reload is running (for %.1f s): try again when it is done\n",
                            secs);
        return;
    }
    struct job *j = calloc(1, sizeof *j);
    if (j && !(j->spec = spec ? strndup(spec, spec_len) : strdup(s->o.spec))) {
        free(j);
        j = NULL;
    }
    if (!j) {
        if (r)
            http_reply_text(s, r, 500, "out of memory\n");
        else
            serve_log("SIGHUP: no reload (out of memory)");
        return;
    }
    j->r = r;
    if (r)
        r->reloading = true; /* req_settle() lets it be until it is answered */
    start_job(s, j);
}

/* True while a swap runs: the executor cannot be destroyed meanwhile. */
bool reload_busy(const struct serve *s)
{
    struct reloader *rl = s->rl;
    if (!rl || !rl->started)
        return false;
    pthread_mutex_lock((pthread_mutex_t *)&rl->lock);
    bool busy = rl->in_swap;
    pthread_mutex_unlock((pthread_mutex_t *)&rl->lock);
    return busy || (rl->cur && !rl->timed_out && !s->draining);
}

bool reload_in_swap(const struct serve *s)
{
    struct reloader *rl = s->rl;
    if (!rl || !rl->started)
        return false;
    pthread_mutex_lock((pthread_mutex_t *)&rl->lock);
    bool busy = rl->in_swap;
    pthread_mutex_unlock((pthread_mutex_t *)&rl->lock);
    return busy;
}

/* A reload running past --reload-timeout (*secs: for how long). */
bool reload_stuck(const struct serve *s, double *secs)
{
    struct reloader *rl = s->rl;
    if (!rl || !rl->cur || !rl->timed_out)
        return false;
    *secs = (double)(serve_now_ns() - rl->cur_start) / 1e9;
    return true;
}

/* The server drains: a reload not yet swapping is abandoned now (its request
 * gets 503), and no SIGHUP follows. */
void reload_drain(struct serve *s)
{
    struct reloader *rl = s->rl;
    if (!rl || !rl->cur)
        return;
    rl->again = false;
    pthread_mutex_lock(&rl->lock);
    bool swapping = rl->in_swap;
    if (!swapping)
        rl->cur->abandoned = true;
    pthread_mutex_unlock(&rl->lock);
    if (!swapping)
        answer(s, rl->cur, 503, "shutting down: the reload is abandoned\n");
}

/*
 * Stops the thread. False when it cannot be joined (a build that has not
 * returned): it is left running, with what it uses, for the process's exit.
 */
bool reload_stop(struct serve *s)
{
    struct reloader *rl = s->rl;
    if (!rl)
        return true;
    if (rl->started) {
        pthread_mutex_lock(&rl->lock);
        rl->stop = true;
        bool running = rl->running != NULL;
        if (rl->running)
            rl->running->abandoned = true;
        struct job *todo = rl->todo;
        rl->todo = NULL;
        pthread_cond_signal(&rl->cond);
        pthread_mutex_unlock(&rl->lock);
        if (todo && todo != rl->cur)
            job_free(todo);
        if (running)
            return false;
        pthread_join(rl->th, NULL);
    }
    struct job *j = rl->done ? rl->done : rl->cur;
    if (j) {
        if (j->rc == 0 && j->ctx)
            s->pl->ctx_free(j->ctx);
        job_free(j);
    }
    if (rl->ev)
        event_free(rl->ev);
    if (rl->ev_timeout)
        event_free(rl->ev_timeout);
    if (rl->efd >= 0)
        close(rl->efd);
    if (rl->started) {
        pthread_mutex_destroy(&rl->lock);
        pthread_cond_destroy(&rl->cond);
    }
    free(rl);
    s->rl = NULL;
    return true;
}
