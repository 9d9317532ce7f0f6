#!/usr/bin/env bash
# Installs a configured and built tree into a temporary prefix, checks the commands it
# installs, then builds the consumer against the installed copy with pkg-config (shared,
# then --static) and with find_package(executor) (shared and static), and runs each program.
# Usage: .ci/consumer/check.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: check.sh BUILD_DIR}" && pwd)
cc=${CC:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/executor-consumer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

step() { printf '  consumer: %s\n' "$*"; }
run() {
    local log=$tmp/log
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "consumer check FAILED at: $*" >&2
        exit 1
    fi
}

run cmake --install "$build" --prefix "$prefix"
pcdir=$(dirname "$(find "$prefix" -name executor.pc | head -n1)")
libdir=$(dirname "$pcdir")
sos=("$libdir"/libexecutor.so.*.*.*)
for f in "$prefix/include/executor.h" "$prefix/include/executor_records.h" "$libdir/libexecutor.a" "$libdir/libexecutor.so" "${sos[0]}" \
    "$libdir/cmake/executor/executorConfig.cmake" "$libdir/cmake/executor/executorConfigVersion.cmake"; do
    [ -f "$f" ] || { echo "consumer check FAILED: not installed: $f" >&2; exit 1; }
done
# The commands: installed in bin/, each with its manual.
for cmd in executor-map executor-serve; do
    [ -x "$prefix/bin/$cmd" ] || { echo "consumer check FAILED: not installed: bin/$cmd" >&2; exit 1; }
    # Whole output first: grep -q on a pipe would quit early and SIGPIPE a long --help.
    help=$(LD_LIBRARY_PATH=$libdir "$prefix/bin/$cmd" --help) ||
        { echo "consumer check FAILED: $cmd --help exited $?" >&2; exit 1; }
    [[ $help == "usage: $cmd "* ]] ||
        { echo "consumer check FAILED: $cmd --help does not start with its usage line" >&2; exit 1; }
done
step "commands: bin/executor-map and bin/executor-serve, --help ok"
# The shared library exports the public API (exec_ names) and, of the internal exec__
# names, only the backend seam's calls (EXEC__SEAM in core/exec_internal.h), which a backend
# in a library of its own (libexecutor_mpi) makes.
so=${sos[0]}
seam=$(sed -n 's/^EXEC__SEAM [^(]*[ *]\(exec__[a-z_0-9]*\)(.*/\1/p' "$here/../../core/exec_internal.h" |
    sort | tr '\n' ' ')
[ -n "$seam" ] || { echo "consumer check FAILED: no EXEC__SEAM calls found in core/exec_internal.h" >&2; exit 1; }
# (Symbols without their version, exec_create@@EXECUTOR_0; type A: the version nodes.)
stray=$(nm -D --defined-only "$so" | awk -v seam=" $seam" '$2 != "A" { sub(/@.*/, "", $3) }
    $2 != "A" && ($3 !~ /^exec_/ || ($3 ~ /^exec__/ && index(seam, " " $3 " ") == 0)) {print $3}')
[ -z "$stray" ] || { echo "consumer check FAILED: $so exports non-API symbols: $stray" >&2; exit 1; }
step "exports: $(nm -D --defined-only "$so" | grep -c ' exec_[^_]') exec_ symbols and $(wc -w <<<"$seam") seam calls, nothing else"

export PKG_CONFIG_PATH=$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
warn=(-std=c11 -Wall -Wextra -Werror)

# pkg-config, shared library.
read -r -a flags <<<"$(pkg-config --cflags --libs executor)"
run "$cc" "${warn[@]}" -o "$tmp/pc_shared" "$here/consumer.c" "${flags[@]}" -Wl,-rpath,"$libdir"
[[ $(ldd "$tmp/pc_shared") == *"$libdir/libexecutor.so"* ]] ||
    { echo "consumer check FAILED: pc_shared does not use the installed libexecutor.so" >&2; exit 1; }
run "$tmp/pc_shared"
step "pkg-config (shared): ok"

# pkg-config --static: libexecutor.a plus what Requires.private/Libs.private bring.
read -r -a flags <<<"$(pkg-config --static --cflags --libs executor)"
flags=("${flags[@]/#-lexecutor/-l:libexecutor.a}")
run "$cc" "${warn[@]}" -o "$tmp/pc_static" "$here/consumer.c" "${flags[@]}"
if [[ $(ldd "$tmp/pc_static") == *libexecutor* ]]; then
    echo "consumer check FAILED: pc_static links libexecutor.so" >&2
    exit 1
fi
run "$tmp/pc_static"
step "pkg-config --static: ok"

# The installed headers from C++: extern "C" names link against the C library.
if command -v "${CXX:-c++}" >/dev/null; then
    cat >"$tmp/cxx.cc" <<'CXX'
#include <executor_records.h>
#include <cstring>
int main() {
    exec_field_t f;
    return std::strcmp(exec_err_name(EXEC_EOF), "EXEC_EOF") != 0 ||
           exec_csv_field("a,b", 3, 0, 1, &f, NULL, 0) != 0;
}
CXX
    read -r -a flags <<<"$(pkg-config --cflags --libs executor)"
    run "${CXX:-c++}" -std=c++11 -Wall -Wextra -pedantic -Werror -o "$tmp/cxx" "$tmp/cxx.cc" \
        "${flags[@]}" -Wl,-rpath,"$libdir"
    run "$tmp/cxx"
    step "C++ program against the headers: ok"
fi

# find_package(executor): executor::executor and executor::executor_static.
run cmake -S "$here" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_C_FLAGS="${warn[*]}" -DCMAKE_BUILD_TYPE=Release
run cmake --build "$tmp/cmake" -j "${EXEC_JOBS:-2}"
if [[ $(ldd "$tmp/cmake/consumer_static") == *libexecutor* ]]; then
    echo "consumer check FAILED: consumer_static links libexecutor.so" >&2
    exit 1
fi
run "$tmp/cmake/consumer_shared"
run "$tmp/cmake/consumer_static"
step "find_package(executor) (shared and static): ok"
