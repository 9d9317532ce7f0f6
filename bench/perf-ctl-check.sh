#!/usr/bin/env bash
# bench_perf_ctl: executor-bench --perf-ctl against a stand-in for perf record
# (which holds both FIFOs open and acks each command as perf does, "ack\n" and
# a NUL): the tracking event goes on first, the sampled event off, then on and
# off once around each timed run of the named paths and of no other, and the
# bench says how many it sampled. Usage: perf-ctl-check.sh BENCH OUTDIR
set -euo pipefail
bench=$1 out=$2
dir=$(mktemp -d "${TMPDIR:-/tmp}/perf-ctl.XXXXXX")
trap 'rm -rf "$dir"' EXIT
mkfifo "$dir/ctl" "$dir/ack"
exec 3<>"$dir/ctl" 4<>"$dir/ack"

"$bench" --quick --workloads regex --executors loop,threads-run,fork-run --runs 2 \
    --out "$out" --perf-ctl "$dir/ctl,$dir/ack,cpu-clock" >"$dir/log" 2>&1 &
pid=$!
cmds=()
while :; do
    if read -r -t 1 cmd <&3; then
        cmds+=("$cmd")
        printf 'ack\n\0' >&4
    elif ! kill -0 "$pid" 2>/dev/null; then
        break
    fi
done
rc=0
wait "$pid" || rc=$?
cat "$dir/log"
[ "$rc" -eq 0 ] || { echo "bench_perf_ctl: executor-bench exited with $rc"; exit 1; }
if grep -q '^not run: ' "$dir/log"; then
    echo "bench_perf_ctl: the regex workload is not built here: nothing to check"
    exit 0
fi
# loop, threads-run and fork-run, 2 runs each: 6 timed runs.
want=("enable dummy" "disable cpu-clock")
for _ in 1 2 3 4 5 6; do want+=("enable cpu-clock" "disable cpu-clock"); done
if [ "${cmds[*]}" != "${want[*]}" ]; then
    printf 'bench_perf_ctl: commands were:\n'; printf '  %s\n' "${cmds[@]}"
    exit 1
fi
grep -q '^perf: cpu-clock sampled in 6 timed runs (process [0-9]*)' "$dir/log" ||
    { echo "bench_perf_ctl: no count of sampled runs"; exit 1; }
# Without perf reading the FIFO: a clear error, at once, no hang.
mkfifo "$dir/lone"
if "$bench" --quick --workloads regex --executors loop --out "$out" \
    --perf-ctl "$dir/lone,$dir/ack" >"$dir/log2" 2>&1; then
    echo "bench_perf_ctl: a --perf-ctl FIFO nobody reads was accepted"; exit 1
fi
grep -q -- '--perf-ctl .*No such device or address' "$dir/log2" ||
    { cat "$dir/log2"; echo "bench_perf_ctl: no clear error without perf"; exit 1; }
echo "bench_perf_ctl: passed"
