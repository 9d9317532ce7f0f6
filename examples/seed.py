#!/usr/bin/env python3
"""The seed problem in Python: build a classifier once, stream the rows of a
CSV file through it on all cores, print each row's result in input order.
No global variable and no initializer: the classifier is handed to the
executor, whose forked workers inherit it; it is never pickled.

    seed.py data.csv        (a header row with columns "id" and "text")

Rows may hold quoted fields with commas, "" and newlines: the library's
reader only finds where rows end; each worker splits its own rows into
fields. examples/seed.c is the same program in C.
"""
import re
import sys

import libexecutor

WORD = re.compile(rb"[A-Za-z]+")


class Classifier:
    """A word list per label, and the columns it reads. Built once, here;
    the workers read it and never write it."""

    def __init__(self, words, header):
        self.labels = [label.encode() for label in words]
        self.label_of = {w.encode(): i for i, ws in enumerate(words.values()) for w in ws}
        names = libexecutor.csv_fields(header)
        self.id_col, self.text_col = names.index(b"id"), names.index(b"text")


def classify(c, row):
    """Runs in the workers: one row, as read (bytes), to "id,label"."""
    fields = libexecutor.csv_fields(row)
    votes = [0] * len(c.labels)
    for word in WORD.findall(fields[c.text_col]):
        i = c.label_of.get(word.lower())
        if i is not None:
            votes[i] += 1
    best = votes.index(max(votes))  # the first of equals
    return fields[c.id_col] + b"," + (c.labels[best] if votes[best] else b"unknown")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: seed.py data.csv")
    path = sys.argv[1]
    header = next(libexecutor.records(path))
    c = Classifier({"fruit": ["apple", "pear", "plum", "cherry"],
                    "animal": ["cat", "dog", "horse", "owl"],
                    "tool": ["hammer", "saw", "drill", "wrench"]}, header)
    with libexecutor.Executor(classify, c, ordered=True, errors="return") as ex:
        for result in ex.map_file(path):
            if isinstance(result, libexecutor.RecordError):
                print(f"row {result.index + 1}: {result}", file=sys.stderr)
            else:
                print(result.decode())


if __name__ == "__main__":
    main()
