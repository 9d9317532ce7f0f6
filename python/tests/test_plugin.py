"""A C plugin driven from Python: loading (and refusing), rows from Python,
file to file as executor-map does it, results iterated."""

import os
import subprocess

import pytest

import libexecutor as lx
from conftest import DATA, plugin_path

SPEC = "table=%s,column=text,id=id" % os.path.join(DATA, "words.txt")
SEED = os.path.join(DATA, "seed.csv")
SEED_OUT = [b"1,fruit", b"2,animal", b"3,tool", b"4,unknown", b"5,fruit"]


def test_loading_errors(tmp_path):
    with pytest.raises(lx.PluginError) as e:
        lx.Plugin("/nonexistent/libx.so")
    assert e.value.name == "EXEC_ENOENT"
    assert "cannot load plugin: /nonexistent/libx.so" in str(e.value)
    text = tmp_path / "not-elf.so"
    text.write_text("hello")
    with pytest.raises(lx.PluginError, match="cannot load plugin"):
        lx.Plugin(str(text))
    with pytest.raises(lx.PluginError, match=r"not a plugin \(no symbol exec_plugin_v1\)") as e:
        lx.Plugin(plugin_path("nosym"))
    assert e.value.name == "EXEC_EINVAL"
    with pytest.raises(lx.PluginError, match="plugin ABI 2, this library speaks 1") as e:
        lx.Plugin(plugin_path("abi"))
    assert e.value.name == "EXEC_EVERSION"
    with pytest.raises(lx.PluginError, match="ops version 2"):
        lx.Plugin(plugin_path("opsver"))
    with pytest.raises(lx.PluginError, match="has no ops: a host needs ops with process, ctx_build"):
        lx.Plugin(plugin_path("noops"))
    assert issubclass(lx.PluginError, lx.ExecutorError)


def test_a_plugin_from_python_rows():
    pl = lx.Plugin(plugin_path("good"))
    assert pl.name == "tplugin" and pl.caps == frozenset({"threads", "fork"})
    assert pl.usage == "any text" and pl.path.endswith("libtplug_good.so")
    for backend in ("auto", "threads", "fork"):
        with lx.Executor(pl, spec="x", backend=backend, workers=2) as ex:
            assert ex.backend == ("threads" if backend == "auto" else backend)
            rows = [b"abc", "déf", b"ghi"] * 1000
            assert list(ex.imap(rows)) == [b"ABC", "DéF".encode(), b"GHI"] * 1000
            assert sorted(ex.imap_unordered(rows)) == sorted([b"ABC", "DéF".encode(), b"GHI"] * 1000)
    with lx.Executor(pl, spec="x", result="str", workers=1) as ex:
        assert list(ex.imap(["abc"])) == ["ABC"]
    with pytest.raises(TypeError, match="spec"):
        lx.Executor(pl)
    with pytest.raises(TypeError):
        lx.Executor(pl, {"a": 1}, spec="x")
    with pytest.raises(ValueError, match="pickle"):
        lx.Executor(pl, spec="x", result="pickle")
    with pytest.raises(TypeError, match="swap_context"):
        with lx.Executor(pl, spec="x", workers=1) as ex:
            ex.swap_context(None)


def test_map_file_as_executor_map(wordtable, tmp_path):
    out = tmp_path / "out.csv"
    rep = lx.map_file(wordtable, SPEC, SEED, str(out), workers=2)
    assert rep["records"] == 5 and rep["ok"] == 5 and rep["failed"] == 0 and rep["errors"] == []
    assert sorted(out.read_bytes().split(b"\n")[:-1]) == SEED_OUT
    # The same as the command, byte for byte once sorted.
    exe = os.path.join(os.path.dirname(os.path.dirname(wordtable)), "programs", "executor-map")
    if os.path.exists(exe):
        cmd = subprocess.run([exe, "--plugin", wordtable, "--spec", SPEC, "--quiet", SEED],
                             capture_output=True, check=True)
        assert sorted(cmd.stdout.split(b"\n")) == sorted(out.read_bytes().split(b"\n"))
    # Ordered, from a descriptor to a file object.
    with open(SEED, "rb") as src, open(tmp_path / "o2", "wb") as dst:
        rep = lx.map_file(lx.Plugin(wordtable), SPEC, src.fileno(), dst, ordered=True)
    assert (tmp_path / "o2").read_bytes().split(b"\n")[:-1] == SEED_OUT


