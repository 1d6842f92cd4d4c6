"""Corrupt the outputs of completed stages of a real pipeline, then run it again.

Each change on disk -- a bit flipped in model weights, a truncated tokenizer file or Parquet
shard, a file added or lost, an unreadable manifest -- is detected before the stage would be
reused; the stage runs again and the user sees why (a ``warning:`` line when it is found, a
"why stages ran" line in the summary, ``reason`` in the manifest). Rerun stages reproduce the
same bytes, so the stages downstream are reused, and every artifact ends up as the uninterrupted
run wrote it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from integrity_helpers import (
    SPEC,
    STAGES,
    fingerprint,
    flip_bit,
    manifests,
    recorded,
    replace_with_copy,
    truncate,
)

from lmforge.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The pipeline run once at ``<root>/run``, then moved to ``<root>/ref``. Each test copies
    it back to ``<root>/run``: artifacts name absolute paths (a tokenizer names its corpus), so
    a rerun reproduces the same bytes only at the same place."""
    root = tmp_path_factory.mktemp("outputs")
    assert main(["run", str(SPEC), "--run-dir", str(root / "run"), "-q"]) == 0
    (root / "run").rename(root / "ref")
    ref = root / "ref"
    assert fingerprint(ref) == recorded(ref)
    return {"ref": ref, "run": root / "run"}


def rerun(reference: dict[str, Path], capsys: pytest.CaptureFixture[str], *args: str
          ) -> tuple[int, str, str, dict[str, str]]:
    """Run the pipeline again on ``run``; returns (exit code, stdout, stderr, stage -> "run"
    or "reused" judged by whether its manifest was written again)."""
    before = {s: m.get("finished") for s, m in manifests(reference["run"]).items()}
    capsys.readouterr()
    rc = main(["run", str(SPEC), "--run-dir", str(reference["run"]), "-q", *args])
    cap = capsys.readouterr()
    after = manifests(reference["run"])
    what = {s: ("reused" if after.get(s, {}).get("finished") == before.get(s) else "run")
            for s in STAGES}
    return rc, cap.out, cap.err, what


def _one_line(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines on narrow consoles


CASES: dict[str, tuple[str, Callable[[Path], None], set[str], str]] = {
    # name: (file under the run dir, corruption, stages that run again, what the reason says)
    # The export hard-links the model's weights: a bit flipped in one is flipped in both, and
    # both stages run again.
    "bitflip-model-weights": ("pretrain/outputs/model/model.safetensors", flip_bit,
                              {"pretrain", "export"}, "does not match the sha256 recorded"),
    "truncated-tokenizer": ("bpe/outputs/tokenizer/tokenizer.json", truncate, {"bpe"},
                            "bytes, {size} were written"),
    "truncated-parquet-shard": ("corpus/outputs/dataset/train/shard-00001.parquet", truncate,
                                {"corpus"}, "bytes, {size} were written"),
    "bitflip-exported-config": ("export/outputs/hf_model/config.json", flip_bit, {"export"},
                                "does not match the sha256 recorded"),
    "added-file": ("eval/outputs/report/notes.txt", lambda p: p.write_text("mine\n"), {"eval"},
                   "has a file that was not written by the stage"),
    "deleted-file": ("bpe/outputs/tokenizer/special_tokens_map.json", lambda p: p.unlink(),
                     {"bpe"}, "lost"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_changed_output_is_detected_rerun_and_downstream_reused(reference, capsys, case):
    rel, corrupt, rerun_expected, says = CASES[case]
    ref, run = reference["ref"], reference["run"]
    replace_with_copy(ref, run)
    target = run / rel
    size = target.stat().st_size if target.exists() else 0
    corrupt(target)
    stage = rel.split("/")[0]

    rc, out, err, what = rerun(reference, capsys)
    assert rc == 0, err
    assert {s for s, w in what.items() if w == "run"} == rerun_expected
    reason = manifests(run)[stage]["reason"]
    assert reason.startswith("outputs changed on disk: ") and str(target) in reason
    assert says.format(size=size) in reason
    # the user sees why: a warning when it is found, a line of the summary
    assert _one_line(f"warning: stage {stage!r} runs again: {reason}") in _one_line(err)
    assert "why stages ran:" in out and _one_line(f"{stage} {reason}") in _one_line(out)
    # every artifact is as the uninterrupted run wrote it (and as the manifests say)
    assert fingerprint(run) == fingerprint(ref) == recorded(run)

    rc, out, err, what = rerun(reference, capsys)  # and now it is all reusable
    assert rc == 0 and set(what.values()) == {"reused"}
    assert "nothing to do" in err and "warning" not in err


def test_an_unreadable_manifest_reruns_the_stage_and_says_so(reference, capsys):
    ref, run = reference["ref"], reference["run"]
    replace_with_copy(ref, run)
    (run / "pretrain" / "manifest.json").write_bytes(b"\xff\xfe{garbage")
    rc, out, err, what = rerun(reference, capsys)
    assert rc == 0, err
    assert {s for s, w in what.items() if w == "run"} == {"pretrain"}
    reason = f"{run / 'pretrain' / 'manifest.json'} is unreadable"
    assert manifests(run)["pretrain"]["reason"] == reason
    assert _one_line(f"warning: stage 'pretrain' runs again: {reason}") in _one_line(err)
    assert fingerprint(run) == fingerprint(ref)


def test_verify_size_skips_the_rehash_and_still_sees_a_truncation(reference, capsys):
    ref, run = reference["ref"], reference["run"]
    replace_with_copy(ref, run)
    report = run / "eval" / "outputs" / "report" / "report.json"
    flip_bit(report)
    truncate(run / "bpe" / "outputs" / "tokenizer" / "tokenizer.json")
    rc, out, err, what = rerun(reference, capsys, "--verify", "size")
    assert rc == 0 and {s for s, w in what.items() if w == "run"} == {"bpe"}
    assert "tokenizer.json has " in manifests(run)["bpe"]["reason"]
    # the same-size change is the documented blind spot of --verify size ...
    assert fingerprint(run)["eval"] != fingerprint(ref)["eval"]
    # ... which the default level finds
    rc, out, err, what = rerun(reference, capsys)
    assert rc == 0 and {s for s, w in what.items() if w == "run"} == {"eval"}
    assert str(report) in manifests(run)["eval"]["reason"]
    assert fingerprint(run) == fingerprint(ref)


def test_only_refuses_inputs_that_changed_on_disk(reference, capsys):
    ref, run = reference["ref"], reference["run"]
    replace_with_copy(ref, run)
    weights = run / "pretrain" / "outputs" / "model" / "model.safetensors"
    # the copy, not the export's hard link: only the model stage's file changes
    data = weights.read_bytes()
    weights.unlink()
    weights.write_bytes(data[:-9] + bytes([data[-9] ^ 4]) + data[-8:])
    before = fingerprint(run)["eval"]
    rc, out, err, what = rerun(reference, capsys, "--only", "eval", "--force", "eval")
    assert rc == 1
    assert (f"the outputs of stage 'pretrain' changed on disk since it completed: {weights} "
            f"does not match the sha256") in _one_line(err)
    assert set(what.values()) == {"reused"} and fingerprint(run)["eval"] == before
