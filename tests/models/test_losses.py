"""lmforge.training.losses equals the naive full-logits computations, values and gradients.

Two layers are tested: the chunked kernels on hidden states (``linear_cross_entropy``,
``linear_token_logprobs``, where ``chunk_size`` matters), and the calls through the module
(``causal_lm_loss``, ``sequence_logprobs``, ``lm_loss``), which must go through the module's
``forward`` — for lmforge's architectures and for a third-party model that computes its
outputs its own way.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.interfaces import CausalLM, CausalLMOutput
from lmforge.training.losses import (
    causal_lm_loss,
    linear_cross_entropy,
    linear_token_logprobs,
    lm_loss,
    sequence_logprobs,
    token_logprobs,
)
from lmforge_models.config import DenseConfig, MoEConfig
from lmforge_models.dense import build
from lmforge_models.moe import build as build_moe

V = 61


class FullLogitsLM(nn.Module):
    """A third-party CausalLM: no ``head_weight`` (its head has a bias), and a forward that
    implements the contract its own way, from full logits, without lmforge's kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, 16)
        self.proj = nn.Linear(16, V)  # has a bias: not expressible as a head matrix
        self.blocks = nn.ModuleList()
        self.vocab_size, self.max_seq_len = V, 64

    def init_buffers(self) -> None:
        pass

    def forward(self, input_ids: torch.Tensor, *, labels: torch.Tensor | None = None,
                positions: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, return_logprobs: bool = False,
                logits_to_keep: int | None = None) -> CausalLMOutput:
        logits = self.proj(torch.tanh(self.emb(input_ids)))
        if labels is None:
            return CausalLMOutput(logits=logits[:, -logits_to_keep:] if logits_to_keep
                                  else logits)
        if return_logprobs:
            return CausalLMOutput(token_logprobs=token_logprobs(logits, labels))
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="sum")
        return CausalLMOutput(loss_sum=loss, num_tokens=(labels != -100).sum())


_CFG = dict(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, max_seq_len=64, init_std=0.1)


def _models() -> list[nn.Module]:
    torch.manual_seed(0)
    return [build(DenseConfig(**_CFG), V), build(DenseConfig(tie_embeddings=True, **_CFG), V),
            FullLogitsLM()]


IDS = ["untied", "tied", "generic"]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, V, (3, 20), generator=g)
    y = torch.randint(0, V, (3, 20), generator=g)
    y[0, :7] = -100
    y[2, 15:] = -100
    return x, y


def _calls(model: nn.Module) -> list[dict[str, Any]]:
    """Record the keyword arguments of every call of ``model`` (hooks run only when the module
    itself is called, never for ``model.forward(...)`` or a sub-method)."""
    seen: list[dict[str, Any]] = []
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(dict(kwargs)),
                                    with_kwargs=True)
    return seen


