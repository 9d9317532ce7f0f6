"""A Python callable as the classifier, on forked workers: rows in, results
out, every fault one record's error, and the fork rules."""

import ctypes
import gc
import os
import pickle
import random
import signal
import threading
import time

import pytest

import libexecutor as lx


def echo(ctx, row):
    return row


def tagged(ctx, row):
    return row + b"/" + ctx["salt"]


def test_rows_and_results():
    ctx = {"salt": b"s1"}
    with lx.Executor(tagged, ctx, workers=2) as ex:
        assert ex.backend == "fork" and ex.workers == 2
        rows = [b"a", "b", bytearray(b"c"), memoryview(b"d")] * 50
        out = list(ex.imap(rows))
        assert out == [b"a/s1", b"b/s1", b"c/s1", b"d/s1"] * 50
        got = sorted(ex.imap_unordered(b"%d" % i for i in range(3000)))
        assert got == sorted(b"%d/s1" % i for i in range(3000))
        st = ex.stats()
        assert st["ok"] == 3200 and st["submitted"] == 3200 and st["in_flight"] == 0


def test_result_kinds():
    def kinds(ctx, row):
        return {b"s": "é", b"b": b"\xff", b"n": None, b"v": memoryview(b"mv")}[row]

    with lx.Executor(kinds, None, workers=1, result="str") as ex:
        assert list(ex.imap([b"s", b"n"])) == ["é", ""]
        assert list(ex.imap([b"b"])) == ["\udcff"]  # surrogateescape: no byte lost
    with lx.Executor(kinds, None, workers=1) as ex:
        assert list(ex.imap([b"s", b"b", b"n", b"v"])) == ["é".encode(), b"\xff", b"", b"mv"]

    def objects(ctx, row):
        return {"row": row, "n": int(row), "set": {1, 2}}

    with lx.Executor(objects, None, workers=2, result="pickle") as ex:
        out = list(ex.imap([b"1", b"2"]))
        assert out == [{"row": b"1", "n": 1, "set": {1, 2}}, {"row": b"2", "n": 2, "set": {1, 2}}]


def test_context_is_inherited_not_pickled():
    # A lock and a lambda cannot be pickled; a big dict would be slow to.
    ctx = {"lock": threading.Lock(), "f": lambda r: r[::-1],
           "big": {i: str(i) for i in range(200000)}}
    with pytest.raises(Exception):
        pickle.dumps(ctx)

    def use(c, row):
        with c["lock"]:
            return c["f"](row) + c["big"][int(row)].encode()

    with lx.Executor(use, ctx, workers=2) as ex:
        assert list(ex.imap([b"12", b"199999"])) == [b"2112", b"999991199999"]


def raiser(ctx, row):
    if row.startswith(b"bad"):
        raise ValueError(f"no good: {row!r}")
    return row


def test_rows_that_raise():
    rows = [b"ok1", b"bad1", b"ok2", b"bad2", b"ok3"]
    with lx.Executor(raiser, None, workers=2) as ex:
        it = ex.imap(rows)
        assert next(it) == b"ok1"
        with pytest.raises(lx.RecordError) as e:
            next(it)
        err = e.value
        assert err.status == "EXEC_EUSER" and err.index == 1
        assert "Traceback" in err.text and "in raiser" in err.text
        assert "ValueError: no good: b'bad1'" in err.text
        assert "ValueError: no good" in str(err)
        # The stream goes on after a raised RecordError.
        assert next(it) == b"ok2"
        with pytest.raises(lx.RecordError):
            next(it)
        assert list(it) == [b"ok3"]
    with lx.Executor(raiser, None, workers=2, errors="return") as ex:
        out = list(ex.imap(rows))
        assert [type(o) for o in out] == [bytes, lx.RecordError, bytes, lx.RecordError, bytes]
        assert out[3].index == 3 and "bad2" in out[3].text
        assert isinstance(out[1], lx.ExecutorError)
        assert ex.stats()["user_errors"] == 2


