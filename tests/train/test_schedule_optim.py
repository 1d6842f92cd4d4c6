"""LR schedule values, AdamW parameter groups and gradient-accumulation equivalence."""

from __future__ import annotations

import math

import pytest
import torch
import train_fakes

from lmforge.training.config import OptimConfig
from lmforge.training.loop import accumulate_gradients
from lmforge.training.schedule import build_optimizer, lr_at, param_groups


def test_lr_warmup_then_cosine_to_floor():
    o = OptimConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=4)
    steps = 13  # decay over steps 4..12 (8 intervals)
    assert [lr_at(s, o, steps) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, o, steps) == pytest.approx(1.0)
    assert lr_at(8, o, steps) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos = 0
    assert lr_at(6, o, steps) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(12, o, steps) == pytest.approx(0.1)
    lrs = [lr_at(s, o, steps) for s in range(4, steps)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_lr_without_warmup_starts_at_peak():
    o = OptimConfig(lr=2e-3, min_lr_ratio=0.0, warmup_steps=0)
    assert lr_at(0, o, 5) == pytest.approx(2e-3)
    assert lr_at(4, o, 5) == pytest.approx(0.0)
    assert lr_at(0, o, 1) == pytest.approx(2e-3)


def test_weight_decay_skips_norms_and_biases():
    model = train_fakes.TinyLM(train_fakes.TinyConfig(), vocab_size=50)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    assert "norm.weight" in nd and "blocks.0.up.bias" in nd and "blocks.0.ln1.weight" in nd
    opt = build_optimizer(model, OptimConfig(weight_decay=0.1))
    assert isinstance(opt, torch.optim.AdamW)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def _lm_loss(module, batch):
    from lmforge.training.loop import LossOutput
    from lmforge.training.losses import causal_lm_loss

    loss, n = causal_lm_loss(module, batch["input_ids"], batch["labels"])
    return LossOutput(loss, n)


def _grads(model, micro):
    model.zero_grad(set_to_none=True)
    loss, count, _, _ = accumulate_gradients(model, _lm_loss, micro, train_fakes.CpuBackend())
    return loss / count, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_accumulation_equals_one_big_batch():
    torch.manual_seed(0)
    model = train_fakes.TinyLM(train_fakes.TinyConfig(), vocab_size=50)
    ids = torch.randint(0, 50, (8, 17))
    labels = ids[:, 1:].clone()
    # Uneven target counts per micro-batch: a per-micro-batch mean would weight them wrongly.
    labels[:4, :12] = -100
    labels[5, :3] = -100
    x = ids[:, :-1]
    big_loss, big = _grads(model, [{"input_ids": x, "labels": labels}])
    acc_loss, acc = _grads(model, [{"input_ids": x[:4], "labels": labels[:4]},
                                   {"input_ids": x[4:], "labels": labels[4:]}])
    assert acc_loss == pytest.approx(big_loss, rel=1e-6)
    for name in big:
        torch.testing.assert_close(acc[name], big[name], rtol=1e-5, atol=1e-7)
    # The test can fail: averaging per-micro-batch means gives different gradients.
    _, g1 = _grads(model, [{"input_ids": x[:4], "labels": labels[:4]}])
    _, g2 = _grads(model, [{"input_ids": x[4:], "labels": labels[4:]}])
    naive = (g1["out.weight"] + g2["out.weight"]) / 2
    assert not torch.allclose(naive, big["out.weight"], rtol=1e-3, atol=1e-6)
