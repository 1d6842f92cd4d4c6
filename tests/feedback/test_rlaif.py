"""data/ai-preferences: agreement with gold labels and position consistency on planted
verdicts (numbers computed by hand), the output rows, and sampling pairs from a model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_cai import rows

from lmforge.testing import run_spec, write_dataset_artifact

# response -> P(the response shown first wins | it is this response)
PLAN = [  # (split, chosen strength, rejected strength)
    *[("train", 0.9, 0.2)] * 6,  # the judge agrees, in both orders
    *[("train", 0.3, 0.8)] * 2,  # the judge disagrees, in both orders
    *[("heldout", 0.7, 0.7)] * 2,  # pure position bias: a tie, inconsistent
    *[("heldout", 0.6, 0.45)] * 2,  # weak but consistent agreement
]


def planted(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    table, splits, items = {}, {"train": [], "heldout": []}, []
    for i, (split, sc, sr) in enumerate(PLAN):
        chosen, rejected = f"chosen {i}", f"rejected {i}"
        table[chosen], table[rejected] = sc, sr
        splits[split].append({"prompt": [{"role": "user", "content": f"question {i}"}],
                              "chosen": chosen, "rejected": rejected})
        items.append({"chosen": chosen, "rejected": rejected, "sc": sc, "sr": sr})
    (tmp_path / "table.json").write_text(json.dumps(table))
    pairs = write_dataset_artifact(tmp_path / "pairs", "preference", splits)
    return pairs, tmp_path / "table.json", items


def test_agreement_and_consistency_on_planted_verdicts(env, tmp_path):
    pairs, table, items = planted(tmp_path)
    stages = env.fixtures(pairs=(pairs, "dataset/preference"))
    stages.append({"id": "label", "kind": "data", "plugin": "ai-preferences",
                   "inputs": {"pairs": "pairs"},
                   "config": {"judge": {"type": "planted", "table": str(table)},
                              "chunk_size": 5, "principle": "Which is better?",
                              "backend": {"type": "local", "device": "cpu"}}})
    run_spec({"name": "rlaif", "stages": stages}, env.pm, tmp_path / "run")
    m = json.loads((tmp_path / "run" / "label" / "manifest.json").read_text())["metrics"]
    assert m["pairs"] == 12 and m["kept"] == 10  # the two ties are left out
    assert m["gold_agreement"] == pytest.approx(8 / 12)
    assert m["gold_agreement/train"] == pytest.approx(6 / 8)
    assert m["gold_agreement/heldout"] == pytest.approx(2 / 4)
    assert m["position_consistency"] == pytest.approx(10 / 12)
    # whichever order a pair was shown in, P(gold chosen) = (sc + 1 - sr) / 2
    assert m["gold_mean_p"] == pytest.approx(sum((it["sc"] + 1 - it["sr"]) / 2
                                                 for it in items) / 12)
    # mean P(first shown) over both orders = mean of (s_a + s_b) / 2
    assert m["first_position_preference"] == pytest.approx(
        sum((it["sc"] + it["sr"]) / 2 for it in items) / 12)
    out = rows(tmp_path / "run" / "label" / "outputs" / "preferences")
    assert len(out["train"]) == 8 and len(out["heldout"]) == 2
    for r in out["train"] + out["heldout"]:
        i = int(r["prompt"][0]["content"].split()[-1])
        sc, sr = PLAN[i][1], PLAN[i][2]
        assert r["p_chosen"] == pytest.approx(max((sc + 1 - sr) / 2, (sr + 1 - sc) / 2))
        assert r["gold_agrees"] == (sc + 1 - sr > 1)
        assert r["chosen"] == (f"chosen {i}" if r["gold_agrees"] else f"rejected {i}")
        assert r["judge"] == "planted" and r["principle"] == "Which is better?"
        assert set(json.loads(r["raw"])) == {"ab", "ba"}
    report = json.loads((tmp_path / "run" / "label" / "outputs" / "preferences" /
                         "report.json").read_text())
    assert report["gold_agreement"] == m["gold_agreement"]


def test_sampled_pairs_labelled_by_likelihood(env, tmp_path):
    stages = env.fixtures(m=(env.model_dir, "model"), tok=(env.tok_dir, "tokenizer"),
                          prompts=(env.prompts_dir, "dataset/prompt"))
    stages.append({"id": "label", "kind": "data", "plugin": "ai-preferences",
                   "inputs": {"model": "m", "tokenizer": "tok", "prompts": "prompts",
                              "judge": "m"},
                   "config": {"judge": {"type": "model-likelihood"}, "heldout_fraction": 0.0,
                              "generation": {"max_new_tokens": 8, "temperature": 1.0},
                              "backend": {"type": "local", "device": "cpu"}}})
    run_spec({"name": "rlaif", "stages": stages}, env.pm, tmp_path / "run")
    m = json.loads((tmp_path / "run" / "label" / "manifest.json").read_text())["metrics"]
    assert m["pairs"] == len(env.prompts) and "gold_agreement" not in m
    assert "position_consistency" not in m  # order plays no part in a likelihood judge
    out = rows(tmp_path / "run" / "label" / "outputs" / "preferences")
    assert set(out) == {"train"} and len(out["train"]) == m["kept"]
    for r in out["train"]:
        raw = json.loads(r["raw"])  # mean log-probs of the two samples
        gap = abs(raw["score_a"] - raw["score_b"])
        assert r["p_chosen"] == pytest.approx(1 / (1 + math.exp(-gap)))
        assert r["judge"].startswith("model-likelihood:m@") and r["consistent"] is None


def test_wiring_errors_at_validation(env):
    from lmforge.errors import SpecError
    from lmforge.testing import validate_spec

    stages = env.fixtures(tok=(env.tok_dir, "tokenizer"))
    stages.append({"id": "label", "kind": "data", "plugin": "ai-preferences",
                   "inputs": {"tokenizer": "tok"},
                   "config": {"judge": {"type": "model-likelihood"}}})
    with pytest.raises(SpecError, match="source 'sample' needs input"):
        validate_spec({"name": "x", "stages": stages}, env.pm)
