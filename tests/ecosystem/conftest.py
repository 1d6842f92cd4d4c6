"""A throwaway virtual environment for testing plugin packages as a user installs them.

Why not ``--system-site-packages`` or a full install: the first would leak this environment's
``lmforge`` (and its entry points) into the new one; the second would download or copy torch,
datasets ... for every test run. Instead:

* ``python -m venv --without-pip`` makes an empty environment (a second or so);
* an ``outer-deps/`` folder holds symlinks to every entry of *this* environment's
  site-packages **except lmforge's own** (its dist-info, editable finder and ``.pth`` files), and
  a ``.pth`` file in the new environment adds that folder to ``sys.path``. Third-party
  dependencies (pydantic, stevedore, torch, pip, setuptools, pytest ...) are thus importable, and
  pip treats them as outside the environment, so it never uninstalls or shadows them;
* lmforge itself is installed from this checkout with ``pip install --no-deps
  --no-build-isolation --no-index -e`` (setuptools comes from ``outer-deps``), so its metadata
  and entry points are the new environment's own, and everything works offline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_SKIP_PREFIXES = ("lmforge", "__editable__", "__editable___")


@dataclass
class Venv:
    root: Path
    python: Path

    @property
    def bin(self) -> Path:
        return self.python.parent

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.root)
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        env["PIP_NO_INPUT"] = "1"
        return env

    def run(self, *args: str | Path, cwd: Path | None = None, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run a command with this environment first on PATH; returns stdout/stderr text."""
        cmd = [str(a) for a in args]
        proc = subprocess.run(cmd, cwd=cwd or REPO, env=self.env(), capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n"
                                 f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
        return proc

    def pip(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(self.python, "-m", "pip", *args, check=check)

    def install(self, path: Path, *, editable: bool = False) -> None:
        """Install a local package offline, without dependencies or build isolation."""
        self.pip("install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                 *(["-e"] if editable else []), path)


def make_venv(root: Path) -> Venv:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=120)
    python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    outer = Path(sysconfig.get_paths()["purelib"])
    deps = root / "outer-deps"
    deps.mkdir()
    for entry in outer.iterdir():
        if entry.name.startswith(_SKIP_PREFIXES) or entry.suffix == ".pth":
            continue
        (deps / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    inner = subprocess.run([str(python), "-c",
                            "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           check=True, capture_output=True, text=True).stdout.strip()
    Path(inner, "_lmforge_test_outer_deps.pth").write_text(f"{deps}\n")
    return Venv(root=root, python=python)


@pytest.fixture(scope="session")
def lmforge_venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh environment with this checkout's lmforge installed (editable) and no plugins
    besides lmforge's first-party ones."""
    venv = make_venv(tmp_path_factory.mktemp("venv") / "env")
    venv.install(REPO, editable=True)
    check = venv.run(venv.python, "-c", "import lmforge, sys; print(lmforge.__file__)")
    assert Path(check.stdout.strip()).is_relative_to(REPO), check.stdout
    return venv


def copy_package(src: Path, dest: Path) -> Path:
    """Copy a package source tree without build leftovers (so building it leaves ``src``
    untouched: setuptools writes ``build/`` and ``*.egg-info`` next to the sources)."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(
        "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    return dest
