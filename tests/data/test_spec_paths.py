"""Paths in a spec file are relative to that file's folder, and `validate` / `plan` check that
every source's path or glob matches files (issue 8). Also: the JSONL error text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge import StageFailed
from lmforge.testing import run_spec
from tests.data.helpers import PARAGRAPH, curate_spec, write_jsonl

REPO = Path(__file__).resolve().parents[2]

SPEC = """\
name: paths
run_dir: out/run
stages:
  - id: corpus
    kind: data
    plugin: curate
    config:
      sources:
        - {type: jsonl, path: "data/*.jsonl"}
        - {type: text, path: [notes/a.txt]}
      heldout_fraction: 0.0
"""


def lmforge(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "lmforge", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write_jsonl(root / "data" / "a.jsonl", [{"text": f"{PARAGRAPH} {i}"} for i in range(3)])
    (root / "notes").mkdir()
    (root / "notes" / "a.txt").write_text(PARAGRAPH + " notes")
    (root / "pipeline.yaml").write_text(SPEC)
    return root


def test_relative_paths_resolve_against_the_spec_folder(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spec = str(project / "pipeline.yaml")
    assert lmforge(elsewhere, "validate", spec).returncode == 0
    proc = lmforge(elsewhere, "run", spec, "-q")
    assert proc.returncode == 0, proc.stderr
    run = project / "out" / "run"  # run_dir too is relative to the spec file
    manifest = json.loads((run / "corpus" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["metrics"]["docs_out"] == 4
    assert not (elsewhere / "out").exists()
    sources = manifest["config"]["sources"]
    assert sources[0]["path"] == str(project / "data" / "*.jsonl")
    assert sources[1]["path"] == [str(project / "notes" / "a.txt")]


def test_validate_and_plan_report_globs_that_match_nothing(project: Path,
                                                           tmp_path: Path) -> None:
    (project / "pipeline.yaml").write_text(SPEC.replace('"data/*.jsonl"', '"dta/*.jsonl"')
                                           .replace("notes/a.txt", "notes/b.txt"))
    spec = str(project / "pipeline.yaml")
    for command in ("validate", "plan"):
        proc = lmforge(tmp_path, command, spec)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        err = proc.stderr
        assert "2 errors" in err, err
        assert f"{spec}:9" in err and str(project / "dta" / "*.jsonl") in err
        assert "matches no file" in err
        assert f"{spec}:10" in err and "notes/b.txt" in err and "does not exist" in err
        assert "spec file's folder" in err
    assert not (project / "out").exists(), "nothing is written for an invalid spec"


def test_absolute_and_placeholder_paths_are_kept(project: Path, tmp_path: Path) -> None:
    absolute = str(project / "data" / "a.jsonl")
    (project / "pipeline.yaml").write_text(SPEC.replace('"data/*.jsonl"', f'"{absolute}"'))
    assert lmforge(tmp_path, "validate", str(project / "pipeline.yaml")).returncode == 0


def test_invalid_json_message_reads_well(pm, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "tab\tinside"}\n')
    with pytest.raises(StageFailed) as info:
        run_spec(curate_spec({"sources": [{"type": "jsonl", "path": str(bad)}]}), pm,
                 tmp_path / "run")
    msg = str(info.value.cause)
    assert "at at" not in msg
    assert "line 2 (record 1): not valid JSON (Invalid control character at column 14)" in msg


def test_testing_kit_can_validate_like_the_cli(pm, project: Path) -> None:
    from lmforge import SpecError
    from lmforge.testing import validate_spec

    text = (project / "pipeline.yaml").read_text()
    pipeline = validate_spec(text, pm, base_dir=project, check_files=True)
    assert pipeline.stages[0].config.sources[1].path == [str(project / "notes" / "a.txt")]
    validate_spec(text.replace("notes/a.txt", "notes/zz.txt"), pm)  # no check: fine
    with pytest.raises(SpecError, match="does not exist"):
        validate_spec(text.replace("notes/a.txt", "notes/zz.txt"), pm, base_dir=project,
                      check_files=True)
