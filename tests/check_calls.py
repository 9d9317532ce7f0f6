#!/usr/bin/env python3
"""Fails when the files of a folder call each other in a circle.

For each folder given (relative to the source tree), every function a .c file
defines without `static` is looked up in the folder's other .c files; a file
that calls (or takes the address of) one calls that file. The calls must run
one way: no file may reach itself through them (a pair that calls both ways
is the shortest circle). Prints each circle and exits 1, else 0.

    check_calls.py SOURCE_DIR FOLDER...
"""
import glob
import os
import re
import sys


def strip(text):
    """The code without comments and string literals (lines kept)."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(\\.|[^"\\\n])*"', '""', text)


DEF = re.compile(r"^(?!static\b)[A-Za-z_][^\n;=#]*?\b([A-Za-z_]\w*)\s*\([^;{]*\)\s*\{", re.M)


def graph(folder):
    code = {os.path.basename(f): strip(open(f, encoding="utf-8").read())
            for f in sorted(glob.glob(os.path.join(folder, "*.c")))}
    owner = {}
    for name, text in code.items():
        for m in DEF.finditer(text):
            owner.setdefault(m.group(1), name)
    edges = {name: {} for name in code}
    for name, text in code.items():
        for fn, where in owner.items():
            if where != name and re.search(r"\b%s\b\s*\(|[=(,&]\s*%s\b" % (fn, fn), text):
                edges[name].setdefault(where, []).append(fn)
    return edges


def circles(edges):
    """Every elementary circle found by a depth-first walk, once each."""
    found, seen = [], set()
    state = {}

    def walk(node, path):
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                c = path[path.index(nxt):]
                key = frozenset(c)
                if key not in seen:
                    seen.add(key)
                    found.append(c + [nxt])
            elif state.get(nxt) is None:
                walk(nxt, path)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if state.get(node) is None:
            walk(node, [])
    return found


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    root, bad = sys.argv[1], 0
    for folder in sys.argv[2:]:
        edges = graph(os.path.join(root, folder))
        if not edges:
            print("check_calls: %s: no .c file" % folder)
            bad += 1
        for c in circles(edges):
            bad += 1
            steps = []
            for a, b in zip(c, c[1:]):
                steps.append("%s -(%s)->" % (a, ", ".join(sorted(edges[a][b]))))
            print("check_calls: %s: calls go round: %s %s" % (folder, " ".join(steps), c[-1]))
    print("check_calls: %d folder(s), %d circle(s)" % (len(sys.argv) - 2, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
