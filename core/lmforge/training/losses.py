"""Language-model losses that never materialise the full ``[batch * seq, vocab]`` logits.

Two layers:

* **Kernels on hidden states** — :func:`linear_cross_entropy` and :func:`linear_token_logprobs`
  take final hidden states ``h [..., D]``, the output matrix ``w [V, D]`` and aligned labels, and
  compute the summed cross-entropy / per-token log-probs one chunk of rows at a time. An
  architecture's ``forward`` calls them (see :class:`lmforge.interfaces.CausalLM`), so the
  (possibly wrapped, sharded) module computes its own loss inside its forward.
* **Calls through the module** — :func:`causal_lm_loss`, :func:`sequence_logprobs` and
  :func:`lm_loss` call ``module(input_ids, labels=...)``: the module a backend returned (DDP,
  FSDP2, compiled). Calling it, never a sub-method of the unwrapped model, is what makes DDP
  all-reduce gradients and FSDP2 gather parameters.

Labels are aligned with positions: ``labels[b, t]`` is the target of position ``t`` (the
*caller* shifts, e.g. ``labels[:, :-1] = input_ids[:, 1:]``); positions whose label is
``ignore_index`` carry no loss.

This module imports torch: only running stages import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["IGNORE_INDEX", "causal_lm_loss", "full_logits_cross_entropy", "linear_cross_entropy",
           "linear_token_logprobs", "lm_loss", "output_from_logits", "sequence_logprobs",
           "token_logprobs"]

IGNORE_INDEX = -100


def _register_output_pytree() -> None:
    """Make :class:`CausalLMOutput` a pytree node, so wrappers that look for tensors in a
    module's output (FSDP2's backward hooks, DDP, torch.compile) see the tensors inside it."""
    from torch.utils import _pytree

    from lmforge.interfaces import CausalLMOutput

    names = ("loss_sum", "num_tokens", "token_logprobs", "logits", "scores", "aux_losses")
    try:
        _pytree.register_pytree_node(
            CausalLMOutput,
            lambda o: ([getattr(o, n) for n in names], None),
            lambda values, _: CausalLMOutput(**dict(zip(names, values, strict=True))),
            serialized_type_name="lmforge.interfaces.CausalLMOutput",
        )
    except ValueError:  # already registered (module reloaded)
        pass


_register_output_pytree()


def _compute_dtype(like: torch.Tensor) -> torch.dtype:
    """The dtype matmuls run in here: the autocast dtype when autocast is on for the device."""
    device_type = like.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return like.dtype


def _accumulate(total: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
    """``total + part`` in float32, in place; the first part itself (no zero-filled buffer and
    extra pass over a ``[V, D]`` matrix when there is one chunk)."""
    if total is None:
        return part.float()
    return total.add_(part)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Sum of cross-entropy of ``h @ w.T`` against ``y``; gradients computed in forward.

    ``h``: ``[N, D]``, ``w``: ``[V, D]``, ``y``: ``[N]`` (every row is a real target). The
    gradient of the sum with respect to the logits is ``softmax - onehot``; it is formed chunk by
    chunk in forward, so backward is a multiply and no matmul is recomputed.
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor,
                chunk_size: int, cdt: torch.dtype) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        w_c = w.to(cdt)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = None  # float32 [V, D]: the first chunk's product, later ones added in place
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
                probs.div_(denom)
                probs[torch.arange(y_c.shape[0], device=y_c.device), y_c] -= 1.0
                g = probs.to(cdt)
                if need_h:
                    grad_h[start:start + chunk_size] = g @ w_c
                if need_w:
                    grad_w = _accumulate(grad_w, g.t() @ h_c)
        if need_w and grad_w is None:
            grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        ctx.save_for_backward(grad_h if need_h else None, grad_w if need_w else None)
        ctx.w_dtype = w.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_out).to(ctx.w_dtype) if grad_w is not None else None
        return gh, gw, None, None, None


class _FusedLinearLogprobs(torch.autograd.Function):
    """Per-row ``log softmax(h @ w.T)[y]``: float32 ``[N]``.

    Forward keeps only the log-sum-exp of each row; backward recomputes each chunk's logits once
    and forms ``d logp / d logits = onehot - softmax`` scaled by the incoming per-row gradient.
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor,
                chunk_size: int, cdt: torch.dtype) -> torch.Tensor:
        w_c = w.to(cdt)
        out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        lse = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        for start in range(0, h.shape[0], chunk_size):
            sl = slice(start, start + chunk_size)
            logits = (h[sl].to(cdt) @ w_c.t()).float()
            lse[sl] = torch.logsumexp(logits, dim=-1)
            out[sl] = logits.gather(1, y[sl, None]).squeeze(1) - lse[sl]
        ctx.save_for_backward(h, w, y, lse)
        ctx.chunk_size, ctx.cdt = chunk_size, cdt
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        h, w, y, lse = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        cdt, chunk = ctx.cdt, ctx.chunk_size
        w_c = w.to(cdt)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = None  # float32 [V, D]: the first chunk's product, later ones added in place
        for start in range(0, h.shape[0], chunk):
            sl = slice(start, start + chunk)
            h_c = h[sl].to(cdt)
            probs = ((h_c @ w_c.t()).float() - lse[sl, None]).exp_()  # softmax
            probs.neg_()
            probs[torch.arange(probs.shape[0], device=probs.device), y[sl]] += 1.0
            g = probs.mul_(grad_out[sl, None].float()).to(cdt)  # [c, V]
            if need_h:
                grad_h[sl] = g @ w_c
            if need_w:
                grad_w = _accumulate(grad_w, g.t() @ h_c)
        if need_w and grad_w is None:
            grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        return (grad_h, grad_w.to(w.dtype) if grad_w is not None else None, None, None, None)


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         ignore_index: int = IGNORE_INDEX, chunk_size: int = 4096
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of the logits ``h @ weight.T`` against ``labels``.

    Args:
        h: hidden states ``[..., D]`` (any leading shape).
        weight: the output matrix ``[V, D]``.
        labels: LongTensor with the leading shape of ``h``; ``ignore_index`` carries no loss.
        chunk_size: rows whose logits exist at one time.

    Returns:
        ``(loss_sum, n_tokens)``: float32 scalar (equal to ``F.cross_entropy(h @ weight.T,
        labels, reduction="sum")``) and a scalar LongTensor counting the labelled rows.
    """
    h = h.reshape(-1, h.shape[-1])
    y = labels.reshape(-1).to(h.device)
    valid = y != ignore_index
    n_tokens = valid.sum()
    # Boolean indexing costs a device sync; on the common all-labelled path it is skipped.
    if not bool(valid.all()):
        h, y = h[valid], y[valid]
    if h.shape[0] == 0:
        return h.sum(dtype=torch.float32) * 0.0 + weight.sum() * 0.0, n_tokens
    return _FusedLinearCrossEntropy.apply(h, weight, y, chunk_size, _compute_dtype(h)), n_tokens


def linear_token_logprobs(h: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                          ignore_index: int = IGNORE_INDEX, chunk_size: int = 4096
                          ) -> torch.Tensor:
    """``log p(labels)`` under the logits ``h @ weight.T``: float32 with the shape of
    ``labels`` (``h`` is ``[*labels.shape, D]``), 0 where ``labels == ignore_index``.
    Differentiable with respect to ``h`` and ``weight``; no full logits are kept. Only the
    labelled rows go through the output projection (in preference data the prompt, often half
    of each row, carries no label)."""
    shape = labels.shape
    flat = h.reshape(-1, h.shape[-1])
    y = labels.reshape(-1).to(h.device)
    valid = y != ignore_index
    rows = valid.nonzero().squeeze(1)
    if 0 < rows.numel() < y.numel():  # (one host sync; every row labelled skips the gather)
        lp = _FusedLinearLogprobs.apply(flat.index_select(0, rows), weight, y[rows], chunk_size,
                                        _compute_dtype(flat))
        out = torch.zeros(y.shape, dtype=lp.dtype, device=lp.device).index_copy(0, rows, lp)
        return out.reshape(shape)
    safe = torch.where(valid, y, torch.zeros_like(y))
    lp = _FusedLinearLogprobs.apply(flat, weight, safe, chunk_size, _compute_dtype(flat))
    return torch.where(valid, lp, torch.zeros_like(lp)).reshape(shape)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor,
                   ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``log p(labels[b, t])`` under full ``logits[b, t]`` (``[B, T, V]`` → float32 ``[B, T]``);
    0 where ``labels == ignore_index``. The reference the chunked kernels are tested against."""
    logits = logits.float()
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    picked = logits.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    lp = picked - torch.logsumexp(logits, dim=-1)
    return torch.where(valid, lp, torch.zeros_like(lp))


