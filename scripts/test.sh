#!/usr/bin/env bash
# Runs every test: installs the missing Debian packages, then configures, builds and runs
# the whole suite in the default build, checks the installed library from an outside
# program (pkg-config and find_package), drives executor-serve under wrk, builds
# libexecutor_mpi and runs its tests under mpirun (3 ranks on this machine), runs the suite
# again under ASan+UBSan, runs the torture program for a bounded time in that build, runs
# the suite under TSan, builds everything with clang (warnings are errors there too) and
# runs the suites there but for those whose point is volume, runs the suites where valgrind finds what the sanitizers cannot under memcheck, runs
# cppcheck and clang-tidy, and fuzzes each libFuzzer target for a bounded time. Every
# test is followed by a leak check (no thread, fd, child or memfd mapping left). Stops at
# the first failure, and prints each step's time at the end. docs/reliability.md says what
# each step covers.
#
# Two lanes: the steps that check no timing and mostly use one core (static, fuzz,
# debian: cppcheck, clang-tidy, the fuzz build and the fuzzers, the package build and its
# install in a fresh root) run beside the others at nice 10, so they take the
# core the suites leave idle and yield it when a suite needs it; everything else runs one
# step after the other. EXEC_TEST_LANES=1 runs every step in order.
#
# Steps may also be named as arguments: bash scripts/test.sh asan torture.
#
# Environment:
#   EXEC_TEST_BUILDS  what to run when no argument names it (default:
#                     "default consumer serve mpi asan torture tsan clang valgrind static fuzz
#                     debian");
#                     any configure preset (default release debug asan tsan clang), and
#                     "consumer" (install the default build, build and run .ci/consumer),
#                     "mpi" (the mpi preset: Open MPI installed, EXEC_MPI=ON; its mpirun
#                     tests, ctest -L mpi, then .ci/consumer/mpi against the installed tree),
#                     "serve" (executor-serve under wrk: scripts/serve-bench.sh --short on
#                     the default build; fails on any wrong reply),
#                     "torture" (executor-torture in the asan build),
#                     "fuzz" (the fuzz preset: replay each target's corpus, then fuzz it),
#                     "valgrind" (the suites of the default build that valgrind adds to
#                     the sanitizers, under memcheck), "static" (cppcheck and clang-tidy
#                     over the library, libexecutor_mpi included), "debian" (the Debian
#                     packages: scripts/test-debian.sh, about 4 minutes)
#   EXEC_TEST_LANES   2 (default): static, fuzz and debian beside the rest, as above; 1: in order
#   EXEC_BUILD_ROOT   where the build trees go (default: build, as build/<preset>)
#   EXEC_JOBS         parallel compile jobs (default: 2)
#   EXEC_CTEST_JOBS   tests run at once (default: 1; the suites use every core)
#   EXEC_CTEST_ARGS   more ctest arguments, e.g. "-R test_api" or "-E bench"
#   EXEC_TORTURE_SECONDS  the torture run's length, both backends together (default: 60)
#   EXEC_TORTURE_ARGS     more executor-torture options (default: "--skip known")
#   EXEC_FUZZ_SECONDS     fuzzing time per target (default: 30)
#   EXEC_SKIP_DEPS=1  do not run scripts/deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."

builds=${*:-${EXEC_TEST_BUILDS:-default consumer serve mpi asan torture tsan clang valgrind static fuzz debian}}
lanes=${EXEC_TEST_LANES:-2}
root=${EXEC_BUILD_ROOT:-build}
jobs=${EXEC_JOBS:-2}
ctest_jobs=${EXEC_CTEST_JOBS:-1}
read -r -a ctest_args <<<"${EXEC_CTEST_ARGS:-}"
summary=()
t_start=$(date +%s)
bg_pid=
bg_log=
bg_summary=

