# Sums `perf script -F pid,tid,period,ip,sym,dso` lines (cpu-clock: a
# sample's period is CPU ns) into CPU ns a record, by who ran and what ran.
# Set by scripts/perf-paths.sh: pid (the bench), recs (records sampled),
# what, windows, lines, freq.

function what_of(sym, dso) {
    if (dso ~ /kernel\.kallsyms/)
        return "kernel"
    if (dso ~ /libexecutor|libck|liburcu/ || sym ~ /^(exec_|exec__|fk_|thr_|smap_|src_|rec_|ck_|urcu)/)
        return "libexecutor"
    if (sym ~ /^rr_/)
        return "bench callbacks"
    if (dso ~ /pcre2|lua|perf-[0-9]+\.map|\[JIT\]|\[unknown\]/ || sym ~ /^(rx_|rl_|real_|lua)/)
        return "workload"
    if (dso ~ /libc\.so|libm\.so/)
        return "libc"
    if (dso ~ /gomp/)
        return "OpenMP runtime"
    return "other"
}

{
    split($1, id, "/")
    who = id[1] != pid ? "workers" : (id[2] == pid ? "caller" : "threads")
    dso = $NF
    gsub(/^\(|\)$/, "", dso)
    sym = $4
    for (i = 5; i < NF; i++)
        sym = sym " " $i
    if (sym == "[unknown]")
        sym = "[unknown] " (dso ~ /map$|JIT/ ? "(JIT code)" : "(" dso ")")
    w = what_of(sym, dso)
    ns[who, w] += $2
    ns[who, "all"] += $2
    ns["all", w] += $2
    ns["all", "all"] += $2
    sy[who SUBSEP sym] += $2
}

END {
    if (recs <= 0 || ns["all", "all"] == 0) {
        print "  no samples"
        exit 1
    }
    printf "%s: %d timed runs x %d records, cpu-clock at %d Hz: CPU ns a record\n", what, windows, lines, freq
    split("caller threads workers all", cols, " ")
    split("workload libexecutor libc kernel bench_callbacks OpenMP_runtime other all", rows, " ")
    printf "  %-18s %9s %9s %9s %9s\n", "", "caller", "threads", "workers", "all"
    for (r = 1; r <= 8; r++) {
        row = rows[r]
        gsub(/_/, " ", row)
        if (row != "all" && ns["all", row] == 0)
            continue
        printf "  %-18s", row
        for (c = 1; c <= 4; c++)
            printf " %9.1f", ns[cols[c], row] / recs
        printf "\n"
    }
    # The heaviest symbols of each part, down to 2% of its time.
    for (c = 1; c <= 3; c++) {
        who = cols[c]
        if (ns[who, "all"] == 0)
            continue
        n = 0
        for (k in sy) {
            split(k, kk, SUBSEP)
            if (kk[1] == who) {
                n++
                name[n] = kk[2]
                val[n] = sy[k]
            }
        }
        for (i = 2; i <= n; i++) { # insertion sort, largest first
            v = val[i]; m = name[i]
            for (j = i - 1; j >= 1 && val[j] < v; j--) {
                val[j + 1] = val[j]; name[j + 1] = name[j]
            }
            val[j + 1] = v; name[j + 1] = m
        }
        line = ""
        for (i = 1; i <= n && i <= 8 && val[i] >= 0.02 * ns[who, "all"]; i++)
            line = line sprintf("%s%s %.1f", i > 1 ? ", " : "", name[i], val[i] / recs)
        printf "  %-8s top: %s\n", who, line
        delete name
        delete val
    }
}
