#!/usr/bin/env bash
# executor-serve against hostile clients at full size, with figures: a body of
# 16 MB of quotes, a client that sends 16 MB of newlines and reads nothing
# (default options, and with --max-records raised so that the document runs),
# 20,000 connections that send a byte a second, and every admin trick (a reload
# from the public port, one smuggled inside a /classify, a spec naming a secret
# file, files that exist or not, a newline in a spec, 15 MB specs, a build that
# never returns, SIGTERM then). Meanwhile another client posts a record every
# 10 ms; its p50/p99/max latency is printed per case, with the server's RSS
# and descriptors. The client is bench/serve/hostile.py (Python's standard
# library); loopback only. Raises the descriptor limit (as root) for the
# connections.
#
# Usage: scripts/serve-hostile.sh [--connections N] [--seconds S] [--parts LIST]
#   --connections N  slow connections (default 20000)
#   --seconds S      how long they drip (default 15)
#   --parts LIST     of "quotes noreader slow admin" (default all)
# Environment: EXEC_SERVE_BUILD (build tree, default build/release),
# EXEC_SKIP_DEPS=1 (do not run scripts/deps.sh), EXEC_JOBS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
while [ $# -gt 0 ]; do
    case $1 in
    --connections | --seconds | --parts) args+=("$1" "$2"); shift ;;
    -h | --help) sed -n '2,19s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "serve-hostile.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
build=${EXEC_SERVE_BUILD:-build/release}
say() { printf 'serve-hostile: %s\n' "$*"; }
if [ "${EXEC_SKIP_DEPS:-0}" != 1 ]; then
    bash scripts/deps.sh >/dev/null || { say "scripts/deps.sh could not install the packages"; exit 1; }
fi
if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake --preset "$(basename "$build")" >/dev/null 2>&1 || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
say "building executor-serve and libwordtable.so in $build"
cmake --build "$build" --target executor-serve wordtable -j "${EXEC_JOBS:-2}" >/dev/null
# 20,000 client sockets here and as many in the server, plus spares.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
say "descriptor limit $(ulimit -n); load average $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
exec python3 bench/serve/hostile.py --build "$build" "${args[@]}"
