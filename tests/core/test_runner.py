"""Runner: manifests, content-addressed reuse, --force/--only/--until, failure, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.errors import LmforgeError, StageFailed
from lmforge.testing import plugin_manager, run_spec
from tests.core import toy_plugin


@pytest.fixture
def pm():
    return plugin_manager(toy_plugin)


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


def manifest(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "manifest.json").read_text())


def test_run_writes_manifests_and_reuses(pm, spec, tmp_path):
    run = tmp_path / "run"
    result = run_spec(spec, pm, run)
    assert [(s.stage_id, s.status) for s in result.stages] == [("words", "complete"),
                                                               ("acc", "complete")]
    m = manifest(run, "acc")
    assert m["status"] == "complete" and m["plugin"] == "accumulate"
    assert m["inputs"]["counts"]["hash"] == manifest(run, "words")["outputs"]["counts"]["hash"]
    assert m["metrics"]["total"] == 6 * (1 + 2 + 3 + 4 + 5 + 6)  # 6 distinct words
    assert (run / "acc" / "outputs" / "result" / "total.txt").read_text() == "126.0\n"
    again = run_spec(spec, pm, run)
    assert [s.status for s in again.stages] == ["reused", "reused"] and again.ran == []


def test_config_change_reruns_only_affected_stages(pm, spec, tmp_path):
    run = tmp_path / "run"
    run_spec(spec, pm, run)
    result = run_spec(spec, pm, run, overrides=["acc.steps=3"])
    assert [s.status for s in result.stages] == ["reused", "complete"]
    assert result.stages[1].metrics["total"] == 6 * 6
    # An upstream change that yields identical content keeps downstream reusable.
    result = run_spec(spec, pm, run, overrides=["acc.steps=3"], force=["words"])
    assert [s.status for s in result.stages] == ["complete", "reused"]
    result = run_spec(spec, pm, run, overrides=["acc.steps=3", "words.lowercase=false"])
    assert [s.status for s in result.stages] == ["complete", "complete"]
    assert result.stages[1].metrics["total"] == 7 * 6  # "The" is now distinct


def test_only_and_until(pm, spec, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(LmforgeError, match="has not been built yet"):
        run_spec(spec, pm, run, only="acc")
    result = run_spec(spec, pm, run, until="words")
    assert [s.stage_id for s in result.stages] == ["words"]
    result = run_spec(spec, pm, run, only="acc")
    assert [(s.stage_id, s.status) for s in result.stages] == [("acc", "complete")]


def test_failure_marks_manifest_and_keeps_earlier_outputs(pm, spec, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(StageFailed) as info:
        run_spec(spec, pm, run, overrides=["acc.crash_at=3"])
    assert info.value.stage_id == "acc" and info.value.plugin == "accumulate"
    assert "crash requested at step 3" in str(info.value)
    m = manifest(run, "acc")
    assert m["status"] == "failed" and "crash requested" in m["error"]
    assert "RuntimeError" in (run / "acc" / "error.log").read_text()
    assert manifest(run, "words")["status"] == "complete"
    assert (run / "words" / "outputs" / "counts" / "counts.json").exists()


def test_resume_after_crash_matches_uninterrupted(pm, spec, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    run_spec(spec, pm, clean)
    run = tmp_path / "run"
    monkeypatch.setenv("TOY_CRASH_AT", "5")
    with pytest.raises(StageFailed):
        run_spec(spec, pm, run)
    # The failed attempt left checkpoints at steps 2 and 4 and metrics up to step 4.
    assert sorted(p.name for p in (run / "acc" / "checkpoints").iterdir()) == [
        "step-00000002", "step-00000004"]
    monkeypatch.delenv("TOY_CRASH_AT")
    result = run_spec(spec, pm, run)
    assert [s.status for s in result.stages] == ["reused", "complete"]
    assert manifest(run, "acc")["resumed"] is True

    def curve(root: Path) -> list[tuple[int, float]]:
        lines = (root / "acc" / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["total"]) for r in map(json.loads, lines)]

    assert curve(run) == curve(clean)
    assert ((run / "acc/outputs/result/total.txt").read_text()
            == (clean / "acc/outputs/result/total.txt").read_text())


def test_changed_config_discards_previous_attempt(pm, spec, tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv("TOY_CRASH_AT", "5")
    with pytest.raises(StageFailed):
        run_spec(spec, pm, run)
    monkeypatch.delenv("TOY_CRASH_AT")
    run_spec(spec, pm, run, overrides=["acc.checkpoint_every=3"])
    assert manifest(run, "acc")["resumed"] is False
    assert sorted(p.name for p in (run / "acc" / "checkpoints").iterdir()) == [
        "step-00000003", "step-00000006"]


def test_keyboard_interrupt_marks_interrupted(pm, spec, tmp_path, monkeypatch):
    def boom(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(toy_plugin.Accumulate, "run", boom)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_spec(spec, pm, run)
    assert manifest(run, "acc")["status"] == "interrupted"


def test_input_error_is_reported_before_work(pm, tmp_path):
    spec = """\
stages:
  - {id: words, kind: data, plugin: count, config: {path: /nonexistent/corpus.txt}}
"""
    with pytest.raises(StageFailed, match="file not found: /nonexistent/corpus.txt"):
        run_spec(spec, pm, tmp_path / "run")
    assert not (tmp_path / "run" / "words" / "outputs").exists()


def test_partial_output_is_not_complete(pm, spec, tmp_path, monkeypatch):
    original = toy_plugin.Count.run

    def half(self):
        (self.ctx.output_dir("counts") / "counts.json").write_text("{}")
        raise OSError("disk full")

    monkeypatch.setattr(toy_plugin.Count, "run", half)
    run = tmp_path / "run"
    with pytest.raises(StageFailed):
        run_spec(spec, pm, run)
    monkeypatch.setattr(toy_plugin.Count, "run", original)
    result = run_spec(spec, pm, run)
    assert result.stages[0].status == "complete"  # rerun, not trusted
    assert json.loads((run / "words/outputs/counts/counts.json").read_text())["cat"] == 1
