"""Language-model losses that never materialise the full ``[batch * seq, vocab]`` logits.

Every function takes a :class:`lmforge.interfaces.CausalLM` and uses its two halves:
``h = model.hidden(input_ids)`` then ``model.head(h)`` one chunk of rows at a time.

Labels are already aligned with positions: ``labels[b, t]`` is the target of position ``t``
(the *caller* shifts, e.g. ``labels[:, :-1] = input_ids[:, 1:]``); positions whose label is
``ignore_index`` carry no loss.

Fast path: a model may expose ``head_weight`` — a ``[vocab, dim]`` tensor with
``head(h) == h @ head_weight.T`` (the dense architecture does). Then :func:`causal_lm_loss`
computes the loss *and* its gradients with respect to ``h`` and the head weight chunk by chunk
in the forward pass (softmax minus one-hot), so backward is a multiply; no logits survive a
chunk and no matmul is recomputed. Otherwise each chunk runs under activation checkpointing
(its logits are recomputed in backward).

This module imports torch: only running stages import it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = ["causal_lm_loss", "sequence_logprobs", "token_logprobs"]


def _compute_dtype(like: torch.Tensor) -> torch.dtype:
    """The dtype matmuls run in here: the autocast dtype when autocast is on for the device."""
    device_type = like.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return like.dtype


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Sum of cross-entropy of ``h @ w.T`` against ``y``; gradients computed in forward.

    ``h``: ``[N, D]``, ``w``: ``[V, D]``, ``y``: ``[N]`` (every row is a real target).
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor,
                chunk_size: int, cdt: torch.dtype) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        w_c = w.to(cdt)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_w else None
        for start in range(0, h.shape[0], chunk_size):
            h_c = h[start:start + chunk_size].to(cdt)
            y_c = y[start:start + chunk_size]
            logits = (h_c @ w_c.t()).float()  # [c, V]
            # One pass of exp over the logits, in place: it yields both the log-sum-exp
            # and (normalised) the softmax that the gradient needs.
            target = logits.gather(1, y_c[:, None]).squeeze(1)
            peak = logits.amax(dim=-1, keepdim=True)
            probs = logits.sub_(peak).exp_()
            denom = probs.sum(dim=-1, keepdim=True)
            total += (peak + denom.log()).squeeze(1).sub_(target).sum()
            if need_h or need_w:
                # d(sum CE)/d logits = softmax - onehot.
                probs.div_(denom)
                probs[torch.arange(y_c.shape[0], device=y_c.device), y_c] -= 1.0
                g = probs.to(cdt)
                if need_h:
                    grad_h[start:start + chunk_size] = g @ w_c
                if need_w:
                    grad_w += (g.t() @ h_c).float()
        ctx.save_for_backward(grad_h if need_h else None, grad_w if need_w else None)
        ctx.w_dtype = w.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_out).to(ctx.w_dtype) if grad_w is not None else None
        return gh, gw, None, None, None


def _chunk_ce(head: Any, h_c: torch.Tensor, y_c: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(h_c).float(), y_c, reduction="sum")


def causal_lm_loss(model: Any, input_ids: torch.Tensor, labels: torch.Tensor,
                   ignore_index: int = -100, chunk_size: int = 4096
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy and the number of tokens it is summed over.

    Args:
        model: a CausalLM (``hidden`` and ``head``; optionally ``head_weight``).
        input_ids: LongTensor ``[B, T]``.
        labels: LongTensor ``[B, T]``; ``labels[b, t]`` is the target of position ``t``.
        ignore_index: label value that carries no loss.
        chunk_size: rows of ``B * T`` whose logits exist at one time.

    Returns:
        ``(loss_sum, n_tokens)``: float32 scalar sum of cross-entropy over non-ignored labels
        (equal to ``F.cross_entropy(model(x).flatten(0, 1).float(), labels.flatten(),
        reduction="sum")``) and a scalar tensor counting them. Divide to get the mean; across
        accumulation steps or ranks sum both first.
    """
    if input_ids.shape != labels.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and labels "
                         f"{tuple(labels.shape)} must have the same shape")
    h = model.hidden(input_ids)
    h = h.reshape(-1, h.shape[-1])
    y = labels.reshape(-1).to(h.device)
    valid = y != ignore_index
    n_tokens = valid.sum()
    if not bool(valid.all()):
        h, y = h[valid], y[valid]
    if h.shape[0] == 0:
        return h.sum(dtype=torch.float32) * 0.0, n_tokens
    weight = getattr(model, "head_weight", None)
    if isinstance(weight, torch.Tensor):
        loss = _FusedLinearCrossEntropy.apply(h, weight, y, chunk_size, _compute_dtype(h))
        return loss, n_tokens
    use_ckpt = torch.is_grad_enabled() and h.requires_grad and h.shape[0] > chunk_size
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    for start in range(0, h.shape[0], chunk_size):
        h_c, y_c = h[start:start + chunk_size], y[start:start + chunk_size]
        if use_ckpt:
            total = total + checkpoint(_chunk_ce, model.head, h_c, y_c, use_reentrant=False)
        else:
            total = total + _chunk_ce(model.head, h_c, y_c)
    return total, n_tokens


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor,
                   ignore_index: int = -100) -> torch.Tensor:
    """``log p(labels[b, t])`` under ``logits[b, t]`` (``[B, T, V]`` → float32 ``[B, T]``);
    0 where ``labels == ignore_index``."""
    logits = logits.float()
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    picked = logits.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    lp = picked - torch.logsumexp(logits, dim=-1)
    return torch.where(valid, lp, torch.zeros_like(lp))


def _chunk_logprob_sum(head: Any, h_c: torch.Tensor, y_c: torch.Tensor,
                       ignore_index: int) -> torch.Tensor:
    return token_logprobs(head(h_c), y_c, ignore_index).sum(-1)


def sequence_logprobs(model: Any, input_ids: torch.Tensor, labels: torch.Tensor,
                      ignore_index: int = -100, chunk_size: int = 4096) -> torch.Tensor:
    """Per-sequence sum of ``log p(label)`` over non-ignored positions: float32 ``[B]``.

    ``labels`` follow the same convention as :func:`causal_lm_loss`. The head runs on
    ``max(1, chunk_size // T)`` sequences at a time; with gradients each chunk is
    checkpointed, so only one chunk's logits exist at a time in forward and backward.
    """
    if input_ids.shape != labels.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and labels "
                         f"{tuple(labels.shape)} must have the same shape")
    h = model.hidden(input_ids)  # [B, T, D]
    labels = labels.to(h.device)
    rows = max(1, chunk_size // max(1, h.shape[1]))
    use_ckpt = torch.is_grad_enabled() and h.requires_grad and h.shape[0] > rows
    out = []
    for start in range(0, h.shape[0], rows):
        h_c, y_c = h[start:start + rows], labels[start:start + rows]
        if use_ckpt:
            out.append(checkpoint(_chunk_logprob_sum, model.head, h_c, y_c, ignore_index,
                                  use_reentrant=False))
        else:
            out.append(_chunk_logprob_sum(model.head, h_c, y_c, ignore_index))
    return torch.cat(out)
