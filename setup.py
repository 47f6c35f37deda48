"""Build the Cython core only; everything else lives in pyproject.toml.

Build switches (environment variables; any value but "" or "0" turns one on):

* ``FASTREDIS_ANNOTATE``: write Cython's HTML annotation next to each ``.pyx``.
* ``FASTREDIS_DEBUG``: ``-O0 -g`` and Cython's own index/initialization checks on.
* ``FASTREDIS_COVERAGE``: line tracing, for coverage.py's ``Cython.Coverage`` plugin.
"""

import glob
import hashlib
import os
import shutil
import sys
import sysconfig

import Cython
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py


def _switch(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


ANNOTATE = _switch("FASTREDIS_ANNOTATE")
DEBUG = _switch("FASTREDIS_DEBUG")
COVERAGE = _switch("FASTREDIS_COVERAGE")

# src_cython/fastredis/<name>.pyx -> fastredis.<name>; the .pxd files beside them
# (_cursor: the read side's bounds rule and tokens, _outbuf: the write side's
# buffer, _batch: StreamBatch's layout, _arrow: the Arrow C data interface) are
# cimported, not compiled on their own. _columns: StreamBatch as Arrow columns.
MODULES = ["_batch", "_resp", "_writer", "_frames", "_columns"]

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


# shipped in the wheel beside the modules, for `from fastredis._batch cimport StreamBatch`
PUBLIC_PXD = ["_batch.pxd"]


class BuildPy(build_py):
    """build_py that also copies the public .pxd files into the package."""

    def run(self) -> None:
        super().run()
        for name in PUBLIC_PXD:
            target = os.path.join(self.build_lib, "fastredis", name)
            self.mkpath(os.path.dirname(target))
            self.copy_file(os.path.join("src_cython", "fastredis", name), target)


# Reusing the last build. pip rebuilds the project whenever it is installed again,
# even when only an extra was added (`pip install -e ".[server]"` after ".[test]"),
# in a fresh build directory and with a fresh Cython whose files all look newer
# than our generated C. So the decision is made on content: the modules built last
# are kept in build/core-cache/<fingerprint of the sources, switches and tool
# versions>/, and a build with the same fingerprint copies them instead of
# running Cython and the C compiler again.
CACHE_ROOT = os.path.join("build", "core-cache")


def _fingerprint() -> str:
    h = hashlib.sha256()
    sources = glob.glob("src_cython/fastredis/*.pyx") + glob.glob("src_cython/fastredis/*.pxd")
    for path in sorted(sources):
        with open(path, "rb") as f:
            h.update(path.encode() + b"\0" + f.read())
    tools = (DIRECTIVES, CFLAGS, MACROS, Cython.__version__, numpy.__version__, sys.version)
    h.update(repr(tools).encode())
    return h.hexdigest()[:16]


class BuildExt(build_ext):
    """build_ext that runs Cython only when it builds, and reuses the cached
    modules of an identical earlier build."""

    def run(self) -> None:
        cache = os.path.join(CACHE_ROOT, _fingerprint())
        names = [
            ext.name.split(".")[-1] + sysconfig.get_config_var("EXT_SUFFIX")
            for ext in self.extensions
        ]
        if not ANNOTATE and all(os.path.exists(os.path.join(cache, n)) for n in names):
            _tell("fastredis: the compiled core is up to date (same sources and switches): reused")
            for ext, name in zip(self.extensions, names, strict=True):
                target = self.get_ext_fullpath(ext.name)
                self.mkpath(os.path.dirname(target))
                self.copy_file(os.path.join(cache, name), target)
            return
        _tell(
            "fastredis: compiling the Cython core (src_cython/ -> fastredis/_*.so), about "
            "half a minute" + (" [debug]" if DEBUG else "") + (" [coverage]" if COVERAGE else "")
        )
        generated = cythonize(
            self.extensions,
            include_path=["src_cython"],
            compiler_directives=DIRECTIVES,
            annotate=ANNOTATE,
            force=True,  # something changed (maybe only a switch): regenerate all the C
        )
        for ext, gen in zip(self.extensions, generated, strict=True):  # keep setuptools'
            ext.sources, ext.depends = gen.sources, gen.depends  # attributes on ours
        super().run()
        shutil.rmtree(CACHE_ROOT, ignore_errors=True)  # keep only the latest build
        self.mkpath(cache)
        for ext, name in zip(self.extensions, names, strict=True):
            self.copy_file(self.get_ext_fullpath(ext.name), os.path.join(cache, name))


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

setup(cmdclass={"build_py": BuildPy, "build_ext": BuildExt}, ext_modules=extensions)
