/*
 * A worker rank that dies as a whole, in the middle of a stream (rank 2 is
 * killed by SIGKILL on the first record from 5000 on that it runs). What happens is Open MPI's to decide:
 *
 *   default      mpirun ends the whole job at once (the host with it): run.sh
 *                --expect-abort checks that it does, in bounded time, and
 *                that the host did not report success;
 *   --recovery   (mpirun --enable-recovery) the job goes on: the host must
 *                take rank 2 for lost within rank_timeout_ms, give each
 *                record it held EXEC_ELOST, run every other record on rank 1,
 *                and end the executor without waiting for the dead rank.
 *
 * Prints "lost: ok" only when every check held, exec_mpi_barrier() among
 * them: it must time out, rank 2 being dead. A job that lost a rank cannot
 * finalize reliably (Open MPI 4.1's MPI_Finalize waits for the dead rank in
 * a fence, now and then for ever), so the host ends it with MPI_Abort, as a
 * program would: status 0 when every check held.
 */
#include "mt.h"

#define N 20000u

static int host(void)
{
    char err[256];
    exec_options_t o = {.plugin = &mt_plugin,
                        .spec = "salt=6,die=2:5000",
                        .rank_backend = EXEC_THREADS,
                        .rank_workers = 1,
                        .rank_timeout_ms = 2000,
                        .err = err,
                        .errlen = sizeof err};
    exec_t *ex;
    int rc = exec_create(&ex, &mt_ops, NULL, EXEC_MPI, &o);
    if (rc) {
        fprintf(stderr, "lost: exec_create: %s: %s\n", exec_err_name(rc), err);
        return 1;
    }
    unsigned char *seen = calloc(N, 1);
    unsigned char rec[TU_REC_MAX];
    uint64_t t0 = tu_now_ms(), ok = 0, lost = 0, bad = 0, got = 0;
    uint64_t sub = 0;
    exec_result_t r;
    while (got < N) {
        while (sub < N && (rc = exec_try_submit(ex, rec, tu_rec(sub, rec), sub)) == 0)
            sub++;
        if (sub == N && rc != EXEC_ESTATE)
            rc = exec_finish(ex) == 0 ? EXEC_ESTATE : rc;
        while ((rc = exec_next(ex, &r, sub == N ? 1000 : 0)) == 0) {
            got++;
            if (r.tag >= N || seen[r.tag]++)
                bad++;
            else if (r.status == EXEC_ELOST && !r.data)
                lost++;
            else if (mt_ok(&r, 6))
                ok++;
            else
                bad++;
        }
        if (rc != EXEC_EAGAIN && rc != EXEC_ETIMEDOUT)
            break;
        if (tu_now_ms() - t0 > 60000) {
            fprintf(stderr, "lost: no end after 60 s (%llu of %u results)\n",
                    (unsigned long long)got, N);
            return 1;
        }
    }
    exec_stats_t st;
    exec_worker_stats_t w1, w2;
    exec_stats(ex, &st);
    exec_worker_stats(ex, 0, &w1);
    exec_worker_stats(ex, 1, &w2);
    uint64_t t1 = tu_now_ms();
    exec_destroy(ex);
    uint64_t t2 = tu_now_ms();
    printf("lost: %llu ok, %llu lost (EXEC_ELOST), %llu wrong, in %llu ms; destroy %llu ms\n",
           (unsigned long long)ok, (unsigned long long)lost, (unsigned long long)bad,
           (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1));
    int fail = 0;
#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "lost: check failed: %s\n", #c);                                       \
            fail = 1;                                                                              \
        }                                                                                          \
    } while (0)
    CHECK(bad == 0);
    CHECK(ok + lost == N);
    CHECK(lost > 0);
    CHECK(st.worker_errors == lost && st.ok == ok);
    CHECK(w2.flags & EXEC_WORKER_GONE);
    CHECK(!(w1.flags & EXEC_WORKER_GONE));
    CHECK(t2 - t1 < 5000); /* the dead rank is not waited for */
    uint64_t t3 = tu_now_ms();
    int b = exec_mpi_barrier(500);
    CHECK(b == EXEC_ETIMEDOUT); /* rank 2 never comes */
    CHECK(tu_now_ms() - t3 < 5000);
    free(seen);
    if (!fail)
        printf("lost: ok\n");
    return fail;
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    int rank, size;
    if (exec_mpi_check(&rank, &size) != 0 || size != 3) {
        fprintf(stderr, "test_mpi_lost: run under mpirun -np 3 with MPI_THREAD_MULTIPLE\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    int rc = 0;
    if (rank == 0) {
        rc = host();
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, rc);
    } else {
        /* One session only: after a rank died, no collective call (a new
         * session's communicator) can complete. */
        char err[256];
        int s = exec_mpi_serve(&mt_plugin, err, sizeof err);
        if (s) {
            fprintf(stderr, "test_mpi_lost: rank %d: %s: %s\n", rank, exec_err_name(s), err);
            rc = 1;
        }
        /* Rank 1 waits here until rank 0's MPI_Abort ends the job. */
        if (exec_mpi_barrier(-1) != 0)
            rc = 1;
    }
    MPI_Finalize();
    return rc;
}
