#!/usr/bin/env bash
# Python's multiprocessing.Pool, the libexecutor Python module and executor-map
# on the same job: the word-table classifier (examples/wordtable.c; written in
# Python in bench/python/wordtable_pool.py and wordtable_module.py) over one
# generated CSV file. Runs the plain Python loop, Pool.imap_unordered with
# chunksize 1 (the default) and a tuned chunksize, the module with the
# classifier written in Python on forked workers (file to file, and results
# iterated in Python), the module with the C plugin (the same two ways), and
# executor-map with --backend threads and --backend fork; checks that every
# output holds the same rows (sorted, compared: exit 1 when they differ) and
# prints rows/s of each as a markdown table, then how the module's figures
# stand against its targets, then each worker's private memory with a large
# Python context with and without gc.freeze() (bench/python/fork_memory.py).
# Each figure is the wall time of the whole command (interpreter start-up and
# table build included), with the file in the page cache; with --repeat N,
# the median of N runs.
#
# Usage: scripts/bench-python.sh [--rows N] [--workers N] [--chunksize C] [--repeat N]
#                                [--memory-mb M]
#   --rows N       rows in the CSV file (default 1000000), 8 words each
#   --workers N    pool processes and executor workers (default 2)
#   --chunksize C  the tuned chunksize (default 1000)
#   --repeat N     runs of each command; the median is shown (default 1)
#   --memory-mb M  the Python context of the memory figures (default 200; 0: none)
#
# Installs what is missing (scripts/deps.sh) and builds executor-map,
# libwordtable.so and the Python module in build/release, as scripts/bench.sh
# does. Environment: EXEC_SKIP_DEPS=1 (install nothing), PYTHON (default
# /usr/bin/python3, the interpreter the module is built for), EXEC_JOBS
# (parallel compile jobs, default: the number of CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bench-python.sh: %s\n' "$*" >&2; }
usage() { sed -n '18,24s/^# \{0,1\}//p' "$0"; }
# Runs a command with its output in a log; shows the log's end only if it fails.
quiet() {
    local log
    log=$(mktemp "${TMPDIR:-/tmp}/bench-python.XXXXXX")
    if ! "$@" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}
count() { [[ $2 =~ ^[1-9][0-9]*$ ]] || { say "$1 wants a positive number, not '$2'"; exit 2; }; }

rows=1000000
workers=2
chunk=1000
repeat=1
memory=200
while [ $# -gt 0 ]; do
    case $1 in
    --rows) count "$1" "${2-}"; rows=$2; shift 2 ;;
    --workers) count "$1" "${2-}"; workers=$2; shift 2 ;;
    --chunksize) count "$1" "${2-}"; chunk=$2; shift 2 ;;
    --repeat) count "$1" "${2-}"; repeat=$2; shift 2 ;;
    --memory-mb) [[ ${2-} =~ ^[0-9]+$ ]] || { say "--memory-mb wants a number"; exit 2; }
        memory=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) say "unknown argument: $1"; usage >&2; exit 2 ;;
    esac
done

# 1. Packages and the build.
[ "${EXEC_SKIP_DEPS:-0}" = 1 ] || scripts/deps.sh
py=${PYTHON:-/usr/bin/python3}
[ -x "$py" ] || py=python3
command -v "$py" >/dev/null || { say "$py not found (install python3)"; exit 1; }
command -v cmake >/dev/null || { say "cmake not found (install cmake)"; exit 1; }
build=build/release
if [ ! -f "$build/CMakeCache.txt" ]; then
    say "configuring a Release build in $build"
    if [ -f CMakePresets.json ] && cmake --list-presets 2>/dev/null | grep '"release"' >/dev/null; then
        quiet cmake --preset release
    else
        quiet cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
    fi
fi
say "building executor-map, libwordtable.so and the Python module"
quiet cmake --build "$build" --target executor-map wordtable _libexecutor \
    -j "${EXEC_JOBS:-$(nproc)}" ||
    { say "build failed (the Python module needs python3-dev: scripts/deps.sh)"; exit 1; }
export PYTHONPATH=$PWD/$build/python:$PWD/python${PYTHONPATH:+:$PYTHONPATH}
# Every Python command writes a line per row: with PYTHONUNBUFFERED in the
# environment that would be a system call per row, which is not what users run.
unset PYTHONUNBUFFERED

# 2. The data, in a directory of its own that goes at the end.
dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-python.XXXXXX")
trap 'rm -rf "$dir"' EXIT
table=tests/data/words.txt
say "generating $rows rows"
"$py" bench/python/make_rows.py "$rows" "$dir/rows.csv"
cat "$dir/rows.csv" >/dev/null # into the page cache, for every command alike

# 3. Every variant, timed; each writes its results on stdout, to a file of its
# own. With --repeat, round after round of every variant (so that a machine
# that gets busier or quieter meanwhile weighs on each alike), then medians.
pool=("$py" bench/python/wordtable_pool.py --table "$table")
mod=("$py" bench/python/wordtable_module.py --table "$table" --workers "$workers"
     --plugin "$build/examples/libwordtable.so")
