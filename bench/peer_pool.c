/*
 * Peer: the plain mutex + condvar pool a user would write, shaped like
 * libuv's src/threadpool.c. One record per task; an intrusive FIFO under one
 * mutex; idle workers wait on a condvar and are signalled one per submit when
 * some are idle; a finished task goes to a done list under a second mutex and
 * the consumer takes the whole list at once (as uv__work_done does).
 */
#include "bench.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct pool_task {
    struct pool_task *next;
    size_t idx;
    uint64_t v;
};

struct pool {
    const struct bench_run *r;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct pool_task *head, **tailp;
    unsigned idle;
    int stop;

    pthread_mutex_t done_mu;
    pthread_cond_t done_cond;
    struct pool_task *done;
    int consumer_waits;

    pthread_t *tids;
    unsigned nthreads;
};

static void *pool_main(void *arg)
{
    struct pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->head && !p->stop) {
            p->idle++;
            pthread_cond_wait(&p->cond, &p->mu);
            p->idle--;
        }
        if (!p->head) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        struct pool_task *t = p->head;
        p->head = t->next;
        if (!p->head)
            p->tailp = &p->head;
        pthread_mutex_unlock(&p->mu);

        const struct bench_rec *rec = &p->r->recs[t->idx];
        t->v = bench_classify(p->r->ctx, rec->p, rec->len);

        pthread_mutex_lock(&p->done_mu);
        t->next = p->done;
        p->done = t;
        if (p->consumer_waits)
            pthread_cond_signal(&p->done_cond);
        pthread_mutex_unlock(&p->done_mu);
    }
}

static void pool_submit(struct pool *p, struct pool_task *t)
{
    t->next = NULL;
    pthread_mutex_lock(&p->mu);
    *p->tailp = t;
    p->tailp = &t->next;
    if (p->idle > 0)
        pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->mu);
}

/* Takes every finished task, waiting for at least one. */
static struct pool_task *pool_collect(struct pool *p)
{
    pthread_mutex_lock(&p->done_mu);
    while (!p->done) {
        p->consumer_waits = 1;
        pthread_cond_wait(&p->done_cond, &p->done_mu);
        p->consumer_waits = 0;
    }
    struct pool_task *list = p->done;
    p->done = NULL;
    pthread_mutex_unlock(&p->done_mu);
    return list;
}

static int pool_start(struct pool *p, const struct bench_run *r)
{
    memset(p, 0, sizeof *p);
    p->r = r;
    p->tailp = &p->head;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cond, NULL);
    pthread_mutex_init(&p->done_mu, NULL);
    pthread_cond_init(&p->done_cond, NULL);
    p->tids = calloc(r->workers, sizeof *p->tids);
    if (!p->tids)
        return -1;
    for (unsigned i = 0; i < r->workers; i++) {
        if (pthread_create(&p->tids[i], NULL, pool_main, p) != 0)
            return -1;
        p->nthreads++;
    }
    return 0;
}

static void pool_stop(struct pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->tids[i], NULL);
    free(p->tids);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->done_mu);
    pthread_cond_destroy(&p->done_cond);
}

int bench_run_mutex_pool(struct bench_run *r)
{
    struct pool p;
    struct pool_task *tasks = malloc(r->n * sizeof *tasks);
    if (!tasks || pool_start(&p, r) != 0) {
        free(tasks);
        if (p.tids)
            pool_stop(&p);
        strcpy(r->err, "mutex pool: out of memory or threads");
        return BENCH_FAIL;
    }
    double t0 = bench_now(), c0 = bench_cpu();
    for (size_t i = 0; i < r->n; i++) {
        tasks[i].idx = i;
        pool_submit(&p, &tasks[i]);
    }
    uint64_t sum = 0;
    size_t got = 0;
    while (got < r->n) {
        for (struct pool_task *t = pool_collect(&p); t; t = t->next) {
            sum += bench_sum_add(t->idx, t->v);
            got++;
        }
    }
    r->seconds = bench_now() - t0;
    r->cpu_s = bench_cpu() - c0;
    r->checksum = sum;
    pool_stop(&p);
    free(tasks);
    return 0;
}

int bench_lat_mutex_pool(struct bench_run *r, double *samples, size_t n)
{
    struct pool p;
    if (pool_start(&p, r) != 0) {
        if (p.tids)
            pool_stop(&p);
        strcpy(r->err, "mutex pool: out of threads");
        return BENCH_FAIL;
    }
    struct pool_task t;
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        t.idx = i % r->n;
        double t0 = bench_now();
        pool_submit(&p, &t);
        struct pool_task *d = pool_collect(&p);
        samples[i] = bench_now() - t0;
        sum += d->v;
    }
    r->checksum = sum;
    pool_stop(&p);
    return 0;
}
