"""examples/seed.py, the seed's job in Python: the same output as
examples/seed.c, and the code docs/python.md and the README show is the
file's."""

import os
import subprocess
import sys

from conftest import DATA, ROOT

SEED_PY = os.path.join(ROOT, "examples", "seed.py")


def test_seed_py_prints_what_seed_c_prints():
    out = subprocess.run([sys.executable, SEED_PY, os.path.join(DATA, "seed.csv")],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "1,fruit\n2,animal\n3,tool\n4,unknown\n5,fruit\n"
    assert out.stderr == ""


def test_the_docs_show_the_file():
    with open(SEED_PY) as f:
        code = f.read()
    shown = code[code.index("WORD = "):code.index('\n\nif __name__')]
    for doc in ("docs/python.md", "README.md"):
        with open(os.path.join(ROOT, doc)) as f:
            assert shown in f.read(), f"{doc} does not show examples/seed.py as it is"
