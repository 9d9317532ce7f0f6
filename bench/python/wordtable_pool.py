#!/usr/bin/env python3
"""The word-table job of examples/wordtable.c, as Python users write it.

The same job as `executor-map --plugin libwordtable.so --spec
table=FILE,column=text,id=id`: each row's text is cut into words (runs of
ASCII letters and digits), each word found in the table votes for its label,
the label with most votes wins (on a tie, the one the table names first;
"unknown" when no word is found), and the result row is "<id>,<label>".

Written the usual way: csv.DictReader over the file, the table in a
module-level global built before the pool, and
multiprocessing.Pool(N).imap_unordered(classify, rows, chunksize=C), one
result per line. --workers 0 runs the plain loop instead.

    wordtable_pool.py --table words.txt [--workers N] [--chunksize C] IN.csv [OUT]
"""
import argparse
import csv
import multiprocessing
import re
import sys

MAX_WORD = 64  # the plugin looks a word up by its first 64 characters
WORD = re.compile(r"[A-Za-z0-9]+")  # isalnum() in the C locale

# Built once in the parent; forked workers inherit them.
TABLE = {}  # word -> label index
LABELS = []  # in the order the table names them first
TEXT, ID = "text", "id"


def load_table(path):
    """Lines of "word label"; blank lines and # comments ignored; the last
    line for a word wins."""
    table, labels = {}, []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) < 2:
                sys.exit(f'{path}:{no}: expected "word label"')
            word, label = parts[0][:MAX_WORD].lower(), parts[1]
            if label not in labels:
                labels.append(label)
            table[word] = labels.index(label)
    if not table:
        sys.exit(f"table '{path}' has no words")
    return table, labels


def csv_field(s):
    """The id as a CSV field: quoted when it must be, as the plugin does."""
    if any(c in s for c in ',"\r\n'):
        return '"' + s.replace('"', '""') + '"'
    return s


def classify(row):
    votes = [0] * len(LABELS)
    for word in WORD.findall(row[TEXT]):
        i = TABLE.get(word[:MAX_WORD].lower())
        if i is not None:
            votes[i] += 1
    best = max(range(len(votes)), key=votes.__getitem__)  # the first of equals
    label = LABELS[best] if votes[best] else "unknown"
    return f"{csv_field(row[ID])},{label}"


def main():
    global TABLE, LABELS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", required=True, help='lines of "word label"')
    ap.add_argument("--workers", type=int, default=2, help="pool size; 0: the plain loop")
    ap.add_argument("--chunksize", type=int, default=1, help="imap_unordered's chunksize")
    ap.add_argument("input", help="CSV file with a header row naming id and text")
    ap.add_argument("output", nargs="?", help="one result row per line (default: stdout)")
    args = ap.parse_args()

    TABLE, LABELS = load_table(args.table)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    with open(args.input, newline="", encoding="utf-8") as f, out:
        rows = csv.DictReader(f)
        if args.workers == 0:
            for row in rows:
                out.write(classify(row) + "\n")
        else:
            with multiprocessing.Pool(args.workers) as pool:
                for result in pool.imap_unordered(classify, rows, chunksize=args.chunksize):
                    out.write(result + "\n")


if __name__ == "__main__":
    # Workers get the table by fork: the default on Linux up to Python 3.13.
    multiprocessing.set_start_method("fork")
    main()