def test_results_of_a_wrong_type():
    def wrong(ctx, row):
        return int(row) if row != b"x" else row

    with lx.Executor(wrong, None, workers=2, errors="return") as ex:
        out = list(ex.imap([b"1", b"x", b"2"]))
    assert out[1] == b"x"
    for o in (out[0], out[2]):
        assert isinstance(o, lx.RecordError) and o.status == "EXEC_EUSER"
        assert "process() returned int" in o.text


def crasher(ctx, row):
    if row == b"segv":
        ctypes.string_at(0)
    if row == b"sleep":
        time.sleep(60)
    return row


def test_a_row_that_segfaults_its_worker():
    rows = [b"%d" % i for i in range(200)]
    rows[57] = b"segv"
    with lx.Executor(crasher, None, workers=2, errors="return") as ex:
        pids = {w["pid"] for w in ex.worker_stats()}
        out = list(ex.imap(rows))
        bad = [o for o in out if isinstance(o, lx.RecordError)]
        assert len(bad) == 1 and bad[0].index == 57
        assert bad[0].status == "EXEC_ECRASHED" and bad[0].signal == signal.SIGSEGV
        assert [o for o in out if not isinstance(o, lx.RecordError)] == rows[:57] + rows[58:]
        st = ex.stats()
        assert st["crashed"] == 1 and st["respawns"] >= 1
        # The stream after it: served by the replacement.
        assert list(ex.imap([b"a", b"b"])) == [b"a", b"b"]
        assert {w["pid"] for w in ex.worker_stats()} != pids


def test_a_row_that_sleeps_past_the_timeout():
    t0 = time.monotonic()
    with lx.Executor(crasher, None, workers=2, timeout=0.3, grace=0.2, errors="return") as ex:
        out = list(ex.imap([b"a", b"sleep", b"b"]))
    assert out[0] == b"a" and out[2] == b"b"
    assert isinstance(out[1], lx.RecordError) and out[1].status == "EXEC_ERECTIMEOUT"
    assert time.monotonic() - t0 < 20


def test_cancel_a_running_row():
    with lx.Executor(crasher, None, workers=1, errors="return") as ex:
        it = ex.imap_unordered([b"sleep", b"a"], tags=True)
        seen = {}
        t = threading.Timer(0.3, lambda: seen.setdefault("n", ex.cancel(0)))
        t.start()
        for tag, res in it:
            seen[tag] = res
        t.join()
    assert seen["n"] == 1
    assert isinstance(seen[0], lx.RecordError) and seen[0].status == "EXEC_ECANCELLED"
    assert seen[1] == b"a"


def test_an_input_that_raises_half_way():
    def rows():
        for i in range(500):
            yield b"%d" % i
        raise KeyError("input broke")

    with lx.Executor(echo, None, workers=2) as ex:
        got = []
        with pytest.raises(KeyError, match="input broke"):
            for r in ex.imap(rows()):
                got.append(r)
        # Every row before it yielded its result, in order.
        assert got == [b"%d" % i for i in range(500)]
        got = []
        with pytest.raises(KeyError):
            for r in ex.imap_unordered(rows()):
                got.append(r)
        assert sorted(got) == sorted(b"%d" % i for i in range(500))
        # A row of a wrong type ends the input the same way.
        with pytest.raises(TypeError, match="a row is bytes or str"):
            list(ex.imap([b"a", 5]))
        # And the executor is clean for the next stream.
        assert list(ex.imap([b"x", b"y"])) == [b"x", b"y"]


def test_a_stream_dropped_half_way():
    def slow(ctx, row):
        time.sleep(0.001)
        return row

    with lx.Executor(slow, None, workers=2) as ex:
        it = ex.imap_unordered(b"%d" % i for i in range(100000))
        for _ in range(10):
            next(it)
        with pytest.raises(lx.ExecutorError, match="another stream"):
            ex.imap([b"x"])
        del it  # its rows in flight are cancelled and taken back
        assert list(ex.imap([b"x", b"y"])) == [b"x", b"y"]
        it = ex.imap(b"%d" % i for i in range(100000))
        next(it)
        it.close()
        assert list(ex.imap([b"z"])) == [b"z"]


