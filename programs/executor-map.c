/*
 * executor-map: runs a classifier plugin over every record of a file, in
 * parallel, and writes one result row per record to stdout.
 *
 *     executor-map --plugin ./libwordtable.so --spec table=words.txt \
 *                  --backend auto --workers 4 --ordered data.csv > out.csv
 *
 * The plugin is a shared object exporting EXEC_PLUGIN_SYMBOL (see executor_records.h).
 *
 * Across machines (built with libexecutor_mpi), the same command line on
 * every rank of an MPI job: rank 0 reads the file and writes the output, the
 * other ranks build the classifier from the spec and run the records:
 *
 *     mpirun --hostfile hosts -np 5 --map-by ppr:1:node executor-map \
 *         --plugin ./libwordtable.so --spec table=words.txt --backend mpi data.csv
 *
 * Exit status: 0 when every record gave a result, 1 on a failure (a plugin
 * that does not load, a bad spec, an unreadable file, a malformed record, a
 * record whose result is an error, a record lost with its rank), 2 for a
 * usage error. Under mpirun it is rank 0's; mpirun --enable-recovery (Open
 * MPI 4.1) exits 0 whatever its ranks' statuses, so --status-file writes it
 * to a file too.
 */
#include "executor_records.h"
#include "map_args.h"
#ifdef EXEC_MAP_MPI
#include "executor_mpi.h"

#include <mpi.h>
#endif

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROG "executor-map"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " --plugin PATH --spec SPEC [options] [FILE|-]\n"
            "\n"
            "Runs the classifier in the plugin PATH over each record of FILE (or stdin)\n"
            "and writes each record's result as one row to stdout.\n"
            "\n"
            "Options\n"
            "  --plugin PATH      shared object exporting " EXEC_PLUGIN_SYMBOL "\n"
            "  --spec SPEC        what the plugin builds its classifier from\n"
            "  --backend B        auto (default), threads, fork, or mpi (under mpirun)\n"
            "  --workers N        worker threads or processes (default: online CPUs);\n"
            "                     with mpi, on each rank\n"
            "  --ordered          results in input order (default: as they finish)\n"
            "  --format F         csv (default), lines, len32le or len32be\n"
            "  --no-header        CSV: the first row is a record, not column names\n"
            "  --delim C          CSV field delimiter (default ,)\n"
            "  --skip-bad         skip malformed records (default: stop at the first)\n"
            "  --max-record N     largest record in bytes (default 64 KiB); longer ones fail\n"
            "  --progress|--quiet progress line on stderr always / never (default: on a tty)\n"
            "  --stats            print records/s and the like on stderr at the end\n"
            "  --status-file F    write the exit status to F as well (with mpi: rank 0;\n"
            "                     mpirun --enable-recovery exits 0 whatever it is)\n"
            "  --help             this text, and the plugin's spec when --plugin is given\n"
#ifdef EXEC_MAP_MPI
            "\n"
            "With --backend mpi, run the same command line on every rank of an MPI job\n"
            "(mpirun): rank 0 reads FILE and writes the results, every other rank builds\n"
            "the classifier from SPEC and runs records on its own cores.\n"
            "  --ranks N          worker ranks to use (default: all but rank 0)\n"
            "  --rank-backend B   each rank's own executor: auto (default), threads or fork\n"
            "  --rank-timeout MS  a rank holding records and silent this long is lost: its\n"
            "                     records fail (default 10000; needs mpirun --enable-recovery)\n"
#endif
            "\n"
            "Exit status: 0 when every record gave a result; 1 on a failure (a plugin that\n"
            "does not load, a bad spec, an unreadable file, a malformed record, a record\n"
            "whose result is an error, a record lost with its rank); 2 for a usage error.\n"
    );
}

struct run {
    const char *in_name;
    unsigned long failed_shown;
};

