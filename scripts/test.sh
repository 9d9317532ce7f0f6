#!/usr/bin/env bash
# Runs every test: installs the missing Debian packages, then configures, builds and runs
# the whole suite in the default build, checks the installed library from an outside
# program (pkg-config and find_package), runs the suite again under ASan+UBSan and under
# TSan, and once more built with clang (warnings are errors there too). Stops at the first
# failure.
#
# Environment:
#   EXEC_TEST_BUILDS  what to run, in order (default: "default consumer serve asan tsan clang");
#                     any configure preset (default release debug asan tsan clang), and
#                     "consumer" (install the default build, build and run .ci/consumer),
#                     "serve" (executor-serve under wrk: scripts/serve-bench.sh --short on
#                     the default build; fails on any wrong reply),
#                     "valgrind" (the default build's tests under valgrind; slow, not run
#                     unless asked for)
#   EXEC_BUILD_ROOT   where the build trees go (default: build, as build/<preset>)
#   EXEC_JOBS         parallel compile jobs (default: 2)
#   EXEC_CTEST_JOBS   tests run at once (default: 1; the suites use every core)
#   EXEC_CTEST_ARGS   more ctest arguments, e.g. "-R test_api" or "-E bench"
#   EXEC_SKIP_DEPS=1  do not run scripts/deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."

builds=${EXEC_TEST_BUILDS:-default consumer serve asan tsan clang}
root=${EXEC_BUILD_ROOT:-build}
jobs=${EXEC_JOBS:-2}
ctest_jobs=${EXEC_CTEST_JOBS:-1}
read -r -a ctest_args <<<"${EXEC_CTEST_ARGS:-}"
summary=()

say() { printf 'test.sh: %s\n' "$*"; }
fail() {
    say "FAILED: $*" >&2
    for line in "${summary[@]}"; do say "$line"; done
    exit 1
}
# Runs a command with its output in a log; shows the log's end only if it fails.
quiet() {
    local log=$1
    shift
    if ! "$@" >"$log" 2>&1; then
        tail -n 80 "$log" >&2
        return 1
    fi
}

if [ "${EXEC_SKIP_DEPS:-0}" != 1 ]; then
    deps_args=()
    case " $builds " in *" clang "*) deps_args+=(--clang) ;; esac
    case " $builds " in *" valgrind "*) deps_args+=(--valgrind) ;; esac
    bash scripts/deps.sh "${deps_args[@]}" || fail "scripts/deps.sh could not install the packages"
fi

# TSan maps its shadow at fixed addresses; with a high mmap ASLR entropy (vm.mmap_rnd_bits
# above 28, common on 6.x kernels) it dies at start. Sanitized runs go without ASLR when
# the system allows it.
norandom=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
    norandom=(setarch "$(uname -m)" -R)
else
    bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)
    [ "$bits" -le 28 ] ||
        say "warning: vm.mmap_rnd_bits=$bits and setarch -R is not allowed: TSan may fail to start" >&2
fi

# Sanitizer settings for every test, also those defined outside tests/ (a test's own
# ENVIRONMENT property still wins). Settings already in the environment are kept.
export TSAN_OPTIONS=${TSAN_OPTIONS:-suppressions=$PWD/tests/tsan.supp halt_on_error=1 second_deadlock_stack=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1 halt_on_error=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

configure_build() {
    local preset=$1 dir=$root/$1
    mkdir -p "$root"
    quiet "$root/$preset.configure.log" cmake --preset "$preset" -B "$dir" ||
        fail "$preset: cmake configure (log: $root/$preset.configure.log)"
    quiet "$root/$preset.build.log" cmake --build "$dir" -j "$jobs" ||
        fail "$preset: build (log: $root/$preset.build.log)"
}

run_build() {
    local preset=$1 dir=$root/$1 t0 t1 wrap=() log result
    t0=$(date +%s)
    say "$preset: configure and build"
    configure_build "$preset"
    t1=$(date +%s)
    case $preset in asan | tsan) wrap=("${norandom[@]}") ;; esac
    say "$preset: ctest"
    log=$root/$preset.ctest.log
    if ! (cd "$dir" && "${wrap[@]}" ctest --output-on-failure --no-tests=ignore -j "$ctest_jobs" \
        "${ctest_args[@]}") 2>&1 |
        tee "$log"; then
        fail "$preset: tests (log: $log)"
    fi
    result=$(grep -E 'tests passed|No tests were found' "$log" | tail -n1 || true)
    summary+=("$preset: built in $((t1 - t0)) s; ${result:-no tests}; tests took $(($(date +%s) - t1)) s")
    say "${summary[-1]}"
}

run_consumer() {
    local t0
    t0=$(date +%s)
    configure_build default
    say "consumer: install $root/default, build an outside program against it"
    bash .ci/consumer/check.sh "$root/default" || fail "consumer: outside program against the installed library"
    summary+=("consumer: pkg-config (shared, static) and find_package (shared, static) ok in $(($(date +%s) - t0)) s")
    say "${summary[-1]}"
}

run_serve() {
    local t0 log=$root/serve.log
    t0=$(date +%s)
    configure_build default
    say "serve: executor-serve under wrk (scripts/serve-bench.sh --short)"
    if ! EXEC_SKIP_DEPS=1 EXEC_SERVE_BUILD=$root/default bash scripts/serve-bench.sh --short 2>&1 |
        tee "$log"; then
        fail "serve: load test with checked replies (log: $log)"
    fi
    summary+=("serve: wrk on threads and fork with 100 reloads each, and the inline baseline; every reply right; $(($(date +%s) - t0)) s")
    say "${summary[-1]}"
}

run_valgrind() {
    local t0 log=$root/valgrind.ctest.log result
    t0=$(date +%s)
    configure_build default
    say "valgrind: ctest -T memcheck in $root/default"
    if ! (cd "$root/default" && ctest -T memcheck --output-on-failure --no-tests=ignore \
        --overwrite MemoryCheckCommand="$(command -v valgrind)" \
        --overwrite "MemoryCheckCommandOptions=--error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite" \
        "${ctest_args[@]}") 2>&1 | tee "$log"; then
        fail "valgrind: tests (log: $log)"
    fi
    result=$(grep -E 'tests passed|No tests were found' "$log" | tail -n1 || true)
    summary+=("valgrind: ${result:-no tests}; took $(($(date +%s) - t0)) s")
    say "${summary[-1]}"
}

for b in $builds; do
    case $b in
    consumer) run_consumer ;;
    serve) run_serve ;;
    valgrind) run_valgrind ;;
    *) run_build "$b" ;;
    esac
done

say "all passed:"
for line in "${summary[@]}"; do say "  $line"; done
