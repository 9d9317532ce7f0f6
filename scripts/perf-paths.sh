#!/usr/bin/env bash
# Where a real workload's CPU time goes on each path, from perf samples taken
# only while that path runs its records (executor-bench --perf-ctl): not its
# set-up, not the other paths, not the checks.
#
#   scripts/perf-paths.sh [--workload regex|lua] [--full] [--runs K] [--workers N]
#                         [--freq HZ] [--out DIR] [--build DIR] PATH...
#
# PATH: loop, omp-for, threads-run, threads-map, fork-source... (executor-bench
# --help lists them). For each one: CPU ns a record, by who spent it (the
# calling thread; the process's other threads: EXEC_THREADS' workers, OpenMP's
# team, the library's own; EXEC_FORK's worker processes) and by what ran (the
# workload's code, libexecutor, libc, the kernel, the bench's read and emit
# callbacks), then the heaviest symbols of each. Needs perf (Debian: linux-perf)
# and the right to sample (root, or kernel.perf_event_paranoid <= 1). The data
# stays in DIR (default ./perf-out) for `perf report -i DIR/PATH.data`.
set -euo pipefail
cd "$(dirname "$0")/.."

workload=regex full=() runs=5 workers=() freq=4000 out=perf-out build=build/release
paths=()
while [ $# -gt 0 ]; do
    case "$1" in
    --workload) workload=$2; shift 2 ;;
    --full) full=(--full); shift ;;
    --runs) runs=$2; shift 2 ;;
    --workers) workers=(--workers "$2"); shift 2 ;;
    --freq) freq=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "perf-paths.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) paths+=("$1"); shift ;;
    esac
done
[ ${#paths[@]} -gt 0 ] || { echo "perf-paths.sh: name a path, e.g. fork-source (see --help)" >&2; exit 2; }
command -v perf >/dev/null || { echo "perf-paths.sh: perf not found (Debian: apt-get install linux-perf)" >&2; exit 1; }
bench=$build/bench/executor-bench
if [ ! -x "$bench" ]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$build" --target executor-bench -j"$(nproc)" >/dev/null
fi
mkdir -p "$out"
fifo=$(mktemp -d "${TMPDIR:-/tmp}/perf-paths.XXXXXX")
trap 'rm -rf "$fifo"' EXIT
mkfifo "$fifo/ctl" "$fifo/ack"

for path in "${paths[@]}"; do
    data=$out/$path.data
    log=$out/$path.log
    if ! perf record -q -D -1 -e dummy -e cpu-clock -F "$freq" --control "fifo:$fifo/ctl,$fifo/ack" \
        -o "$data" -- "$bench" --workloads "$workload" --executors "$path" --runs "$runs" \
        "${workers[@]}" "${full[@]}" --out "$out/bench" \
        --perf-ctl "$fifo/ctl,$fifo/ack,cpu-clock" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        echo "perf-paths.sh: $path: the run failed (log: $log)" >&2
        exit 1
    fi
    lines=$(sed -n "s/^$workload: .*; \([0-9]*\) lines, .*/\1/p" "$log")
    read -r windows pid < <(sed -n 's/^perf: .* sampled in \([0-9]*\) timed runs (process \([0-9]*\)).*/\1 \2/p' "$log")
    if [ -z "$lines" ] || [ -z "${windows:-}" ] || [ "$windows" -eq 0 ]; then
        echo "perf-paths.sh: $path: no timed run was sampled (log: $log)" >&2
        exit 1
    fi
    # The bench's own line, for its CPU columns: its rate is the sampled run's
    # (lower than without perf) against an unsampled loop.
    grep -E "^$path " "$log" | sed 's/^/  bench (sampled): /' || true
    perf script -i "$data" -F pid,tid,period,ip,sym,dso 2>/dev/null |
        awk -v pid="$pid" -v recs=$((lines * windows)) -v what="$workload, $path" \
            -v windows="$windows" -v lines="$lines" -v freq="$freq" -f scripts/perf-paths.awk
done
