"""`fastredis` with only the base install (no extras): --help and --version work, and
each subcommand names the extra it needs in one line. The venv is made once for this
module: the base dependencies (fastredis's metadata, no extra) installed by pip, plus this
checkout's built `fastredis` package copied beside them (what `pip install .` puts
there), so no extra can leak in from the development environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from importlib.metadata import requires
from pathlib import Path

import pytest

import fastredis

PACKAGE = Path(fastredis.__file__).resolve().parent
INSTALL_TIMEOUT = 600


@pytest.fixture(scope="module")
def base_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("base-install")
    venv.create(root / "venv", with_pip=False)
    python = str(root / "venv" / "bin" / "python")
    deps = [r for r in requires("fastredis") or [] if "extra ==" not in r]
    assert deps, "fastredis's metadata lists no dependencies"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", *deps],
        check=True, timeout=INSTALL_TIMEOUT, capture_output=True,
    )  # fmt: skip
    site = root / "site"
    shutil.copytree(PACKAGE, site / "fastredis", ignore=shutil.ignore_patterns("__pycache__"))
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "fastredis-checkout.pth").write_text(f"{site}\n")
    yield python


def _fastredis(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-I", "-m", "fastredis", *args],  # -I: no cwd, no PYTHONPATH
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_base_install_has_no_extra(base_python: str) -> None:
    probe = "import importlib.util as u; print([m for m in ('websockets', 'uvicorn', "
    probe += "'starlette', 'tqdm', 'PIL') if u.find_spec(m)])"
    out = subprocess.run([base_python, "-I", "-c", probe], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_help_and_version_work_with_the_base_install(base_python: str) -> None:
    out = _fastredis(base_python, "--help")
    assert out.returncode == 0, out.stderr
    for command in ("serve", "push-increment", "pull-raw", "push-image", "pull-image"):
        assert command in out.stdout
    assert 'pip install "fastredis[server]"' in out.stdout
    out = _fastredis(base_python, "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"fastredis {fastredis.__version__}"
    out = _fastredis(base_python, "push-image", "--help")
    assert out.returncode == 0 and 'pip install "fastredis[client]"' in out.stdout


@pytest.mark.parametrize(
    ("args", "extra", "missing"),
    [
        (["serve"], "server", "uvicorn"),
        (["push-increment", "s"], "client", "websockets"),
        (["pull-raw", "s"], "client", "websockets"),
        (["push-image", "s"], "client", "websockets"),
        (["pull_image", "s"], "client", "websockets"),
        (["record", "s", "-o", "run.mcap"], "record", "mcap"),
        (["replay", "run.mcap"], "record", "mcap"),
    ],
)
def test_each_subcommand_names_its_extra(
    base_python: str, args: list[str], extra: str, missing: str
) -> None:
    out = _fastredis(base_python, *args)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1, out.stderr  # one line, no traceback
    assert f'needs the {extra} extra: pip install "fastredis[{extra}]"' in out.stderr
    assert missing in out.stderr


def test_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fastredis", "--version"], capture_output=True, text=True
    )
    assert out.stdout.strip() == f"fastredis {fastredis.__version__}"


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["serve", "--help"]])
def test_output_into_a_closed_pipe_ends_quietly(args: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as users run it
    try:
        out = subprocess.run(
            [sys.executable, "-m", "fastredis", *args],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, env=env,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
