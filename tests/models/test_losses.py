"""lmforge.training.losses equals the naive full-logits computations, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.training.losses import causal_lm_loss, sequence_logprobs, token_logprobs
from lmforge_models.config import DenseConfig
from lmforge_models.dense import build

V = 61


class HeadOnly(nn.Module):
    """A CausalLM without ``head_weight`` (exercises the checkpointed generic path)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, 16)
        self.proj = nn.Linear(16, V)  # has a bias: not expressible as head_weight
        self.vocab_size, self.max_seq_len = V, 64

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.emb(x))

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x))


def _models() -> list[nn.Module]:
    torch.manual_seed(0)
    cfg = dict(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, max_seq_len=64, init_std=0.1)
    return [build(DenseConfig(**cfg), V), build(DenseConfig(tie_embeddings=True, **cfg), V),
            HeadOnly()]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, V, (3, 20), generator=g)
    y = torch.randint(0, V, (3, 20), generator=g)
    y[0, :7] = -100
    y[2, 15:] = -100
    return x, y


@pytest.mark.parametrize("model", _models(), ids=["untied", "tied", "generic"])
@pytest.mark.parametrize("chunk", [7, 4096])
def test_causal_lm_loss_equals_naive_value_and_grad(model: nn.Module, chunk: int) -> None:
    x, y = _batch()
    params = [p for p in model.parameters()]
    naive = F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten(), reduction="sum")
    g_naive = torch.autograd.grad(naive, params)
    loss, n = causal_lm_loss(model, x, y, chunk_size=chunk)
    g = torch.autograd.grad(loss, params)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert n.item() == int((y != -100).sum()) == 60 - 7 - 5
    torch.testing.assert_close(loss, naive, rtol=1e-5, atol=1e-4)
    for a, b in zip(g, g_naive):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_causal_lm_loss_scales_with_upstream_gradient_and_no_grad() -> None:
    model = _models()[0]
    x, y = _batch()
    loss, n = causal_lm_loss(model, x, y, chunk_size=8)
    (loss / n).backward()
    g1 = model.embed.weight.grad.clone()
    model.zero_grad()
    naive = F.cross_entropy(model(x).flatten(0, 1), y.flatten())  # mean
    naive.backward()
    torch.testing.assert_close(g1, model.embed.weight.grad, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        l2, _ = causal_lm_loss(model, x, y)
    torch.testing.assert_close(l2, loss.detach())


def test_causal_lm_loss_all_ignored_is_zero() -> None:
    model = _models()[0]
    x, _ = _batch()
    loss, n = causal_lm_loss(model, x, torch.full_like(x, -100))
    assert loss.item() == 0.0 and n.item() == 0
    loss.backward()  # still differentiable


def test_causal_lm_loss_under_bf16_autocast_is_close() -> None:
    model = _models()[0]
    x, y = _batch()
    ref, _ = causal_lm_loss(model, x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = causal_lm_loss(model, x, y, chunk_size=16)
    loss.backward()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) / ref.item() < 2e-2
    assert model.embed.weight.grad.dtype == torch.float32


def test_token_logprobs_matches_log_softmax() -> None:
    logits = torch.randn(2, 5, V)
    labels = torch.randint(0, V, (2, 5))
    labels[1, 3] = -100
    lp = token_logprobs(logits, labels)
    ref = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    ref[1, 3] = 0.0
    torch.testing.assert_close(lp, ref)


@pytest.mark.parametrize("model", _models(), ids=["untied", "tied", "generic"])
def test_sequence_logprobs_equals_naive_value_and_grad(model: nn.Module) -> None:
    x, y = _batch()
    params = list(model.parameters())
    naive = token_logprobs(model(x), y).sum(-1)
    w = torch.tensor([1.0, -2.0, 0.5])  # a DPO-like per-sequence weighting
    g_naive = torch.autograd.grad((naive * w).sum(), params)
    out = sequence_logprobs(model, x, y, chunk_size=20)  # one sequence per chunk
    g = torch.autograd.grad((out * w).sum(), params)
    assert out.shape == (3,)
    torch.testing.assert_close(out, naive, rtol=1e-5, atol=1e-4)
    for a, b in zip(g, g_naive):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_shape_mismatch_is_an_error() -> None:
    model = _models()[0]
    with pytest.raises(ValueError, match="same shape"):
        causal_lm_loss(model, torch.zeros(2, 4, dtype=torch.long),
                       torch.zeros(2, 3, dtype=torch.long))
