#!/usr/bin/env bash
# executor-serve under load from wrk, a client nobody here wrote, on loopback.
# Every reply's body is checked (bench/serve/check.lua: records whose answer
# is known); the run fails on any wrong body, any status other than 200 and
# the deliberate 503s (counted apart), any dropped connection, a reload that
# does not answer as it should, or a server that does not exit 0 on SIGTERM.
#
# Usage: scripts/serve-bench.sh [--short] [--duration S] [--connections N] [--out DIR]
#   --short          the CI run: light records, documents among them, 100 reloads
#                    under load on threads and fork (one refused by the fork
#                    canary), a few seconds each; figures mean little there
#   (default)        the figures for the README: requests/s and p50/p99 for the
#                    inline baseline, threads and fork, at light and ~50 us
#                    records; the same at 80% of each one's maximum; and the
#                    reload runs
#   --duration S     seconds per measured run (default 10; --short: 3)
#   --connections N  wrk connections for the maximum runs (default 50)
#   --worker-nice N  executor-serve --worker-nice for threads and fork (default:
#                    the server's own default)
#   --batch N        executor-serve --batch for threads and fork (default: the
#                    server's own default)
#   --parts LIST     of the default run, only these (default "max crossover reloads":
#                    max = maximum and 80% at light and ~50 us records)
#   --out DIR        where serve.csv goes (default bench-out)
# Environment: EXEC_SERVE_BUILD (build tree, default build/release),
# EXEC_SKIP_DEPS=1 (do not run scripts/deps.sh), EXEC_JOBS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

short=0
duration=
conns=50
nice=
batch=
parts="max crossover reloads"
out=bench-out
while [ $# -gt 0 ]; do
    case $1 in
    --short) short=1 ;;
    --duration) duration=$2; shift ;;
    --connections) conns=$2; shift ;;
    --worker-nice) nice=$2; shift ;;
    --batch) batch=$2; shift ;;
    --parts) parts=$2; shift ;;
    --out) out=$2; shift ;;
    -h | --help) sed -n '2,30s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "serve-bench.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
duration=${duration:-$([ $short = 1 ] && echo 3 || echo 10)}
build=${EXEC_SERVE_BUILD:-build/release}
say() { printf 'serve-bench: %s\n' "$*"; }
die() { say "FAILED: $*" >&2; exit 1; }

if [ "${EXEC_SKIP_DEPS:-0}" != 1 ]; then
    bash scripts/deps.sh || die "scripts/deps.sh could not install the packages"
fi
for t in wrk curl; do command -v $t >/dev/null || die "$t not found (scripts/deps.sh installs it)"; done
if [ ! -f "$build/CMakeCache.txt" ]; then
    say "configuring $build"
    cmake --preset "$(basename "$build")" >/dev/null 2>&1 || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
say "building executor-serve and libwordtable.so in $build"
cmake --build "$build" --target executor-serve wordtable -j "${EXEC_JOBS:-2}" >/dev/null ||
    die "build failed"
ulimit -n 8192 2>/dev/null || true

tmp=$(mktemp -d "${TMPDIR:-/tmp}/serve-bench.XXXXXX")
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
table=tests/data/words.txt
spec_base="table=$table,column=text,id=id"

