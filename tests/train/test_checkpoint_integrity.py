"""Corrupt checkpoints of a real pre-training stage (dense model, local backend) and resume.

Each corruption -- bit flips in tensor files, truncation, a garbled trainer state or marker, a
deleted or an added file -- must be detected before anything is loaded, named in the warning
the user sees (checkpoint path and problem), set aside as ``bad-step-...`` and recovered from:
the stage falls back to the previous valid checkpoint (or starts over when none is valid), and
the final weights and loss curve equal an uninterrupted run's, bit for bit.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import train_helpers as H

from lmforge.errors import IntegrityWarning
from lmforge.runner import read_manifest
from lmforge.testing import run_spec
from lmforge.training import loop as loop_mod

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(H.REAL is None, reason="needs the dense model and local backend")]

STEPS, EVERY, CRASH = 12, 4, 10  # checkpoints at 4 and 8 when the crash at step 10 comes


def _spec(assets: dict[str, Path]) -> dict:
    loop = H.loop_cfg(True, steps=STEPS, checkpoint_every=EVERY, log_every=1, grad_accum=2)
    return H.pretrain_spec(assets, True, loop=loop)


def _weights(run: Path) -> dict:
    return safetensors.torch.load_file(str(run / "pretrain" / "outputs" / "model" /
                                           "model.safetensors"))


@pytest.fixture(scope="module")
def runs(assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An uninterrupted run, and a run interrupted at step 10 (checkpoints 4 and 8 on disk)."""
    root = tmp_path_factory.mktemp("ckpt-integrity")
    spec, pm = _spec(assets), H.make_pm(True)
    run_spec(spec, pm, root / "straight")
    orig = loop_mod.Trainer.train_step

    def crashing(self):
        out = orig(self)
        if self.step == CRASH:
            raise KeyboardInterrupt
        return out

    loop_mod.Trainer.train_step = crashing  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            run_spec(spec, pm, root / "interrupted")
    finally:
        loop_mod.Trainer.train_step = orig  # type: ignore[method-assign]
    ckpts = root / "interrupted" / "pretrain" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000004", "step-00000008"]
    return {"straight": root / "straight", "interrupted": root / "interrupted"}


# -- corruptions: each changes files of one checkpoint folder ------------------------------------
def flip_bit(path: Path, offset_from_end: int = 7) -> None:
    """Flip one bit in the tensor data (the end of a safetensors file, after the header)."""
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garble(path: Path) -> None:
    """Same size, different bytes: only the hash can tell."""
    text = path.read_bytes()
    path.write_bytes(text[:-4] + b"#@!%" if len(text) > 4 else b"#@!%")


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    # name: (what is done to checkpoint folder c, what the warning must say)
    "bitflip-model-tensors": (lambda c: flip_bit(c / "train.safetensors"),
                              "train.safetensors does not match the sha256"),
    "bitflip-rng-tensors": (lambda c: flip_bit(c / "rng-rank0.safetensors"),
                            "rng-rank0.safetensors does not match the sha256"),
    "truncated-model-tensors": (lambda c: truncate(c / "train.safetensors"),
                                "train.safetensors has "),
    "garbled-trainer-state": (lambda c: garble(c / "trainer.json"),
                              "trainer.json does not match the sha256"),
    "truncated-trainer-state": (lambda c: truncate(c / "trainer.json"), "trainer.json has "),
    "deleted-rng-file": (lambda c: (c / "rng-rank0.json").unlink(), "rng-rank0.json is missing"),
    "deleted-optimizer-skeleton": (lambda c: (c / "train.json").unlink(),
                                   "train.json is missing"),
    "deleted-marker": (lambda c: (c / "checkpoint.json").unlink(), "checkpoint.json is missing"),
    "garbled-marker": (lambda c: (c / "checkpoint.json").write_text("{not json"),
                       "checkpoint.json is unreadable"),
    "added-file": (lambda c: (c / "extra.safetensors").write_bytes(b"\0" * 16),
                   "extra.safetensors was not written by the checkpoint"),
}