def test_failed_records_in_the_report(wordtable, tmp_path):
    spec = SPEC + ",crash=hammer"
    rep = lx.map_file(wordtable, spec, SEED, str(tmp_path / "o"), backend="fork", workers=2)
    assert rep["records"] == 5 and rep["ok"] == 4 and rep["failed"] == 1
    (err,) = rep["errors"]
    assert err.status == "EXEC_ECRASHED" and err.tag == 4  # record 4 of the file: row 3
    with pytest.raises(lx.ExecutorError, match="bad spec"):
        lx.map_file(wordtable, "table=/nonexistent", SEED, str(tmp_path / "o"))
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"id,text\n1,apple\n2,\"unterminated\n")
    with pytest.raises(lx.ExecutorError) as e:
        lx.map_file(wordtable, SPEC, str(bad), str(tmp_path / "o"))
    assert e.value.name == "EXEC_EUNTERMINATED"
    rep = lx.map_file(wordtable, SPEC, str(bad), str(tmp_path / "o"), skip_bad=True)
    assert rep["ok"] == 1 and rep["bad"] == 1


def test_results_iterated(wordtable):
    with lx.Executor(lx.Plugin(wordtable), spec=SPEC, header=b"id,text", workers=2) as ex:
        assert sorted(ex.map_file(SEED)) == SEED_OUT
    with lx.Executor(lx.Plugin(wordtable), spec=SPEC, header="id,text", workers=2) as ex:
        rows = list(lx.records(SEED, header=True))
        assert len(rows) == 5 and rows[1] == b'2,"The dog chased the cat\nacross the yard"'
        assert list(ex.imap(rows)) == SEED_OUT
        assert list(ex.map_file(SEED, tags=True)) != []


def test_map_file_once_per_executor(wordtable, tmp_path):
    with lx.Executor(lx.Plugin(wordtable), spec=SPEC, header=b"id,text", workers=2) as ex:
        ex.map_file(SEED, str(tmp_path / "o"))
        with pytest.raises(lx.ExecutorError, match="whole stream"):
            ex.imap([b"1,apple"])
    with lx.Executor(lx.Plugin(wordtable), spec=SPEC, header=b"id,text", workers=2) as ex:
        list(ex.imap([b"1,apple"]))
        with pytest.raises(lx.ExecutorError, match="fresh executor"):
            ex.map_file(SEED, str(tmp_path / "o"))


def test_csv_fields_and_records(tmp_path):
    assert lx.csv_fields(b'a,"b,c",""""') == [b"a", b"b,c", b'"']
    assert lx.csv_fields(b"a;b", delim=";") == [b"a", b"b"]
    assert lx.csv_fields(b",".join([b"x"] * 100)) == [b"x"] * 100
    with pytest.raises(lx.ExecutorError) as e:
        lx.csv_fields(b'a,"b')
    assert e.value.name == "EXEC_EUNTERMINATED"
    p = tmp_path / "l.txt"
    p.write_bytes(b"one\ntwo\n\nthree")
    assert list(lx.records(str(p), format="lines")) == [b"one", b"two", b"", b"three"]
    assert list(lx.records(str(p), format="lines", skip_empty=True)) == [b"one", b"two", b"three"]
    r = lx.records(SEED, header=True)
    assert r.header() == b"id,text"
    with pytest.raises(OSError):
        lx.records("/nonexistent.csv")