# start BACKEND SPEC_EXTRA: a server on a free port, with the server's default options
# (but --worker-nice and --batch when given) and an admin listener on loopback; sets
# port, admin_port and server_pid.
start() {
    local backend=$1 extra=$2 opts=()
    [ -n "$nice" ] && opts+=(--worker-nice "$nice")
    [ -n "$batch" ] && opts+=(--batch "$batch")
    : >"$tmp/server.err"
    "$build/programs/executor-serve" --plugin "$build/examples/libwordtable.so" \
        --spec "$spec_base$extra" --header id,text --listen 127.0.0.1:0 --backend "$backend" \
        --workers 2 "${opts[@]}" --window 4096 --start-timeout 2000 \
        --admin 127.0.0.1:0 --admin-spec 2>"$tmp/server.err" &
    server_pid=$!
    for _ in $(seq 200); do
        grep -q "listening on" "$tmp/server.err" && break
        kill -0 "$server_pid" 2>/dev/null || die "$backend server did not start: $(cat "$tmp/server.err")"
        sleep 0.05
    done
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/server.err")
    admin_port=$(sed -n 's/.*admin on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/server.err")
    [ -n "$port" ] && [ -n "$admin_port" ] ||
        die "$backend server did not say its ports: $(cat "$tmp/server.err")"
}

stop() {
    kill -TERM "$server_pid"
    local rc=0
    wait "$server_pid" || rc=$?
    server_pid=
    [ $rc = 0 ] || die "the server exited $rc on SIGTERM: $(tail -n 5 "$tmp/server.err")"
}

# The server's own request-duration histogram (cumulative buckets).
hist() {
    curl -s "http://127.0.0.1:$port/metrics" |
        sed -n 's/^executor_serve_request_duration_seconds_bucket{le="\([^"]*\)"} \([0-9]*\)/\1 \2/p'
}

# The server's p50 and p99 over a run, from two histograms: bucket bounds in us.
hist_pct() {
    paste -d' ' <(echo "$1") <(echo "$2" | cut -d' ' -f2) | awk '
        { le[NR] = $1; d[NR] = $3 - $2 } END {
            n = d[NR]; p50 = p99 = "-"
            for (i = 1; i <= NR; i++) {
                v = le[i] == "+Inf" ? "inf" : sprintf("%d", le[i] * 1e6 + 0.5)
                if (p50 == "-" && d[i] >= 0.50 * n) p50 = v
                if (p99 == "-" && d[i] >= 0.99 * n) p99 = v
            }
            print p50, p99 }'
}

# CPU time (jiffies) of the server's processes (threads included; fork: the zygotes and
# the workers, and the workers they reaped), and of everything on the machine.
ours() {
    local t=0 p
    for p in $server_pid $(pgrep -P "$server_pid") $(for z in $(pgrep -P "$server_pid"); do pgrep -P "$z"; done); do
        t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    # wrk, reaped by this shell.
    echo $((t + $(awk '{print $16 + $17}' /proc/$$/stat)))
}
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
ncpu=$(nproc)
hz=$(getconf CLK_TCK)
tries=$([ $short = 1 ] && echo 1 || echo 3) # the short run checks; its figures mean little

# wrk_run NAME CONNECTIONS SECONDS ARGS...: runs wrk, checks its CHECK line, sets the
# fields, and the server's own p50/p99 (srv_p50, srv_p99: histogram bucket bounds).
# The machine may be shared: a run during which other processes took more than 15% of
# the CPUs is run again (three times at most; the quietest counts), and the share is
# reported (others).
wrk_run() {
    local name=$1 c=$2 d=$3 h0 h1 o0 b0 t0 best=101 try share
    shift 3
    for try in $(seq "$tries"); do
        h0=$(hist) o0=$(ours) b0=$(busy) t0=$(date +%s%N)
        wrk -t1 -c"$c" -d"${d}s" --timeout 10s -s bench/serve/check.lua "http://127.0.0.1:$port/" \
            -- "$@" >"$tmp/wrk.out" 2>&1 || die "$name: wrk failed: $(cat "$tmp/wrk.out")"
        share=$(( ( ($(busy) - b0) - ($(ours) - o0) ) * 100 * 1000000000 /
                  ( ($(date +%s%N) - t0) * hz * ncpu / 1 ) ))
        [ "$share" -ge 0 ] || share=0
        h1=$(hist)
        check_line "$name"
        if [ "$share" -lt "$best" ]; then
            best=$share
            cp "$tmp/wrk.out" "$tmp/wrk.best"
            read -r srv_p50 srv_p99 <<<"$(hist_pct "$h0" "$h1")"
        fi
        [ "$share" -gt 15 ] || break
        say "  ($name: other processes took $share% of the CPUs; again)"
    done
    others=$best
    cp "$tmp/wrk.best" "$tmp/wrk.out"
    check_line "$name"
}

check_line() {
    local name=$1 line
    line=$(grep '^CHECK ' "$tmp/wrk.out") || die "$name: no CHECK line from wrk: $(cat "$tmp/wrk.out")"
    for k in requests rps p50_us p99_us ok wrong rejected other connect read write timeout; do
        printf -v "w_$k" '%s' "$(sed -n "s/.* $k=\([0-9]*\).*/\1/p" <<<"$line")"
    done
    if [ "$w_wrong" != 0 ] || [ "$w_other" != 0 ] || [ "$w_ok" = 0 ] ||
        [ $((w_connect + w_read + w_write + w_timeout)) != 0 ]; then
        die "$name: $line"
    fi
}

rows=()
srv_p50=- srv_p99=- others=-
record() { # NAME BACKEND WEIGHT CONNECTIONS
    rows+=("$1,$2,$3,$4,$w_rps,$w_p50_us,$w_p99_us,$srv_p50,$srv_p99,$w_ok,$w_rejected,$others")
    printf '  %-18s %-7s %-6s c=%-4s %7s req/s  p50 %5s us  p99 %6s us  (server: p50 <= %s, p99 <= %s)  503 %s  others %s%%\n' \
        "$1" "$2" "$3" "$4" "$w_rps" "$w_p50_us" "$w_p99_us" "$srv_p50" "$srv_p99" "$w_rejected" "$others"
}

# reloads N [FORK]: N reloads by POST /admin/reload while wrk runs (one of them a
# SIGHUP); on fork also one spec the canary must refuse. Writes what happened.
reloads() {
    local n=$1 fork=$2 ok=0 bad=0 code
    for i in $(seq "$n"); do
        if [ "$i" = $((n / 2)) ]; then
            local gen0
            gen0=$(curl -s "http://127.0.0.1:$port/healthz" | sed -n 's/.*generation \([0-9]*\).*/\1/p')
            kill -HUP "$server_pid"
            for _ in $(seq 500); do
                curl -s "http://127.0.0.1:$port/healthz" | grep "generation $((gen0 + 1))," >/dev/null && break
                sleep 0.01
            done
            curl -s "http://127.0.0.1:$port/healthz" | grep "generation $((gen0 + 1))," >/dev/null &&
                ok=$((ok + 1)) || bad=$((bad + 1))
            continue
        fi
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary '' \
            "http://127.0.0.1:$admin_port/admin/reload")
        [ "$code" = 200 ] && ok=$((ok + 1)) || bad=$((bad + 1))
        sleep 0.01
    done
    local refused=skipped
    if [ "$fork" = 1 ]; then
        code=$(curl -s -o "$tmp/refused" -w '%{http_code}' -X POST \
            --data-binary "$spec_base,init=crash" "http://127.0.0.1:$admin_port/admin/reload")
        refused=$code
    fi
    echo "ok=$ok bad=$bad refused=$refused" >"$tmp/reloads"
}

