"""Fixtures of the libexecutor suite: where the test plugins are, a check
after every test that no process of ours is left, and a runner for scripts
that must run in a process of their own (Ctrl-C, interpreter exit)."""

import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(ROOT, "tests", "data")


def children(pid):
    """Pids whose parent is pid (zombies left out: they are dead)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        if rest[0] not in ("Z", "X") and int(rest[1]) == pid:
            out.append(int(name))
    return out


def descendants(pid):
    out = []
    todo = [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def alive(pid):
    """True while pid runs (a zombie is dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def wait_gone(pids, seconds=5.0):
    """True once none of pids runs."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.02)
    return not any(alive(p) for p in pids)


@pytest.fixture(autouse=True)
def nothing_left():
    """Every test leaves no child process of ours behind."""
    before = set(children(os.getpid()))
    yield
    end = time.monotonic() + 5
    while True:
        left = set(children(os.getpid())) - before
        if not left or time.monotonic() > end:
            break
        time.sleep(0.02)
    assert not left, f"processes left behind: {sorted(left)}"


def plugin_path(kind):
    d = os.environ.get("LIBEXECUTOR_TEST_PLUGINS")
    if not d:
        pytest.skip("LIBEXECUTOR_TEST_PLUGINS is not set (run through ctest)")
    return os.path.join(d, f"libtplug_{kind}.so")


@pytest.fixture
def wordtable():
    p = os.environ.get("LIBEXECUTOR_WORDTABLE")
    if not p:
        pytest.skip("LIBEXECUTOR_WORDTABLE is not set (run through ctest)")
    return p


def run_script(code, *, timeout=60, env=None, **kw):
    """Runs code in a fresh interpreter with this one's module path."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    e.update(env or {})
    return subprocess.Popen([sys.executable, "-c", code], env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)
