#!/usr/bin/env bash
# executor-map --backend mpi's refusals (3 ranks, through run.sh): each is said once, in
# words that say what failed, and the job ends with status 1 (2 for a usage error):
#   - a spec whose ctx_build fails on every worker rank: one line, naming a rank, the spec
#     and ctx_build's reason, with how many more ranks refused (not "worker_init", not
#     once per rank);
#   - a plugin without ctx_build: one line naming what is missing and that --backend mpi
#     needs ctx_build (EXEC_ECAPS), not one per rank;
#   - --spec missing: one usage message, not one per rank.
#   map_messages.sh RUN_SH MPIEXEC EXECUTOR_MAP PLUGIN_DIR NOBUILD_SO DATA_DIR
set -uo pipefail
run_sh=$1 mpiexec=$2 map=$3 plugins=$4 nobuild=$5 data=$6
tmp=$(mktemp -d "${TMPDIR:-/tmp}/executor-mpi-msg.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0

# check NAME WANT_STATUS PATTERN_ONCE [MUST...] -- ARGS: the job's status, PATTERN_ONCE on
# exactly one line of its stderr, every MUST somewhere in it, and neither "worker_init" nor
# an MPI_ABORT banner.
check() {
    local name=$1 want=$2 once=$3 must=() got n problem=""
    shift 3
    while [ "$1" != -- ]; do must+=("$1"); shift; done
    shift
    "$run_sh" "$mpiexec" 3 "$map" "$@" >"$tmp/out" 2>"$tmp/err"
    got=$?
    n=$(grep -cF -- "$once" "$tmp/err")
    [ "$got" -eq "$want" ] || problem="status $got, not $want"
    [ "$n" -eq 1 ] || problem="$problem; '$once' on $n lines, not 1"
    for m in "${must[@]}"; do
        grep -qF -- "$m" "$tmp/err" || problem="$problem; no '$m'"
    done
    ! grep -q 'worker_init' "$tmp/err" || problem="$problem; it speaks of worker_init"
    ! grep -q 'MPI_ABORT was invoked' "$tmp/err" || problem="$problem; the job was aborted"
    if [ -n "$problem" ]; then
        echo "map_messages: $name: FAILED: ${problem#; }"
        sed 's/^/    /' "$tmp/err" | head -n 20
        fail=1
    else
        echo "map_messages: $name: ok: $(grep -F -- "$once" "$tmp/err")"
    fi
}

check bad_spec 1 "cannot build the context from spec" "rank " "no/such/table" \
    "(and 1 more rank)" -- \
    --plugin "$plugins/libwordtable.so" --spec "table=$data/no/such/table" \
    --backend mpi --workers 1 --quiet "$data/seed.csv"
check no_ctx_build 1 "has no ctx_build" "--backend mpi needs ctx_build" "EXEC_ECAPS" -- \
    --plugin "$nobuild" --spec x --backend mpi --workers 1 --quiet "$data/seed.csv"
check no_spec 2 "--plugin and --spec are required" -- \
    --plugin "$plugins/libwordtable.so" --backend mpi --workers 1 "$data/seed.csv"
exit $fail