def _resume(runs: dict[str, Path], tmp_path: Path, corrupt: dict[str, Callable[[Path], None]],
            assets: dict[str, Path], monkeypatch: pytest.MonkeyPatch
            ) -> tuple[Path, list[str], list[int | None]]:
    """Copy the interrupted run, corrupt checkpoints (step name -> corruption), resume it.
    Returns (run dir, integrity warnings, the step each resume started from)."""
    run = tmp_path / "run"
    shutil.copytree(runs["interrupted"], run)
    ckpts = run / "pretrain" / "checkpoints"
    for name, fn in corrupt.items():
        fn(ckpts / name)
    started: list[int | None] = []
    orig = loop_mod.Trainer.maybe_resume

    def spy(self):
        started.append(orig(self))
        return started[-1]

    monkeypatch.setattr(loop_mod.Trainer, "maybe_resume", spy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_spec(_spec(assets), H.make_pm(True), run)
    assert res.stages[-1].status == "complete"
    manifest = read_manifest(run / "pretrain")
    assert manifest["status"] == "complete" and manifest["resumed"] is True
    return run, [str(w.message) for w in caught if issubclass(w.category, IntegrityWarning)], \
        started


def _assert_same_as_straight(runs: dict[str, Path], run: Path) -> None:
    straight = H.loss_curve(runs["straight"] / "pretrain")
    resumed = H.loss_curve(run / "pretrain")
    assert [s for s, _ in resumed] == list(range(1, STEPS + 1))
    assert resumed == straight  # bitwise: the floats are identical
    a, b = _weights(runs["straight"]), _weights(run)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_an_intact_checkpoint_is_resumed_without_warnings(runs, tmp_path, assets, monkeypatch):
    run, warned, started = _resume(runs, tmp_path, {}, assets, monkeypatch)
    assert warned == [] and started == [8]
    _assert_same_as_straight(runs, run)


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_corrupt_newest_checkpoint_is_named_set_aside_and_the_previous_one_used(
        runs, tmp_path, assets, monkeypatch, kind):
    corrupt, says = CORRUPTIONS[kind]
    run, warned, started = _resume(runs, tmp_path, {"step-00000008": corrupt}, assets,
                                   monkeypatch)
    ckpts = run / "pretrain" / "checkpoints"
    assert len(warned) == 1, warned
    assert f"checkpoint {ckpts / 'step-00000008'} is corrupt" in warned[0]
    assert says in warned[0]
    assert "falling back to the previous checkpoint (step-00000004)" in warned[0]
    assert started == [4]  # never loaded from the corrupt one
    assert (ckpts / "bad-step-00000008").is_dir()  # kept for inspection, never resumed from
    _assert_same_as_straight(runs, run)
    # the steps after 4 were trained again and checkpointed anew; the bad one stays aside
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "bad-step-00000008", "step-00000008", "step-00000012"]


def test_every_checkpoint_corrupt_starts_the_stage_over(runs, tmp_path, assets, monkeypatch):
    run, warned, started = _resume(runs, tmp_path, {
        "step-00000008": lambda c: flip_bit(c / "train.safetensors"),
        "step-00000004": lambda c: truncate(c / "rng-rank0.safetensors")}, assets, monkeypatch)
    assert len(warned) == 2, warned
    assert "step-00000008 is corrupt: train.safetensors does not match" in warned[0]
    assert "step-00000004 is corrupt: rng-rank0.safetensors has " in warned[1]
    assert "no earlier checkpoint: the stage starts over" in warned[1]
    assert started == [None]
    _assert_same_as_straight(runs, run)  # metrics of the first attempt were dropped too


def test_the_older_checkpoint_corrupt_is_never_looked_at_when_the_newest_is_valid(
        runs, tmp_path, assets, monkeypatch):
    run, warned, started = _resume(runs, tmp_path, {
        "step-00000004": lambda c: flip_bit(c / "train.safetensors")}, assets, monkeypatch)
    assert warned == [] and started == [8]
    _assert_same_as_straight(runs, run)


def test_a_metrics_line_cut_short_by_a_kill_does_not_stop_the_resume(
        runs, tmp_path, assets, monkeypatch):
    def cut(_: Path) -> None:
        metrics = tmp_path / "run" / "pretrain" / "metrics.jsonl"
        with metrics.open("a") as fh:
            fh.write('{"step": 10, "train/lo')  # the process died mid-write
    run, warned, started = _resume(runs, tmp_path, {"step-00000008": cut}, assets, monkeypatch)
    assert warned == [] and started == [8]
    _assert_same_as_straight(runs, run)