say() { printf 'test.sh: %s\n' "$*"; }
# Adds a line to the closing summary (and says it now).
note() {
    summary+=("$1")
    say "$1"
    [ -z "$bg_summary" ] || printf '%s\n' "$1" >>"$bg_summary"
}
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
    case " $builds " in *" fuzz "*) deps_args+=(--fuzz) ;; esac
    case " $builds " in *" valgrind "*) deps_args+=(--valgrind) ;; esac
    case " $builds " in *" static "*) deps_args+=(--static) ;; esac
    case " $builds " in *" mpi "* | *" static "*) deps_args+=(--mpi) ;; esac
    case " $builds " in *" debian "*) deps_args+=(--debian) ;; esac
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
    local preset=$1 dir=$root/$1 t0 t1 wrap=() sel=() log result
    t0=$(date +%s)
    say "$preset: configure and build"
    configure_build "$preset"
    t1=$(date +%s)
    case $preset in asan | tsan) wrap=("${norandom[@]}") ;; esac
    # clang: every target built with its warnings; the suites run but for those whose
    # point is volume (crash and kill counts, the torture program, the hostile clients,
    # the hooked copies), which the gcc builds ran plain and under both sanitizers.
    [ "$preset" != clang ] ||
        sel=(-E '^(hooked_|torture_)|^test_fork_(crash|kill|timeout)$|^test_serve_hostile$')
    say "$preset: ctest ${sel[*]}"
    log=$root/$preset.ctest.log
    if ! (cd "$dir" && "${wrap[@]}" ctest --output-on-failure --no-tests=ignore -j "$ctest_jobs" \
        "${sel[@]}" "${ctest_args[@]}") 2>&1 |
        tee "$log"; then
        fail "$preset: tests (log: $log)"
    fi
    result=$(grep -E 'tests passed|No tests were found' "$log" | tail -n1 || true)
    note "$preset: built in $((t1 - t0)) s; ${result:-no tests}; tests took $(($(date +%s) - t1)) s"
}

run_consumer() {
    local t0
    t0=$(date +%s)
    configure_build default
    say "consumer: install $root/default, build an outside program against it"
    bash .ci/consumer/check.sh "$root/default" || fail "consumer: outside program against the installed library"
    note "consumer: pkg-config (shared, static) and find_package (shared, static) ok in $(($(date +%s) - t0)) s"
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
    note "serve: wrk on threads and fork with 100 reloads each, and the inline baseline; every reply right; $(($(date +%s) - t0)) s"
}

# The suites where valgrind's memcheck adds to the sanitizers (reads of uninitialised
# memory, which neither ASan nor TSan sees) under it: those of the threads backend, the
# CSV path and executor-serve. Left out: the fork suites, since valgrind 3.19 lacks
# pidfd_open(), without which EXEC_FORK cannot start (the other suites skip their few
# EXEC_FORK cases under valgrind), test_limits (mostly such cases), and test_concurrency
# and test_backpressure: races are TSan's, valgrind runs one thread at a time, and the
# millions of records these two push for counts and RSS (about 4 of valgrind's 7 minutes)
# take the paths test_stream already takes there. The torture program, the bench and
# the README check are not suites. --fair-sched=yes hands the one running thread round
# in turn: without it a thread that waits for another may wait for seconds.
run_valgrind() {
    local t0 log=$root/valgrind.ctest.log result
    t0=$(date +%s)
    configure_build default
    say "valgrind: ctest -T memcheck in $root/default (test_*, not test_fork_*, test_limits, test_concurrency, test_backpressure)"
    if ! (cd "$root/default" && ctest -T memcheck --output-on-failure --no-tests=ignore \
        -R '^test_' -E '^test_(fork_|limits$|concurrency$|backpressure$)' \
        --overwrite MemoryCheckCommand="$(command -v valgrind)" \
        --overwrite "MemoryCheckCommandOptions=--fair-sched=yes --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite" \
        "${ctest_args[@]}") 2>&1 | tee "$log"; then
        fail "valgrind: tests (log: $log)"
    fi
    result=$(grep -E 'tests passed|No tests were found' "$log" | tail -n1 || true)
    note "valgrind: ${result:-no tests}; took $(($(date +%s) - t0)) s"
}

