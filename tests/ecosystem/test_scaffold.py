"""``lmforge new-plugin`` / :func:`lmforge.scaffold.create_plugin`: the generated package works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest

import lmforge
from lmforge import LmforgeError
from lmforge.scaffold import create_plugin, plugin_names
from tests.ecosystem.conftest import Venv


def test_names_are_normalised() -> None:
    n = plugin_names("My_Filters")
    assert (n.name, n.distribution, n.package) == ("my-filters", "lmforge-my-filters",
                                                    "lmforge_my_filters")
    assert plugin_names("lmforge-acme").package == "lmforge_acme"
    major, minor = lmforge.__version__.split(".")[:2]
    assert n.core_requirement == f"lmforge>={major}.{minor}"


@pytest.mark.parametrize("bad", ["", "9x", "a b", "-x", "x--y", "x-", "bad!", "lmforge-"])
def test_invalid_names(tmp_path: Path, bad: str) -> None:
    with pytest.raises(LmforgeError, match="invalid plugin name"):
        create_plugin(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_non_empty_directory(tmp_path: Path) -> None:
    dest = tmp_path / "pkg"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(LmforgeError, match="not empty"):
        create_plugin("x", dest)
    assert sorted(p.name for p in dest.iterdir()) == ["notes.txt"]
    root = create_plugin("x", dest, force=True)
    assert (root / "notes.txt").read_text() == "mine"
    assert (root / "src" / "lmforge_x" / "plugin.py").is_file()


def test_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(LmforgeError, match="is a file"):
        create_plugin("x", tmp_path / "f")


def test_layout_and_metadata(tmp_path: Path) -> None:
    root = create_plugin("my-filters", tmp_path / "empty-dir-is-fine")
    assert root == (tmp_path / "empty-dir-is-fine").resolve()
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", "pyproject.toml", "src/lmforge_my_filters/__init__.py",
                     "src/lmforge_my_filters/filters.py", "src/lmforge_my_filters/plugin.py",
                     "tests/test_plugin.py"]
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "lmforge-my-filters"
    assert meta["project"]["entry-points"]["lmforge.plugins"] == {
        "my-filters": "lmforge_my_filters.plugin"}
    assert meta["project"]["dependencies"] == [plugin_names("x").core_requirement]
    assert "$" not in (root / "src/lmforge_my_filters/plugin.py").read_text()


def unique_plugin_name() -> str:
    """A plugin name no one has installed: the docs tell readers to `new-plugin my-filters`
    and install it, which must not change what these tests see."""
    return f"scaffold-probe-{uuid.uuid4().hex[:10]}"


def test_generated_tests_pass_as_generated(tmp_path: Path) -> None:
    name = unique_plugin_name()
    root = create_plugin(name, tmp_path / f"lmforge-{name}")
    package = plugin_names(name).package
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 passed, 1 skipped" in proc.stdout  # the entry-point test needs an install
    # the registration module stays light: importing it pulls in no heavy library
    code = (f"import sys, {package}.plugin; heavy = {{'torch', 'numpy', 'datasets', "
            f"'wandb'}} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


def test_cli_new_plugin(tmp_path: Path) -> None:
    from lmforge.cli import main

    assert main(["new-plugin", "cli-made", "--dir", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "src" / "lmforge_cli_made" / "filters.py").is_file()
    assert main(["new-plugin", "cli-made", "--dir", str(tmp_path / "p")]) != 0  # not empty


@pytest.mark.slow
def test_generated_package_installs_and_is_discovered(tmp_path: Path,
                                                      lmforge_venv: Venv) -> None:
    name = unique_plugin_name()
    root = create_plugin(name, tmp_path / f"lmforge-{name}")
    lmforge_venv.install(root)
    try:
        proc = lmforge_venv.run(lmforge_venv.python, "-m", "pytest", "-q", "-p",
                                "no:cacheprovider", cwd=root)
        assert "6 passed" in proc.stdout, proc.stdout  # including the entry-point test
        report = json.loads(lmforge_venv.run("lmforge", "plugins", "list", "--json").stdout)
        mine = [p for p in report["plugins"] if p["name"] == name]
        assert mine and mine[0]["distribution"] == f"lmforge-{name}"
        assert mine[0]["components"] == [f"filter/{name}-uppercase"]
    finally:
        lmforge_venv.pip("uninstall", "-y", f"lmforge-{name}")
