"""The shipped pipelines: both validate; the debug pipeline runs end to end through the CLI,
improves what each stage is meant to improve, and a rerun reuses every stage."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lmforge.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["quickstart", "debug"])
def test_shipped_pipelines_validate(name, capsys):
    assert main(["validate", str(REPO / "examples" / name / "pipeline.yaml")]) == 0
    assert "is valid" in capsys.readouterr().err


def report(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "outputs" / "report" / "report.json").read_text())


@pytest.mark.slow
def test_debug_pipeline_end_to_end(tmp_path, capsys):
    run = tmp_path / "debug"
    spec = str(REPO / "examples" / "debug" / "pipeline.yaml")
    assert main(["run", spec, "--run-dir", str(run), "-q"]) == 0
    manifests = {p.parent.name: json.loads(p.read_text()) for p in run.glob("*/manifest.json")}
    assert len(manifests) == 11 and {m["status"] for m in manifests.values()} == {"complete"}

    pre = report(run, "eval-pretrain")["evaluators"]["perplexity"]
    assert pre["perplexity"] < pre["unigram_perplexity"]
    sft = report(run, "eval-sft")
    assert (sft["evaluators"]["chat-loss"]["loss"]
            < sft["baseline_evaluators"]["chat-loss"]["loss"])
    dpo_heldout = [json.loads(line) for line in
                   (run / "dpo" / "metrics.jsonl").read_text().splitlines()][-1]
    assert dpo_heldout["heldout/loss"] < math.log(2)  # below the loss of an untrained policy
    dpo = report(run, "eval-dpo")
    assert (dpo["evaluators"]["preference"]["margin"]
            > dpo["baseline_evaluators"]["preference"]["margin"])
    md = (run / "eval-dpo" / "outputs" / "report" / "report.md").read_text()
    assert "greedy" in md

    hf = run / "export" / "outputs" / "hf_model"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in hf.iterdir()}

    capsys.readouterr()
    assert main(["run", spec, "--run-dir", str(run), "-q"]) == 0
    assert "nothing to do: every stage was reused" in capsys.readouterr().err
