#!/usr/bin/env python3
"""executor-serve's system calls against its unit's SystemCallFilter=.

Runs tests/sd_check.c (a start on a passed socket, reloads, a restart, on the fork
backend) with the server, its workers and its reload client under strace (-D keeps the
server's pid, which LISTEN_PID names), then expands the unit's SystemCallFilter= lines
with systemd-analyze syscall-filter and fails on any call the filter would refuse: under
systemd that call would fail with EPERM (SystemCallErrorNumber=).

Usage: serve_syscalls.py SD_CHECK SERVE PLUGIN WORDS UNIT_FILE
"""
import os
import re
import subprocess
import sys
import tempfile


def groups():
    """Every group systemd-analyze knows, as {"@name": [entries]}."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], check=True,
                         capture_output=True, text=True).stdout
    g, cur = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            cur = line.split()[0]
            g[cur] = []
        elif cur and line.strip() and not line.strip().startswith("#"):
            g[cur].append(line.strip())
    return g


def expand(entries, g, seen=None):
    seen = set() if seen is None else seen
    calls = set()
    for e in entries:
        if e.startswith("@"):
            if e not in seen:
                seen.add(e)
                calls |= expand(g.get(e, []), g, seen)
        else:
            calls.add(e)
    return calls


def allowed_by(unit, g):
    """The calls the unit's SystemCallFilter= lines let through (allow list minus denials)."""
    allow, deny = None, set()
    for line in open(unit):
        m = re.match(r"\s*SystemCallFilter=(.*)", line)
        if not m:
            continue
        value = m.group(1).strip()
        if value.startswith("~"):
            deny |= expand(value[1:].split(), g)
        else:
            allow = (allow or set()) | expand(value.split(), g)
    if allow is None:
        sys.exit("serve_syscalls: %s has no allow list in SystemCallFilter=" % unit)
    return allow - deny


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    sd_check, serve, plugin, words, unit = sys.argv[1:]
    allowed = allowed_by(unit, groups())
    with tempfile.TemporaryDirectory(prefix="serve_syscalls.") as tmp:
        wrap = os.path.join(tmp, "serve")
        with open(wrap, "w") as f:
            f.write('#!/bin/sh\nexec strace -D -f -qq -ff -o %s/trace %s "$@"\n' % (tmp, serve))
        os.chmod(wrap, 0o755)
        run = subprocess.run([sd_check, wrap, plugin, words], capture_output=True, text=True)
        if run.returncode == 77:
            print(run.stdout, end="")
            return 77
        if run.returncode != 0:
            print(run.stdout + run.stderr)
            sys.exit("serve_syscalls: sd_check failed under strace")
        used = set()
        traces = [n for n in os.listdir(tmp) if n.startswith("trace.")]
        for name in traces:
            with open(os.path.join(tmp, name), errors="replace") as f:
                for line in f:
                    m = re.match(r"([a-z0-9_]+)\(", line)
                    if m:
                        used.add(m.group(1))
    refused = sorted(used - allowed)
    print("serve_syscalls: %d processes made %d distinct system calls: %s"
          % (len(traces), len(used), " ".join(sorted(used))))
    if refused:
        print("serve_syscalls: refused by %s's SystemCallFilter=: %s" % (unit, " ".join(refused)))
        return 1
    print("serve_syscalls: every one is allowed by the unit's SystemCallFilter=")
    return 0


if __name__ == "__main__":
    sys.exit(main())