static int on_bad(void *arg, const exec_source_error_t *e)
{
    struct run *r = arg;
    fprintf(stderr, PROG ": %s: record %llu (byte %llu): %s (at byte %llu)\n", r->in_name,
            (unsigned long long)e->record, (unsigned long long)e->offset,
            exec_strerror(e->code), (unsigned long long)e->where);
    return 0;
}

static int on_failed(void *arg, const exec_result_t *res)
{
    struct run *r = arg;
    if (r->failed_shown++ < 100) {
        if (res->status == EXEC_EUSER)
            fprintf(stderr, PROG ": %s: record %llu: the classifier returned error %d\n",
                    r->in_name, (unsigned long long)res->tag, res->user_code);
        else
            fprintf(stderr, PROG ": %s: record %llu: %s\n", r->in_name,
                    (unsigned long long)res->tag, exec_strerror(res->status));
    } else if (r->failed_shown == 101) {
        fprintf(stderr, PROG ": more failed records not shown\n");
    }
    return 0;
}

/*
 * A library code's text: exec_strerror(), except for the two errno values a
 * system call on the input or output can give that the library also uses for
 * codes of its own: -ENOENT from open() is a missing file (not a field), and
 * -EAGAIN from read() or write() a non-blocking descriptor.
 */
static const char *code_text(int rc)
{
    if (rc == -ENOENT || rc == -EAGAIN)
        return strerror(-rc);
    return exec_strerror(rc);
}

/* EXEC_MPI: a worker rank was given up on (its records read EXEC_ELOST). */
static bool rank_lost(const exec_t *ex)
{
    exec_stats_t st;
    exec_worker_stats_t ws;
    if (exec_backend(ex) != EXEC_MPI || exec_stats(ex, &st) != 0)
        return false;
    for (unsigned i = 0; i < st.workers; i++)
        if (exec_worker_stats(ex, i, &ws) == 0 && (ws.flags & EXEC_WORKER_GONE))
            return true;
    return false;
}

static int mpi_said_once(int rank, const char *why);

/* 0 when why is empty; else it is said (under MPI: once, see mpi_said_once)
 * and the status is 1. */
static int said_once(bool mpi, int rank, const char *why)
{
    if (mpi)
        return mpi_said_once(rank, why);
    if (!why[0])
        return 0;
    fprintf(stderr, PROG ": %s\n", why);
    return 1;
}

/* --status-file: rank 0 writes the status it ends with (mpirun
 * --enable-recovery does not pass it on). Returns status. */
static int status_file(const char *path, int rank, int status)
{
    if (!path || rank != 0)
        return status;
    FILE *f = fopen(path, "w");
    bool ok = f && fprintf(f, "%d\n", status) > 0;
    if (f && fclose(f) != 0)
        ok = false;
    if (!ok)
        fprintf(stderr, PROG ": --status-file %s: cannot write it\n", path);
    return status;
}

/*
 * --backend mpi. Rank 0 hosts the executor; the others serve it. A failure
 * before the executor exists must not leave the other ranks waiting: before
 * the plugin is loaded everywhere the job is aborted; after, rank 0 lets
 * them go (exec_mpi_dismiss).
 */
#ifdef EXEC_MAP_MPI
static int mpi_begin(int *argc, char ***argv, int *rank)
{
    int provided, size = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        fprintf(stderr, PROG ": --backend mpi: MPI_Init_thread failed\n");
        return 1;
    }
    if (exec_mpi_check(rank, &size) != 0) {
        fprintf(stderr, PROG ": --backend mpi: MPI gives thread level %d, EXEC_MPI needs "
                             "MPI_THREAD_SERIALIZED\n", provided);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (size < 2) {
        fprintf(stderr, PROG ": --backend mpi: run it under mpirun with 2 ranks or more "
                             "(rank 0 reads and writes, the others run the records)\n");
        MPI_Finalize();
        return 2;
    }
    return 0;
}

/* A failure that every rank meets alike (the same command line): each
 * ends MPI without waiting for the others. */