map=("$build/programs/executor-map" --plugin "$build/examples/libwordtable.so"
     --spec "table=$table,column=text,id=id" --workers "$workers" --quiet)
names=(py-loop py-pool-chunk1 "py-pool-chunk$chunk" mod-fork-file mod-fork-iter mod-plugin-file
       mod-plugin-iter map-threads map-fork)
variant() {
    case $1 in
    py-loop) "${pool[@]}" --workers 0 "$dir/rows.csv" ;;
    py-pool-chunk*) "${pool[@]}" --workers "$workers" --chunksize "${1#py-pool-chunk}" "$dir/rows.csv" ;;
    mod-*) "${mod[@]}" --mode "${1#mod-}" "$dir/rows.csv" ;;
    map-*) "${map[@]}" --backend "${1#map-}" "$dir/rows.csv" ;;
    esac
}
declare -A runs
for ((k = 1; k <= repeat; k++)); do
    for name in "${names[@]}"; do
        say "running $name ($k of $repeat)"
        t0=$(date +%s.%N)
        if ! variant "$name" >"$dir/$name.out"; then
            say "$name failed"
            exit 1
        fi
        t1=$(date +%s.%N)
        runs[$name]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') "
    done
done
secs=()
for name in "${names[@]}"; do
    # shellcheck disable=SC2086 # one figure per word
    secs+=("$(printf '%s\n' ${runs[$name]} | sort -g | awk '{ v[NR] = $1 } END {
        printf "%.3f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')")
done

# 4. The same rows from each: one per input row, equal once sorted.
LC_ALL=C sort "$dir/py-loop.out" >"$dir/want"
n=$(wc -l <"$dir/want")
if [ "$n" -ne "$rows" ]; then
    say "py-loop wrote $n rows for $rows input rows"
    exit 1
fi
for name in "${names[@]}"; do
    LC_ALL=C sort "$dir/$name.out" >"$dir/got"
    if ! cmp -s "$dir/want" "$dir/got"; then
        say "MISMATCH: $name's rows differ from the Python loop's (sorted; < loop, > $name):"
        diff "$dir/want" "$dir/got" | head -n 10 >&2
        exit 1
    fi
done

# 5. The table.
cpus=$(nproc)
echo "$rows rows of 8 words, $workers workers, $cpus CPUs; $("$py" --version 2>&1);" \
     "every output checked equal to the Python loop's (sorted);" \
     "$([ "$repeat" -gt 1 ] && echo "median of $repeat runs" || echo "one run")"
echo
echo "| command | workers | seconds | rows/s | x Python loop |"
echo "|---|---|---|---|---|"
declare -A sec
for i in "${!names[@]}"; do
    name=${names[$i]}
    sec[$name]=${secs[$i]}
    case $name in
    py-loop) what="Python loop: csv.DictReader, classify, write"; w=1 ;;
    py-pool-chunk*) what="Python \`Pool.imap_unordered\`, chunksize ${name#py-pool-chunk}"; w=$workers ;;
    mod-fork-file) what="module, classifier in Python on fork: \`map_file(src, dst)\`"; w=$workers ;;
    mod-fork-iter) what="module, classifier in Python on fork: results iterated in Python"; w=$workers ;;
    mod-plugin-file) what="module, C plugin: \`libexecutor.map_file()\`"; w=$workers ;;
    mod-plugin-iter) what="module, C plugin: results iterated in Python"; w=$workers ;;
    map-threads) what="\`executor-map --backend threads\`"; w=$workers ;;
    map-fork) what="\`executor-map --backend fork\`"; w=$workers ;;
    esac
    awk -v what="$what" -v w="$w" -v s="${secs[$i]}" -v base="${secs[0]}" -v n="$rows" \
        'BEGIN { printf "| %s | %s | %.2f | %.0f | %.1f |\n", what, w, s, n / s, base / s }'
done

# 6. The module's targets (2 workers on 2 cores): the classifier in Python on
# fork against the loop and the tuned pool, the plugin against executor-map
# (the same backend: threads, the plugin's own choice), results in Python.
echo
awk -v loop="${sec[py-loop]}" -v pool="${sec[py-pool-chunk$chunk]}" \
    -v ff="${sec[mod-fork-file]}" -v pf="${sec[mod-plugin-file]}" \
    -v pi="${sec[mod-plugin-iter]}" -v fi="${sec[mod-fork-iter]}" -v map="${sec[map-threads]}" \
    -v n="$rows" -v c="$chunk" 'BEGIN {
    printf "targets: classifier in Python on fork, file to file: %.2fx the Python loop (>= 1.8),", loop / ff
    printf " %.2fx Pool chunksize %d (>= 1.6); iterated: %.2fx the loop\n", pool / ff, c, loop / fi
    printf "targets: C plugin file to file: %.2fx executor-map --backend threads (>= 0.9);", map / pf
    printf " results iterated in Python: %.0f rows/s (>= 1,000,000)\n", n / pi }'

# 7. Memory: each worker's private pages with a large Python context.
if [ "$memory" -gt 0 ]; then
    echo
    say "memory: a ${memory} MB Python context, with and without gc.freeze()"
    "$py" bench/python/fork_memory.py --size-mb "$memory" --workers "$workers"
fi