# -- kernels on hidden states ---------------------------------------------------------------------
def _hidden_batch(d: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    h = torch.randn(3, 20, d, generator=g).requires_grad_()
    w = (torch.randn(V, d, generator=g) * 0.5).requires_grad_()
    _, y = _batch()
    return h, w, y


@pytest.mark.parametrize("chunk", [1, 7, 20, 4096])
def test_linear_cross_entropy_equals_naive_value_and_grad(chunk: int) -> None:
    h, w, y = _hidden_batch()
    naive = F.cross_entropy((h @ w.t()).flatten(0, 1), y.flatten(), reduction="sum")
    g_naive = torch.autograd.grad(naive, [h, w])
    loss, n = linear_cross_entropy(h, w, y, chunk_size=chunk)
    g = torch.autograd.grad(loss, [h, w])
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert n.item() == int((y != -100).sum()) == 60 - 7 - 5
    torch.testing.assert_close(loss, naive, rtol=1e-5, atol=1e-4)
    for a, b in zip(g, g_naive):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert g[0][0, :7].abs().sum() == 0  # ignored positions get no gradient


def test_linear_cross_entropy_scales_with_upstream_gradient() -> None:
    h, w, y = _hidden_batch()
    loss, n = linear_cross_entropy(h, w, y, chunk_size=8)
    (loss / n * 0.37).backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    (F.cross_entropy((h @ w.t()).flatten(0, 1), y.flatten()) * 0.37).backward()  # mean
    torch.testing.assert_close(gh, h.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gw, w.grad, rtol=1e-4, atol=1e-6)


def test_linear_cross_entropy_all_ignored_is_zero() -> None:
    h, w, y = _hidden_batch()
    loss, n = linear_cross_entropy(h, w, torch.full_like(y, -100), chunk_size=5)
    assert loss.item() == 0.0 and n.item() == 0
    loss.backward()  # still differentiable
    assert h.grad.abs().sum() == 0 and w.grad.abs().sum() == 0


def test_linear_cross_entropy_under_bf16_autocast_is_close() -> None:
    h, w, y = _hidden_batch()
    ref, _ = linear_cross_entropy(h, w, y)
    g_ref = torch.autograd.grad(ref, [h, w])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = linear_cross_entropy(h, w, y, chunk_size=16)
    gh, gw = torch.autograd.grad(loss, [h, w])
    assert loss.dtype == torch.float32
    assert gh.dtype == h.dtype == torch.float32 and gw.dtype == torch.float32
    assert abs(loss.item() - ref.item()) / ref.item() < 2e-2
    for a, b in ((gh, g_ref[0]), (gw, g_ref[1])):
        assert (a - b).norm() / b.norm() < 5e-2


@pytest.mark.parametrize("chunk", [1, 7, 20, 4096])
def test_linear_token_logprobs_equals_naive_value_and_grad(chunk: int) -> None:
    h, w, y = _hidden_batch()
    naive = token_logprobs(h @ w.t(), y)
    weight = torch.randn(3, 20, generator=torch.Generator().manual_seed(1))
    g_naive = torch.autograd.grad((naive * weight).sum(), [h, w])
    lp = linear_token_logprobs(h, w, y, chunk_size=chunk)
    g = torch.autograd.grad((lp * weight).sum(), [h, w])
    assert lp.shape == (3, 20) and lp.dtype == torch.float32
    assert torch.all(lp[0, :7] == 0) and torch.all(lp[2, 15:] == 0)
    assert torch.all(lp[y != -100] < 0)
    torch.testing.assert_close(lp, naive, rtol=1e-5, atol=1e-5)
    for a, b in zip(g, g_naive):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_token_logprobs_matches_log_softmax() -> None:
    logits = torch.randn(2, 5, V)
    labels = torch.randint(0, V, (2, 5))
    labels[1, 3] = -100
    lp = token_logprobs(logits, labels)
    ref = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    ref[1, 3] = 0.0
    torch.testing.assert_close(lp, ref)


# -- calls through the module ---------------------------------------------------------------------
def test_generic_model_implements_the_protocol() -> None:
    assert isinstance(FullLogitsLM(), CausalLM)


@pytest.mark.parametrize("model", _models(), ids=IDS)
def test_causal_lm_loss_equals_naive_value_and_grad(model: nn.Module) -> None:
    x, y = _batch()
    params = list(model.parameters())
    naive = F.cross_entropy(model(x).logits.flatten(0, 1).float(), y.flatten(),
                            reduction="sum")
    g_naive = torch.autograd.grad(naive, params)
    seen = _calls(model)
    loss, n = causal_lm_loss(model, x, y)
    assert len(seen) == 1 and seen[0]["labels"] is y and not seen[0].get("return_logprobs")
    g = torch.autograd.grad(loss, params)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert n.item() == int((y != -100).sum()) == 60 - 7 - 5
    torch.testing.assert_close(loss, naive, rtol=1e-5, atol=1e-4)
    for a, b in zip(g, g_naive):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model", _models(), ids=IDS)
def test_sequence_logprobs_equals_naive_value_and_grad(model: nn.Module) -> None:
    x, y = _batch()
    params = list(model.parameters())
    naive = token_logprobs(model(x).logits, y).sum(-1)
    w = torch.tensor([1.0, -2.0, 0.5])  # a DPO-like per-sequence weighting
    g_naive = torch.autograd.grad((naive * w).sum(), params)
    seen = _calls(model)
    out = sequence_logprobs(model, x, y)
    assert len(seen) == 1 and seen[0]["labels"] is y and seen[0]["return_logprobs"] is True
    g = torch.autograd.grad((out * w).sum(), params)
    assert out.shape == (3,) and out.dtype == torch.float32
    torch.testing.assert_close(out, naive, rtol=1e-5, atol=1e-4)
    for a, b in zip(g, g_naive):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _logprob_models() -> list[nn.Module]:
    torch.manual_seed(0)
    moe = MoEConfig(ffn_hidden=24, n_experts=4, top_k=2, **_CFG)
    return _models()[:2] + [build_moe(moe, V)]


@pytest.mark.parametrize("model", _logprob_models(), ids=["untied", "tied", "moe"])
def test_return_logprobs_equals_full_logits_value_and_grad(model: nn.Module) -> None:
    x, y = _batch()
    params = [p for p in model.parameters()]
    out = model(x, labels=y, return_logprobs=True)
    assert out.logits is None and out.loss_sum is None
    lp = out.token_logprobs
    ref = token_logprobs(model(x).logits, y)
    assert lp.shape == (3, 20) and lp.dtype == torch.float32
    assert torch.all(lp[0, :7] == 0) and torch.all(lp[2, 15:] == 0)
    torch.testing.assert_close(lp, ref, rtol=1e-5, atol=1e-5)
    weight = torch.randn(3, 20, generator=torch.Generator().manual_seed(4))
    g = torch.autograd.grad((lp * weight).sum(), params, allow_unused=True)
    g_ref = torch.autograd.grad((ref * weight).sum(), params, allow_unused=True)
    assert sum(a.abs().sum() for a in g if a is not None) > 0
    for a, b, p in zip(g, g_ref, params):
        if b is None:  # e.g. a router gets no gradient through top-k logits
            assert a is None or a.abs().sum() == 0
            continue
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_module_path_forwards_attention_mask_and_positions() -> None:
    """``causal_lm_loss`` passes ``attention_mask`` / ``positions`` to the forward: a
    left-padded batch whose padding carries no labels has the unpadded loss."""
    model = _models()[0]
    x, y = _batch()
    ref, n_ref = causal_lm_loss(model, x, y)
    pad = 5
    xp = torch.cat([torch.full((3, pad), 7), x], dim=1)
    yp = torch.cat([torch.full((3, pad), -100), y], dim=1)
    mask = torch.cat([torch.zeros(3, pad, dtype=torch.long), torch.ones_like(x)], dim=1)
    seen = _calls(model)
    loss, n = causal_lm_loss(model, xp, yp, attention_mask=mask)
    assert seen[-1]["attention_mask"] is mask
    assert n.item() == n_ref.item()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-4)
    unmasked, _ = causal_lm_loss(model, xp, yp)
    assert abs(unmasked.item() - ref.item()) > 1e-3  # the mask is what makes them equal
    # explicit default positions change nothing, on both module-path functions
    pos = torch.arange(20).expand(3, 20)
    torch.testing.assert_close(causal_lm_loss(model, x, y, positions=pos)[0], ref)
    with_pos = sequence_logprobs(model, x, y, positions=pos)
    assert seen[-1]["positions"] is pos and seen[-1]["return_logprobs"] is True
    torch.testing.assert_close(with_pos, sequence_logprobs(model, x, y))


