/*
 * executor-bench: the throughput report. One table block per weight x
 * workers, results.csv, the efficiency plot (plot.dat, plot.gp, gnuplot) and
 * the targets block.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static double ideal_of(const struct cell *c)
{
    return c->seq_rate.med * c->workers;
}

const char *fmt_rate(char *buf, size_t len, double r)
{
    if (r >= 1e6)
        snprintf(buf, len, "%.2fM", r / 1e6);
    else if (r >= 1e3)
        snprintf(buf, len, "%.1fk", r / 1e3);
    else
        snprintf(buf, len, "%.0f", r);
    return buf;
}

void print_cell(const struct opts *o, const struct dataset *d, int ci)
{
    int imutex = find_peer("mutex"), iglib = find_peer("glib");
    {
        const struct cell *c = &cells[ci];
        char b1[32], b2[32];
        say("\n== weight %.0f ns (measured %.0f ns/record sequential, CPU %.0f ns), %u worker%s, "
            "%zu records; ideal %s rec/s = %u x sequential %s\n",
            c->weight, c->seq_ns, c->seq_cpu_ns, c->workers, c->workers > 1 ? "s" : "", c->n,
            fmt_rate(b1, sizeof b1, ideal_of(c)), c->workers,
            fmt_rate(b2, sizeof b2, c->seq_rate.med));
        say("%-18s %9s  %5s  %-13s %7s %7s %7s %7s %7s  %s\n", "executor", "rec/s", "eff",
            "[min-max]", "ovh ns", "CPU ns", "+RSS MB", "x mutex", "x glib", "x best peer");
        for (int e = 0; e < NEXEC; e++) {
            if (!c->ran[e])
                continue;
            const struct stat3 *s = &c->rate[e];
            double ideal = ideal_of(c);
            double ovh = (1.0 / s->med - 1.0 / ideal) * c->workers * 1e9;
            char xm[16] = "-", xg[16] = "-", xb[40] = "-";
            if (imutex >= 0 && c->ran[imutex] && e != imutex)
                snprintf(xm, sizeof xm, "%.2f", s->med / c->rate[imutex].med);
            if (iglib >= 0 && c->ran[iglib] && e != iglib)
                snprintf(xg, sizeof xg, "%.2f", s->med / c->rate[iglib].med);
            int best = -1;
            for (int p = 0; p < NEXEC; p++)
                if (executors[p].peer && c->ran[p] && p != e &&
                    (best < 0 || c->rate[p].med > c->rate[best].med))
                    best = p;
            if (best >= 0 && !executors[e].peer)
                snprintf(xb, sizeof xb, "%.2f %s", s->med / c->rate[best].med,
                         executors[best].name);
            char cpu[16] = "-";
            if (c->cpu_ns[e] >= 0)
                snprintf(cpu, sizeof cpu, "%.0f", c->cpu_ns[e]);
            say("%-18s %9s  %5.3f  [%.3f-%.3f] %7.0f %7s %7.1f %7s %7s  %s\n",
                exec_label(e, o->ordered), fmt_rate(b1, sizeof b1, s->med), s->med / ideal,
                s->min / ideal, s->max / ideal, ovh, cpu, c->rss_add_kb[e] / 1024, xm, xg, xb);
        }
        insights_print(EXEC_THREADS);
        insights_print(EXEC_FORK);
        if (c->mem.workers)
            say("fork workers: %d; PSS %.1f MB in all (%.2f x the %.1f MB context; it also "
                "counts their shares of our %.0f MB, records included); private %.1f MB, of "
                "which dirty %.1f MB\n",
                c->mem.workers, c->mem.pss / 1024.0,
                c->mem.pss * 1024.0 / (double)d->table.bytes, (double)d->table.bytes / (1 << 20),
                c->mem.parent / 1024.0, c->mem.priv / 1024.0, c->mem.dirty / 1024.0);
    }
}

void write_csv(const struct opts *o, const struct dataset *d, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "executor-bench: %s: %s\n", path, strerror(errno));
        failures++;
        return;
    }
    fprintf(f, "weight_ns,seq_ns_per_record,workers,records,executor,ordered,rate,rate_min,"
               "rate_max,ideal,efficiency,eff_min,eff_max,overhead_ns,cpu_ns_per_record,"
               "peak_rss_kb,rss_added_kb,"
               "fork_pss_kb,fork_private_kb,fork_private_dirty_kb,context_kb");
    for (int p = 0; p < NEXEC; p++)
        if (executors[p].peer || p == 0)
            fprintf(f, ",x_%s", executors[p].name);
    fprintf(f, "\n");
    for (int ci = 0; ci < ncells; ci++) {
        const struct cell *c = &cells[ci];
        double ideal = ideal_of(c);
        fprintf(f, "%.0f,%.1f,%u,%zu,seq,0,%.0f,%.0f,%.0f,%.0f,,,,,%.1f,,,,,,%zu", c->weight,
                c->seq_ns, c->workers, c->n, c->seq_rate.med, c->seq_rate.min, c->seq_rate.max,
                ideal, c->seq_cpu_ns, d->table.bytes / 1024);
        for (int p = 0; p < NEXEC; p++)
            if (executors[p].peer || p == 0)
                fprintf(f, ",");
        fprintf(f, "\n");
        for (int e = 0; e < NEXEC; e++) {
            if (!c->ran[e])
                continue;
            const struct stat3 *s = &c->rate[e];
            fprintf(f, "%.0f,%.1f,%u,%zu,%s,%d,%.0f,%.0f,%.0f,%.0f,%.4f,%.4f,%.4f,%.1f,",
                    c->weight, c->seq_ns, c->workers, c->n, executors[e].name,
                    o->ordered && executors[e].takes_order, s->med, s->min, s->max, ideal,
                    s->med / ideal, s->min / ideal, s->max / ideal,
                    (1.0 / s->med - 1.0 / ideal) * c->workers * 1e9);
            if (c->cpu_ns[e] >= 0)
                fprintf(f, "%.1f", c->cpu_ns[e]);
            fprintf(f, ",%.0f,%.0f,", c->rss_kb[e], c->rss_add_kb[e]);
            if (executors[e].run == run_fork && c->mem.workers)
                fprintf(f, "%ld,%ld,%ld", c->mem.pss, c->mem.priv, c->mem.dirty);
            else
                fprintf(f, ",,");
            fprintf(f, ",%zu", d->table.bytes / 1024);
            for (int p = 0; p < NEXEC; p++) {
                if (!(executors[p].peer || p == 0))
                    continue;
                if (c->ran[p] && p != e)
                    fprintf(f, ",%.4f", s->med / c->rate[p].med);
                else
                    fprintf(f, ",");
            }
            fprintf(f, "\n");
        }
    }
    fclose(f);
}

/* gnuplot script, written next to the data so it can be re-run by hand. */
static const char plot_head[] =
    "# Efficiency vs record weight; re-run with: gnuplot plot.gp\n"
    "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
    "  set terminal pngcairo size 1100,650 font 'Sans,11'\n"
    "} else {\n"
    "  set terminal png size 1100,650\n"
    "}\n"
    "set output 'efficiency.png'\n"
    "set datafile missing '?'\n"
    "set logscale x 10\n"
    "set format x '%g'\n"
    "set xlabel 'record weight: CPU ns per record in the sequential loop (log scale)'\n"
    "set ylabel 'efficiency = rate / (workers x sequential rate)'\n"
    "set yrange [0:1.15]\n"
    "set ytics 0.1\n"
    "set grid xtics ytics mxtics\n"
    "set key outside right top box\n";

