/*
 * Live reload: SIGHUP and POST /admin/reload rebuild the context from the
 * spec (or a new one) and swap it in while requests are in flight.
 *
 * Building a context (a table to load) and exec_swap_context() (on EXEC_FORK:
 * a new generation of workers, proved by a canary first, which may take up
 * to --start-timeout) can take long, so both run on a thread of their own,
 * one reload at a time; the loop is told of each outcome through an eventfd
 * and answers the request that asked for it. A refused context is freed and
 * the old one keeps serving.
 */
#include "serve.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define RL_BAD_SPEC 1 /* ctx_build() refused the spec */

struct job {
    char *spec;    /* NULL: the spec serving now */
    struct req *r; /* the request to answer (POST /admin/reload), or NULL (SIGHUP) */
    void *ctx;     /* --backend inline: the new context, for the loop to swap in */
    int rc;        /* 0, RL_BAD_SPEC, or exec_swap_context()'s code */
    char err[512];
    double ms;
    struct job *next;
};

struct reloader {
    pthread_t th;
    bool started, stop;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *todo, *todo_tail, *done, *done_tail;
    unsigned queued; /* jobs queued or running */
    char *spec_now;  /* the thread's copy of the spec serving now */
    int efd;
    struct event *ev;
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
    worker_nice = s->o.worker_nice;
    s->ops = *s->pl->ops;
    s->ops.ctx_release = release_ctx;
    if (worker_nice && !s->o.inline_run)
        s->ops.worker_init = worker_init; /* inline: the loop is the worker */
}

static void push(struct job **head, struct job **tail, struct job *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
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
        struct job *j = rl->todo;
        rl->todo = j->next;
        if (!rl->todo)
            rl->todo_tail = NULL;
        if (!j->spec)
            j->spec = strdup(rl->spec_now);
        pthread_mutex_unlock(&rl->lock);

        uint64_t t0 = serve_now_ns();
        void *ctx = NULL;
        if (!j->spec) {
            j->rc = RL_BAD_SPEC;
            snprintf(j->err, sizeof j->err, "out of memory");
        } else if (s->pl->ctx_build(j->spec, s->hdr, &ctx, j->err, sizeof j->err) != 0) {
            j->rc = RL_BAD_SPEC;
            if (!j->err[0])
                snprintf(j->err, sizeof j->err, "(no reason given)");
        } else if (s->inl) {
            j->ctx = ctx;
        } else {
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
        if (j->rc == 0 && j->spec && strcmp(j->spec, rl->spec_now) != 0) {
            char *copy = strdup(j->spec);
            if (copy) {
                free(rl->spec_now);
                rl->spec_now = copy;
            }
        }
        push(&rl->done, &rl->done_tail, j);
        pthread_mutex_unlock(&rl->lock);
        uint64_t one = 1;
        ssize_t w = write(rl->efd, &one, sizeof one);
        (void)w;
        pthread_mutex_lock(&rl->lock);
    }
    pthread_mutex_unlock(&rl->lock);
    return NULL;
}

/* In the loop: what the thread did. */
static void finish(struct serve *s, struct job *j)
{
    int code;
    char text[800];
    unsigned long long gen;
    if (j->rc == 0) {
        if (s->inl)
            inline_swap(s->inl, j->ctx);
        s->generation++;
        if (j->spec && strcmp(j->spec, s->spec) != 0) {
            free(s->spec);
            s->spec = j->spec;
            j->spec = NULL;
        }
        gen = (unsigned long long)s->generation;
        metrics_reload(s, "ok");
        serve_log("reloaded%s: generation %llu (spec %s) in %.1f ms", j->r ? "" : " on SIGHUP",
                  gen, s->spec, j->ms);
        code = 200;
        snprintf(text, sizeof text, "reloaded: generation %llu\n", gen);
    } else if (j->rc == RL_BAD_SPEC) {
        gen = (unsigned long long)s->generation;
        metrics_reload(s, "bad_spec");
        serve_log("reload failed: bad spec '%s': %s; still serving generation %llu",
                  j->spec ? j->spec : "", j->err, gen);
        code = 400;
        snprintf(text, sizeof text, "bad spec: %s; still serving generation %llu\n", j->err, gen);
    } else {
        gen = (unsigned long long)s->generation;
        bool refused = j->rc == EXEC_EINIT || j->rc == EXEC_ECRASHED ||
                       j->rc == EXEC_ERECTIMEOUT || j->rc == EXEC_EWORKER;
        metrics_reload(s, refused ? "refused" : "error");
        serve_log("reload %s: %s: %s; still serving generation %llu (spec %s)",
                  refused ? "refused by the canary" : "failed", exec_err_name(j->rc),
                  exec_strerror(j->rc), gen, s->spec);
        code = refused ? 422 : j->rc == EXEC_EBUSY ? 503 : 500;
        snprintf(text, sizeof text, "%s: %s: %s; still serving generation %llu\n",
                 refused ? "refused" : "failed", exec_err_name(j->rc), exec_strerror(j->rc), gen);
    }
    struct req *r = j->r;
    free(j->spec);
    free(j);
    if (r && r->conn)
        http_reply_text(s, r, code, "%s", text);
    else if (r)
        req_settle(s, r); /* its client left */
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct serve *s = arg;
    struct reloader *rl = s->rl;
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof v);
    (void)n;
    for (;;) {
        pthread_mutex_lock(&rl->lock);
        struct job *j = rl->done;
        if (j) {
            rl->done = j->next;
            if (!rl->done)
                rl->done_tail = NULL;
            rl->queued--;
        }
        pthread_mutex_unlock(&rl->lock);
        if (!j)
            break;
        finish(s, j);
    }
    serve_maybe_exit(s);
}

