"""The third-party example plugin, as a user meets it: pip install, discover, run, uninstall."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ecosystem.conftest import REPO, Venv, copy_package

EXAMPLE = REPO / "examples" / "plugin-example"
SPEC = EXAMPLE / "pipeline.yaml"
EXPECTED_DROPS = {"casino": 1, "lorem ipsum": 1, r"buy\s+now": 2, "spam": 1}


def _plugins(venv: Venv) -> dict[str, dict]:
    report = json.loads(venv.run("lmforge", "plugins", "list", "--json").stdout)
    return {p["name"]: p for p in report["plugins"]}


@pytest.mark.slow
def test_install_run_uninstall(tmp_path: Path, lmforge_venv: Venv) -> None:
    venv = lmforge_venv
    assert "acme-filters" not in _plugins(venv)
    venv.install(copy_package(EXAMPLE, tmp_path / "src-copy"))
    try:
        acme = _plugins(venv)["acme-filters"]
        assert acme["distribution"] == "lmforge-acme-filters"
        assert acme["components"] == ["filter/acme-blocklist"]

        # the package's own tests, against the installed package (entry-point test included)
        own = venv.run(venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       tmp_path / "src-copy" / "tests", cwd=tmp_path / "src-copy")
        assert "9 passed" in own.stdout, own.stdout

        run_dir = tmp_path / "run"
        venv.run("lmforge", "run", SPEC, "--run-dir", run_dir, "--quiet")
        manifest = json.loads((run_dir / "corpus" / "manifest.json").read_text())
        assert manifest["status"] == "complete"
        assert (manifest["metrics"]["docs_in"], manifest["metrics"]["docs_out"]) == (10, 5)
        stats = json.loads((run_dir / "corpus" / "outputs" / "dataset" / "stats.json")
                           .read_text())
        (acme_stats,) = [f for f in stats["filters"] if f["name"] == "acme-blocklist"]
        assert acme_stats["dropped"] == 5
        assert acme_stats["dropped_by_reason"] == EXPECTED_DROPS
    finally:
        venv.pip("uninstall", "-y", "lmforge-acme-filters")

    assert "acme-filters" not in _plugins(venv)
    proc = venv.run("lmforge", "validate", SPEC, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "acme-blocklist" in out, out