def test_max_records_per_worker():
    def init(ctx):
        ctx["started"] = True

    def proc(ctx, row):
        time.sleep(0.0005)  # slower than a successor's start
        return b"%d %d" % (os.getpid(), ctx.get("started", False))

    with lx.Executor(proc, {}, workers=2, max_records_per_worker=50, worker_init=init) as ex:
        out = [r.split(b" ") for r in ex.imap_unordered([b""] * 2000)]
        assert len(out) == 2000 and all(r[1] == b"1" for r in out)
        pids = {r[0] for r in out}
        assert len(pids) > 2  # successors, each through worker_init
        st = ex.stats()
        assert st["respawns"] >= 1 and st["ok"] == 2000 and st["crashed"] == 0
        assert sum(w["respawns_recycle"] for w in ex.worker_stats()) >= 1


def test_workers_1():
    with lx.Executor(lambda c, r: b"%d" % os.getpid(), None, workers=1) as ex:
        out = set(ex.imap_unordered([b""] * 1000))
        assert len(out) == 1 and int(out.pop()) != os.getpid()


def test_a_10_mb_row():
    big = os.urandom(10 << 20)

    def digest(ctx, row):
        import hashlib
        return hashlib.sha256(row).hexdigest()

    import hashlib
    with lx.Executor(digest, None, workers=2, max_record=16 << 20, errors="return") as ex:
        out = list(ex.imap([b"a", big, b"b"]))
        assert out == [hashlib.sha256(x).hexdigest().encode() for x in (b"a", big, b"b")]
        # A result that large too.
        with lx.Executor(lambda c, r: r * 2, None, workers=1, max_record=16 << 20,
                         max_result=32 << 20) as ex2:
            assert list(ex2.imap([big])) == [big * 2]
    # Over max_record (64 KiB by default): that row's error, the others run.
    with lx.Executor(echo, None, workers=2, errors="return") as ex:
        out = list(ex.imap([b"a", big, b"b"]))
        assert out[0] == b"a" and out[2] == b"b"
        assert isinstance(out[1], lx.RecordError) and out[1].status == "EXEC_E2BIG"


def label(ctx, row):
    f = lx.csv_fields(row)
    return f[0] + b"," + ctx.get(f[1], b"?")


