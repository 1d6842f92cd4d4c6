"""The catalog's install hints work from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lmforge.catalog import load_catalog, parse_catalog

REPO = Path(__file__).resolve().parents[2]

ENTRY = """
[[plugin]]
name = "x"
distribution = "lmforge-x"
requirement = "{req}"
entry_points = ["x"]
components = ["filter/x"]
"""


def test_relative_requirement_resolves_against_the_catalog_folder(tmp_path: Path) -> None:
    (tmp_path / "pkgs" / "x").mkdir(parents=True)
    (tmp_path / "registry").mkdir()
    base = tmp_path / "registry"
    (entry,) = parse_catalog(ENTRY.format(req="../pkgs/x"), base)
    assert entry.requirement == str((tmp_path / "pkgs" / "x").resolve())
    (entry,) = parse_catalog(ENTRY.format(req="lmforge-x>=1"), base)
    assert entry.requirement == "lmforge-x>=1"  # a PyPI requirement is left alone
    (entry,) = parse_catalog(ENTRY.format(req="./missing"), base)
    assert entry.requirement == "./missing"  # not there: shown as written


def test_shipped_catalog_paths_exist_in_a_checkout() -> None:
    for entry in load_catalog():
        if "/" in entry.requirement:
            assert Path(entry.requirement).is_absolute(), entry
            assert (Path(entry.requirement) / "pyproject.toml").is_file(), entry


def test_plugins_list_hint_from_another_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_")}
    proc = subprocess.run([sys.executable, "-m", "lmforge", "plugins", "list", "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    local = [a for a in json.loads(proc.stdout)["available"] if "/" in a["requirement"]]
    for a in local:  # the command it prints can be pasted here, in tmp_path
        assert (tmp_path / a["requirement"] / "pyproject.toml").is_file(), a
