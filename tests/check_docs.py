#!/usr/bin/env python3
"""Fails when the docs or the file headers name a file that is not in the tree.

Two kinds of names are checked, in every Markdown page and script, and in the
comments of every C source:
  - paths from the top of the repository, e.g. core/next.c or tests/test_*.c (a glob
    must match at least one file);
  - bare file names, e.g. "watch.c" in backends/fork/fork.h's list of its folder's
    files: each must be the name of some file in the tree.
And each folder list below must name every source file of its folder, so that a file
added without a word in the list fails too, and docs/architecture.md must name every
operation of the backend seam (struct exec__backend in core/exec_internal.h).

Usage: check_docs.py [REPO]   (default: the repository this script sits in)
"""
import fnmatch
import os
import re
import subprocess
import sys

# Names that are not ours: files of other projects a page or a comment speaks of.
OUTSIDE = {
    "cmocka.h",      # cmocka's header
    "threadpool.c",  # libuv's src/threadpool.c, the pool the bench compares with
    "app.c",         # the user's program in the README's build examples
    "csv.h",         # libcsv's header, looked for by the examples' build
}

# Folder lists: the file that lists a folder's files, the folder, and which of its files
# must be named (a glob over the folder).
FOLDER_LISTS = [
    ("backends/fork/fork.h", "backends/fork", "*.c"),
    ("backends/mpi/wire.h", "backends/mpi", "*.c"),
    ("docs/architecture.md", "core", "*.[ch]"),
    ("docs/architecture.md", "records", "*.[ch]"),
    ("docs/architecture.md", "backends/threads", "*.[ch]"),
    ("programs/executor-serve/serve.h", "programs/executor-serve", "*.c"),
]

TOPS = "core|backends|records|programs|include|tests|bench|scripts|examples|cmake|docs|python|debian|systemd|man|\\.ci"
PATH_RE = re.compile(r"(?<![\w/.-])((?:%s)/[\w./*-]*[\w*])" % TOPS)
NAME_RE = re.compile(r"(?<![\w/.<-])([A-Za-z][\w-]*\.(?:c|h|md|sh|cpp|py|lua))\b(?![\w/(.>-])")
COMMENT_RE = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
CHECKED = re.compile(r"\.(md|c|h|cpp|sh|py|cmake|txt|in|service|socket)$")
# Words that look like paths but are not files: "records/s" (a rate), and the names of
# programs the build makes.
NOT_PATHS = re.compile(r"^(records/s|examples/uv-lines)$")


def main():
    top = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                          os.path.join(os.path.dirname(__file__), ".."))
    try:
        files = subprocess.run(["git", "-C", top, "ls-files"], check=True, capture_output=True,
                               text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        files = []
        for d, sub, names in os.walk(top):
            sub[:] = [x for x in sub if not x.startswith((".", "build", "obj-"))]
            files += [os.path.relpath(os.path.join(d, n), top) for n in names]
    files = [f for f in files if os.path.exists(os.path.join(top, f))]
    paths = set(files)
    names = {os.path.basename(f) for f in files}
    dirs = set()
    for f in files:
        d = os.path.dirname(f)
        while d:
            dirs.add(d)
            d = os.path.dirname(d)

    bad = []
    for f in files:
        if not CHECKED.search(f) or f.startswith("tests/fuzz/corpus/"):
            continue
        with open(os.path.join(top, f), errors="replace") as fh:
            text = fh.read()
        if re.search(r"\.(c|h|cpp)$", f):
            text = "\n".join(COMMENT_RE.findall(text))
        for m in PATH_RE.finditer(text):
            p = m.group(1).rstrip(".")
            if NOT_PATHS.match(p):
                continue
            if "*" in p:
                if not any(fnmatch.fnmatch(x, p) for x in files):
                    bad.append("%s: names %s, which matches no file" % (f, p))
            elif p not in paths and p.rstrip("/") not in dirs:
                bad.append("%s: names %s, which is not in the tree" % (f, p))
        for m in NAME_RE.finditer(text):
            n = m.group(1)
            if n not in names and n not in OUTSIDE:
                bad.append("%s: names %s, which is no file of the tree" % (f, n))

    for lister, folder, glob in FOLDER_LISTS:
        if lister not in paths:
            bad.append("%s: the list of %s/ is gone" % (lister, folder))
            continue
        with open(os.path.join(top, lister), errors="replace") as fh:
            text = fh.read()
        for f in sorted(files):
            if os.path.dirname(f) == folder and fnmatch.fnmatch(os.path.basename(f), glob):
                b = os.path.basename(f)
                if not re.search(r"(?<![\w.-])%s(?![\w])" % re.escape(b), text):
                    bad.append("%s: its list of %s/ leaves out %s" % (lister, folder, b))

    # The seam: every operation of struct exec__backend is named in architecture.md.
    with open(os.path.join(top, "core/exec_internal.h")) as fh:
        seam = fh.read()
    seam = seam[seam.index("struct exec__backend {"):]
    seam = seam[:seam.index("\n};")]
    with open(os.path.join(top, "docs/architecture.md")) as fh:
        arch = fh.read()
    for op in re.findall(r"\(\*(\w+)\)\(", seam):
        if "`%s`" % op not in arch:
            bad.append("docs/architecture.md: the seam's operation %s is not named" % op)

    for line in bad:
        print(line)
    print("check_docs: %d file(s) checked, %d problem(s)" % (len(files), len(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
