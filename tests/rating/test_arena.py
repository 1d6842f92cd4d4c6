"""The evaluate/arena stage end to end: three small models, a judge defined here, human
votes from a vote log, ratings, win rates and the figure in the run report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lmforge.report import REPORT_DIR, write_report
from lmforge.testing import (
    plugin_manager,
    run_spec,
    write_dataset_artifact,
    write_tokenizer_artifact,
)
from lmforge_rating.votes import Vote
from tests.rating import arena_fixtures
from tests.rating.arena_fixtures import length_p

WORDS = "the cat sat on a mat while dogs ran far away and birds sang in tall trees".split()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import random

    import torch

    import lmforge_models.plugin
    import lmforge_rating.plugin
    import lmforge_torch.plugin
    from lmforge.modelio import save_model

    root = tmp_path_factory.mktemp("arena")
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(60)]
    tok = write_tokenizer_artifact(root / "tok", texts, vocab_size=200)
    convs = [[{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]
             for t in texts[:6]]
    prompts = write_dataset_artifact(root / "prompts", "chat", {
        "train": [{"messages": c} for c in convs], "heldout": [{"messages": c} for c in convs]})
    pm = plugin_manager(lmforge_rating.plugin, lmforge_models.plugin, lmforge_torch.plugin,
                        arena_fixtures)
    arch = pm.component_config_model("architecture", "dense").model_validate(
        {"type": "dense", "dim": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
         "max_seq_len": 64})
    from lmforge.chat import load_tokenizer

    vocab = load_tokenizer(tok).vocab_size
    factory = pm.get_component("architecture", "dense").load_factory()
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        save_model(root / f"m{seed}", factory(arch, vocab).state_dict(), arch, vocab)
        models.append(root / f"m{seed}")
    return {"root": root, "tok": tok, "prompts": prompts, "models": models, "pm": pm}


def spec(env: dict[str, Any], **config: Any) -> dict[str, Any]:
    stages = [{"id": f"model{k}", "kind": "data", "plugin": "fixture",
               "config": {"path": str(p), "kind": "model"}} for k, p in enumerate(env["models"])]
    stages += [{"id": "tok", "kind": "data", "plugin": "fixture",
                "config": {"path": str(env["tok"]), "kind": "tokenizer"}},
               {"id": "prompts", "kind": "data", "plugin": "fixture",
                "config": {"path": str(env["prompts"]), "kind": "dataset/chat"}},
               {"id": "arena", "kind": "evaluate", "plugin": "arena",
                "inputs": {"candidates": ["model0", "model1", "model2"], "tokenizer": "tok",
                           "prompts": "prompts"},
                "config": {"max_prompts": 5, "max_new_tokens": 8, "batch_size": 4,
                           "bootstrap": 100,
                           "backend": {"type": "local", "device": "cpu", "precision": "fp32"},
                           **config}}]
    return {"name": "arena-test", "stages": stages}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_arena_with_a_judge_then_human_votes(env: dict[str, Any]) -> None:
    run_dir = env["root"] / "run"
    arena_fixtures.LengthJudge.calls.clear()
    result = run_spec(spec(env, judge={"type": "length-test", "scale": 5.0}), env["pm"],
                      run_dir)
    assert result.status == "complete"
    out = run_dir / "arena" / "outputs" / "report"
    report = json.loads((out / "report.json").read_text())
    labels = ["model0", "model1", "model2"]
    assert report["candidates"] == labels and report["prompts"] == 5
    pairs = _jsonl(out / "pairs.jsonl")
    assert len(pairs) == 15 and pairs[0]["id"] == "0:model0:model1"
    assert arena_fixtures.LengthJudge.calls == [4, 4, 4, 3]  # batched by batch_size
    # the verdicts are the judge's, recomputed here from the answers
    verdicts = {v["id"]: v for v in _jsonl(out / "verdicts.jsonl")}
    for p in pairs:
        want = length_p(p["response_a"], p["response_b"], 5.0)
        assert verdicts[p["id"]]["p_a"] == pytest.approx(want, abs=1e-12)
    # win rates: the mean share of each pair, by hand
    fit = report["fits"]["all"]
    for a in range(3):
        for b in range(a + 1, 3):
            shares = [verdicts[p["id"]]["p_a"] for p in pairs
                      if (p["model_a"], p["model_b"]) == (labels[a], labels[b])]
            assert fit["win_rate"][labels[a]][labels[b]] == pytest.approx(sum(shares) / 5)
            assert fit["win_rate"][labels[b]][labels[a]] == pytest.approx(1 - sum(shares) / 5)
            assert fit["games"][labels[a]][labels[b]] == 5
    ratings = fit["ratings"]
    assert ratings["model0"]["rating"] == 1000.0  # the anchor
    for r in ratings.values():
        assert r["low"] <= r["rating"] + 1e-9 and r["rating"] <= r["high"] + 1e-9
    # a candidate that wins more of its games is rated higher
    share = {k: sum(v for v in fit["win_rate"][k].values()) for k in labels}
    assert sorted(labels, key=share.get) == sorted(labels, key=lambda k: ratings[k]["rating"])
    manifest = json.loads((run_dir / "arena" / "manifest.json").read_text())
    assert manifest["metrics"]["rating/model0"] == 1000.0
    assert {k for k in manifest["inputs"]} == {"candidates[0]", "candidates[1]",
                                               "candidates[2]", "tokenizer", "prompts"}
    # the figure is in the run report, HTML and Markdown
    write_report(run_dir)  # what `lmforge run` does at the end
    html = (run_dir / REPORT_DIR / "report.html").read_text()
    assert 'id="plot-arena.ratings"' in html
    assert (run_dir / REPORT_DIR / "plots" / "arena.ratings.png").read_bytes() == \
        (out / "ratings.png").read_bytes()
    assert "plots/arena.ratings.png" in (run_dir / REPORT_DIR / "report.md").read_text()
    md = (out / "report.md").read_text()
    assert "## Ratings" in md and "## Win rates" in md

    # human votes on the arena's own pairs: two raters prefer the earlier candidate
    votes = env["root"] / "votes.jsonl"
    votes.write_text("".join(Vote(r, p["id"], "a").to_json() + "\n"
                             for p in pairs for r in ("ana", "bo")))
    result = run_spec(spec(env, votes=str(votes)), env["pm"], run_dir)
    report = json.loads((out / "report.json").read_text())
    fit = report["fits"]["all"]
    assert fit["comparisons"] == 30 and report["votes"]["raters"] == 2
    r = {k: v["rating"] for k, v in fit["ratings"].items()}
    assert r["model0"] > r["model1"] > r["model2"]
    assert fit["win_rate"]["model0"]["model2"] == 1.0
    assert report["raters"]["raw_agreement"] == 1.0

    # both: judge and votes give three fits, and the raters' agreement with the judge
    run_spec(spec(env, votes=str(votes), judge={"type": "length-test", "scale": 5.0}),
             env["pm"], run_dir)
    report = json.loads((out / "report.json").read_text())
    assert set(report["fits"]) == {"all", "judge", "human"}
    assert report["fits"]["all"]["comparisons"] == 45
    agree = report["raters_vs_judge"]["vs_judge"]
    judge_says_a = sum(v["p_a"] > 0.5 for v in verdicts.values())
    assert agree["agreement"] == pytest.approx(judge_says_a / 15)


def test_arena_config_errors(env: dict[str, Any]) -> None:
    from lmforge.errors import SpecError
    from lmforge.testing import validate_spec

    with pytest.raises(SpecError, match="needs a judge, human votes"):
        validate_spec(spec(env), env["pm"])
    bad = spec(env, judge={"type": "length-test"})
    bad["stages"][-1]["inputs"]["candidates"] = ["model0"]
    with pytest.raises(SpecError, match="at least two candidates"):
        validate_spec(bad, env["pm"])
    bad["stages"][-1]["inputs"]["candidates"] = ["model0", "tok"]
    with pytest.raises(SpecError, match=r"accepts model, but stage 'tok' produces"):
        validate_spec(bad, env["pm"])


def test_arena_example_validates() -> None:
    from lmforge.cli import main

    example = Path(__file__).resolve().parents[2] / "examples" / "feedback" / "arena.yaml"
    assert main(["validate", str(example)]) == 0


@pytest.mark.slow
def test_arena_resumes_without_regenerating_or_rejudging(env: dict[str, Any],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import lmforge.generation

    real = lmforge.generation.generate
    generated: list[int] = []

    def counting(module: Any, prompts: Any, *args: Any, **kwargs: Any) -> Any:
        generated.append(len(prompts))
        return real(module, prompts, *args, **kwargs)

    monkeypatch.setattr(lmforge.generation, "generate", counting)
    run_dir = env["root"] / "resume"
    arena_fixtures.LengthJudge.calls.clear()
    arena_fixtures.CrashOnce.armed, arena_fixtures.CrashOnce.at = True, 2
    the_spec = spec(env, judge={"type": "length-test", "scale": 7.0})
    from lmforge.errors import StageFailed

    with pytest.raises(StageFailed, match="judge crashed"):
        run_spec(the_spec, env["pm"], run_dir)
    assert sum(generated) == 15  # 3 candidates x 5 prompts
    assert arena_fixtures.LengthJudge.calls == [4, 4]  # the second batch crashed
    generated.clear()
    arena_fixtures.LengthJudge.calls.clear()
    result = run_spec(the_spec, env["pm"], run_dir)
    assert result.status == "complete" and result.ran == ["arena"]
    assert generated == []  # the answers came from the cache
    assert arena_fixtures.LengthJudge.calls == [4, 4, 3]  # 11 pairs left of 15
    out = run_dir / "arena" / "outputs" / "report"
    verdicts = _jsonl(out / "verdicts.jsonl")
    pairs = _jsonl(out / "pairs.jsonl")
    assert [v["id"] for v in verdicts] == [p["id"] for p in pairs]
    for v, p in zip(verdicts, pairs):
        assert v["p_a"] == pytest.approx(length_p(p["response_a"], p["response_b"], 7.0))
