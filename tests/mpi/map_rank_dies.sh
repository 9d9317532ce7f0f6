#!/usr/bin/env bash
# executor-map --backend mpi when a worker rank dies mid-stream (3 ranks, one record aborts the
# rank that runs it: --rank-backend threads, so the abort takes the whole rank):
#   - under mpirun --enable-recovery, three times: the job ends (it used to hang in
#     MPI_Finalize now and then, waiting for the dead rank), every row on stdout is right and
#     appears once, "K of N records failed" with rows + K = N, the lost records are said to be
#     lost, and the exit status executor-map wrote with --status-file is 1 (mpirun itself exits
#     0 under --enable-recovery, whatever its ranks' statuses);
#   - under plain mpirun: the job is ended, not reported a success.
#   map_rank_dies.sh MPIEXEC EXECUTOR_MAP PLUGIN_DIR DATA_DIR
set -uo pipefail
mpiexec=$1 map=$2 plugins=$3 data=$4
tmp=$(mktemp -d "${TMPDIR:-/tmp}/executor-mpi-dies.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=20000
awk -v n=$n 'BEGIN { print "id,text"; for (i = 0; i < n; i++)
    printf "%d,%s\n", i, i == n / 2 ? "zzboom" : (i % 3 ? "apple saw" : "cat") }' >"$tmp/in.csv"
spec="table=$data/words.txt,column=text,id=id,crash=zzboom"
root=()
[ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
mpirun_args=("${root[@]}" --oversubscribe -np 3 --mca btl self,vader
    --mca btl_vader_single_copy_mechanism none)
args=(--plugin "$plugins/libwordtable.so" --spec "$spec" --backend mpi --workers 1
    --rank-backend threads --rank-timeout 1000 --quiet --status-file "$tmp/status" "$tmp/in.csv")

# What the right rows are: the same plugin on threads, the crash word left out.
"$map" --plugin "$plugins/libwordtable.so" --spec "table=$data/words.txt,column=text,id=id" \
    --backend threads --workers 2 --quiet "$tmp/in.csv" | sort >"$tmp/want" ||
    { echo "map_rank_dies: the threads run failed" >&2; exit 1; }

fail=0
for run in 1 2 3; do
    rm -f "$tmp/status"
    t0=$(date +%s)
    timeout -k 10 120 "$mpiexec" "${mpirun_args[@]}" --enable-recovery "$map" "${args[@]}" \
        >"$tmp/out" 2>"$tmp/err"
    rc=$? secs=$(($(date +%s) - t0))
    sort "$tmp/out" -o "$tmp/out"
    rows=$(wc -l <"$tmp/out")
    failed=$(sed -n 's/.* \([0-9][0-9]*\) of '"$n"' records failed$/\1/p' "$tmp/err")
    problem=""
    [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || problem="the job did not end within 120 s"
    [ "$(cat "$tmp/status" 2>/dev/null)" = 1 ] ||
        problem="$problem; --status-file says '$(cat "$tmp/status" 2>/dev/null)', not 1"
    [ -n "$failed" ] && [ "$failed" -gt 0 ] && [ $((rows + failed)) -eq $n ] ||
        problem="$problem; $rows rows and '${failed:-no}' failed of $n"
    [ "$(uniq -d "$tmp/out" | wc -l)" -eq 0 ] || problem="$problem; a row appears twice"
    [ -z "$(comm -23 "$tmp/out" "$tmp/want")" ] || problem="$problem; a row is wrong"
    grep -q 'died or stopped answering' "$tmp/err" || problem="$problem; no record said lost"
    if [ -n "$problem" ]; then
        echo "map_rank_dies: --enable-recovery run $run: FAILED: ${problem#; } (mpirun $rc, $secs s)"
        tail -n 20 "$tmp/err"
        fail=1
    else
        echo "map_rank_dies: --enable-recovery run $run: ok: $rows rows, $failed lost, status 1, $secs s"
    fi
done

# Without recovery mpirun ends the job when the rank dies: never a success.
timeout -k 10 120 "$mpiexec" "${mpirun_args[@]}" "$map" "${args[@]}" >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "map_rank_dies: plain mpirun: FAILED: status $rc (a success, or no end)"
    fail=1
else
    echo "map_rank_dies: plain mpirun: ok: the job was ended (status $rc)"
fi
exit $fail
