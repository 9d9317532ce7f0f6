#!/usr/bin/env bash
# Installs a configured and built tree that has libexecutor_mpi into a temporary prefix,
# then builds an outside MPI program against the installed copy with pkg-config executor_mpi
# (shared, then --static) and with find_package(executor) (executor::executor_mpi and
# executor::executor_mpi_static), and runs each under mpirun with 3 ranks (tests/mpi/run.sh).
# The shared build checks that libexecutor.so finds the backend in libexecutor_mpi.so; the
# static ones that linking the program's exec_mpi_* calls pulls the backend in.
# Usage: .ci/consumer/mpi/check.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../../.." && pwd)
build=$(cd "${1:?usage: check.sh BUILD_DIR}" && pwd)
cc=${CC:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/executor-consumer-mpi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

step() { printf '  consumer_mpi: %s\n' "$*"; }
run() {
    local log=$tmp/log
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "consumer_mpi check FAILED at: $*" >&2
        exit 1
    fi
}
mpirun3() { run "$src/tests/mpi/run.sh" "$(command -v mpiexec)" 3 --expect "all right" "$@"; }

run cmake --install "$build" --prefix "$prefix"
pcdir=$(dirname "$(find "$prefix" -name executor_mpi.pc | head -n1)")
libdir=$(dirname "$pcdir")
sos=("$libdir"/libexecutor_mpi.so.*.*.*)
for f in "$prefix/include/executor_mpi.h" "$libdir/libexecutor_mpi.a" "${sos[0]}"; do
    [ -f "$f" ] || { echo "consumer_mpi check FAILED: not installed: $f" >&2; exit 1; }
done
# libexecutor_mpi.so exports its API and the backend libexecutor's registry looks for.
stray=$(nm -D --defined-only "${sos[0]}" | awk '$2 != "A" { sub(/@.*/, "", $3) }
    $2 != "A" && $3 !~ /^exec_mpi_/ && $3 != "exec__mpi_backend" {print $3}')
[ -z "$stray" ] || { echo "consumer_mpi check FAILED: exports non-API symbols: $stray" >&2; exit 1; }
# libexecutor itself knows nothing of MPI.
if ldd "$libdir/libexecutor.so" | grep mpi >/dev/null; then
    echo "consumer_mpi check FAILED: libexecutor.so depends on MPI" >&2
    exit 1
fi
step "exports: exec_mpi_* and exec__mpi_backend; libexecutor.so without MPI"

export PKG_CONFIG_PATH=$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
warn=(-std=c11 -Wall -Wextra -Werror)
read -r -a flags <<<"$(pkg-config --cflags --libs executor_mpi)"
run "$cc" "${warn[@]}" -o "$tmp/pc_shared" "$here/consumer_mpi.c" "${flags[@]}" -Wl,-rpath,"$libdir"
mpirun3 "$tmp/pc_shared"
step "pkg-config executor_mpi (shared): ok"

read -r -a flags <<<"$(pkg-config --static --cflags --libs executor_mpi)"
flags=("${flags[@]/#-lexecutor_mpi/-l:libexecutor_mpi.a}")
flags=("${flags[@]/#-lexecutor/-l:libexecutor.a}")
run "$cc" "${warn[@]}" -o "$tmp/pc_static" "$here/consumer_mpi.c" "${flags[@]}"
if [[ $(ldd "$tmp/pc_static") == *libexecutor* ]]; then
    echo "consumer_mpi check FAILED: pc_static links a shared libexecutor" >&2
    exit 1
fi
mpirun3 "$tmp/pc_static"
step "pkg-config --static executor_mpi: ok"

run cmake -S "$here" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_C_FLAGS="${warn[*]}" -DCMAKE_BUILD_TYPE=Release
run cmake --build "$tmp/cmake" -j "${EXEC_JOBS:-2}"
mpirun3 "$tmp/cmake/consumer_mpi_shared"
mpirun3 "$tmp/cmake/consumer_mpi_static"
step "find_package(executor): executor::executor_mpi and executor::executor_mpi_static: ok"
