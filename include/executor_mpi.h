/*
 * libexecutor_mpi: the EXEC_MPI backend, the same executor across the ranks
 * of an MPI job (Open MPI). Link with -lexecutor_mpi -lexecutor (pkg-config
 * executor_mpi, or CMake executor::executor_mpi).
 *
 * Every rank runs the same program. Rank 0 hosts the executor: it creates it
 * with exec_create(..., EXEC_MPI, ...) and uses it as any other (submit,
 * next, ordered or not, window, cancel, stats, exec_fd(), exec_map_fd()).
 * Every other rank calls exec_mpi_serve(): it builds its own context from the
 * spec rank 0 sends, runs the records it receives on an EXEC_THREADS or
 * EXEC_FORK executor of its own (by the classifier's caps, or
 * options.rank_backend) with options.rank_workers workers, and sends the
 * results back, in batches. A context never crosses the network; records and
 * results do. One rank per host, using its cores through its own executor,
 * is the usual layout.
 *
 *     int provided;
 *     MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
 *     int rank;
 *     exec_mpi_check(&rank, NULL);
 *     if (rank == 0) {
 *         exec_options_t o = {.plugin = &my_plugin, .spec = "table=words.txt"};
 *         exec_t *ex;
 *         exec_create(&ex, my_plugin.ops, NULL, EXEC_MPI, &o);
 *         ... submit and collect as with any backend ...
 *         exec_destroy(ex);
 *     } else {
 *         char err[256];
 *         exec_mpi_serve(&my_plugin, err, sizeof err);
 *     }
 *     if (exec_mpi_barrier(rank == 0 ? 10000 : -1) != 0)
 *         MPI_Abort(MPI_COMM_WORLD, 1); // a rank died: see exec_mpi_barrier()
 *     MPI_Finalize();
 *
 * MPI_Init_thread() is the program's. Rank 0 needs MPI_THREAD_SERIALIZED at
 * least (the executor's progress thread makes MPI calls; with SERIALIZED the
 * program makes none of its own while an EXEC_MPI executor lives, with
 * MPI_THREAD_MULTIPLE it may); a worker rank needs MPI_THREAD_FUNNELED when it
 * serves from its main thread, else SERIALIZED. Each executor (and each
 * exec_mpi_dismiss()) is one session: every worker rank takes part in it with
 * one exec_mpi_serve() call, so a program creating several EXEC_MPI
 * executors, one after the other, serves in a loop until EXEC_EOF. One
 * EXEC_MPI executor at a time per job. Ranks must share one architecture.
 *
 * A worker rank's own executor catches its crashes: with EXEC_FORK there, a
 * record that crashes its worker process reads EXEC_ECRASHED, as on one
 * machine. A rank that dies as a whole: Open MPI's runtime (mpirun) ends the
 * whole job by default, whatever error handler is set. Started with
 * `mpirun --enable-recovery`, the job goes on: the host then takes a rank
 * that holds records and has sent nothing for options.rank_timeout_ms (it
 * sends a heartbeat every quarter of that) for lost, its records read
 * EXEC_ELOST, and the other ranks carry the stream (docs/mpi.md).
 */
#ifndef EXECUTOR_MPI_H
#define EXECUTOR_MPI_H

#include "executor_records.h" /* exec_plugin_t */

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

/*
 * Whether this process can take part in EXEC_MPI: 0 when MPI is initialized,
 * not finalized, and at a thread level enough for this rank's role (see
 * above), with *rank and *size (may be NULL) set from MPI_COMM_WORLD.
 * EXEC_ESTATE otherwise. Thread-safe.
 */
int exec_mpi_check(int *rank, int *size);

/*
 * A worker rank (not rank 0): takes part in rank 0's next session. For an
 * executor: receives its spec, builds this rank's context with
 * plugin->ctx_build(spec, header) (header: rank 0's options.header, rebuilt
 * here, or NULL), starts an executor of its own on it, and runs the records
 * rank 0 sends until rank 0 destroys the executor; exec_swap_spec() builds
 * again here while the current context keeps serving. Each context is freed
 * with plugin->ctx_free once its executor has ended. Ranks beyond
 * options.workers take part without work.
 * plugin->name must match rank 0's plugin's (both may be NULL): the same
 * classifier on every rank.
 * Returns 0 when the session ended in order (also when rank 0's exec_create()
 * failed: see exec_mpi_dismiss()), EXEC_EOF when rank 0 called exec_mpi_dismiss(),
 * EXEC_EINIT when this rank could not build its context or start its
 * executor (rank 0's exec_create() then fails too, its options.err holding
 * the same words as err here, of the first rank that refused: say them
 * there, once, not on every rank), EXEC_EINVAL
 * (NULL plugin, no ctx_build or ctx_free, or called on rank 0), EXEC_ESTATE
 * (see exec_mpi_check()), EXEC_EVERSION (rank 0 runs another version of the
 * library), EXEC_EFATAL (MPI failed). err (may be NULL) gets a message for
 * any failure, NUL-terminated, at most errlen bytes. Blocks for the session;
 * one call at a time per process.
 */
int exec_mpi_serve(const exec_plugin_t *plugin, char *err, size_t errlen);

/*
 * Rank 0: a session without an executor, so that every worker rank's
 * exec_mpi_serve() returns EXEC_EOF (a program that serves in a loop ends it
 * with this; one that fails before creating its executor lets the ranks go).
 * exec_create(..., EXEC_MPI, ...) takes the ranks through a session whatever
 * its result, unless it fails its argument checks (EXEC_EINVAL, EXEC_ECAPS,
 * EXEC_EVERSION, EXEC_ENOTSUP, EXEC_ESTATE): then no rank was asked, and
 * their exec_mpi_serve() still waits for a session.
 * 0, EXEC_ESTATE (see exec_mpi_check()), EXEC_EINVAL (not rank 0),
 * EXEC_ENOMEM, EXEC_EFATAL (MPI failed).
 */
int exec_mpi_dismiss(void);

/*
 * Every rank, at the end of the job, before MPI_Finalize(): whether every
 * rank of MPI_COMM_WORLD is still there to end it. A barrier over
 * MPI_COMM_WORLD (so every rank calls it, with no other collective on
 * MPI_COMM_WORLD under way) that gives up after timeout_ms (-1: no limit;
 * it naps between looks, it does not spin). 0: every rank reached it, and
 * MPI_Finalize() is safe. EXEC_ETIMEDOUT: some rank did not: it died (the
 * job runs under mpirun --enable-recovery) or hangs. Open MPI 4.1 cannot
 * finalize a job that lost a process (MPI_Finalize() waits for it in a
 * fence, now and then for ever), so end the job with MPI_Abort(), which ends
 * every rank; the barrier stays pending. EXEC_ESTATE (see exec_mpi_check(),
 * worker ranks' level), EXEC_EFATAL (MPI failed).
 *
 * The pattern: rank 0 calls it with a timeout once its executor is
 * destroyed, and aborts on EXEC_ETIMEDOUT (at once when its executor
 * reported a rank EXEC_WORKER_GONE); a worker rank calls it with -1 once
 * exec_mpi_serve() returned: rank 0 either meets it there or ends the job.
 */
int exec_mpi_barrier(int timeout_ms);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif

#endif /* EXECUTOR_MPI_H */
