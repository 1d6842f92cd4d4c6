"""Pre-training end to end: learning, heldout metrics, exact resume, estimate."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import safetensors.torch
import train_helpers as H

from lmforge.runner import read_manifest
from lmforge.testing import run_spec
from lmforge.training import loop as loop_mod

REAL_PARAMS = [False] + ([True] if H.REAL else [])


@pytest.mark.parametrize("real", REAL_PARAMS, ids=lambda r: "dense-local" if r else "fakes")
def test_pretrain_loss_decreases_on_real_text(assets, tmp_path, real):
    spec = H.pretrain_spec(assets, real, loop=H.loop_cfg(real, steps=16, log_every=4))
    res = run_spec(spec, H.make_pm(real), tmp_path)
    m = res.stages[-1].metrics
    curve = H.loss_curve(tmp_path / "pretrain")
    assert [s for s, _ in curve] == [4, 8, 12, 16]
    assert curve[-1][1] < curve[0][1] - 0.3, curve
    assert m["heldout/perplexity"] == pytest.approx(math.exp(m["heldout/loss"]))
    assert m["heldout/loss"] < math.log(384)  # better than uniform over the vocabulary
    assert m["tokens"] == 16 * 4 * 32
    rec = H.metrics(tmp_path / "pretrain")[0]
    for key in ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s",
                "train/tokens_seen"):
        assert key in rec
    out = tmp_path / "pretrain" / "outputs" / "model"
    assert (out / "model.safetensors").is_file() and (out / "model.json").is_file()


def _weights(run: Path) -> dict:
    return safetensors.torch.load_file(str(run / "pretrain" / "outputs" / "model" /
                                           "model.safetensors"))


@pytest.mark.parametrize("real", REAL_PARAMS, ids=lambda r: "dense-local" if r else "fakes")
def test_resume_reproduces_the_uninterrupted_run_exactly(assets, tmp_path, monkeypatch, real):
    loop = H.loop_cfg(real, steps=12, checkpoint_every=4, log_every=1, grad_accum=2)
    # The fake model has dropout, so the resumed run also depends on the restored RNG state.
    model = H.model_cfg(real) if real else H.model_cfg(dropout=0.1)
    spec = H.pretrain_spec(assets, real, loop=loop, model=model)
    pm = H.make_pm(real)
    run_spec(spec, pm, tmp_path / "straight")

    orig = loop_mod.Trainer.train_step

    def crashing(self):
        out = orig(self)
        if self.step == 10:  # after the step-8 checkpoint, step 9 already logged
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(loop_mod.Trainer, "train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_spec(spec, pm, tmp_path / "resumed")
    stage_dir = tmp_path / "resumed" / "pretrain"
    assert read_manifest(stage_dir)["status"] == "interrupted"
    assert [c.name for c in (stage_dir / "checkpoints").iterdir()] and \
        max(p.name for p in (stage_dir / "checkpoints").iterdir()) == "step-00000008"
    assert [s for s, _ in H.loss_curve(stage_dir)][-1] == 9  # step 10 never finished
    cache = next((stage_dir / "work").glob("tokens-train-*")) / "meta.json"
    cache_mtime = cache.stat().st_mtime_ns

    monkeypatch.setattr(loop_mod.Trainer, "train_step", orig)
    res = run_spec(spec, pm, tmp_path / "resumed")
    manifest = read_manifest(stage_dir)
    assert manifest["status"] == "complete" and manifest["resumed"] is True
    assert res.stages[-1].status == "complete"
    assert cache.stat().st_mtime_ns == cache_mtime  # not tokenised again

    straight = H.loss_curve(tmp_path / "straight" / "pretrain")
    resumed = H.loss_curve(stage_dir)
    assert [s for s, _ in resumed] == list(range(1, 13))
    assert resumed == straight  # bitwise: the floats are identical
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)


def test_estimate_uses_architecture_and_upstream_vocab():
    from lmforge.testing import validate_spec
    from lmforge_train.config import PretrainConfig

    spec = {"stages": [
        {"id": "bpe", "kind": "tokenizer", "plugin": "fixture",
         "config": {"path": "x", "vocab_size": 384}},
        {"id": "data", "kind": "data", "plugin": "fixture", "config": {"path": "y"}},
        {"id": "pretrain", "kind": "train", "plugin": "pretrain",
         "inputs": {"dataset": "data", "tokenizer": "bpe"},
         "config": {"model": H.model_cfg(), "loop": H.loop_cfg(steps=10, grad_accum=2)}}]}
    pipeline = validate_spec(spec, H.make_pm())
    plan = pipeline.stage("pretrain")
    cfg = plan.config
    assert isinstance(cfg, PretrainConfig)
    est = cfg.estimate({"tokenizer": pipeline.stage("bpe").config,
                        "dataset": pipeline.stage("data").config})
    n = cfg.model.num_parameters(384)
    tokens = 10 * 4 * 2 * 32
    assert est == {"parameters": n, "tokens": tokens, "train FLOPs": 6 * n * tokens}
    model = H.train_fakes.TinyLM(cfg.model, 384)
    assert n == sum(p.numel() for p in model.parameters())
