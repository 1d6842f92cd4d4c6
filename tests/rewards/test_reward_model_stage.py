"""``train/reward-model``: the Bradley-Terry loss, training on a planted signal, the artifact's
scores against transformers' LlamaForSequenceClassification, and the ``reward-model`` reward
scoring as the stage does."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rewards_fixtures import PublishPlugin, preference_rows, save_lm

import lmforge_align.plugin
import lmforge_export.plugin
import lmforge_models.plugin
import lmforge_rewards.plugin
import lmforge_torch.plugin
from lmforge.chat import encode_reply, load_tokenizer
from lmforge.rewards import RewardSample
from lmforge.testing import plugin_manager, run_spec
from lmforge_align.reward_model import bradley_terry_loss


def test_bradley_terry_loss_on_known_numbers():
    rc, rr = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0])
    plain = bradley_terry_loss(rc, rr, torch.zeros(2), 0.0)
    # -log sigma(1.5) = log(1 + e^-1.5); -log sigma(-2) = log(1 + e^2)
    assert plain.tolist() == pytest.approx([math.log(1 + math.exp(-1.5)),
                                            math.log(1 + math.exp(2.0))], rel=1e-6)
    margin = bradley_terry_loss(rc, rr, torch.tensor([1.0, 0.0]), 0.0)
    assert margin[0].item() == pytest.approx(math.log(1 + math.exp(-0.5)), rel=1e-6)
    centred = bradley_terry_loss(rc, rr, torch.zeros(2), 0.01)
    # + 0.01 * (r_c + r_r)^2: 0.01 * 2.5^2 = 0.0625; 0.01 * 0^2 = 0
    assert (centred - plain).tolist() == pytest.approx([0.0625, 0.0], abs=1e-7)


def _spec(assets: dict[str, Path], init: Path, steps: int = 40, **cfg) -> dict:
    return {"name": "rm", "seed": 0, "stages": [
        {"id": "tok", "kind": "data", "plugin": "publish",
         "config": {"path": str(assets["tokenizer"]), "kind": "tokenizer"}},
        {"id": "prefs", "kind": "data", "plugin": "publish",
         "config": {"path": str(assets["preference"]), "kind": "dataset/preference"}},
        {"id": "sft", "kind": "data", "plugin": "publish",
         "config": {"path": str(init), "kind": "model"}},
        {"id": "rm", "kind": "train", "plugin": "reward-model",
         "inputs": {"dataset": "prefs", "tokenizer": "tok", "init": "sft"},
         "config": {"loop": {"steps": steps, "batch_size": 8, "seq_len": 48, "log_every": 5,
                             "checkpoint_every": 20,
                             "optim": {"lr": 3e-3, "warmup_steps": 4},
                             "backend": {"type": "local", "device": "cpu",
                                         "precision": "fp32"}}, **cfg}},
        {"id": "hf", "kind": "export", "plugin": "hf",
         "inputs": {"model": "rm", "tokenizer": "tok"}, "config": {}},
    ]}


@pytest.fixture(scope="module")
def trained(assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("rm")
    vocab = load_tokenizer(assets["tokenizer"]).vocab_size
    init = save_lm(root / "sft", vocab)
    pm = plugin_manager(lmforge_align.plugin, lmforge_models.plugin, lmforge_torch.plugin,
                        lmforge_export.plugin, lmforge_rewards.plugin, PublishPlugin())
    result = run_spec(_spec(assets, init, center_coef=0.01), pm, root / "run")
    assert result.status == "complete"
    return pm, root / "run", init


@pytest.mark.slow
def test_reward_model_learns_the_planted_signal(trained):
    pm, run, init = trained
    records = [json.loads(line) for line in (run / "rm" / "metrics.jsonl").read_text().split("\n")
               if line.strip()]
    final = {k: v for r in records for k, v in r.items()}
    assert final["heldout/pairs"] == 24
    # a fresh score head (init_std 0.02) gives near-zero rewards: the loss is log 2, chance
    assert final["heldout/loss_before"] == pytest.approx(math.log(2), abs=0.02)
    assert abs(final["heldout/margin_before"]) < 0.05
    # trained, the courteous reply wins every held-out pair by a wide margin
    assert final["heldout/accuracy"] == 1.0
    assert final["heldout/loss"] < 0.1 and final["heldout/margin"] > 2.0
    # centring keeps the mean reward of a pair near zero
    assert abs(final["heldout/rewards/chosen"] + final["heldout/rewards/rejected"]) < 0.5
    model_json = json.loads((run / "rm" / "outputs" / "model" / "model.json").read_text())
    assert model_json["architecture"]["head"] == "score"


@pytest.mark.slow
def test_artifact_scores_equal_transformers_and_the_reward(trained, assets):
    transformers = pytest.importorskip("transformers")
    pm, run, _ = trained
    tok = load_tokenizer(assets["tokenizer"])
    hf_dir = run / "hf" / "outputs" / "hf_model"
    assert json.loads((hf_dir / "config.json").read_text())["architectures"] == [
        "LlamaForSequenceClassification"]
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        hf_dir, dtype=torch.float32).eval()

    rows = preference_rows(6, offset=3)
    samples = [RewardSample(prompt=r["prompt"], completion=r[k]) for r in rows
               for k in ("chosen", "rejected")]
    seqs = []
    for s in samples:
        p, c = encode_reply(tok.tokenizer, s.prompt, s.completion)
        seqs.append(p + c)
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tok.pad_id)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
    mask = (ids != tok.pad_id).long()
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask).logits[:, 0]

    # the reward-model reward, wired to the stage's output as a stage input would be
    from lmforge_rewards.reward_model import RewardModelReward

    cfg = pm.component_config_model("reward", "reward-model")(type="reward-model",
                                                                 batch_size=4)
    reward = RewardModelReward(cfg)
    assert reward.requires() == {"reward_model": "model", "tokenizer": "tokenizer"}
    reward.load(run / "rm" / "outputs" / "model", assets["tokenizer"], pm, "cpu")
    out = reward.score(samples)
    assert np.allclose(out.scores, theirs.numpy(), atol=1e-5)
    # and the stage's own scoring (its loss fn's pair scores) on the same pairs
    from lmforge.modelio import load_model
    from lmforge_align.reward_model import pair_scores

    model = load_model(run / "rm" / "outputs" / "model", pm).eval()
    last = mask.sum(1) - 1
    with torch.no_grad():
        ours = pair_scores(model, ids, last)
    assert np.allclose(out.scores, ours.numpy(), atol=1e-6)
    assert all(c > r for c, r in zip(out.scores[0::2], out.scores[1::2]))


@pytest.mark.slow
def test_interrupted_reward_model_resumes_to_the_same_artifact(assets, tmp_path, monkeypatch):
    import lmforge.training.loop as loop_mod
    from lmforge.modelio import read_weights
    from lmforge.runner import read_manifest

    vocab = load_tokenizer(assets["tokenizer"]).vocab_size
    init = save_lm(tmp_path / "sft", vocab, seed=1)
    pm = plugin_manager(lmforge_align.plugin, lmforge_models.plugin, lmforge_torch.plugin,
                        lmforge_export.plugin, PublishPlugin())
    spec = _spec(assets, init, steps=8, center_coef=0.01, margin=0.5,
                 margin_column="rating_gap", eval_batches=2)
    spec["stages"] = spec["stages"][:-1]  # no export
    spec["stages"][-1]["config"]["loop"]["checkpoint_every"] = 4
    run_spec(spec, pm, tmp_path / "straight")

    orig = loop_mod.Trainer.train_step

    def crashing(self):
        out = orig(self)
        if self.step == 6:  # after the step-4 checkpoint
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(loop_mod.Trainer, "train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_spec(spec, pm, tmp_path / "resumed")
    assert read_manifest(tmp_path / "resumed" / "rm")["status"] == "interrupted"
    monkeypatch.setattr(loop_mod.Trainer, "train_step", orig)
    run_spec(spec, pm, tmp_path / "resumed")
    assert read_manifest(tmp_path / "resumed" / "rm")["resumed"] is True

    a = read_weights(tmp_path / "straight" / "rm" / "outputs" / "model")
    b = read_weights(tmp_path / "resumed" / "rm" / "outputs" / "model")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)

    def heldout(run: Path) -> dict:
        lines = (run / "rm" / "metrics.jsonl").read_text().splitlines()
        return {k: v for r in map(json.loads, lines) for k, v in r.items()
                if k.startswith("heldout/")}

    assert heldout(tmp_path / "straight") == heldout(tmp_path / "resumed")
