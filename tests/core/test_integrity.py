"""Integrity, fast: the checkpoint store verifies before anything is loaded, the runner verifies
outputs before reuse and says why a stage runs again, a resumed stage starts without its killed
attempt's partial outputs, the run-directory lock. (End to end with real plugins, fault
injection and two processes: tests/integrity/ and tests/train/test_checkpoint_integrity.py.)"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from pydantic import Field

from lmforge import Config, Stage, hookimpl, stage
from lmforge.checkpoint import CheckpointStore
from lmforge.cli import main
from lmforge.errors import IntegrityWarning, LmforgeError
from lmforge.runner import Runner, changed_outputs, read_manifest, run_dir_lock
from lmforge.testing import plugin_manager, run_spec, validate_spec
from tests.core import toy_plugin

TOY = ["--no-autoload", "-p", "tests.core.toy_plugin"]


def flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))


# -- the checkpoint store ---------------------------------------------------------------------
def _store(tmp_path: Path, steps: tuple[int, ...] = (2, 4)) -> CheckpointStore:
    store = CheckpointStore(tmp_path / "ckpts", keep=5)
    for s in steps:
        store.save(s, {"total": torch.tensor(float(s)), "step": s})
    return CheckpointStore(tmp_path / "ckpts", keep=5)  # a fresh one, as after a restart


def test_latest_valid_sets_a_corrupt_checkpoint_aside_naming_it(tmp_path):
    store = _store(tmp_path)
    newest = store.root / "step-00000004"
    flip_bit(newest / "state.safetensors")
    with pytest.warns(IntegrityWarning) as caught:
        found = store.latest_valid()
    assert found is not None and found.step == 2
    (msg,) = [str(w.message) for w in caught]
    assert msg == (f"checkpoint {newest} is corrupt: state.safetensors does not match the sha256 "
                   f"recorded when it was written; it is not used (set aside as "
                   f"{store.root / 'bad-step-00000004'}), falling back to the previous "
                   f"checkpoint (step-00000002)")
    assert [c.step for c in store.all()] == [2]
    assert store.load()["step"] == 2


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda c: (c / "checkpoint.json").unlink(), "checkpoint.json is missing"),
    (lambda c: (c / "checkpoint.json").write_bytes(b"\xff\x00"), "checkpoint.json is unreadable"),
    (lambda c: (c / "checkpoint.json").write_text('{"step": 4, "files": [1]}'),
     "checkpoint.json is unreadable"),
    (lambda c: (c / "checkpoint.json").write_text(
        (c / "checkpoint.json").read_text().replace('"step": 4', '"step": 2')),
     "checkpoint.json is for step 2, not 4"),
    (lambda c: (c / "state.json").unlink(), "state.json is missing"),
    (lambda c: (c / "state.json").write_text("{}"), "state.json has 2 bytes"),
    (lambda c: (c / "sub").mkdir() or (c / "sub" / "x.bin").write_bytes(b"1"),
     "sub/x.bin was not written by the checkpoint"),
])
def test_every_kind_of_damage_is_found(tmp_path, damage, problem):
    store = _store(tmp_path)
    damage(store.root / "step-00000004")
    with pytest.warns(IntegrityWarning, match="step-00000004 is corrupt: " + problem):
        assert store.latest_valid().step == 2  # type: ignore[union-attr]
    assert (store.root / "bad-step-00000004").is_dir()


def test_no_valid_checkpoint_means_a_fresh_start(tmp_path):
    store = _store(tmp_path)
    for c in store.all():
        flip_bit(c.path / "state.safetensors")
    with pytest.warns(IntegrityWarning) as caught:
        assert store.latest_valid() is None
    assert len(caught) == 2 and "no earlier checkpoint: the stage starts over" in \
        str(caught[1].message)
    with pytest.raises(FileNotFoundError, match="no valid checkpoint"):
        store.load()


def test_load_of_a_named_checkpoint_verifies_it_first(tmp_path):
    store = _store(tmp_path)
    ckpt = store.latest()
    flip_bit(ckpt.path / "state.safetensors")  # type: ignore[union-attr]
    with pytest.raises(LmforgeError, match=f"checkpoint {ckpt.path} is corrupt: state"):  # type: ignore[union-attr]
        store.load(ckpt)


def test_commit_prunes_a_half_deleted_older_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path / "ckpts", keep=1)
    store.save(2, {"step": 2})
    leftover = store.root / "step-00000001"  # a prune killed after the marker went
    leftover.mkdir()
    (leftover / "state.json").write_text("{}")
    store.save(4, {"step": 4})
    assert sorted(p.name for p in store.root.iterdir()) == ["step-00000004"]


def test_hash_files_on_threads_gives_what_one_thread_gives(tmp_path, monkeypatch):
    from lmforge import fsutil

    files = []
    for i in range(5):
        files.append(tmp_path / f"f{i}.bin")
        files[-1].write_bytes(bytes([i]) * (100_000 + i))
    one = [fsutil.hash_file(f) for f in files]
    assert fsutil.hash_files(files) == one
    monkeypatch.setattr(fsutil, "PARALLEL_HASH_BYTES", 0)
    assert fsutil.hash_files(files) == one


# -- the runner -------------------------------------------------------------------------------
@pytest.fixture
def spec(tmp_path: Path) -> str:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat The end\n")
    return f"""\
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
    config: {{steps: 6, checkpoint_every: 2}}
