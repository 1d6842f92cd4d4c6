"""The classifier stage and quality filter on two planted classes; the mix stage's numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lmforge_data.plugin
from lmforge import SpecError, StageInputError
from lmforge.testing import plugin_manager, run_spec, validate_spec
from lmforge_data.classifier import FeatureSpec, TextClassifier, train
from tests.data.helpers import read_split, write_jsonl
from tests.filters_v2.planted_classes import planted


@pytest.fixture(scope="module")
def pm() -> Any:
    return plugin_manager(lmforge_data.plugin)


def curate(sid: str, path: Path, **config: Any) -> dict[str, Any]:
    return {"id": sid, "kind": "data", "plugin": "curate",
            "config": {"sources": [{"type": "jsonl", "path": str(path)}], **config}}


def test_classifier_separates_planted_classes_and_round_trips(tmp_path):
    sci, sales = planted(200)
    spec = FeatureSpec(hash_bits=14)
    model = train(sci[:150], sales[:150], spec, epochs=10, seed=0)
    pos, neg = model.scores(sci[150:]), model.scores(sales[150:])
    assert (pos > 0.5).mean() == 1.0 and (neg < 0.5).mean() == 1.0
    flipped = train(sales[:150], sci[:150], spec, epochs=10, seed=0)
    assert (flipped.scores(sci[150:]) < 0.5).all()
    model.save(tmp_path / "clf")
    again = TextClassifier.load(tmp_path / "clf")
    assert np.array_equal(again.scores(sci[150:]), model.scores(sci[150:]))
    assert not list(tmp_path.glob("clf/.*.tmp"))  # written under temporary names, renamed
    (tmp_path / "clf" / "classifier.json").write_text("{\"format\": \"other\"}")
    with pytest.raises(StageInputError, match="is not 'lmforge-hashed-ngram-logreg'"):
        TextClassifier.load(tmp_path / "clf")
    with pytest.raises(StageInputError, match="is not a classifier artifact"):
        TextClassifier.load(tmp_path / "nothing")


def test_pipeline_trains_a_classifier_and_filters_with_it(tmp_path, pm):
    sci, sales = planted(240)
    write_jsonl(tmp_path / "good.jsonl", [{"text": t} for t in sci])
    write_jsonl(tmp_path / "bad.jsonl", [{"text": t} for t in sales])
    mixed_sci, mixed_sales = planted(40, seed=7)
    write_jsonl(tmp_path / "mixed.jsonl", [{"text": t} for p in zip(mixed_sci, mixed_sales)
                                           for t in p])
    spec = {"name": "t", "stages": [
        curate("good", tmp_path / "good.jsonl", heldout_fraction=0.2),
        curate("bad", tmp_path / "bad.jsonl", heldout_fraction=0.2),
        {"id": "clf", "kind": "train", "plugin": "classifier", "config": {"hash_bits": 14},
         "inputs": {"positive": "good", "negative": "bad"}},
        {**curate("kept", tmp_path / "mixed.jsonl", heldout_fraction=0,
                  filters=[{"type": "quality", "input": "judge", "min_score": 0.5}]),
         "inputs": {"judge": "clf"}},
    ]}
    res = run_spec(spec, pm, tmp_path / "run")
    m = {s.stage_id: s.metrics for s in res.stages}
    assert m["clf"]["eval_accuracy"] == 1.0 and m["clf"]["eval_auc"] == 1.0
    assert (m["kept"]["docs_in"], m["kept"]["docs_out"]) == (80, 40)
    rows = read_split(tmp_path / "run" / "kept" / "outputs" / "dataset", "train")
    assert {r["text"] for r in rows} == set(mixed_sci)
    assert all(json.loads(r["metadata"])["quality_score"] >= 0.5 for r in rows)
    meta = json.loads((tmp_path / "run/kept/outputs/dataset/artifact.json").read_text())
    assert meta["columns"] == ["text", "metadata"]
    # the filter's input must be wired: a validation error naming it
    del spec["stages"][3]["inputs"]
    with pytest.raises(SpecError, match="needs input 'judge' \\(classifier\\)"):
        validate_spec(spec, pm)


def _mix_spec(tmp_path: Path, sources: dict[str, Any], **config: Any) -> dict[str, Any]:
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"alpha document {i}."} for i in range(100)])
    write_jsonl(tmp_path / "b.jsonl", [{"text": f"beta document {i}."} for i in range(40)])
    return {"name": "t", "stages": [
        curate("a", tmp_path / "a.jsonl", heldout_fraction=0, dedup=False),
        curate("b", tmp_path / "b.jsonl", heldout_fraction=0, dedup=False),
        {"id": "mix", "kind": "data", "plugin": "mix", "inputs": {"web": "a", "code": "b"},
         "config": {"unit": "documents", "sources": sources, **config}}]}


def test_mix_by_weights_up_and_down_samples_deterministically(tmp_path, pm):
    spec = _mix_spec(tmp_path, {"web": {"weight": 1}, "code": {"weight": 1}}, total=100)
    res = run_spec(spec, pm, tmp_path / "run")
    stats = json.loads((tmp_path / "run/mix/outputs/dataset/stats.json").read_text())
    web, code = stats["sources"]["web"], stats["sources"]["code"]
    assert (web["docs_in"], web["docs_out"], web["epochs"]) == (100, 50, 0.5)
    assert (code["docs_in"], code["docs_out"], code["epochs"]) == (40, 50, 1.25)
    rows = [r["text"] for r in read_split(tmp_path / "run/mix/outputs/dataset", "train")]
    betas = [t for t in rows if t.startswith("beta")]
    assert len(rows) == 100 and len(betas) == 50 and len(set(betas)) == 40  # all once, 10 twice
    assert len({t for t in rows if t.startswith("alpha")}) == 50  # a subset, no repeats
    assert res.stages[-1].metrics["code_share"] == 0.5
    # same seed, same bytes; another seed, another sample
    spec2 = json.loads(json.dumps(spec))
    run_spec(spec2, pm, tmp_path / "run2")
    shard = "mix/outputs/dataset/train/shard-00000.parquet"
    assert (tmp_path / "run" / shard).read_bytes() == (tmp_path / "run2" / shard).read_bytes()
    spec2["stages"][2]["config"]["seed"] = 1
    run_spec(spec2, pm, tmp_path / "run3")
    assert (tmp_path / "run" / shard).read_bytes() != (tmp_path / "run3" / shard).read_bytes()


def test_mix_budgets_natural_total_and_epoch_cap(tmp_path, pm):
    # no total: the largest total that repeats no weighted source -> code (40) sets 80
    spec = _mix_spec(tmp_path, {"web": {"weight": 1}, "code": {"weight": 1}})
    run_spec(spec, pm, tmp_path / "run")
    s = json.loads((tmp_path / "run/mix/outputs/dataset/stats.json").read_text())["sources"]
    assert (s["web"]["docs_out"], s["code"]["docs_out"]) == (40, 40)
    spec = _mix_spec(tmp_path, {"web": {"budget": 30}, "code": {"weight": 1, "max_epochs": 2}},
                     total=200)
    run_spec(spec, pm, tmp_path / "run2")
    s = json.loads((tmp_path / "run2/mix/outputs/dataset/stats.json").read_text())["sources"]
    assert s["web"]["docs_out"] == 30
    assert (s["code"]["docs_out"], s["code"]["target"]) == (80, 170.0)  # capped at 2 epochs
    assert s["code"]["capped_by_max_epochs"] is True
    bad = _mix_spec(tmp_path, {"web": {"weight": 1}, "other": {"weight": 1}})
    with pytest.raises(SpecError, match="needs input 'other'"):
        validate_spec(bad, pm)
