#!/usr/bin/env bash
# Runs a test program under mpirun on this one machine, as ctest does:
#   run.sh MPIEXEC NP [--recovery] [--expect-abort] [--expect TEXT] [--refuse TEXT]
#          PROGRAM [ARGS...]
# Ranks are oversubscribed (more ranks than cores is the point on a small machine),
# as root when need be, over shared memory only (btl self,vader; no single-copy
# mechanism: containers often forbid the ptrace that CMA needs).
#   --recovery       mpirun --enable-recovery: the job outlives a dead rank
#   --expect-abort   the job must end with a failure status (mpirun ended it)
#   --expect TEXT    TEXT must be in the output
#   --refuse TEXT    TEXT must not be in the output
set -uo pipefail
mpiexec=$1 np=$2
shift 2
recovery=() abort=0 expect="" refuse=""
while [ $# -gt 0 ]; do
    case $1 in
    --recovery) recovery=(--enable-recovery); shift ;;
    --expect-abort) abort=1; shift ;;
    --expect) expect=$2; shift 2 ;;
    --refuse) refuse=$2; shift 2 ;;
    *) break ;;
    esac
done
root=()
[ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
out=$(mktemp "${TMPDIR:-/tmp}/executor-mpi.XXXXXX")
trap 'rm -f "$out" "$out.err"' EXIT
t0=$(date +%s)
"$mpiexec" "${root[@]}" --oversubscribe -np "$np" "${recovery[@]}" \
    --mca btl self,vader --mca btl_vader_single_copy_mechanism none \
    "$@" >"$out" 2>"$out.err"
rc=$?
secs=$(($(date +%s) - t0))
cat "$out"
cat "$out.err" >&2
cat "$out.err" >>"$out" # the checks below look at both
if [ -n "$expect" ] && ! grep -qF -- "$expect" "$out"; then
    echo "run.sh: '$expect' not in the output (status $rc, $secs s)" >&2
    exit 1
fi
if [ -n "$refuse" ] && grep -qF -- "$refuse" "$out"; then
    echo "run.sh: '$refuse' in the output (status $rc, $secs s)" >&2
    exit 1
fi
if [ "$abort" = 1 ]; then
    [ "$rc" -ne 0 ] || { echo "run.sh: the job was to be ended by mpirun, but exited 0" >&2; exit 1; }
    echo "run.sh: mpirun ended the job (status $rc) in $secs s, as expected" >&2
    exit 0
fi
[ "$rc" -eq 0 ] || { echo "run.sh: mpirun exited $rc after $secs s" >&2; exit "$rc"; }
exit 0
