"""Two ``lmforge run`` on one run directory at once: the second stops at once, names the first
(its pid), exits non-zero and touches nothing; the first finishes as if alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from integrity_helpers import REPO

TOY = ["--no-autoload", "-p", "tests.core.toy_plugin"]


def _cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    environ = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "lmforge", *args], env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat The end\n")
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"""\
name: toy
stages:
  - id: words
    kind: data
    plugin: count
    config: {{path: {corpus}}}
  - id: acc
    kind: train
    plugin: accumulate
    inputs: {{counts: words}}
    config: {{steps: 8, checkpoint_every: 2}}
""")
    return path


@pytest.mark.slow
def test_a_second_run_on_the_same_directory_is_refused_naming_the_first(spec, tmp_path):
    clean, run = tmp_path / "clean", tmp_path / "run"
    proc = _cli(*TOY, "run", str(spec), "--run-dir", str(clean), "-q")
    assert proc.wait(timeout=120) == 0, proc.stderr.read()

    first = _cli(*TOY, "run", str(spec), "--run-dir", str(run), "-q",
                 env={"TOY_STEP_SECONDS": "0.25"})
    acc = run / "acc" / "manifest.json"
    deadline = time.monotonic() + 60
    while not (acc.is_file() and (run / "acc" / "metrics.jsonl").is_file()):
        assert time.monotonic() < deadline and first.poll() is None, first.stderr.read()
        time.sleep(0.05)

    # the second asks for everything to be redone: had it gone on, it would have deleted the
    # first's stage folders under it
    second = _cli(*TOY, "run", str(spec), "--run-dir", str(run), "-q", "--force", "words",
                  "--force", "acc")
    assert second.wait(timeout=60) == 1
    err = " ".join(second.stderr.read().split())
    assert f"run directory {run} is in use by another lmforge run (pid {first.pid})" in err
    assert "Traceback" not in err
    assert first.poll() is None, "the first run was disturbed"

    assert first.wait(timeout=120) == 0, first.stderr.read()
    manifest = json.loads(acc.read_text())
    assert manifest["status"] == "complete" and manifest["resumed"] is False
    for rel in ("acc/outputs/result/total.txt", "words/outputs/counts/counts.json"):
        assert (run / rel).read_bytes() == (clean / rel).read_bytes()
    steps = [json.loads(x)["step"] for x in (run / "acc" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))

    # once the first is done, the directory is free again
    third = _cli(*TOY, "run", str(spec), "--run-dir", str(run), "-q")
    assert third.wait(timeout=60) == 0
    assert "nothing to do" in third.stderr.read()