static void mpi_quit(exec_backend_t backend)
{
    if (backend == EXEC_MPI)
        MPI_Finalize();
}

/* Under MPI every rank tells whether it failed (why non-empty); the first
 * that did says why, and every rank ends: 1. 0 when none failed. */
static int mpi_said_once(int rank, const char *why)
{
    int mine = why[0] ? rank : INT_MAX, first = INT_MAX;
    if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS)
        first = mine;
    if (first == INT_MAX)
        return 0;
    if (first == rank)
        fprintf(stderr, PROG ": %s%s\n", rank ? "rank " : "", why);
    MPI_Finalize();
    return 1;
}

/* A worker rank. A refusal of this rank's (its ctx_build, its executor)
 * reached rank 0, which reports it with the first rank's words: not here too. */
static int mpi_serve(const exec_plugin_t *pl, int rank)
{
    char err[512];
    int rc = exec_mpi_serve(pl, err, sizeof err);
    if (rc && rc != EXEC_EOF && rc != EXEC_EINIT && rc != EXEC_EVERSION)
        fprintf(stderr, PROG ": rank %d: %s\n", rank, err);
    /* Rank 0 meets us here, or ends the job (see mpi_end). */
    if (exec_mpi_barrier(-1) != 0)
        MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Finalize();
    return rc && rc != EXEC_EOF ? 1 : 0;
}

/*
 * Rank 0's end. The job ends in every case: when a rank died (it held
 * records: lost, or it misses the closing barrier), MPI_Finalize() could
 * wait for it for ever, so the job is ended with MPI_Abort() instead, with
 * the same status (under mpirun --enable-recovery, mpirun itself exits 0
 * whatever it is: see --status-file).
 */
static int mpi_end(exec_backend_t backend, bool dismiss, bool lost, int timeout_ms, int status)
{
    if (backend == EXEC_MPI) {
        if (dismiss)
            exec_mpi_dismiss();
        if (lost || exec_mpi_barrier(timeout_ms) != 0) {
            fprintf(stderr, PROG ": %s: ending the job with MPI_Abort (MPI cannot finalize "
                            "without it)\n",
                    lost ? "a rank was lost" : "a rank did not reach the end of the job");
            fflush(stdout);
            fflush(stderr);
            MPI_Abort(MPI_COMM_WORLD, status);
        }
        MPI_Finalize();
    }
    return status;
}
#else
static int mpi_begin(int *argc, char ***argv, int *rank)
{
    (void)argc;
    (void)argv;
    (void)rank;
    fprintf(stderr, PROG ": --backend mpi: this executor-map was built without MPI "
                         "(libexecutor_mpi)\n");
    return 2;
}

static void mpi_quit(exec_backend_t backend)
{
    (void)backend;
}

static int mpi_said_once(int rank, const char *why)
{
    (void)rank;
    (void)why;
    return 0;
}

static int mpi_serve(const exec_plugin_t *pl, int rank)
{
    (void)pl;
    (void)rank;
    return 1;
}

static int mpi_end(exec_backend_t backend, bool dismiss, bool lost, int timeout_ms, int status)
{
    (void)backend;
    (void)dismiss;
    (void)lost;
    (void)timeout_ms;
    return status;
}
#endif