# cppcheck and clang-tidy over the library's sources (.clang-tidy says which checks,
# and why each one left out is), with the compile commands of the mpi preset (the
# default build and libexecutor_mpi: every library source), configured in a tree of its
# own so that it can run beside the mpi step: any finding fails the step.
run_static() {
    local t0 log=$root/static.log mpi_inc=()
    t0=$(date +%s)
    mkdir -p "$root"
    quiet "$root/static.configure.log" cmake --preset mpi -B "$root/static" ||
        fail "static: cmake configure (log: $root/static.configure.log)"
    for d in $(mpicc --showme:incdirs); do mpi_inc+=(-I "$d"); done
    say "static: cppcheck and clang-tidy over core/ backends/ records/"
    if ! cppcheck --enable=warning,performance,portability --std=c11 --inline-suppr -q \
        --error-exitcode=1 -I include -I core "${mpi_inc[@]}" -D_GNU_SOURCE -D__x86_64__ \
        --suppress=missingIncludeSystem core backends records >"$log" 2>&1; then
        cat "$log" >&2
        fail "static: cppcheck (log: $log)"
    fi
    if ! clang-tidy -p "$root/static" --quiet core/*.c backends/*.c backends/*/*.c records/*.c \
        >>"$log" 2>&1; then
        grep -E 'warning|error' "$log" | head -n 40 >&2
        fail "static: clang-tidy (log: $log)"
    fi
    note "static: cppcheck and clang-tidy clean; took $(($(date +%s) - t0)) s"
}

# libexecutor_mpi (the EXEC_MPI backend) in the mpi preset: its tests run under mpirun with
# 3 ranks on this one machine (ctest -L mpi: the suite, a rank killed mid-stream with and
# without --enable-recovery, executor-map --backend mpi against --backend threads), then
# an outside MPI program against the installed libraries (.ci/consumer/mpi/check.sh).
run_mpi() {
    local t0 t1 log=$root/mpi.ctest.log result
    t0=$(date +%s)
    say "mpi: configure and build (EXEC_MPI=ON)"
    configure_build mpi
    t1=$(date +%s)
    say "mpi: ctest -L mpi (mpirun -np 3 --oversubscribe)"
    if ! (cd "$root/mpi" && ctest --output-on-failure -L mpi "${ctest_args[@]}") 2>&1 |
        tee "$log"; then
        fail "mpi: tests (log: $log)"
    fi
    result=$(grep -E 'tests passed' "$log" | tail -n1 || true)
    [ -n "$result" ] || fail "mpi: no test ran (log: $log)"
    say "mpi: install $root/mpi, build an outside MPI program against it"
    bash .ci/consumer/mpi/check.sh "$root/mpi" || fail "mpi: outside program against the installed libexecutor_mpi"
    note "mpi: built in $((t1 - t0)) s; $result; outside program ok; took $(($(date +%s) - t1)) s"
}

# executor-torture in the asan build, for a bounded time; known library defects are
# skipped (--skip known, see tests/torture/main.c) so that everything else is checked.
run_torture() {
    local t0 dir=$root/asan log=$root/torture.log secs=${EXEC_TORTURE_SECONDS:-60} args
    read -r -a args <<<"${EXEC_TORTURE_ARGS:---skip known}"
    t0=$(date +%s)
    configure_build asan
    say "torture: $dir/tests/torture/executor-torture --duration $secs ${args[*]}"
    if ! "${norandom[@]}" "$dir/tests/torture/executor-torture" --duration "$secs" "${args[@]}" \
        2>&1 | tee "$log"; then
        fail "torture (log: $log; rerun with its --seed to draw the same rounds)"
    fi
    note "torture: $(grep -c 'lost=0 dup=0 wrong=0' "$log") backend(s) clean, $(sed -n 's/^executor-torture: \(seed [0-9]*\),.*/\1/p' "$log"); took $(($(date +%s) - t0)) s"
}

