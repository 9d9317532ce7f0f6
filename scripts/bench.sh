#!/usr/bin/env bash
# The main job: libexecutor against the pools users would write instead.
# Installs what is missing (Debian 12, as root or through sudo), builds
# executor-bench in a Release build (build/release) and runs it. Arguments go
# to executor-bench: e.g. scripts/bench.sh --quick, or --weight 300,5000
# --workers 2, or --file data.csv; scripts/bench.sh --help lists them.
# Results land in ./bench-out (the table, results.csv, efficiency.png).
#
# Environment:
#   EXEC_SKIP_DEPS=1  do not install packages
#   EXEC_JOBS         parallel compile jobs (default: the number of CPUs)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bench.sh: %s\n' "$*" >&2; }
# Runs a command with its output in a log; shows the log's end only if it fails.
quiet() {
    local log
    log=$(mktemp "${TMPDIR:-/tmp}/executor-bench.XXXXXX")
    if ! "$@" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

# 1. Packages.
if [ "${EXEC_SKIP_DEPS:-0}" != 1 ]; then
    if [ -x scripts/deps.sh ]; then
        scripts/deps.sh
    else
        pkgs=(build-essential cmake pkg-config liburcu-dev libck-dev libcmocka-dev
              libglib2.0-dev libtbb-dev gnuplot-nox libpcre2-dev liblua5.4-dev)
        missing=()
        for p in "${pkgs[@]}"; do
            st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
            [ "$st" = installed ] || missing+=("$p")
        done
        if [ ${#missing[@]} -gt 0 ]; then
            sudo=()
            [ "$(id -u)" -eq 0 ] || sudo=(sudo)
            say "installing ${missing[*]}"
            export DEBIAN_FRONTEND=noninteractive
            quiet "${sudo[@]}" apt-get update -qq
            quiet "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
        fi
    fi
fi
command -v cmake >/dev/null || { say "cmake not found (install cmake)"; exit 1; }

# 2. Configure: the release preset where this cmake reads presets, else by hand.
build=build/release
configure() {
    if [ -f CMakePresets.json ] && cmake --list-presets 2>/dev/null | grep '"release"' >/dev/null; then
        quiet cmake --preset release
    else
        quiet cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
    fi
}
say "configuring a Release build in $build"
if ! configure; then
    # A tree left by another source directory or generator: start it afresh.
    say "configure failed; retrying with a fresh $build/CMakeCache.txt"
    rm -rf "$build/CMakeCache.txt" "$build/CMakeFiles"
    configure || { say "configure failed"; exit 1; }
fi

# 3. Build only what the benchmark needs.
jobs=${EXEC_JOBS:-$(nproc 2>/dev/null || echo 2)}
say "building executor-bench"
quiet cmake --build "$build" --target executor-bench -j "$jobs" || { say "build failed"; exit 1; }

# 4. Run it.
say "running: $build/bench/executor-bench $*"
exec "$build/bench/executor-bench" "$@"
