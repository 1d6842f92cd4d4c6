"""Two processes with gloo (``lmforge run --nproc 2``): DDP and FSDP2 train exactly what one
process trains with the same global batch, a SIGKILLed 2-rank run resumes to the same result, and
the runner writes shared files once.

Each case launches real worker processes through ``torch.distributed.run`` (about 10 s of start-up
each), so the module is marked slow.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import safetensors.torch
import train_helpers as H
import yaml

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
STEPS = 12


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _spec(assets: dict[str, Path], backend: dict[str, Any], batch_size: int,
          extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    loop = H.loop_cfg(True, steps=STEPS, batch_size=batch_size, checkpoint_every=4,
                      backend=backend)
    spec = H.pretrain_spec(assets, real=True, loop=loop)
    spec["stages"][-1]["config"]["eval_batches"] = 2
    spec["stages"] += extra or []
    return spec


def _cmd(spec_path: Path, run_dir: Path, nproc: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "lmforge.cli", "-p", "train_fakes", "run", str(spec_path),
           "--run-dir", str(run_dir), "-q"]
    return cmd + (["--nproc", str(nproc)] if nproc else [])


def _run(spec: dict[str, Any], run_dir: Path, nproc: int | None) -> subprocess.CompletedProcess:
    spec_path = run_dir.with_suffix(".yaml")
    spec_path.write_text(yaml.safe_dump(spec))
    proc = subprocess.run(_cmd(spec_path, run_dir, nproc), env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _weights(run_dir: Path) -> dict[str, Any]:
    return safetensors.torch.load_file(str(run_dir / "pretrain/outputs/model/model.safetensors"))


def _assert_same_curve(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> None:
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, STEPS + 1))
    for (step, x), (_, y) in zip(a, b, strict=True):
        assert abs(x - y) / abs(y) <= 1e-5, f"step {step}: {x} vs {y}"


def _assert_same_weights(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max().item() <= 1e-5, k


FP32 = {"device": "cpu", "precision": "fp32"}


def _maybe_process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


@pytest.fixture(scope="module")
def runs(assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One process (global batch 4), then DDP and FSDP2 on 2 ranks (2 sequences per rank)."""
    root = tmp_path_factory.mktemp("dist")
    out = {}
    for name, backend, batch, nproc in (
            ("single", {"type": "local", **FP32}, 4, None),
            ("ddp", {"type": "ddp", **FP32}, 2, 2),
            ("fsdp2", {"type": "fsdp2", **FP32}, 2, 2)):
        _run(_spec(assets, backend, batch), root / name, nproc)
        out[name] = root / name
    return out


@pytest.mark.parametrize("backend", ["ddp", "fsdp2"])
def test_two_ranks_train_what_one_process_trains(runs: dict[str, Path], backend: str) -> None:
    single, multi = runs["single"] / "pretrain", runs[backend] / "pretrain"
    _assert_same_curve(H.loss_curve(multi), H.loss_curve(single))
    held = [r for r in H.metrics(multi) if "heldout/loss" in r]
    ref = [r for r in H.metrics(single) if "heldout/loss" in r]
    assert abs(held[0]["heldout/loss"] - ref[0]["heldout/loss"]) <= 1e-4
    _assert_same_weights(_weights(runs[backend]), _weights(runs["single"]))
    manifest = json.loads((multi / "manifest.json").read_text())
    assert manifest["ranks"] == "all" and manifest["world_size"] == 2


def test_fsdp2_checkpoints_are_sharded_dcp(runs: dict[str, Path]) -> None:
    ckpts = sorted((runs["fsdp2"] / "pretrain/checkpoints").glob("step-*"))
    assert [c.name for c in ckpts] == ["step-00000008", "step-00000012"]
    files = {p.name for p in (ckpts[-1] / "dcp").iterdir()}
    assert ".metadata" in files and len([f for f in files if f.endswith(".distcp")]) == 2
    assert {"rng-rank0.json", "rng-rank1.json", "trainer.json"} <= {
        p.name for p in ckpts[-1].iterdir()}


def test_sigkill_of_two_ranks_resumes_to_the_uninterrupted_result(
        assets: dict[str, Path], runs: dict[str, Path], tmp_path: Path) -> None:
    spec = _spec(assets, {"type": "ddp", **FP32}, 2)
    run_dir = tmp_path / "killed"
    spec_path = run_dir.with_suffix(".yaml")
    spec_path.write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen(_cmd(spec_path, run_dir, 2), env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run_dir / "pretrain/metrics.jsonl"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()] if \
                metrics.exists() else []
            if steps and max(steps) >= 6:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("training did not reach step 6")
    finally:
        # The launcher starts each worker in a session of its own: kill the whole tree.
        tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        psutil.wait_procs([p for p in map(_maybe_process, tree) if p is not None], timeout=30)
    manifest = json.loads((run_dir / "pretrain/manifest.json").read_text())
    assert manifest["status"] == "running"  # killed: nothing marked it complete
    assert (run_dir / "pretrain/checkpoints/step-00000004").is_dir()

    # Resuming on another world size would change the data order: refused, naming both sizes.
    spec_path = run_dir.with_suffix(".yaml")
    wrong = subprocess.run(_cmd(spec_path, run_dir, 1), env=_env(), capture_output=True,
                           text=True, timeout=600)
    assert wrong.returncode != 0
    assert "written by 2 rank(s) but this run has 1" in wrong.stdout + wrong.stderr

    _run(spec, run_dir, 2)
    final = json.loads((run_dir / "pretrain/manifest.json").read_text())
    assert final["status"] == "complete" and final["resumed"] is True
    _assert_same_curve(H.loss_curve(run_dir / "pretrain"), H.loss_curve(runs["ddp"] / "pretrain"))
    a, b = _weights(run_dir), _weights(runs["ddp"])
    assert all(a[k].equal(b[k]) for k in a), "resumed weights differ from the uninterrupted run"