# Each libFuzzer target of the fuzz preset: its corpus replayed (ctest), then fuzzed for
# EXEC_FUZZ_SECONDS with the seed corpus as a start; new inputs go to the build tree,
# never into the repository. A crash stops the run with the input that caused it.
run_fuzz() {
    local t0 dir=$root/fuzz secs=${EXEC_FUZZ_SECONDS:-30} t bin opts log n=0
    t0=$(date +%s)
    configure_build fuzz
    say "fuzz: ctest (the seed corpora, regression inputs included)"
    (cd "$dir" && ctest --output-on-failure --no-tests=error) >"$root/fuzz.ctest.log" 2>&1 ||
        { tail -n 80 "$root/fuzz.ctest.log" >&2; fail "fuzz: corpus replay (log: $root/fuzz.ctest.log)"; }
    mkdir -p "$dir/artifacts"
    for bin in "$dir"/tests/fuzz/fuzz_*; do
        [ -x "$bin" ] && [ -f "$bin" ] || continue
        t=$(basename "$bin")
        opts=()
        if [ -f "tests/fuzz/$t.options" ]; then
            # OSS-Fuzz's format: "key = value" lines under [libfuzzer].
            while read -r line; do
                case $line in *=*) opts+=("-${line%%[ =]*}=${line##*[= ]}") ;; esac
            done <"tests/fuzz/$t.options"
        fi
        mkdir -p "$dir/corpus-work/$t"
        log=$root/$t.log
        say "fuzz: $t for $secs s ${opts[*]}"
        if ! "$bin" -max_total_time="$secs" -timeout=30 -rss_limit_mb=2560 -print_final_stats=1 \
            -artifact_prefix="$dir/artifacts/$t-" "${opts[@]}" \
            "$dir/corpus-work/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
            tail -n 60 "$log" >&2
            fail "fuzz: $t found a failure (log: $log; the input is in $dir/artifacts/: rerun it with '$bin FILE'; once fixed, add it to tests/fuzz/corpus/$t/)"
        fi
        n=$((n + 1))
    done
    [ "$n" -gt 0 ] || fail "fuzz: no fuzz target was built (the compiler lacks -fsanitize=fuzzer?)"
    note "fuzz: $n targets, $secs s each, nothing found; took $(($(date +%s) - t0)) s"
}

run_step() {
    case $1 in
    consumer) run_consumer ;;
    torture) run_torture ;;
    static) run_static ;;
    mpi) run_mpi ;;
    fuzz) run_fuzz ;;
    serve) run_serve ;;
    valgrind) run_valgrind ;;
    debian) EXEC_SKIP_DEPS=1 quiet "$root/debian.log" bash scripts/test-debian.sh ||
        fail "debian (log: $root/debian.log)"
        note "debian: $(tail -n1 "$root/debian.log" | sed 's/^test-debian.sh: //')" ;;
    *) run_build "$1" ;;
    esac
}

# The second lane: its steps in a subshell of their own at nice 10, output in a log,
# summary lines in a file; stopped if this shell stops first.
main=() side=()
for b in $builds; do
    case $lanes:$b in
    2:static | 2:fuzz | 2:debian) side+=("$b") ;;
    *) main+=("$b") ;;
    esac
done
if [ ${#side[@]} -gt 0 ]; then
    mkdir -p "$root"
    bg_log=$root/lane2.log
    : >"$root/lane2.summary"
    say "lane 2 (nice 10, beside the rest): ${side[*]}; its log: $bg_log"
    set -m # a process group of its own, so that it can be stopped whole
    (
        bg_summary=$root/lane2.summary
        summary=()
        renice -n 10 -p "$BASHPID" >/dev/null 2>&1 || true
        for b in "${side[@]}"; do run_step "$b"; done
    ) >"$bg_log" 2>&1 &
    bg_pid=$!
    set +m
    trap '[ -z "$bg_pid" ] || kill -- "-$bg_pid" 2>/dev/null || true' EXIT
fi
for b in "${main[@]}"; do run_step "$b"; done
if [ -n "$bg_pid" ]; then
    say "waiting for lane 2 (${side[*]})"
    if ! wait "$bg_pid"; then
        bg_pid=
        tail -n 80 "$bg_log" >&2
        fail "lane 2 (${side[*]}; log: $bg_log)"
    fi
    bg_pid=
    while IFS= read -r line; do summary+=("$line"); done <"$root/lane2.summary"
fi

say "all passed in $(($(date +%s) - t_start)) s:"
for line in "${summary[@]}"; do say "  $line"; done