int main(int argc, char **argv)
{
    struct map_args args;
    if (map_args_parse(argc, argv, &args))
        return 2;
    const char *plugin_path = args.plugin_path, *spec = args.spec, *input = args.input;
    exec_backend_t backend = args.backend;
    exec_options_t eo = args.eo;
    exec_source_options_t so = args.so;
    exec_map_options_t mo = args.mo;
    bool help = args.help, stats = args.stats;
    unsigned ranks = args.ranks;
    int rank = 0;
    if (backend == EXEC_MPI && !help) {
        /* Every rank parsed the same line: the usage errors above stopped them all. */
        int rc = mpi_begin(&argc, &argv, &rank);
        if (rc)
            return rc;
        eo.rank_workers = eo.workers;
        eo.workers = ranks;
    }

    /* The plugin. Under MPI every rank loads it, and a failure is said once:
     * by the first rank it happened on (said_once). */
    const exec_plugin_t *pl = NULL;
    char why[640] = "";
    if (plugin_path) {
        if (exec_plugin_open(&pl, plugin_path, why, sizeof why) == EXEC_ECAPS &&
            backend == EXEC_MPI && (strstr(why, "ctx_build:") || strstr(why, "ctx_build,"))) {
            size_t n = strlen(why);
            snprintf(why + n, sizeof why - n,
                     "; --backend mpi needs ctx_build to build the classifier on each rank "
                     "from --spec");
        }
    }
    int said = said_once(backend == EXEC_MPI && !help, rank, why);
    if (said)
        return status_file(args.status_file, rank, said);
    if (help) {
        usage(stdout);
        if (pl)
            printf("\nplugin %s: spec %s\n", pl->name ? pl->name : plugin_path,
                   pl->usage ? pl->usage : "(not described)");
        exec_plugin_close(pl);
        return 0;
    }
    if (!plugin_path || !spec) {
        /* The same line on every rank: each stops here, rank 0 says why. */
        if (rank == 0) {
            fprintf(stderr, PROG ": --plugin and --spec are required\n");
            fprintf(stderr, "Try '" PROG " --help'.\n");
        }
        exec_plugin_close(pl);
        mpi_quit(backend);
        return status_file(args.status_file, rank, 2);
    }
    if (backend == EXEC_MPI && rank != 0) {
        int status = mpi_serve(pl, rank);
        exec_plugin_close(pl);
        return status;
    }

    int status = 1;
    bool session = false, lost = false;
    exec_source_t *src = NULL;
    exec_csv_header_t *hdr = NULL;
    void *ctx = NULL;
    exec_t *ex = NULL;
    struct run run = {.in_name = input && strcmp(input, "-") ? input : "stdin"};

    /* The input: opened before the classifier is built, which may need its header. */
    int rc = input && strcmp(input, "-") ? exec_source_open(&src, input, &so)
                                         : exec_source_open_fd(&src, 0, &so);
    if (rc == EXEC_E2BIG || rc == EXEC_EBADQUOTE || rc == EXEC_EUNTERMINATED) {
        /* The header row is read at open. */
        fprintf(stderr, PROG ": %s: bad header row: %s%s\n", run.in_name, exec_strerror(rc),
                rc == EXEC_E2BIG ? " (a header row holds at most 64 MiB)" : "");
        goto out;
    }
    if (rc) {
        fprintf(stderr, PROG ": %s: %s\n", run.in_name, code_text(rc));
        goto out;
    }
    const void *h;
    size_t hlen;
    if (exec_source_header(src, &h, &hlen) == 0) {
        rc = exec_csv_header_create(&hdr, h, hlen, so.delim);
        if (rc) {
            fprintf(stderr, PROG ": %s: bad header row: %s\n", run.in_name, exec_strerror(rc));
            goto out;
        }
    }

    char err[512] = "";
    if (backend == EXEC_MPI) {
        /* Each rank builds its own classifier from the spec; rank 0 none. */
        eo.plugin = pl;
        eo.spec = spec;
        eo.header = hdr;
        eo.err = err;
        eo.errlen = sizeof err;
    } else if (pl->ctx_build(spec, hdr, &ctx, err, sizeof err) != 0) {
        fprintf(stderr, PROG ": plugin %s: bad spec '%s': %s\n", pl->name ? pl->name : "",
                spec, err[0] ? err : "(no reason given)");
        ctx = NULL;
        goto out;
    }

    rc = exec_create(&ex, pl->ops, ctx, backend, &eo);
    /* EXEC_MPI: past its argument checks, a create takes the ranks through
     * its session whatever its result. */
    session = rc != EXEC_EINVAL && rc != EXEC_ECAPS && rc != EXEC_EVERSION &&
              rc != EXEC_ENOTSUP && rc != EXEC_ESTATE;
    if (rc) {
        const char *name = pl->name ? pl->name : plugin_path;
        /* Under MPI the caps decide each rank's own backend. */
        exec_backend_t on = backend == EXEC_MPI ? eo.rank_backend : backend;
        const char *opt = backend == EXEC_MPI ? "--rank-backend" : "--backend";
        if (rc == EXEC_ECAPS && on == EXEC_THREADS)
            fprintf(stderr, PROG ": plugin %s is not thread-safe: use %s fork or auto\n", name,
                    opt);
        else if (rc == EXEC_ECAPS && on == EXEC_FORK)
            fprintf(stderr, PROG ": plugin %s is not fork-safe: use %s threads or auto\n", name,
                    opt);
        else if (rc == EXEC_ECAPS)
            fprintf(stderr, PROG ": plugin %s is neither thread-safe nor fork-safe\n", name);
        else if (backend == EXEC_MPI) /* err names the rank and what it said */
            fprintf(stderr, PROG ": cannot start on the ranks: %s\n",
                    err[0] ? err : exec_strerror(rc));
        else if (rc == EXEC_ENOTSUP)
            fprintf(stderr,
                    PROG ": plugin %s needs the %s backend, which this build of libexecutor "
                         "does not have (%s)\n",
                    name,
                    backend == EXEC_FORK || !(pl->ops->caps & EXEC_CAP_THREAD_SAFE) ? "fork"
                                                                                     : "threads",
                    exec_err_name(rc));
        else
            fprintf(stderr, PROG ": cannot start the executor: %s\n", exec_strerror(rc));
        goto out;
    }

    mo.on_bad = on_bad;
    mo.bad_arg = &run;
    mo.on_failed = on_failed;
    mo.failed_arg = &run;
    exec_map_report_t rep;
    rc = exec_map_fd(ex, src, STDOUT_FILENO, &mo, &rep);
    lost = rank_lost(ex);
    if (stats) {
        exec_stats_t st;
        exec_stats(ex, &st);
        fprintf(stderr,
                PROG ": %llu records, %llu ok, %llu failed, %llu malformed; %.3f s, %.0f "
                     "records/s, %.1f MB/s; backend %s, %u workers, %llu batches\n",
                (unsigned long long)rep.records, (unsigned long long)rep.ok,
                (unsigned long long)rep.failed, (unsigned long long)rep.bad, rep.seconds,
                rep.seconds > 0 ? (double)rep.records / rep.seconds : 0,
                rep.seconds > 0 ? (double)rep.bytes / 1e6 / rep.seconds : 0,
                exec_backend_name(exec_backend(ex)), st.workers,
                (unsigned long long)st.batches);
    }
    if (rc == EXEC_EUNTERMINATED || rc == EXEC_EBADQUOTE || rc == EXEC_ETRUNCATED) {
        fprintf(stderr, PROG ": %s: stopped at the malformed record (--skip-bad goes on)\n",
                run.in_name);
    } else if (rc) {
        fprintf(stderr, PROG ": %s: %s\n", run.in_name, code_text(rc));
    } else if (rep.failed) {
        fprintf(stderr, PROG ": %s: %llu of %llu records failed\n", run.in_name,
                (unsigned long long)rep.failed, (unsigned long long)rep.records);
    } else {
        status = 0;
    }
out:
    exec_destroy(ex);
    if (ctx)
        pl->ctx_free(ctx);
    exec_csv_header_free(hdr);
    exec_source_close(src);
    exec_plugin_close(pl);
    return mpi_end(backend, !session, lost, eo.rank_timeout_ms ? (int)eo.rank_timeout_ms : 10000,
                   status_file(args.status_file, rank, status));
}
