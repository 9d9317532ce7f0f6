#!/usr/bin/env bash
# executor-map --backend mpi (3 ranks, under mpirun through run.sh) against --backend threads
# on the CSV edge cases: the same rows (byte for byte with --ordered, as a multiset
# without), the same exit status, the same failure count on stderr.
#   map_vs_threads.sh RUN_SH MPIEXEC EXECUTOR_MAP PLUGIN_DIR DATA_DIR
set -uo pipefail
run_sh=$1 mpiexec=$2 map=$3 plugins=$4 data=$5
tmp=$(mktemp -d "${TMPDIR:-/tmp}/executor-mpi-map.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fails=0 cases=0

# The inputs. gen: quoted ids (a delimiter and doubled quotes inside), quoted text with
# a delimiter and a newline inside, CRLF and LF line ends, a CRLF header.
awk 'BEGIN {
    split("apple cat saw river pear owl Hammer plum blue DOG drill stone", w, " ");
    printf "id,text,extra\r\n"; s = 12345;
    for (i = 0; i < 20000; i++) {
        s = (s * 1103515245 + 12345) % 2147483648;
        if (s % 50 == 0) printf "\"id %u, \"\"q\"\"\",", i; else printf "%u,", i;
        q = s % 20 < 2; if (q) printf "\"";
        n = 1 + int(s / 256) % 6;
        for (k = 0; k < n; k++) {
            if (k) printf "%s", (q && k == 2) ? ",\n " : " ";
            printf "%s", w[1 + int(s / (4096 * (k + 1))) % 12];
        }
        if (q) printf "\"";
        printf ",%u%s", i * 7, (i % 3) ? "\n" : "\r\n";
    }
}' >"$tmp/gen.csv"
printf 'id,text\n1,apple pear\n\n2,cat\n\n\n3,"saw\r\ndrill"\n4,' >"$tmp/empty_lines.csv"
printf 'id;text\n1;apple\n"2;x";"cat;owl"\n3;saw\n' >"$tmp/semicolon.csv"
printf 'id,text\n1,apple\n2,a st"ray quote\n3,cat\n4,owl\n' >"$tmp/stray_quote.csv"
printf 'id,text\r\n' >"$tmp/header_only.csv"
printf '1,apple\n2,cat\n3,"unterminated\n' >"$tmp/unterminated.csv"
{ printf 'id,text\n1,apple\n2,'; head -c 70000 /dev/zero | tr '\0' 'a'; printf '\n3,cat\n'; } \
    >"$tmp/too_big.csv"

spec="table=$data/words.txt,column=text,id=id"
idx_spec="table=$data/words.txt,column=1,id=0"
cases_list=(
    "seed|$data/seed.csv|$spec|"
    "gen|$tmp/gen.csv|$spec|"
    "empty_lines|$tmp/empty_lines.csv|$spec|"
    "empty_lines_skipped|$tmp/empty_lines.csv|$spec|--skip-bad"
    "semicolon|$tmp/semicolon.csv|$spec|--delim ;"
    "stray_quote|$tmp/stray_quote.csv|$spec|"
    "stray_quote_skip|$tmp/stray_quote.csv|$spec|--skip-bad"
    "header_only|$tmp/header_only.csv|$spec|"
    "no_header|$tmp/unterminated.csv|$idx_spec|--no-header --skip-bad"
    "too_big|$tmp/too_big.csv|$spec|"
)

failed_line() { grep -Eo '[0-9]+ of [0-9]+ records failed|stopped at the malformed record' "$1" | sort; }

for c in "${cases_list[@]}"; do
    IFS='|' read -r name file sp extra <<<"$c"
    read -r -a more <<<"$extra"
    for order in --ordered ""; do
        cases=$((cases + 1))
        what="$name ${order:-unordered}"
        args=(--plugin "$plugins/libwordtable.so" --spec "$sp" --quiet "${more[@]}" $order "$file")
        "$map" --backend threads --workers 2 "${args[@]}" >"$tmp/threads.out" 2>"$tmp/threads.err"
        want=$?
        "$run_sh" "$mpiexec" 3 "$map" --backend mpi --workers 1 "${args[@]}" \
            >"$tmp/mpi.out" 2>"$tmp/mpi.err"
        got=$?
        cp "$tmp/mpi.out" "$tmp/mpi.rows"
        if [ -z "$order" ]; then
            sort "$tmp/threads.out" -o "$tmp/threads.out"
            sort "$tmp/mpi.rows" -o "$tmp/mpi.rows"
        fi
        problem=""
        [ "$got" -eq "$want" ] || problem="exit $got, threads $want"
        cmp -s "$tmp/threads.out" "$tmp/mpi.rows" || problem="$problem; rows differ"
        [ "$(failed_line "$tmp/threads.err")" = "$(failed_line "$tmp/mpi.err")" ] ||
            problem="$problem; failure counts differ"
        rows=$(wc -l <"$tmp/threads.out")
        if [ -n "$problem" ]; then
            echo "map_vs_threads: $what: FAILED: $problem"
            diff "$tmp/threads.out" "$tmp/mpi.rows" | head -n 5
            tail -n 5 "$tmp/mpi.err"
            fails=$((fails + 1))
        else
            echo "map_vs_threads: $what: $rows rows, exit $got: same as threads"
        fi
    done
done
echo "map_vs_threads: $((cases - fails)) of $cases cases the same"
[ "$fails" -eq 0 ]
