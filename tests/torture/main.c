/*
 * executor-torture: a long, randomized run of both backends under everything
 * at once (see --help and docs/reliability.md). This file owns the options,
 * the rounds of a run, the final report and the self-test.
 */
#include "torture.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "resources.h"

extern char **environ;

static const struct {
    const char *name;
    unsigned bit;
} skips[] = {
    {"cancel", SKIP_CANCEL},
    {"cancel-running", SKIP_CANCEL_RUNNING},
    {"cancel-all", SKIP_CANCEL_ALL},
    {"concurrent-next", SKIP_CONCURRENT_NEXT},
    {"worker-stats", SKIP_WORKER_STATS},
    {"swap", SKIP_SWAP},
    {"bad-swap", SKIP_BAD_SWAP},
    {"destroy", SKIP_DESTROY},
    {"crash", SKIP_CRASH},
    {"hang", SKIP_HANG},
    {"recycle", SKIP_RECYCLE},
    {"fork-rerun", SKIP_FORK_RERUN},
};

/*
 * --skip known: what known library defects break today, so that a run can
 * check everything else. Put a feature here while its defect is open, and
 * take it out once the defect is fixed. None is open now.
 */
static const unsigned skip_known = 0;

static const char *const inject_names[] = {"none", "dup", "wrong", "lost", "release", "leak"};
#define NINJECT (sizeof inject_names / sizeof inject_names[0])

/* Sanitized workers run slower (ThreadSanitizer's many times), and a busy
 * machine starves them more: a record that must not time out should not come
 * near the timeout. */
#if defined(__SANITIZE_THREAD__)
#define TIMEOUT_MS 1500u
#elif defined(__SANITIZE_ADDRESS__)
#define TIMEOUT_MS 1000u
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TIMEOUT_MS 1500u
#elif __has_feature(address_sanitizer)
#define TIMEOUT_MS 1000u
#endif
#endif
#ifndef TIMEOUT_MS
#define TIMEOUT_MS 400u
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: executor-torture [options]\n"
            "Runs rounds of: an executor created with drawn options; submitting threads\n"
            "(submit, try_submit, submit_many, try_submit_many); consumers (exec_next,\n"
            "exec_next_many); records light and heavy, 1%% user errors, on EXEC_FORK 0.1%%\n"
            "crashing their worker and 0.01%% hanging past the record timeout; cancels of\n"
            "queued and running records; a context swap every few ms (on EXEC_FORK some to\n"
            "contexts that crash, hang or fail worker_init, which the canary must refuse);\n"
            "recycling; each round drained, drained after exec_cancel_all, or destroyed with\n"
            "records in flight. Checks every tag once, every result against its context\n"
            "generation, every context released once, no thread/fd/child/mapping left.\n"
            "\n"
            "  --duration S     seconds for the whole run, split over the backends (60)\n"
            "  --seed N         seed of every draw (default: from the clock; printed)\n"
            "  --backend B      threads, fork or both (both)\n"
            "  --threads N      submitting threads (8)\n"
            "  --consumers N    consumer threads (3)\n"
            "  --workers N      workers per executor (default: 2 to 4, drawn per round)\n"
            "  --timeout-ms N   EXEC_FORK record timeout (%u)\n"
            "  --skip LIST      leave features out, comma-separated: cancel, cancel-running,\n"
            "                   cancel-all, concurrent-next (consumers take turns at\n"
            "                   exec_next), worker-stats, swap, bad-swap, destroy, crash,\n"
            "                   hang, recycle, fork-rerun (no check on EXEC_FORK that\n"
            "                   process() ran once a record); known: what today's known\n"
            "                   library defects break (listed in main.c)\n"
            "  --inject F       put a fault in on purpose: dup, wrong, lost, release, leak;\n"
            "                   exits 0 only if the checks caught it\n"
            "  --self-test      runs each --inject in turn; exits 0 if every one was caught\n"
            "  --verbose        a line per round\n"
            "Exit status: 0 clean, 1 a check failed, 2 usage, 3 stalled or overran.\n",
            TIMEOUT_MS);
}

static bool parse_skip(const char *list, unsigned *out)
{
    char *dup = strdup(list), *save = NULL;
    bool ok = dup != NULL;
    for (char *t = dup ? strtok_r(dup, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save)) {
        bool found = strcmp(t, "known") == 0;
        if (found)
            *out |= skip_known;
        for (size_t i = 0; i < sizeof skips / sizeof skips[0]; i++)
            if (strcmp(t, skips[i].name) == 0) {
                *out |= skips[i].bit;
                found = true;
            }
        if (!found) {
            fprintf(stderr, "executor-torture: --skip: unknown feature '%s'\n", t);
            ok = false;
        }
    }
    free(dup);
    return ok;
}

static bool parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi)
        return false;
    *out = (unsigned)v;
    return true;
}