"""


def _curve(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["total"]) for r in map(json.loads, (run / "acc" / "metrics.jsonl")
                                                   .read_text().splitlines())]


def test_a_resume_skips_a_corrupt_checkpoint_and_ends_as_an_uninterrupted_run(
        spec, tmp_path, monkeypatch):
    pm = plugin_manager(toy_plugin)
    run_spec(spec, pm, tmp_path / "clean")
    monkeypatch.setenv("TOY_CRASH_AT", "5")
    with pytest.raises(LmforgeError):
        run_spec(spec, pm, tmp_path / "run")
    monkeypatch.delenv("TOY_CRASH_AT")
    flip_bit(tmp_path / "run" / "acc" / "checkpoints" / "step-00000004" / "state.safetensors")
    with pytest.warns(IntegrityWarning, match="step-00000004 is corrupt"):
        run_spec(spec, pm, tmp_path / "run")
    assert _curve(tmp_path / "run") == _curve(tmp_path / "clean")
    assert read_manifest(tmp_path / "run" / "acc")["metrics"] == \
        read_manifest(tmp_path / "clean" / "acc")["metrics"]


def test_the_cli_shows_integrity_problems_as_warnings_and_says_why_stages_ran(
        spec, tmp_path, capsys, monkeypatch):
    path = tmp_path / "pipeline.yaml"
    path.write_text(spec)
    run = tmp_path / "run"
    args = [*TOY, "run", str(path), "--run-dir", str(run), "-q"]
    monkeypatch.setenv("TOY_CRASH_AT", "5")
    assert main(args) == 1
    monkeypatch.delenv("TOY_CRASH_AT")
    ckpt = run / "acc" / "checkpoints" / "step-00000004"
    flip_bit(ckpt / "state.safetensors")
    capsys.readouterr()
    assert main(args) == 0
    cap = capsys.readouterr()
    err, out = " ".join(cap.err.split()), " ".join(cap.out.split())
    assert (f"warning: checkpoint {ckpt} is corrupt: state.safetensors does not match the sha256 "
            f"recorded when it was written") in err
    assert "why stages ran: acc previous attempt failed" in out

    counts = run / "words" / "outputs" / "counts" / "counts.json"
    counts.write_text(counts.read_text().replace("1", "7"))
    assert main(args) == 0
    cap = capsys.readouterr()
    err, out = " ".join(cap.err.split()), " ".join(cap.out.split())
    why = f"outputs changed on disk: {counts} does not match the sha256 recorded when it was written"
    assert f"warning: stage 'words' runs again: {why}" in err
    assert f"why stages ran: words {why}" in out
    assert "acc" not in out.split("why stages ran:")[1]  # same bytes again: acc was reused
    assert read_manifest(run / "words")["reason"] == why


def test_plan_and_run_take_a_verify_level(spec, tmp_path, capsys):
    path = tmp_path / "pipeline.yaml"
    path.write_text(spec)
    run = tmp_path / "run"
    assert main([*TOY, "run", str(path), "--run-dir", str(run), "-q", "--verify", "size"]) == 0
    counts = run / "words" / "outputs" / "counts" / "counts.json"
    counts.write_text(counts.read_text().replace("1", "7"))  # same size
    manifest = read_manifest(run / "words")
    assert changed_outputs(run / "words", manifest, "size") is None
    assert "does not match the sha256" in changed_outputs(run / "words", manifest, "hash")
    capsys.readouterr()
    assert main([*TOY, "plan", str(path), "--run-dir", str(run), "--verify", "size"]) == 0
    assert "outputs changed" not in capsys.readouterr().out
    assert main([*TOY, "plan", str(path), "--run-dir", str(run)]) == 0
    assert "outputs changed on disk" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:  # argparse: usage and exit 2
        main([*TOY, "run", str(path), "--run-dir", str(run), "--verify", "crc"])
    assert bad.value.code == 2
    with pytest.raises(LmforgeError, match="verify must be one of hash, size"):
        Runner(validate_spec(spec, plugin_manager(toy_plugin)), plugin_manager(toy_plugin),
               run_dir=run, verify="crc")


def test_the_run_directory_lock_names_its_holder(spec, tmp_path):
    import os

    run = tmp_path / "run"
    run.mkdir()
    with run_dir_lock(run):
        with pytest.raises(LmforgeError, match=rf"is in use by another lmforge run \(pid "
                                               rf"{os.getpid()}\)"):
            run_spec(spec, plugin_manager(toy_plugin), run)
        assert not (run / "words").exists()  # nothing written
    run_spec(spec, plugin_manager(toy_plugin), run)  # released


class _Once(Config):
    note: str = Field(default="", description="unused")


_ATTEMPTS: list[int] = []


class _Partial(Stage):
    """First attempt: writes part of its output, then dies. Second: writes all of it."""

    def run(self) -> dict[str, int]:
        out = self.ctx.output_dir("model")
        _ATTEMPTS.append(1)
        if len(_ATTEMPTS) == 1:
            (out / "shard-1.bin").write_bytes(b"half")
            raise KeyboardInterrupt
        (out / "weights.bin").write_bytes(b"whole")
        return {"attempts": len(_ATTEMPTS)}


class _PartialPlugin:
    @hookimpl
    def lmforge_components(self):
        return [stage("train", "partial", config=_Once, factory=_Partial,
                      outputs={"model": "model"}, description="dies half-way once")]


def test_a_resumed_stage_starts_without_what_its_killed_attempt_left_in_outputs(tmp_path):
    _ATTEMPTS.clear()
    pm = plugin_manager(_PartialPlugin())
    spec = {"name": "p", "stages": [{"id": "t", "kind": "train", "plugin": "partial"}]}
    with pytest.raises(KeyboardInterrupt):
        run_spec(spec, pm, tmp_path / "run")
    assert (tmp_path / "run" / "t" / "outputs" / "model" / "shard-1.bin").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error", IntegrityWarning)
        result = run_spec(spec, pm, tmp_path / "run")
    assert result.stages[0].status == "complete"
    manifest = read_manifest(tmp_path / "run" / "t")
    assert manifest["resumed"] is True
    assert sorted(manifest["outputs"]["model"]["files"]) == ["weights.bin"]
