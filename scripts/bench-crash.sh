#!/usr/bin/env bash
# Crash-heavy streams: how many worker crashes a second each backend absorbs. executor-map
# runs the wordtable plugin over CSV rows of which every other one holds a word that makes
# process() abort (crash=WORD: SIGABRT in the worker), on EXEC_FORK with 1 and 2 workers, and
# under mpirun on EXEC_MPI with EXEC_FORK inside each rank (1 and 2 worker ranks of 1 worker),
# when the build has libexecutor_mpi. Every run is checked: all rows out, half of them failed
# (the crashed ones), exit status 1. Prints, per setup, the median of the runs: seconds,
# crashes/s, ms per crash, and the seconds of the same run without crashes (under mpirun that
# includes the job's start). (EXEC_THREADS has no place here: a crash there takes the whole
# process, by design.)
#
# Environment:
#   EXEC_CRASH_BUILD  the build tree (default: build/mpi if it has executor-map, else build/default)
#   EXEC_CRASH_ROWS   rows per run (default 20000: 10000 crashes)
#   EXEC_CRASH_RUNS   runs per setup, median shown (default 3)
#   MPIRUN_ARGS       more mpirun options (default: shared memory only, as the tests run)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${EXEC_CRASH_BUILD:-}
if [ -z "$build" ]; then
    build=build/default
    [ -x build/mpi/programs/executor-map ] && build=build/mpi
fi
rows=${EXEC_CRASH_ROWS:-20000}
runs=${EXEC_CRASH_RUNS:-3}
map=$build/programs/executor-map
plugin=$build/examples/libwordtable.so
[ -x "$map" ] && [ -f "$plugin" ] || { echo "bench-crash: build $build first (executor-map, wordtable)" >&2; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/executor-crash.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
awk -v n="$rows" 'BEGIN { print "id,text"; for (i = 0; i < n; i++)
    printf "%d,%s\n", i, i % 2 ? "zzboom apple" : "apple cat" }' >"$tmp/in.csv"
base="table=tests/data/words.txt,column=text,id=id"
crashes=$((rows / 2))
root=()
[ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
read -r -a mpi_extra <<<"${MPIRUN_ARGS:---mca btl self,vader --mca btl_vader_single_copy_mechanism none}"

# run LABEL WANT_FAILED CMD...: seconds of one checked run on stdout.
run() {
    local want=$1 t0 t1 rc failed
    shift
    t0=$(date +%s.%N)
    set +e
    "$@" "$tmp/in.csv" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    set -e
    t1=$(date +%s.%N)
    failed=$(sed -n 's/.* \([0-9][0-9]*\) of '"$rows"' records failed$/\1/p' "$tmp/err")
    if [ "${failed:-0}" != "$want" ] || [ $(($(wc -l <"$tmp/out") + ${failed:-0})) -ne "$rows" ]; then
        echo "bench-crash: a run went wrong ($*): status $rc, ${failed:-0} failed, want $want" >&2
        tail -n 5 "$tmp/err" >&2
        exit 1
    fi
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

setup() {
    local label=$1 t tc
    shift
    t=$(for _ in $(seq "$runs"); do run "$crashes" "$@" --spec "$base,crash=zzboom"; done | median)
    tc=$(for _ in $(seq "$runs"); do run 0 "$@" --spec "$base"; done | median)
    awk -v l="$label" -v t="$t" -v tc="$tc" -v c="$crashes" 'BEGIN {
        printf "%-34s %8.2f %10.0f %8.3f %14.2f\n", l, t, c / t, 1000 * t / c, tc }'
}

echo "bench-crash: $rows rows, every other one aborts its worker ($crashes crashes); median of $runs runs"
echo "bench-crash: $(nproc) CPUs; build $build"
printf "%-34s %8s %10s %8s %14s\n" setup seconds crashes/s ms/crash "s (no crash)"
for w in 1 2; do
    setup "EXEC_FORK, $w worker(s)" "$map" --plugin "$plugin" --backend fork --workers "$w" --quiet
done
if command -v mpirun >/dev/null && "$map" --help 2>/dev/null | grep -q -- '--rank-backend'; then
    for r in 1 2; do
        setup "EXEC_MPI, $r rank(s) x EXEC_FORK 1" mpirun "${root[@]}" --oversubscribe -np $((r + 1)) \
            "${mpi_extra[@]}" "$map" --plugin "$plugin" --backend mpi --rank-backend fork \
            --workers 1 --quiet
    done
else
    echo "bench-crash: no EXEC_MPI here (build with the mpi preset, Open MPI installed)"
fi