def test_runner_on_two_ranks_writes_shared_files_once_and_reuses_everything(
        assets: dict[str, Path], tmp_path: Path) -> None:
    count = {"id": "count", "kind": "data", "plugin": "count", "config": {"label": "x"}}
    report = {"id": "eval", "kind": "evaluate", "plugin": "suite",
              "inputs": {"model": "pretrain", "tokenizer": "bpe", "text": "data"},
              "config": {"evaluators": [{"type": "perplexity", "unigram": False}],
                         "backend": {"type": "local", **FP32}, "max_examples": 8}}
    spec = _spec(assets, {"type": "ddp", **FP32}, 2, extra=[count, report])
    spec["stages"][-3]["config"]["loop"]["steps"] = 4
    run_dir = tmp_path / "run"
    _run(spec, run_dir, 2)
    # A main-only stage runs once, on rank 0, as a world of one.
    assert (run_dir / "count/calls.log").read_text() == "rank 0 of 1\n"
    assert (run_dir / "count/outputs/dataset/calls.txt").read_text() == "x by rank 0\n"
    manifests = {d.name: json.loads((d / "manifest.json").read_text())
                 for d in run_dir.iterdir() if (d / "manifest.json").is_file()}
    assert set(manifests) == {"data", "bpe", "pretrain", "count", "eval"}
    assert {k: m["ranks"] for k, m in manifests.items()} == {
        "data": "main", "bpe": "main", "pretrain": "all", "count": "main", "eval": "main"}
    assert all(m["status"] == "complete" and m["world_size"] == 2 for m in manifests.values())
    assert not list(run_dir.rglob("error*.log"))
    lines = (run_dir / "pretrain/metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines if "train/loss" in x] == [1, 2, 3, 4]
    assert (run_dir / "eval/outputs/report/report.json").is_file()
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}

    again = _run(spec, run_dir, 2)
    assert "nothing to do" in again.stdout + again.stderr
    after = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    changed = [str(p) for p in after if before.get(p) != after[p] and p.name != ".lock"]
    assert changed == [], changed
    assert (run_dir / "count/calls.log").read_text() == "rank 0 of 1\n"


def test_dpo_on_two_fsdp2_ranks_matches_one_process(assets: dict[str, Path],
                                                    tmp_path: Path) -> None:
    """DPO's reference log-probs are computed collectively (each rank scores a share of the
    pairs with the sharded model) and its loss curve equals one process's. The init model comes
    from a short pre-training with the local backend, which runs on rank 0 only."""
    import numpy as np

    def spec(backend: dict[str, Any], batch: int) -> dict[str, Any]:
        s = _spec(assets, {"type": "local", **FP32}, 4)
        s["stages"][-1]["config"]["loop"]["steps"] = 4
        s["stages"] += [
            {"id": "prefs", "kind": "data", "plugin": "fixture",
             "config": {"path": str(assets["preference"]), "format": "preference"}},
            {"id": "dpo", "kind": "align", "plugin": "dpo",
             "inputs": {"dataset": "prefs", "tokenizer": "bpe", "init": "pretrain"},
             "config": {"beta": 0.1, "eval_batches": 2, "loop": H.loop_cfg(
                 True, steps=6, batch_size=batch, checkpoint_every=3, backend=backend)}}]
        return s

    results = {}
    for name, backend, batch, nproc in (("single", {"type": "local", **FP32}, 4, None),
                                        ("fsdp2", {"type": "fsdp2", **FP32}, 2, 2)):
        _run(spec(backend, batch), tmp_path / name, nproc)
        results[name] = tmp_path / name
    manifests = {k: json.loads((v / "pretrain/manifest.json").read_text())
                 for k, v in results.items()}
    assert manifests["fsdp2"]["ranks"] == "main"  # a local-backend stage in a 2-rank launch
    _assert_same_weights(_weights(results["fsdp2"]), _weights(results["single"]))
    one, two = H.loss_curve(results["single"] / "dpo"), H.loss_curve(results["fsdp2"] / "dpo")
    assert [s for s, _ in one] == [s for s, _ in two] == list(range(1, 7))
    for (step, x), (_, y) in zip(two, one, strict=True):
        assert abs(x - y) / abs(y) <= 1e-5, f"step {step}: {x} vs {y}"
    refs = [np.load(next((r / "dpo/work").glob("ref-train-*/ref.npy")))
            for r in results.values()]
    assert refs[0].shape == refs[1].shape and np.allclose(refs[0], refs[1], atol=1e-5)
