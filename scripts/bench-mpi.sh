#!/usr/bin/env bash
# EXEC_MPI against EXEC_FORK on this machine: installs Open MPI if missing (Debian 12,
# scripts/deps.sh --mpi), builds executor-bench-mpi in the mpi preset without its checks (build/mpi-bench) and runs it
# under mpirun with rank 0 and RANKS worker ranks (default 2), over shared memory.
# Arguments go to executor-bench-mpi (--quick, --weight 300,5000, --rank-workers N,
# --host-cores P, --net-gbps G; --help). The table goes to stdout and ./bench-out/mpi.txt.
#
# Environment:
#   EXEC_SKIP_DEPS=1  do not install packages
#   EXEC_JOBS         parallel compile jobs (default: 2)
#   RANKS             worker ranks (default: 2)
#   MPIRUN_ARGS       more mpirun arguments (e.g. "--mca btl self,tcp" for the TCP path)
set -euo pipefail
cd "$(dirname "$0")/.."

[ "${EXEC_SKIP_DEPS:-0}" = 1 ] || bash scripts/deps.sh --mpi
log=$(mktemp "${TMPDIR:-/tmp}/executor-bench-mpi.XXXXXX")
trap 'rm -f "$log"' EXIT
# The mpi preset checks invariants (EXEC_CHECKS) for the tests; the bench builds without.
if ! { cmake --preset mpi -B build/mpi-bench -DEXEC_CHECKS=OFF &&
       cmake --build build/mpi-bench -j "${EXEC_JOBS:-2}" \
    --target executor-bench-mpi; } >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    exit 1
fi
root=()
[ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
read -r -a extra <<<"${MPIRUN_ARGS:---mca btl self,vader}"
mkdir -p bench-out
mpirun "${root[@]}" --oversubscribe -np $((1 + ${RANKS:-2})) "${extra[@]}" \
    build/mpi-bench/bench/executor-bench-mpi "$@" | tee bench-out/mpi.txt
