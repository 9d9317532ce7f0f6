#!/usr/bin/env python3
"""Each worker's private memory with a large Python context, with and
without gc.freeze() around the fork (Executor(freeze_gc=...)).

The context: about SIZE_MB of Python objects (a dict of str -> a small
object holding a str and an int, as a parsed table would be), built once
here. The workers run
ROWS rows each of which looks a few keys up among the first 1% (reading
objects writes their reference counts: the pages of what is read become
the worker's own), then each worker runs one full collection (gc.collect(),
what a long-running worker does now and then), and the private memory of
each worker (Private_Dirty of /proc/PID/smaps_rollup, from worker_stats())
is read after the rows and after that collection.

    fork_memory.py [--size-mb 200] [--rows 200000] [--workers 2]

Prints one markdown row per setting: MB of context, then each worker's
private MB after the rows and after the collection.
"""
import argparse
import gc
import os
import random

import libexecutor


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Entry:
    """A parsed record of the table (the collector tracks such objects)."""

    __slots__ = ("name", "n")

    def __init__(self, name, n):
        self.name, self.n = name, n


def build(size_mb):
    """About size_mb of small objects: keys, and an Entry for each."""
    base = rss_mb()
    table, n = {}, 0
    while rss_mb() - base < size_mb:
        for _ in range(50000):
            k = "key-%09d" % n
            table[k] = Entry("value-%d" % (n * 7), n)
            n += 1
    return table, n, rss_mb() - base


class Ctx:
    def __init__(self, table, n):
        self.table, self.n = table, n
        self.hot = max(1, n // 100)  # rows look at 1% of the entries, as real keys do


def look(ctx, row):
    """Reads a few entries, as a classifier does; at the job's end (a row
    that says so) runs a full collection."""
    if row == b"collect":
        gc.collect()
        return b"%d" % os.getpid()
    r = random.Random(int(row))
    total = 0
    for _ in range(8):
        v = ctx.table["key-%09d" % r.randrange(ctx.hot)]
        total += v.n + len(v.name)
    return b"%d" % total


def private_mb(ex):
    return [w["private_dirty_kb"] / 1024 for w in ex.worker_stats()]


def run(table, n, rows, workers, freeze):
    with libexecutor.Executor(look, Ctx(table, n), workers=workers, freeze_gc=freeze) as ex:
        for _ in ex.imap_unordered(b"%d" % i for i in range(rows)):
            pass
        after_rows = private_mb(ex)
        # A full collection in every worker: "collect" rows until each worker
        # has run one (a worker may run two).
        done = set()
        for _ in range(100):
            done.update(int(r) for r in ex.imap_unordered([b"collect"] * workers))
            if len(done) >= workers:
                break
        after_gc = private_mb(ex)
    return after_rows, after_gc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--rows", type=int, default=200000)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    gc.disable()  # while the table is built: no collection over it meanwhile
    table, n, mb = build(a.size_mb)
    gc.enable()
    print(f"context: {n} entries, {mb:.0f} MB of Python objects; {a.workers} workers, "
          f"{a.rows} rows, then one gc.collect() in each worker")
    print()
    print("| gc.freeze() around the fork | worker private MB after the rows | "
          "... after a full collection |")
    print("|---|---|---|")
    for freeze in (True, False):
        rows_mb, gc_mb = run(table, n, a.rows, a.workers, freeze)
        fmt = lambda v: " / ".join("%.0f" % x for x in v)  # noqa: E731
        print(f"| {'yes (default)' if freeze else 'no (freeze_gc=False)'} | "
              f"{fmt(rows_mb)} | {fmt(gc_mb)} |")


if __name__ == "__main__":
    main()
