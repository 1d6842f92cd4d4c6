"""Layering is law: the core imports no plugin, plugins don't import each other, and
discovery/validation import nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "datasets", "wandb", "megatron", "transformers", "pyarrow", "trl",
         "matplotlib")


def test_import_linter_contracts_hold():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    plugin_dirs = sorted(p.name for p in (REPO / "plugins").iterdir()
                         if p.is_dir() and p.name.startswith("lmforge_"))
    assert sorted(config["root_packages"]) == sorted(["lmforge", *plugin_dirs]), \
        "every plugin package must be listed in [tool.importlinter] root_packages"
    proc = subprocess.run([sys.executable, "-m", "importlinter.cli", "--config",
                           str(REPO / "pyproject.toml")], capture_output=True, text=True,
                          cwd=REPO)
    if proc.returncode != 0 and "No module named importlinter.cli" in proc.stderr:
        proc = subprocess.run(["lint-imports", "--config", str(REPO / "pyproject.toml")],
                              capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


PROBE = """
import json, sys
from lmforge.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "heavy": sorted(m for m in sys.modules
                  if m.split('.')[0] in %r)}))
""" % (HEAVY,)


def _probe(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          cwd=REPO)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_plugins_list_and_validate_import_nothing_heavy():
    got = _probe("plugins", "list")
    assert got == {"code": 0, "heavy": []}
    for spec in sorted((REPO / "examples").glob("*/pipeline.yaml")):
        got = _probe("validate", str(spec))
        assert got["heavy"] == [], spec
