"""What only a process of its own can show: Ctrl-C in the middle of a stream
and of a file map, and an interpreter that exits with executors still open.
Each leaves no process behind."""

import os
import signal
import time

import pytest

from conftest import alive, descendants, run_script, wait_gone

PRELUDE = r"""
import os, sys, time
import libexecutor as lx

def slow(ctx, row):
    time.sleep(0.002)
    return row

def report(*exs):
    # Our descendants (zygotes and workers), then a line that says we run.
    kids = []
    todo = [os.getpid()]
    while todo:
        p = todo.pop()
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    st = open(f"/proc/{name}/stat").read()
                except OSError:
                    continue
                rest = st[st.rindex(")") + 2:].split()
                if rest[0] not in "ZX" and int(rest[1]) == p:
                    kids.append(int(name)); todo.append(int(name))
    print("PIDS", *kids, flush=True)
    print("RUNNING", flush=True)
"""


def start(body, **kw):
    p = run_script(PRELUDE + body, **kw)
    pids = []
    for line in p.stdout:
        if line.startswith("PIDS"):
            pids = [int(x) for x in line.split()[1:]]
        if line.startswith("RUNNING"):
            break
    else:
        out, err = p.communicate(timeout=10)
        pytest.fail("the script did not start: " + err)
    return p, pids


def interrupt(body):
    p, pids = start(body)
    assert pids, "no zygote or worker seen"
    time.sleep(0.3)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    took = time.monotonic() - t0
    assert "KeyboardInterrupt" in out + err, err
    assert p.returncode == 0, err
    assert wait_gone(pids), [q for q in pids if alive(q)]
    return out, err, took


def test_ctrl_c_in_imap_unordered():
    out, err, took = interrupt(r"""
with lx.Executor(slow, None, workers=2) as ex:
    it = ex.imap_unordered(b"%d" % i for i in range(10**7))
    next(it)
    report(ex)
    try:
        for r in it:
            pass
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
""")
    assert took < 10


def test_ctrl_c_in_the_input():
    # The input itself gets the KeyboardInterrupt: it goes on at once,
    # without waiting for the thousands of slow rows in flight.
    out, err, took = interrupt(r"""
def rows():
    i = 0
    while True:
        if i == 1000:
            report()
        i += 1
        yield b"%d" % i
        if i > 1000:
            time.sleep(0.001)
def slower(ctx, row):
    time.sleep(0.05)
    return row
with lx.Executor(slower, None, workers=2) as ex:
    try:
        for r in ex.imap_unordered(rows()):
            pass
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
""")
    assert took < 10


def test_ctrl_c_while_waiting_for_a_hung_row():
    interrupt(r"""
def hang(ctx, row):
    time.sleep(3600)
with lx.Executor(hang, None, workers=2) as ex:
    it = ex.imap([b"a", b"b"])
    report(ex)
    try:
        next(it)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
""")


def test_ctrl_c_in_map_file(tmp_path):
    src = tmp_path / "rows.csv"
    with open(src, "wb") as f:
        f.write(b"id\n" + b"".join(b"%d\n" % i for i in range(200000)))
    out, err, took = interrupt(r"""
ex = lx.Executor(slow, None, workers=2)
report(ex)
try:
    ex.map_file(%r, %r)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
ex.close()
""" % (str(src), str(tmp_path / "out.csv")))
    assert took < 10


def test_never_closed_executors_at_exit():
    p, pids = start(r"""
a = lx.Executor(slow, {"x": 1}, workers=2)
b = lx.Executor(slow, None, workers=1, backend="threads", thread_safe=True)
it = a.imap_unordered(b"%d" % i for i in range(10**6))
next(it)
c = lx.Executor(slow, None, workers=1)
report(a, b, c)
# Exit with all three open and a stream in flight: the atexit hook closes them.
""")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert len(pids) >= 5  # two zygotes, three workers
    assert wait_gone(pids), [q for q in pids if alive(q)]


def test_exit_from_a_forked_child_leaves_the_parent_s_executor():
    p, pids = start(r"""
ex = lx.Executor(slow, None, workers=2)
pid = os.fork()
if pid == 0:
    sys.exit(0)  # the child's atexit must not stop the parent's workers
os.waitpid(pid, 0)
assert list(ex.imap([b"a", b"b"])) == [b"a", b"b"]
report(ex)
ex.close()
print("DONE", flush=True)
""")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0 and "DONE" in out, err
    assert wait_gone(pids)


def test_an_executor_per_thread_at_exit():
    p, pids = start(r"""
import threading
exs = []
def make():
    exs.append(lx.Executor(slow, None, workers=1))
ts = [threading.Thread(target=make) for _ in range(3)]
for t in ts: t.start()
for t in ts: t.join()
for ex in exs:
    assert list(ex.imap([b"x"])) == [b"x"]
report(*exs)
""")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert len(pids) == 6
    assert wait_gone(pids)