/* Line style per executor: ours bold, the ceiling dashed black, peers thin. */
static const char *plot_style(const char *name)
{
    static const struct {
        const char *name, *style;
    } st[] = {
        {"static", "lc rgb 'black' dt 2 lw 2 pt 6"},
        {"threads", "lc rgb '#0050c8' lw 4 pt 7 ps 1.4"},
        {"fork", "lc rgb '#d01c1c' lw 4 pt 5 ps 1.4"},
        {"fork-buffer", "lc rgb '#d01c1c' dt 3 lw 3 pt 5 ps 1.2"},
        {"mutex", "lc rgb '#8c564b' lw 1.5 pt 9"},
        {"glib", "lc rgb '#9467bd' lw 1.5 pt 11"},
        {"omp-for", "lc rgb '#2ca02c' lw 1.5 pt 13"},
        {"omp-task", "lc rgb '#17becf' lw 1.5 pt 4"},
        {"tbb", "lc rgb '#ff7f0e' lw 1.5 pt 8"},
    };
    for (size_t i = 0; i < sizeof st / sizeof st[0]; i++)
        if (strcmp(st[i].name, name) == 0)
            return st[i].style;
    return "lw 1.5";
}

void write_plot(const struct opts *o, const char *dir, unsigned pw)
{
    char path[4096];
    int cols[NEXEC], nc = 0;
    for (int e = 0; e < NEXEC; e++) {
        int any = 0;
        for (int ci = 0; ci < ncells; ci++)
            if (cells[ci].workers == pw && cells[ci].ran[e])
                any = 1;
        if (any && !executors[e].one_weight)
            cols[nc++] = e;
    }
    snprintf(path, sizeof path, "%s/plot.dat", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    fprintf(f, "weight_ns");
    for (int i = 0; i < nc; i++)
        fprintf(f, " %s", exec_label(cols[i], o->ordered));
    fprintf(f, "\n");
    for (int ci = 0; ci < ncells; ci++) {
        const struct cell *c = &cells[ci];
        if (c->workers != pw)
            continue;
        fprintf(f, "%.0f", c->seq_cpu_ns);
        for (int i = 0; i < nc; i++) {
            if (c->ran[cols[i]])
                fprintf(f, " %.4f", c->rate[cols[i]].med / ideal_of(c));
            else
                fprintf(f, " ?");
        }
        fprintf(f, "\n");
    }
    fclose(f);

    snprintf(path, sizeof path, "%s/plot.gp", dir);
    f = fopen(path, "w");
    if (!f)
        return;
    char host[256] = "this machine";
    gethostname(host, sizeof host - 1);
    fputs(plot_head, f);
    fprintf(f,
            "set title \"executor-bench: efficiency at %u workers on %s (%u CPUs)%s\\n"
            "{/*0.8 median of %d run%s; 1.0 = workers x the sequential loop's rate; "
            "load average %.1f before, %.1f after (this run included)}\"\n",
            pw, host, ncpus(), o->ordered ? ", libexecutor ordered" : "", o->runs,
            o->runs > 1 ? "s" : "", load_start, loadavg1());
    fprintf(f, "plot ");
    for (int i = 0; i < nc; i++)
        fprintf(f, "'plot.dat' using 1:%d title columnheader(%d) with linespoints %s, \\\n     ",
                i + 2, i + 2, plot_style(executors[cols[i]].name));
    fprintf(f, "1 title 'ideal' lc rgb 'gray40' dt 2 lw 1.5\n");
    fclose(f);
}

/* Runs gnuplot in dir. 0 when the PNG was made. */
int run_gnuplot(const char *dir)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (chdir(dir) != 0)
            _exit(126);
        int fd = open("gnuplot.log", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execlp("gnuplot", "gnuplot", "plot.gp", (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        return 127;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* The project's performance targets, at the largest worker count. */
void print_targets(const struct opts *o, const struct dataset *d, unsigned pw)
{
    int ith = find_peer("threads"), ifk = find_peer("fork"), imu = find_peer("mutex"),
        igl = find_peer("glib");
    const struct cell *light = NULL, *heavy = NULL;
    int wl = nearest_weight(o, 300), wh = nearest_weight(o, 5000);
    for (int ci = 0; ci < ncells; ci++) {
        if (cells[ci].workers != pw)
            continue;
        double w = cells[ci].weight;
        if (w == o->weights[wl] && w >= 150 && w <= 600)
            light = &cells[ci];
        if (w == o->weights[wh] && w >= 2500 && w <= 10000)
            heavy = &cells[ci];
    }
    say("\n== targets, %u worker%s\n", pw, pw > 1 ? "s" : "");
    struct {
        int e;
        const struct cell *c;
        double want;
    } eff[] = {{ith, heavy, 0.95}, {ith, light, 0.85}, {ifk, heavy, 0.90}, {ifk, light, 0.75}};
    for (size_t i = 0; i < sizeof eff / sizeof eff[0]; i++) {
        const struct cell *c = eff[i].c;
        if (!c || eff[i].e < 0 || !c->ran[eff[i].e])
            continue;
        double v = c->rate[eff[i].e].med / ideal_of(c);
        say("%-5s %-8s efficiency at %5.0f ns: %.3f (target >= %.2f)\n",
            v >= eff[i].want ? "ok" : "MISS", exec_label(eff[i].e, o->ordered), c->seq_cpu_ns, v,
            eff[i].want);
    }
    int ours[2] = {ith, ifk};
    for (int k = 0; k < 2 && light; k++) {
        int e = ours[k];
        if (e < 0 || !light->ran[e])
            continue;
        if (imu >= 0 && light->ran[imu]) {
            double x = light->rate[e].med / light->rate[imu].med;
            say("%-5s %-8s vs mutex pool at %5.0f ns: %.2fx (target >= 1.6x)\n",
                x >= 1.6 ? "ok" : "MISS", exec_label(e, o->ordered), light->seq_cpu_ns, x);
        }
        if (igl >= 0 && light->ran[igl]) {
            double x = light->rate[e].med / light->rate[igl].med;
            say("%-5s %-8s vs GThreadPool at %5.0f ns: %.2fx (target >= 3x)\n",
                x >= 3 ? "ok" : "MISS", exec_label(e, o->ordered), light->seq_cpu_ns, x);
        }
    }
    /* Ahead of every peer at every weight; where not, say so. */
    for (int ci = 0; ci < ncells; ci++) {
        const struct cell *c = &cells[ci];
        if (c->workers != pw || ith < 0 || !c->ran[ith])
            continue;
        int best = -1;
        for (int p = 0; p < NEXEC; p++)
            if (executors[p].peer && c->ran[p] &&
                (best < 0 || c->rate[p].med > c->rate[best].med))
                best = p;
        if (best < 0)
            continue;
        double x = c->rate[ith].med / c->rate[best].med;
        say("%-5s %-8s vs best peer at %5.0f ns: %.2fx %s\n", x >= 0.98 ? "ok" : "BEHIND",
            exec_label(ith, o->ordered), c->seq_cpu_ns, x, executors[best].name);
    }
    const struct cell *worst = NULL;
    for (int ci = 0; ci < ncells; ci++)
        if (cells[ci].workers == pw && cells[ci].mem.workers &&
            (!worst || cells[ci].mem.priv > worst->mem.priv))
            worst = &cells[ci];
    if (worst) {
        const struct cell *c = worst;
        /* PSS <= 1.1 x context + a few MB per worker, where the context is all
         * the parent holds; here the parent also holds the records, so the
         * check is on what is not shared: the workers' private pages. */
        double limit = 0.1 * (double)d->table.bytes / 1024 + 4096.0 * c->mem.workers;
        say("%-5s fork     workers' private memory %.1f MB (PSS %.1f MB) at %.0f ns (target: "
            "pages stay shared, private <= 0.1 x %.1f MB + 4 MB/worker)\n",
            c->mem.priv <= limit ? "ok" : "MISS", c->mem.priv / 1024.0, c->mem.pss / 1024.0,
            c->seq_cpu_ns, (double)d->table.bytes / (1 << 20));
    }
}
