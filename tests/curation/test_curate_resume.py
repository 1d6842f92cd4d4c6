"""A killed ``curate`` resumes from the tasks it committed and ends with the uninterrupted
output, byte for byte.

``tests/integrity/fault_driver.py`` ends the CLI with ``os._exit(137)`` (as SIGKILL would: no
cleanup) at the K-th event of the stage (a progress advance or an ``os.replace``: a partition,
dedup bucket or shard committed). A second test sends a real SIGKILL to a run with two worker
processes once some partitions are committed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lmforge.fsutil import file_hashes
from tests.data.helpers import write_jsonl

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "tests" / "integrity" / "fault_driver.py"


def _spec(root: Path, planted: Any, files: int, num_proc: int) -> Path:
    docs = planted.docs
    for i in range(files):
        write_jsonl(root / "in" / f"part-{i:02d}.jsonl", [{"text": t} for t in docs[i::files]])
    spec = {"name": "resume", "stages": [{"id": "corpus", "kind": "data", "plugin": "curate",
                                          "config": {
        "sources": [{"type": "jsonl", "path": str(root / "in" / "*.jsonl")}],
        "filters": [{"type": "length", "min_words": 5}], "dedup": {"type": "minhash"},
        "heldout_fraction": 0.1, "shard_rows": 100, "chunk_size": 64, "partition_bytes": 1,
        "num_proc": num_proc}}]}
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _drive(spec: Path, run: Path, k: int, counts: str = "-") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(DRIVER.parent)])}
    return subprocess.run([sys.executable, str(DRIVER), "corpus", str(k), counts, "--",
                           "run", str(spec), "--run-dir", str(run), "-q"],
                          env=env, capture_output=True, text=True, timeout=300)


def _output(run: Path) -> dict[str, Any]:
    out = run / "corpus" / "outputs" / "dataset"
    manifest = json.loads((run / "corpus" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    return {"files": file_hashes(out), "metrics": {k: v for k, v in manifest["metrics"].items()},
            "recorded": manifest["outputs"]["dataset"]["files"]}


def test_killed_anywhere_then_resumed_equals_uninterrupted(planted, tmp_path):
    spec = _spec(tmp_path, planted, files=6, num_proc=1)
    counts = tmp_path / "counts.json"
    assert _drive(spec, tmp_path / "ref", 0, str(counts)).returncode == 0
    ref = _output(tmp_path / "ref")
    n = json.loads(counts.read_text())["corpus"]
    assert n >= 20  # 6 partitions, dedup buckets, merges, shards: many points to kill at
    for at in (0.25, 0.75):
        run = tmp_path / f"run-{at}"
        k = max(2, round(at * n))
        killed = _drive(spec, run, k)
        assert killed.returncode == 137, killed.stderr[-2000:]
        again = tmp_path / f"counts-{at}.json"
        done = _drive(spec, run, 0, str(again))
        assert done.returncode == 0, done.stderr[-2000:]
        assert _output(run) == ref  # every shard, stats.json, artifact.json: byte for byte
        manifest = json.loads((run / "corpus" / "manifest.json").read_text())
        assert manifest["resumed"] is True
        # the committed tasks were not redone: the resumed run had fewer events to go through
        assert json.loads(again.read_text())["corpus"] < n
        assert not (run / "corpus" / "work" / "curate").exists()  # cleaned up when complete


def test_sigkill_with_worker_processes_then_resume(planted, tmp_path):
    spec = _spec(tmp_path, planted, files=24, num_proc=2)
    ref_run = tmp_path / "ref"
    cmd = [sys.executable, "-m", "lmforge", "run", str(spec), "-q", "--run-dir"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([*cmd, str(ref_run)], env=env, check=True, capture_output=True, timeout=300)
    ref = _output(ref_run)

    run = tmp_path / "run"
    parts = run / "corpus" / "work" / "curate" / "parts"
    proc = subprocess.Popen([*cmd, str(run)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and len([p for p in parts.iterdir() if p.name.startswith("p")]) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker processes
    proc.wait(timeout=30)
    committed = sorted(p.name for p in parts.iterdir() if p.name.startswith("p"))
    assert len(committed) >= 3
    stamps = {name: (parts / name / "result.json").stat().st_mtime_ns for name in committed}

    # resume: the committed partitions are kept as they are (never rewritten), and the
    # output is the same bytes
    resumed = subprocess.Popen([*cmd, str(run)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    rewritten = []
    while resumed.poll() is None:
        for name, stamp in stamps.items():
            try:
                if (parts / name / "result.json").stat().st_mtime_ns != stamp:
                    rewritten.append(name)
            except FileNotFoundError:  # the work folder is removed when the stage completes
                pass
        time.sleep(0.01)
    assert resumed.returncode == 0, resumed.stderr.read()[-2000:]
    assert not rewritten
    assert _output(run) == ref