int reload_start(struct serve *s)
{
    struct reloader *rl = calloc(1, sizeof *rl);
    if (!rl)
        return -1;
    s->rl = rl;
    rl->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    rl->spec_now = strdup(s->spec);
    if (rl->efd < 0 || !rl->spec_now)
        return -1;
    pthread_mutex_init(&rl->lock, NULL);
    pthread_cond_init(&rl->cond, NULL);
    rl->ev = event_new(s->base, rl->efd, EV_READ | EV_PERSIST, on_done, s);
    if (!rl->ev || event_add(rl->ev, NULL) != 0)
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
 * Queues a reload: spec (spec_len bytes) or, when NULL, the spec serving when
 * its turn comes. r is answered when it is done; SIGHUPs (r NULL) that find
 * one of theirs still queued add nothing.
 */
void reload_request(struct serve *s, const char *spec, size_t spec_len, struct req *r)
{
    struct reloader *rl = s->rl;
    struct job *j = calloc(1, sizeof *j);
    if (j && spec && !(j->spec = strndup(spec, spec_len))) {
        free(j);
        j = NULL;
    }
    if (!j) {
        if (r)
            http_reply_text(s, r, 500, "out of memory\n");
        return;
    }
    j->r = r;
    pthread_mutex_lock(&rl->lock);
    bool dup = false;
    if (!r && !spec)
        for (struct job *q = rl->todo; q && !dup; q = q->next)
            dup = !q->r && !q->spec;
    if (!dup) {
        push(&rl->todo, &rl->todo_tail, j);
        rl->queued++;
        pthread_cond_signal(&rl->cond);
    }
    pthread_mutex_unlock(&rl->lock);
    if (dup)
        free(j);
}

bool reload_busy(const struct serve *s)
{
    struct reloader *rl = s->rl;
    if (!rl || !rl->started)
        return false;
    pthread_mutex_lock((pthread_mutex_t *)&rl->lock);
    bool busy = rl->queued > 0;
    pthread_mutex_unlock((pthread_mutex_t *)&rl->lock);
    return busy;
}

/* Stops the thread after the reload it is running; queued ones are dropped. */
void reload_stop(struct serve *s)
{
    struct reloader *rl = s->rl;
    if (!rl)
        return;
    if (rl->started) {
        pthread_mutex_lock(&rl->lock);
        rl->stop = true;
        struct job *j = rl->todo;
        rl->todo = rl->todo_tail = NULL;
        pthread_cond_signal(&rl->cond);
        pthread_mutex_unlock(&rl->lock);
        while (j) {
            struct job *next = j->next;
            free(j->spec);
            free(j);
            j = next;
        }
        pthread_join(rl->th, NULL);
    }
    for (struct job *j = rl->done; j;) {
        struct job *next = j->next;
        if (j->rc == 0 && j->ctx)
            s->pl->ctx_free(j->ctx);
        free(j->spec);
        free(j);
        j = next;
    }
    if (rl->ev)
        event_free(rl->ev);
    if (rl->efd >= 0)
        close(rl->efd);
    free(rl->spec_now);
    if (rl->started) {
        pthread_mutex_destroy(&rl->lock);
        pthread_cond_destroy(&rl->cond);
    }
    free(rl);
    s->rl = NULL;
}