def test_a_million_row_file(tmp_path):
    src, dst = tmp_path / "rows.csv", tmp_path / "out.csv"
    n = 1_000_000
    words = [b"apple", b"dog", b"saw", b"river"]
    with open(src, "wb") as f:
        f.write(b"id,word\n")
        f.write(b"".join(b"%d,%s\n" % (i, words[i % 4]) for i in range(n)))
    ctx = {b"apple": b"fruit", b"dog": b"animal", b"saw": b"tool"}
    with lx.Executor(label, ctx, workers=2) as ex:
        rep = ex.map_file(str(src), str(dst))
    assert rep["records"] == n and rep["ok"] == n and rep["failed"] == 0
    lines = dst.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == n + 1
    counts = {}
    for line in lines[:-1]:
        counts[line.split(b",")[1]] = counts.get(line.split(b",")[1], 0) + 1
    assert counts == {b"fruit": n // 4, b"animal": n // 4, b"tool": n // 4, b"?": n // 4}
    assert sum(int(line.split(b",")[0]) for line in lines[:-1]) == n * (n - 1) // 2
    # The same file, its results iterated here.
    with lx.Executor(label, ctx, workers=2) as ex:
        k = sum(1 for r in ex.map_file(str(src)) if r.endswith(b"tool"))
    assert k == n // 4


def test_swap_context_on_a_canary():
    def init(ctx):
        if ctx.get("refuse"):
            raise RuntimeError("this context does not start")

    def proc(ctx, row):
        if ctx.get("crash") and row:
            ctypes.string_at(0)
        return row + b"@" + ctx["name"]

    with lx.Executor(proc, {"name": b"v1"}, workers=2, worker_init=init) as ex:
        assert set(ex.imap_unordered([b"a"] * 100)) == {b"a@v1"}
        assert ex.swap_context({"name": b"v2"}) == 1
        assert set(ex.imap_unordered([b"a"] * 100)) == {b"a@v2"}
        # A context whose worker_init raises: refused, the old one serves.
        with pytest.raises(lx.SwapRejected) as e:
            ex.swap_context({"name": b"v3", "refuse": True})
        assert e.value.name == "EXEC_EINIT"
        assert set(ex.imap_unordered([b"a"] * 100)) == {b"a@v2"}
        # A context the canary dies on (it replays recent rows): refused.
        with pytest.raises(lx.SwapRejected) as e:
            ex.swap_context({"name": b"v4", "crash": True})
        assert e.value.name == "EXEC_ECRASHED"
        assert set(ex.imap_unordered([b"b"] * 100)) == {b"b@v2"}
        st = ex.stats()
        assert st["swaps"] == 1 and st["generation"] == 1


def test_swapped_out_context_is_released():
    import weakref

    class Ctx:
        pass

    c1 = Ctx()
    r1 = weakref.ref(c1)
    with lx.Executor(lambda c, r: r, c1, workers=1) as ex:
        del c1
        ex.swap_context(Ctx())
        deadline = time.monotonic() + 10
        while r1() is not None and time.monotonic() < deadline:
            list(ex.imap([b"x"]))  # a call releases what the library let go
            time.sleep(0.05)
        assert r1() is None


def test_a_dead_zygote_comes_back():
    from conftest import wait_gone

    def ppid(pid):
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        return int(st[st.rindex(")") + 2:].split()[1])

    with lx.Executor(tagged, {"salt": b"z"}, workers=2) as ex:
        workers = [w["pid"] for w in ex.worker_stats()]
        zygote = ppid(workers[0])
        assert zygote != os.getpid() and ppid(zygote) == os.getpid()
        os.kill(zygote, signal.SIGKILL)
        assert wait_gone([zygote] + workers)
        # Forked again by this thread's next call, through the fork hooks.
        assert sorted(ex.imap_unordered(b"%d" % i for i in range(500))) == \
            sorted(b"%d/z" % i for i in range(500))
        again = [w["pid"] for w in ex.worker_stats()]
        assert ppid(again[0]) not in (zygote, os.getpid())


def test_stats_and_worker_stats():
    with lx.Executor(echo, None, workers=2) as ex:
        list(ex.imap([b"x"] * 1000))
        st = ex.stats()
        assert st["backend"] == "fork" and st["workers"] == 2
        assert st["ok"] == 1000 and st["delivered"] == 1000
        assert len(st["lat_hist"]) == 40 and 0 <= st["utilisation"] <= 1
        ws = ex.worker_stats()
        assert [w["index"] for w in ws] == [0, 1]
        assert sum(w["records"] for w in ws) == 1000
        kids = set(ws[0]["pid"] for w in ws) | set(w["pid"] for w in ws)
        assert os.getpid() not in kids and all(w["pss_kb"] > 0 for w in ws)


def test_worker_init_and_fini(tmp_path):
    def init(ctx):
        ctx["mine"] = os.getpid()  # the worker's own copy

    def fini(ctx):
        (tmp_path / ("fini-%d" % os.getpid())).write_text(str(ctx["mine"]))

    def proc(ctx, row):
        return b"%d" % ctx["mine"]

    ctx = {}
    with lx.Executor(proc, ctx, workers=2, worker_init=init, worker_fini=fini) as ex:
        pids = {int(r) for r in ex.imap_unordered([b""] * 2000)}
        wpids = {w["pid"] for w in ex.worker_stats()}
    assert "mine" not in ctx
    assert pids <= wpids and len(wpids) == 2
    done = {int(p.name[5:]) for p in tmp_path.iterdir()}
    assert done == wpids
    for p in tmp_path.iterdir():
        assert p.read_text() == p.name[5:]


def test_worker_init_raises():
    def init(ctx):
        raise RuntimeError("no")

    with pytest.raises(lx.ExecutorError) as e:
        lx.Executor(echo, None, workers=2, worker_init=init)
    assert e.value.name == "EXEC_EINIT"


def test_fork_rules_in_the_worker():
    def look(ctx, row):
        import gc as g
        return b"%d %s" % (g.get_freeze_count() > 0, str(signal.getsignal(signal.SIGPIPE)).encode())

    assert gc.get_freeze_count() == 0
    with lx.Executor(look, None, workers=1) as ex:
        assert gc.get_freeze_count() == 0  # unfrozen here once forked
        frozen, pipe = list(ex.imap([b""]))[0].split(b" ")
        assert frozen == b"1"
        assert pipe == str(signal.SIG_IGN).encode()  # as Python set it here
    with lx.Executor(look, None, workers=1, freeze_gc=False) as ex:
        assert list(ex.imap([b""]))[0].startswith(b"0 ")


def test_several_executors_at_once():
    exs = [lx.Executor(tagged, {"salt": b"%d" % k}, workers=1 + k % 2) for k in range(3)]
    try:
        its = [ex.imap(b"%d" % i for i in range(2000)) for ex in exs]
        for i, row in enumerate(zip(*its)):
            assert row == tuple(b"%d/%d" % (i, k) for k in range(3))
    finally:
        for ex in exs:
            ex.close()
    assert all(ex.closed for ex in exs)


def test_from_a_thread_while_others_run():
    stop = threading.Event()
    lock = threading.Lock()

    def busy():
        while not stop.is_set():
            with lock:
                sum(range(1000))

    others = [threading.Thread(target=busy) for _ in range(3)]
    for t in others:
        t.start()
    marks = []
    os.register_at_fork(after_in_child=lambda: marks.append(os.getpid()))

    def proc(ctx, row):
        return b"%d %d %r" % (os.getpid(), os.getpid() in marks, random.random())

    out, errs = [], []

    def main():
        try:
            with pytest.warns(RuntimeWarning, match="other Python thread"):
                ex = lx.Executor(proc, None, workers=2)
            with ex:
                out.extend(ex.imap_unordered([b""] * 400))
        except BaseException as e:  # noqa: B902 - reported below
            errs.append(e)

    t = threading.Thread(target=main)
    t.start()
    t.join(60)
    stop.set()
    for o in others:
        o.join()
    assert not t.is_alive(), "deadlock"
    assert not errs, errs
    rows = [o.split(b" ") for o in out]
    assert all(r[1] == b"1" for r in rows)  # the at-fork handlers ran there
    by_pid = {}
    for pid, _, r in rows:
        by_pid.setdefault(pid, []).append(r)
    assert len(by_pid) == 2
    firsts = [sorted(v) for v in by_pid.values()]
    assert set(firsts[0]).isdisjoint(firsts[1])  # each worker its own random state


def test_threads_backend_when_asked():
    with pytest.raises(ValueError, match="thread_safe"):
        lx.Executor(echo, None, backend="threads")
    seen = set()

    def proc(ctx, row):
        seen.add(threading.get_ident())
        return row

    with lx.Executor(proc, None, backend="threads", thread_safe=True, workers=2) as ex:
        assert ex.backend == "threads"
        assert sorted(ex.imap_unordered(b"%d" % i for i in range(2000))) == \
            sorted(b"%d" % i for i in range(2000))
    assert threading.get_ident() not in seen and seen


def test_closed_and_foreign():
    ex = lx.Executor(echo, None, workers=1)
    ex.close()
    ex.close()
    with pytest.raises(lx.ExecutorError, match="closed"):
        ex.imap([b"a"])
    with lx.Executor(echo, None, workers=1) as ex:
        pid = os.fork()
        if pid == 0:
            try:
                ex.stats()
                os._exit(1)
            except lx.ExecutorError:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        assert list(ex.imap([b"a"])) == [b"a"]


def test_bad_arguments():
    with pytest.raises(TypeError):
        lx.Executor(42)
    with pytest.raises(ValueError):
        lx.Executor(echo, backend="mpi")
    with pytest.raises(ValueError):
        lx.Executor(echo, workers=0)
    with pytest.raises(ValueError):
        lx.Executor(echo, timeout=-1)
    with pytest.raises(TypeError):
        lx.Executor(echo, spec="x")


def test_one_shot_wrappers():
    assert list(lx.imap(tagged, [b"a", b"b"], {"salt": b"w"}, workers=1)) == [b"a/w", b"b/w"]
    assert sorted(lx.imap_unordered(echo, [b"b", b"a"], workers=2)) == [b"a", b"b"]