def output_from_logits(logits: torch.Tensor, labels: torch.Tensor | None = None,
                       return_logprobs: bool = False, logits_to_keep: int | None = None,
                       ignore_index: int = IGNORE_INDEX) -> Any:
    """A :class:`lmforge.interfaces.CausalLMOutput` from full logits ``[B, T, V]``: the
    model-call contract for an architecture whose head is not a plain matrix (so it cannot use
    the chunked kernels) — at the cost of materialising the logits."""
    from lmforge.interfaces import CausalLMOutput

    if labels is None:
        return CausalLMOutput(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)
    if return_logprobs:
        return CausalLMOutput(token_logprobs=token_logprobs(logits, labels, ignore_index))
    return CausalLMOutput(loss_sum=full_logits_cross_entropy(logits, labels, ignore_index),
                          num_tokens=(labels != ignore_index).sum())


# -- calls through the module ----------------------------------------------------------------
def _model_kwargs(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in ("positions", "attention_mask") if k in batch}


def causal_lm_loss(module: Any, input_ids: torch.Tensor, labels: torch.Tensor,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss_sum, n_tokens)`` of ``module(input_ids, labels=labels, **kwargs)``.

    ``module`` is a :class:`lmforge.interfaces.CausalLM` as the backend returned it (wrapped or
    not); ``kwargs`` may carry ``positions`` and ``attention_mask``. Auxiliary losses are not
    included (see :func:`lm_loss`).
    """
    if input_ids.shape != labels.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and labels "
                         f"{tuple(labels.shape)} must have the same shape")
    out = module(input_ids, labels=labels, **kwargs)
    return out.loss_sum, out.num_tokens


def sequence_logprobs(module: Any, input_ids: torch.Tensor, labels: torch.Tensor,
                      **kwargs: Any) -> torch.Tensor:
    """Per-sequence sum of ``log p(label)`` over labelled positions: float32 ``[B]``, through
    ``module(input_ids, labels=labels, return_logprobs=True, **kwargs)``."""
    if input_ids.shape != labels.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and labels "
                         f"{tuple(labels.shape)} must have the same shape")
    out = module(input_ids, labels=labels, return_logprobs=True, **kwargs)
    return out.token_logprobs.sum(-1)


def lm_loss(module: Any, batch: Mapping[str, torch.Tensor]) -> Any:
    """The training loss of language modelling (pre-training, SFT) for the shared loop.

    ``batch``: ``input_ids`` and ``labels`` ``[B, T]`` (optionally ``positions`` and
    ``attention_mask``). Returns a :class:`lmforge.training.loop.LossOutput` whose sum is the
    summed cross-entropy plus, in training mode, ``n_tokens`` times the model's auxiliary losses
    (e.g. MoE load balancing), so the per-token mean loss gets ``+ aux_loss``; each auxiliary
    loss is reported as a metric ``aux/<name>``.
    """
    from lmforge.training.loop import LossOutput

    out = module(batch["input_ids"], labels=batch["labels"], **_model_kwargs(batch))
    loss, n = out.loss_sum, out.num_tokens
    metrics: dict[str, torch.Tensor | float] = {}
    if out.aux_losses:
        for name, value in out.aux_losses.items():
            metrics[f"aux/{name}"] = value.detach().float() * n
        if module.training:
            loss = loss + out.aux_loss * n
    return LossOutput(loss_sum=loss, count=n, metrics=metrics)


def full_logits_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                              ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Summed cross-entropy from full logits ``[..., V]`` (float32 scalar): the reference."""
    return F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(),
                           ignore_index=ignore_index, reduction="sum")
