#!/usr/bin/env python3
"""The word-table job of examples/wordtable.c with the libexecutor module.

The same job as bench/python/wordtable_pool.py (and `executor-map --plugin
libwordtable.so --spec table=FILE,column=text,id=id`), four ways:

  --mode fork-file     the classifier written in Python (classify() below),
                       on forked workers, file to file (map_file(src, dst))
  --mode fork-iter     the same, its results iterated here and written
  --mode plugin-file   the C plugin, file to file (libexecutor.map_file)
  --mode plugin-iter   the C plugin, its results iterated here and written

No global and no initializer: the table is built once, here, and handed to
the Executor as its context; the forked workers inherit it, nothing is
pickled.

    wordtable_module.py --table words.txt --mode MODE [--workers N]
                        [--plugin libwordtable.so] IN.csv [OUT]

One result row per line, to OUT or standard output.
"""
import argparse
import re
import sys

import libexecutor

MAX_WORD = 64
WORD = re.compile(rb"[A-Za-z0-9]+")


class Table:
    """The classifier's context: word -> label index, the labels, and the
    columns it reads (resolved once from the header)."""

    def __init__(self, path, header):
        self.words, self.labels = {}, []
        with open(path, encoding="utf-8") as f:
            for no, line in enumerate(f, 1):
                parts = line.split()
                if not parts or parts[0].startswith("#"):
                    continue
                if len(parts) < 2:
                    sys.exit(f'{path}:{no}: expected "word label"')
                word, label = parts[0][:MAX_WORD].lower().encode(), parts[1].encode()
                if label not in self.labels:
                    self.labels.append(label)
                self.words[word] = self.labels.index(label)
        names = libexecutor.csv_fields(header)
        self.id_col, self.text_col = names.index(b"id"), names.index(b"text")


def csv_field(b):
    if any(c in b for c in b',"\r\n'):
        return b'"' + b.replace(b'"', b'""') + b'"'
    return b


def classify(t, row):
    f = libexecutor.csv_fields(row)
    votes = [0] * len(t.labels)
    for word in WORD.findall(f[t.text_col]):
        i = t.words.get(word[:MAX_WORD].lower())
        if i is not None:
            votes[i] += 1
    best = max(range(len(votes)), key=votes.__getitem__)  # the first of equals
    return csv_field(f[t.id_col]) + b"," + (t.labels[best] if votes[best] else b"unknown")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", required=True)
    ap.add_argument("--mode", required=True,
                    choices=["fork-file", "fork-iter", "plugin-file", "plugin-iter"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--plugin", help="libwordtable.so, for the plugin modes")
    ap.add_argument("input")
    ap.add_argument("output", nargs="?", help="default: standard output")
    a = ap.parse_args()
    spec = f"table={a.table},column=text,id=id"
    header = next(iter(libexecutor.records(a.input)))
    out = a.output if a.output else sys.stdout.buffer
    if a.mode == "plugin-file":
        libexecutor.map_file(a.plugin, spec, a.input, out, workers=a.workers)
        return
    if a.mode == "plugin-iter":
        ex = libexecutor.Executor(libexecutor.Plugin(a.plugin), spec=spec, header=header,
                                  workers=a.workers)
    else:
        ex = libexecutor.Executor(classify, Table(a.table, header), workers=a.workers)
    with ex:
        if a.mode == "fork-file":
            ex.map_file(a.input, out)
            return
        with open(a.output, "wb") if a.output else sys.stdout.buffer as f:
            write = f.write
            for result in ex.map_file(a.input):
                write(result + b"\n")


if __name__ == "__main__":
    main()