# A run with reloads: wrk until the reloads are done (at least the duration).
reload_run() {
    local backend=$1 extra=$2 weight=$3 docs=$4
    start "$backend" "$extra"
    wrk -t1 -c16 -d600s --timeout 10s -s bench/serve/check.lua "http://127.0.0.1:$port/" \
        -- "docs=$docs" >"$tmp/wrk.out" 2>&1 &
    local wrk_pid=$! t0=$SECONDS
    sleep 0.5
    reloads 100 "$([ "$backend" = fork ] && echo 1 || echo 0)"
    while [ $((SECONDS - t0)) -lt "$duration" ]; do sleep 0.2; done
    kill -INT "$wrk_pid"
    wait "$wrk_pid" || true
    srv_p50=- srv_p99=- others=-
    check_line "reloads $backend"
    local r
    r=$(cat "$tmp/reloads")
    grep -q "ok=100 bad=0" <<<"$r" || die "reloads on $backend: $r"
    if [ "$backend" = fork ]; then
        grep -q "refused=422" <<<"$r" || die "fork canary did not refuse init=crash: $r $(cat "$tmp/refused")"
        grep -q "reload refused: EXEC_EINIT" "$tmp/server.err" || die "no refusal in the server's log"
    fi
    curl -s "http://127.0.0.1:$port/healthz" | grep "generation 100," >/dev/null ||
        die "reloads on $backend: $(curl -s "http://127.0.0.1:$port/healthz")"
    stop
    record "100 reloads" "$backend" "$weight" 16
    say "  reloads on $backend: $r; wrong bodies $w_wrong, other statuses $w_other, dropped 0"
}

say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
if [ $short = 1 ]; then
    say "short run: light records, 1 request in 10 a document, 100 reloads under load"
    for b in threads fork; do reload_run "$b" "" light 10; done
    start inline ""
    wrk_run "inline baseline" 16 2 docs=10
    stop
    record "max" inline light 16
    say "all checks passed"
    exit 0
fi

part() { case " $parts " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# The figures: maximum, then 80% of it, per backend and weight.
part max && for weight in light 50us; do
    extra=$([ $weight = 50us ] && echo ",cost_us=50" || echo "")
    say "$weight records: the maximum (wrk, $conns connections), then 80% of it"
    for b in inline threads fork; do
        start "$b" "$extra"
        wrk_run "max $b $weight" "$conns" 2 # warm-up
        wrk_run "max $b $weight" "$conns" "$duration"
        record "max" "$b" "$weight" "$conns"
        max=$w_rps lat=$w_p50_us
        # 80%: connections with exponential pauses of 10 ms on average.
        target=$((max * 8 / 10))
        c=$(((target * (10000 + lat) + 500000) / 1000000))
        [ "$c" -ge 4 ] || c=4
        for _ in 1 2; do
            wrk_run "80% $b $weight" "$c" "$duration" think=10
            # Off by more than 5%: scale the connections once and run again.
            if [ $((w_rps * 100)) -lt $((target * 95)) ] || [ $((w_rps * 100)) -gt $((target * 105)) ]; then
                c=$(((c * target + w_rps / 2) / (w_rps > 0 ? w_rps : 1)))
                continue
            fi
            break
        done
        record "80% (of $max)" "$b" "$weight" "$c"
        stop
    done
done
# Where the workers start to pay: records of 1, 2 and 5 us, maximum only.
part crossover && say "records of 1, 2 and 5 us: the maximum"
part crossover && for us in 1 2 5; do
    for b in inline threads fork; do
        start "$b" ",cost_us=$us"
        wrk_run "max $b ${us}us" "$conns" 1
        wrk_run "max $b ${us}us" "$conns" $(((duration + 1) / 2))
        record "max" "$b" "${us}us" "$conns"
        stop
    done
done
part reloads && say "100 reloads under load (~50 us records)"
part reloads && for b in threads fork; do reload_run "$b" ",cost_us=50" 50us 0; done

mkdir -p "$out"
{
    echo "run,backend,weight,connections,rps,p50_us,p99_us,server_p50_le_us,server_p99_le_us,ok,rejected_503,others_cpu_pct"
    printf '%s\n' "${rows[@]}"
} >"$out/serve.csv"
say "every reply checked: no wrong body, no unexpected status, no dropped connection"
say "figures in $out/serve.csv; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
