"""Kill ``lmforge run`` at many points of every stage, rerun, get the uninterrupted result.

``fault_driver.py`` runs the CLI in a child process and ends it with ``os._exit(137)`` (no
cleanup, like SIGKILL) at the K-th event of one stage: progress advances and file publications
(``os.replace``), counted from before the stage's ``running`` manifest to after its
``complete`` one. A first, uninterrupted run counts the events of each stage; each case then
kills the run at the first, a middle or the last event of data curation, tokenizer training,
pre-training (also between checkpoints), evaluation or export, reruns the same command, and
checks that every stage's outputs -- each file's bytes -- and metrics equal the uninterrupted
run's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from integrity_helpers import (
    HERE,
    REPO,
    SPEC,
    STAGES,
    fingerprint,
    manifests,
    recorded,
    replace_with_copy,
)

from lmforge.cli import main

pytestmark = pytest.mark.slow

#: stage -> the stages that depend on it (itself included), in run order
DOWNSTREAM = {"corpus": STAGES, "bpe": STAGES[1:], "pretrain": STAGES[2:], "eval": ("eval",),
              "export": ("export",)}
#: where in a stage to kill: a fraction of its events (0: the first, 1: the last)
POINTS = {"corpus": (0, 0.5, 1), "bpe": (0, 0.5, 1), "pretrain": (0, 0.3, 0.5, 0.7, 1),
          "eval": (0, 0.5, 1), "export": (0, 0.5, 1)}
CASES = [(stage, at) for stage, ats in POINTS.items() for at in ats]


def drive(run: Path, stage: str, k: int, counts: str = "-") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}
    return subprocess.run(
        [sys.executable, str(HERE / "fault_driver.py"), stage, str(k), counts, "--",
         "run", str(SPEC), "--run-dir", str(run), "-q"],
        env=env, capture_output=True, text=True, timeout=300)


def metrics(run: Path) -> dict[str, list[dict]]:
    """Each stage's metrics records, without their wall-clock fields."""
    out = {}
    for stage in STAGES:
        path = run / stage / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] \
            if path.is_file() else []
        out[stage] = [{k: v for k, v in r.items() if k != "time" and not k.endswith("per_s")}
                      for r in rows]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted run, made at ``<root>/run`` (where every case runs: artifacts name
    absolute paths) and moved to ``<root>/ref``, and its number of events per stage."""
    root = tmp_path_factory.mktemp("faults")
    counts = root / "counts.json"
    done = drive(root / "run", "-", 0, str(counts))
    assert done.returncode == 0, done.stderr
    (root / "run").rename(root / "ref")
    return {"ref": root / "ref", "run": root / "run",
            "counts": json.loads(counts.read_text())}


@pytest.mark.parametrize(("stage", "at"), CASES, ids=[f"{s}-{a}" for s, a in CASES])
def test_a_run_killed_anywhere_ends_with_the_uninterrupted_artifacts(reference, stage, at):
    ref, run = reference["ref"], reference["run"]
    n = reference["counts"][stage]
    assert n >= 3, reference["counts"]  # enough points to kill at
    k = 1 + round(at * (n - 1))
    # the stages before this one are done (as in the uninterrupted run); this one and what
    # depends on it are not
    replace_with_copy(ref, run)
    for s in DOWNSTREAM[stage]:
        shutil.rmtree(run / s)

    killed = drive(run, stage, k)
    assert killed.returncode == 137, (killed.returncode, killed.stderr[-2000:])
    left = manifests(run)
    assert all(left.get(s, {}).get("status") in (None, "running") for s in DOWNSTREAM[stage])

    assert main(["run", str(SPEC), "--run-dir", str(run), "-q"]) == 0
    after = manifests(run)
    assert {m["status"] for m in after.values()} == {"complete"} and set(after) == set(STAGES)
    assert fingerprint(run) == fingerprint(ref)  # every file of every output, byte for byte
    assert recorded(run) == recorded(ref)
    assert metrics(run) == metrics(ref)  # the loss curve included; nothing logged twice
    if 1 < k:  # the killed attempt had started: it was resumed, not started over
        assert after[stage]["resumed"] is True
