"""The dense model's float32 RMSNorm has a hand-derived backward: it must match autograd through
the plain formula, and a case small enough to check by hand."""

from __future__ import annotations

import math

import torch

from lmforge_models.dense import RMSNorm


def reference(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def test_matches_autograd_of_the_formula() -> None:
    torch.manual_seed(0)
    norm = RMSNorm(16, 1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 16, requires_grad=True)
    out = norm(x)
    grad = torch.randn_like(out)
    out.backward(grad)

    x64 = x.detach().double().requires_grad_()
    w64 = norm.weight.detach().double().requires_grad_()
    ref = reference(x64, w64, 1e-5)
    ref.backward(grad.double())
    assert torch.equal(out, reference(x.detach(), norm.weight.detach(), 1e-5))  # same forward
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.weight.grad.double(), w64.grad, rtol=1e-5, atol=1e-6)


def test_hand_computed_case() -> None:
    # x = [3, 4]: mean(x^2) = 12.5, r = 1/sqrt(12.5), y = x * r. With weight [1, 2] and
    # grad [1, 0]: g_y = [1, 0], mean(g_y * y) = y0 / 2, dx = r * (g_y - y * y0 / 2),
    # dweight = grad * y = [y0, 0].
    norm = RMSNorm(2, 0.0)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0]))
    x = torch.tensor([[3.0, 4.0]], requires_grad=True)
    norm(x).backward(torch.tensor([[1.0, 0.0]]))
    r = 1 / math.sqrt(12.5)
    y0, y1 = 3 * r, 4 * r
    expected_dx = [r * (1 - y0 * y0 / 2), r * (0 - y1 * y0 / 2)]
    torch.testing.assert_close(x.grad, torch.tensor([expected_dx]), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(norm.weight.grad, torch.tensor([y0, 0.0]), rtol=1e-6, atol=1e-7)


def test_bf16_input_is_normalised_in_float32() -> None:
    # Not the float32 kernel: the input is upcast, normalised, cast back, then scaled.
    torch.manual_seed(0)
    norm = RMSNorm(8, 1e-6)
    x = torch.randn(2, 8).bfloat16().requires_grad_()
    out = norm(x)
    xf = x.detach().float()
    expected = norm.weight.detach() * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)
                                       ).bfloat16()
    assert torch.equal(out, expected)
    out.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