static int parse(int argc, char **argv, struct opts *o, bool *self_test)
{
    enum { O_DURATION = 1, O_SEED, O_BACKEND, O_THREADS, O_CONSUMERS, O_WORKERS, O_TIMEOUT,
           O_SKIP, O_INJECT, O_SELF_TEST, O_VERBOSE, O_HELP };
    static const struct option lo[] = {
        {"duration", required_argument, NULL, O_DURATION},
        {"seed", required_argument, NULL, O_SEED},
        {"backend", required_argument, NULL, O_BACKEND},
        {"threads", required_argument, NULL, O_THREADS},
        {"consumers", required_argument, NULL, O_CONSUMERS},
        {"workers", required_argument, NULL, O_WORKERS},
        {"timeout-ms", required_argument, NULL, O_TIMEOUT},
        {"skip", required_argument, NULL, O_SKIP},
        {"inject", required_argument, NULL, O_INJECT},
        {"self-test", no_argument, NULL, O_SELF_TEST},
        {"verbose", no_argument, NULL, O_VERBOSE},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    *o = (struct opts){.duration = 60, .backends = {EXEC_THREADS, EXEC_FORK}, .nbackends = 2,
                       .submitters = 8, .consumers = 3, .timeout_ms = TIMEOUT_MS};
    o->seed = t_mix((uint64_t)time(NULL) ^ (uint64_t)getpid() << 32);
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        bool ok = true;
        switch (ch) {
        case O_DURATION:
            o->duration = strtod(optarg, &end);
            ok = *end == '\0' && o->duration > 0 && o->duration < 1e7;
            break;
        case O_SEED:
            errno = 0;
            o->seed = strtoull(optarg, &end, 0);
            ok = !errno && *end == '\0' && end != optarg;
            break;
        case O_BACKEND:
            if (strcmp(optarg, "threads") == 0)
                o->backends[0] = EXEC_THREADS, o->nbackends = 1;
            else if (strcmp(optarg, "fork") == 0)
                o->backends[0] = EXEC_FORK, o->nbackends = 1;
            else
                ok = strcmp(optarg, "both") == 0;
            break;
        case O_THREADS: ok = parse_uint(optarg, 1, T_MAX_THREADS, &o->submitters); break;
        case O_CONSUMERS: ok = parse_uint(optarg, 1, T_MAX_THREADS, &o->consumers); break;
        case O_WORKERS: ok = parse_uint(optarg, 1, 64, &o->workers); break;
        case O_TIMEOUT: ok = parse_uint(optarg, 50, 60000, &o->timeout_ms); break;
        case O_SKIP: ok = parse_skip(optarg, &o->skip); break;
        case O_INJECT:
            ok = false;
            for (unsigned i = 1; i < NINJECT; i++)
                if (strcmp(optarg, inject_names[i]) == 0) {
                    o->inject = (enum inject)i;
                    ok = true;
                }
            break;
        case O_SELF_TEST: *self_test = true; break;
        case O_VERBOSE: o->verbose = true; break;
        case O_HELP: usage(stdout); exit(0);
        default: ok = false; break;
        }
        if (!ok) {
            if (ch != '?')
                fprintf(stderr, "executor-torture: bad value for --%s: %s\n",
                        lo[ch - 1].name, optarg ? optarg : "");
            fprintf(stderr, "executor-torture: see --help\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "executor-torture: unexpected argument: %s\n", argv[optind]);
        return 2;
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* The report                                                                */
/* ------------------------------------------------------------------------- */

#define L(x) ((unsigned long long)atomic_load(&(x)))

static uint64_t failures(struct counts *c)
{
    return L(c->lost) + L(c->dup) + L(c->wrong) + L(c->rerun) + L(c->bad_release) +
           L(c->bad_stats) + L(c->leaks) + L(c->bad_api);
}

static void report(const char *backend, double secs, struct counts *c)
{
    printf("executor-torture: %s: %.1f s, %llu rounds (%llu drained, %llu of them after "
           "exec_cancel_all; %llu destroyed with records in flight)\n",
           backend, secs, L(c->rounds), L(c->drained), L(c->cancel_all_rounds), L(c->destroyed));
    printf("  records=%llu delivered=%llu abandoned=%llu ok=%llu user_errors=%llu crashes=%llu "
           "timeouts=%llu cancelled=%llu (early=%llu)\n",
           L(c->submitted), L(c->delivered), L(c->abandoned), L(c->ok), L(c->user),
           L(c->crashed), L(c->timed_out), L(c->cancelled), L(c->cancelled_early));
    printf("  cancel_calls=%llu counted=%llu enoent=%llu running_cancelled=%llu\n",
           L(c->cancel_calls), L(c->cancel_hits), L(c->cancel_enoent), L(c->cancel_running));
    printf("  swaps=%llu refused_swaps=%llu (EINIT=%llu ECRASHED=%llu ERECTIMEOUT=%llu other=%llu) "
           "busy=%llu\n",
           L(c->swaps), L(c->swaps_refused), L(c->refused_einit), L(c->refused_crashed),
           L(c->refused_timeout), L(c->refused_other), L(c->swaps_busy));
    printf("  respawns=%llu recycled=%llu slow_reports=%llu\n", L(c->respawns), L(c->recycled),
           L(c->slow_reports));
    printf("  lost=%llu dup=%llu wrong=%llu rerun=%llu bad_release=%llu bad_stats=%llu leaks=%llu "
           "bad_api=%llu\n",
           L(c->lost), L(c->dup), L(c->wrong), L(c->rerun), L(c->bad_release), L(c->bad_stats),
           L(c->leaks), L(c->bad_api));
    fflush(stdout);
}

/* Whether the counter an injected fault must raise was raised. */
static bool caught(enum inject f, struct counts *c)
{
    switch (f) {
    case INJ_DUP: return L(c->dup) > 0;
    case INJ_WRONG: return L(c->wrong) > 0;
    case INJ_LOST: return L(c->lost) > 0;
    case INJ_RELEASE: return L(c->bad_release) > 0;
    case INJ_LEAK: return L(c->leaks) > 0;
    case INJ_NONE: break;
    }
    return false;
}

/* ------------------------------------------------------------------------- */
/* Watchdog and self-test                                                    */
/* ------------------------------------------------------------------------- */

static double watchdog_s;

static void *watchdog(void *arg)
{
    (void)arg;
    uint64_t end = t_now_ns() + (uint64_t)(watchdog_s * 1e9);
    while (t_now_ns() < end)
        t_sleep_us(1000000);
    fprintf(stderr, "executor-torture: FAIL: the run overran by 120 s: a call never returned\n");
    _exit(3);
}

static int self_test(const char *self, const struct opts *o)
{
    int bad = 0;
    for (unsigned i = 1; i < NINJECT; i++) {
        char seed[32];
        snprintf(seed, sizeof seed, "%" PRIu64, o->seed);
        /* Only the checker is under test here: known defects stay out. */
        char *argv[] = {(char *)self, "--backend", "threads", "--duration", "1.5", "--seed",
                        seed, "--skip", "known", "--inject", (char *)inject_names[i], NULL};
        pid_t pid;
        int st = -1;
        if (posix_spawn(&pid, self, NULL, NULL, argv, environ) != 0 ||
            waitpid(pid, &st, 0) != pid) {
            perror("executor-torture: self-test");
            return 1;
        }
        bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        printf("executor-torture: self-test: injected %s: %s\n", inject_names[i],
               ok ? "caught" : "NOT caught");
        bad += !ok;
    }
    printf("executor-torture: self-test: %u of %u injected faults caught\n",
           (unsigned)(NINJECT - 1 - (unsigned)bad), (unsigned)(NINJECT - 1));
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    bool st = false;
    int rc = parse(argc, argv, &o, &st);
    if (rc)
        return rc;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (st)
        return self_test("/proc/self/exe", &o);

    t_sh = mmap(NULL, sizeof *t_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (t_sh == MAP_FAILED) {
        perror("executor-torture: mmap");
        return 1;
    }
    tu_res_warm_up();
    watchdog_s = o.duration + 120;
    pthread_t wd;
    pthread_create(&wd, NULL, watchdog, NULL);
    pthread_detach(wd);
    tu_res_t base = tu_res_now(); /* the watchdog counted in */

    printf("executor-torture: seed %" PRIu64 ", %.1f s, %u submitting threads, %u consumers%s\n",
           o.seed, o.duration, o.submitters, o.consumers,
           o.inject ? ", a fault injected" : "");
    static struct counts counts[2];
    uint64_t fails = 0;
    bool caught_any = false;
    for (unsigned b = 0; b < o.nbackends; b++) {
        exec_backend_t be = (exec_backend_t)o.backends[b];
        struct counts *c = &counts[b];
        /* Rounds drawn per backend: --backend B --seed S draws the rounds
         * that B ran in a run of both with seed S. */
        uint64_t x = t_mix(o.seed ^ 0xb5ad4eceda1ce2a9ull ^ (uint64_t)be) | 1, round_no = 0;
        double share = o.duration / o.nbackends;
        uint64_t t0 = t_now_ns(), end = t0 + (uint64_t)(share * 1e9);
        while (t_now_ns() + 200000000ull < end) {
            t_rnd(&x);
            double left = (double)(end - t_now_ns()) / 1e9;
            double secs = 0.3 + (double)(x % 2200) / 1000.0;
            if (secs > left - 0.1 || o.inject)
                secs = o.inject ? share : left - 0.1;
            if (!t_round(&o, be, round_no++, secs, c))
                break;
        }
        report(exec_backend_name(be), (double)(t_now_ns() - t0) / 1e9, c);
        fails += failures(c);
        caught_any |= o.inject && caught(o.inject, c);
    }
    char why[256];
    if (!tu_res_settle(&base, 5000, why, sizeof why)) {
        fprintf(stderr, "executor-torture: FAIL: at the end of the run: %s\n", why);
        fails++;
    }
    if (o.inject) {
        printf("executor-torture: injected %s: %s\n", inject_names[o.inject],
               caught_any ? "caught" : "NOT caught");
        return caught_any ? 0 : 1;
    }
    printf("executor-torture: %s (seed %" PRIu64 ")\n", fails ? "FAILED" : "clean", o.seed);
    return fails ? 1 : 0;
}
