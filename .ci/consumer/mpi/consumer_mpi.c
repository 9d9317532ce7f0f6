/*
 * An outside MPI program built against the installed libexecutor_mpi: rank 0
 * runs records through EXEC_MPI (ordered) and checks every result; the other
 * ranks serve until rank 0 dismisses them. The context is built on each rank
 * from the spec ("mul=N"). Exits 1 on any mismatch.
 */
#include <executor_mpi.h>

#include <inttypes.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NREC 20000

static int build(const char *spec, const exec_csv_header_t *h, void **ctx, char *err,
                 size_t errlen)
{
    (void)h;
    uint64_t *mul = malloc(sizeof *mul);
    if (!mul || sscanf(spec, "mul=%" SCNu64, mul) != 1) {
        snprintf(err, errlen, "expected mul=N, not '%s'", spec);
        free(mul);
        return -1;
    }
    *ctx = mul;
    return 0;
}

static void release(void *ctx) { free(ctx); }

/* The result of a record: the sum of its bytes times the context's mul. */
static int process(void *ctx, void *ws, const void *rec, size_t len, exec_writer_t *out)
{
    (void)ws;
    uint64_t sum = 0;
    for (size_t k = 0; k < len; k++)
        sum += ((const unsigned char *)rec)[k];
    sum *= *(const uint64_t *)ctx;
    return exec_write(out, &sum, sizeof sum);
}

static const exec_ops_t ops = {.version = EXEC_OPS_VERSION,
                               .caps = EXEC_CAP_THREAD_SAFE,
                               .name = "sum",
                               .process = process};
static const exec_plugin_t plugin = {.abi = EXEC_PLUGIN_ABI, .name = "sum", .ops = &ops,
                                     .ctx_build = build, .ctx_free = release};

static int host(void)
{
    char err[256];
    exec_options_t o = {.plugin = &plugin, .spec = "mul=3", .flags = EXEC_ORDERED,
                        .rank_workers = 1, .err = err, .errlen = sizeof err};
    exec_t *ex;
    int rc = exec_create(&ex, &ops, NULL, EXEC_MPI, &o);
    if (rc) {
        fprintf(stderr, "consumer_mpi: exec_create: %s: %s\n", exec_strerror(rc), err);
        return 1;
    }
    int bad = 0;
    uint64_t next = 0;
    exec_result_t r;
    for (uint64_t i = 0; i < NREC || next < NREC;) {
        char buf[32];
        int n = snprintf(buf, sizeof buf, "record-%" PRIu64, i);
        if (i < NREC && exec_try_submit(ex, buf, (size_t)n, i) == 0) {
            i++;
            continue;
        }
        if (i == NREC)
            exec_finish(ex);
        while ((rc = exec_next(ex, &r, i == NREC ? -1 : 0)) == 0) {
            uint64_t want = 0, got = 0;
            n = snprintf(buf, sizeof buf, "record-%" PRIu64, r.tag);
            for (int k = 0; k < n; k++)
                want += (unsigned char)buf[k];
            if (r.len == sizeof got)
                memcpy(&got, r.data, sizeof got);
            bad += r.status != 0 || r.tag != next++ || got != want * 3;
        }
        if (rc == EXEC_EOF)
            break;
    }
    exec_destroy(ex);
    if (bad || next != NREC) {
        fprintf(stderr, "consumer_mpi: %d wrong results, %" PRIu64 " of %d\n", bad, next, NREC);
        return 1;
    }
    printf("consumer_mpi: %d records through EXEC_MPI, in order, all right\n", NREC);
    return 0;
}

int main(int argc, char **argv)
{
    int provided, rank, rc = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    if (exec_mpi_check(&rank, NULL) != 0) {
        fprintf(stderr, "consumer_mpi: MPI thread level %d is too low\n", provided);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (rank == 0) {
        rc = host();
        if (exec_mpi_dismiss() != 0)
            rc = 1;
    } else {
        char err[256];
        int s;
        while ((s = exec_mpi_serve(&plugin, err, sizeof err)) != EXEC_EOF) {
            if (s) {
                fprintf(stderr, "consumer_mpi: rank %d: %s\n", rank, err);
                rc = 1;
            }
        }
    }
    MPI_Finalize();
    return rc;
}
