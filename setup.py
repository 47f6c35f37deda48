"""Build the Cython core only; everything else lives in pyproject.toml.

Build switches (environment variables; any value but "" or "0" turns one on):

* ``FASTREDIS_ANNOTATE``: write Cython's HTML annotation next to each ``.pyx``.
* ``FASTREDIS_DEBUG``: ``-O0 -g`` and Cython's own index/initialization checks on.
* ``FASTREDIS_COVERAGE``: line tracing, for coverage.py's ``Cython.Coverage`` plugin.
"""

import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup


def _switch(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


ANNOTATE = _switch("FASTREDIS_ANNOTATE")
DEBUG = _switch("FASTREDIS_DEBUG")
COVERAGE = _switch("FASTREDIS_COVERAGE")

# src_cython/fastredis/<name>.pyx -> fastredis.<name>; the .pxd files beside them
# (_cursor: the read side's bounds rule and tokens, _outbuf: the write side's
# buffer, _batch: StreamBatch's layout) are cimported, not compiled on their own.
MODULES = ["_batch", "_resp", "_writer", "_frames"]

# The one place for compiler directives. Cython's bounds checks are off because
# the bounds rules are explicit: cur_check() in _cursor.pxd and w_reserve() in
# _outbuf.pxd; a debug build turns Cython's checks back on as a second net.
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,  # C division semantics: every divisor is positive
    "embedsignature": True,  # signatures in docstrings, for help() and stubtest
    "auto_pickle": False,  # StreamBatch pickles through __reduce_ex__; Reader never
    "autotestdict": False,
    "linetrace": COVERAGE,
    "profile": COVERAGE,
}

CFLAGS = ["-O0", "-g"] if DEBUG else ["-O3"]
MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if COVERAGE:
    MACROS += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]


def _tell(message: str) -> None:
    """Say what is happening where the user sees it: pip captures a build
    backend's output, so the terminal itself when there is one."""
    try:
        with open("/dev/tty", "w") as tty:
            tty.write(message + "\n")
    except OSError:
        pass
    print(message, file=sys.stderr)


if any(cmd.startswith(("build", "bdist", "editable", "install", "develop")) for cmd in sys.argv):
    _tell(
        "fastredis: compiling the Cython core (src_cython/ -> fastredis/_*.so), "
        "about half a minute" + (" [debug]" if DEBUG else "") + (" [coverage]" if COVERAGE else "")
    )

extensions = [
    Extension(
        f"fastredis.{name}",
        [f"src_cython/fastredis/{name}.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=MACROS,
        extra_compile_args=CFLAGS,
    )
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["src_cython"],
        compiler_directives=DIRECTIVES,
        annotate=ANNOTATE,
    )
)
