#!/usr/bin/env python3
"""The CSV tests' independent reference: Python's csv module.

    csv_reference.py count FILE         prints the number of rows csv.reader gives
    csv_reference.py fields FILE OUT    writes each row to OUT as
                                        "<n>:" + fields joined by 0x1f + 0x1e
Bytes pass through unchanged (latin-1 in and out).
"""
import csv
import sys


def main():
    mode, path = sys.argv[1], sys.argv[2]
    with open(path, newline="", encoding="latin-1") as f:
        rows = csv.reader(f, strict=True)
        if mode == "count":
            print(sum(1 for _ in rows))
        elif mode == "fields":
            with open(sys.argv[3], "w", newline="", encoding="latin-1") as out:
                for row in rows:
                    out.write("%d:%s\x1e" % (len(row), "\x1f".join(row)))
        else:
            sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
