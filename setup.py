"""The C part of the Python module for `pip install`: the extension
_libexecutor, built from python/src and the library's own sources (the
EXEC_MPI backend left out), as CMake's python/CMakeLists.txt builds it
against the static library. The rest is in pyproject.toml."""
import glob
import subprocess

from setuptools import Extension, setup


def pkg_config(flag):
    try:
        out = subprocess.run(["pkg-config", flag, "liburcu-memb", "ck"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit("libexecutor needs liburcu and ck (Debian: liburcu-dev libck-dev) "
                         f"and pkg-config: {e}")
    return out.split()


library = [p for p in sorted(glob.glob("core/*.c") + glob.glob("backends/*.c") +
                             glob.glob("backends/*/*.c") + glob.glob("records/*.c"))
           if "/mpi/" not in p]

setup(ext_modules=[Extension(
    "_libexecutor",
    sources=sorted(glob.glob("python/src/*.c")) + library,
    include_dirs=["include", "core"],
    define_macros=[("_GNU_SOURCE", None), ("EXEC_BUILDING", None)],
    extra_compile_args=["-std=gnu11", "-fvisibility=hidden"] + pkg_config("--cflags"),
    extra_link_args=pkg_config("--libs") + ["-lpthread", "-ldl"],
)])
