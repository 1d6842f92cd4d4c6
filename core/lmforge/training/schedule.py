"""Learning-rate schedule and optimizer construction shared by every training stage.

The schedule is a pure function of the optimizer step, so its whole state is the step number
(what a checkpoint records) and a resumed run sets exactly the same rates.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lmforge.training.config import OptimConfig

if TYPE_CHECKING:
    import torch


def lr_at(step: int, optim: OptimConfig, total_steps: int) -> float:
    """Learning rate used by optimizer step ``step`` (0-based, ``0 <= step < total_steps``).

    Linear warmup over the first ``warmup_steps`` steps (``lr * (step + 1) / warmup_steps``, so
    step ``warmup_steps - 1`` uses the peak), then cosine decay from ``lr`` at step
    ``warmup_steps`` to ``min_lr_ratio * lr`` at the last step ``total_steps - 1``.
    """
    peak, floor = optim.lr, optim.lr * optim.min_lr_ratio
    warmup = optim.warmup_steps
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_steps = total_steps - 1 - warmup
    if decay_steps <= 0:
        return peak
    progress = min(1.0, (step - warmup) / decay_steps)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices (``ndim >= 2``) decay; norms, biases and other 1-D (or 0-D)
    parameters do not. Frozen parameters are left out; shared parameters appear once."""
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() already de-duplicates tied weights
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) over :func:`param_groups`; the lr is set per step.

    torch's fused kernel (all of Adam's arithmetic in one pass over each parameter) is used
    where every parameter can take it: CUDA tensors, and plain (not sharded) float CPU tensors.
    On CPU the default would be a Python loop of about ten tensor ops per parameter, which
    profiling showed to be a quarter of a small model's training step.
    """
    import torch

    params = list(model.parameters())
    fused = bool(params) and all(_fusable(p) for p in params)
    return torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr,
                             betas=tuple(optim.betas), eps=optim.eps, fused=fused or None)


def _fusable(p: torch.Tensor) -> bool:
    """Whether torch's fused AdamW takes ``p``: on CUDA any; on CPU a plain float tensor
    (sharded DTensors keep the default implementation there)."""
    import torch

    if p.is_cuda:
        return True
    return (p.device.type == "cpu" and p.is_floating_point()
            and type(p.data) is torch.Tensor)