def test_causal_lm_loss_scales_with_upstream_gradient_and_no_grad() -> None:
    model = _models()[0]
    x, y = _batch()
    loss, n = causal_lm_loss(model, x, y)
    (loss / n).backward()
    g1 = model.embed.weight.grad.clone()
    model.zero_grad()
    naive = F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten())  # mean
    naive.backward()
    torch.testing.assert_close(g1, model.embed.weight.grad, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        l2, _ = causal_lm_loss(model, x, y)
    torch.testing.assert_close(l2, loss.detach())


@pytest.mark.parametrize("model", _models(), ids=IDS)
def test_causal_lm_loss_all_ignored_is_zero(model: nn.Module) -> None:
    x, _ = _batch()
    loss, n = causal_lm_loss(model, x, torch.full_like(x, -100))
    assert loss.item() == 0.0 and n.item() == 0
    loss.backward()  # still differentiable


def test_causal_lm_loss_under_bf16_autocast_is_close() -> None:
    model = _models()[0]
    x, y = _batch()
    ref, _ = causal_lm_loss(model, x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = causal_lm_loss(model, x, y)
    loss.backward()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) / ref.item() < 2e-2
    assert model.embed.weight.grad.dtype == torch.float32
    assert model.blocks[0].attn.qkv.weight.grad.dtype == torch.float32


def test_lm_loss_is_causal_lm_loss_for_a_dense_model() -> None:
    model = _models()[0]
    x, y = _batch()
    out = lm_loss(model, {"input_ids": x, "labels": y})
    ref, n = causal_lm_loss(model, x, y)
    assert out.metrics == {} and out.count.item() == n.item()
    torch.testing.assert_close(out.loss_sum, ref)


def test_shape_mismatch_is_an_error() -> None:
    model = _models()[0]
    for fn in (causal_lm_loss, sequence_logprobs):
        with pytest.raises(ValueError, match="same shape"):
            fn(model, torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
