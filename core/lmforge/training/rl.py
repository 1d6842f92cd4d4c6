"""Reinforcement-learning math shared by the RL stages (PPO, GRPO, RLOO, and any feedback plugin
that optimises a policy against a reward): pure functions of tensors plus two small stateful
objects (a KL controller, running reward statistics) that checkpoint through
:class:`lmforge.training.state.StateRegistry`.

Shapes: ``[B, T]`` tensors hold one row per completion and one column per *response* token
position (aligned with the labels of the model call: column ``t`` is the log-probability of the
``t``-th response token and the value of the state before it); ``mask`` is 1 on real response
tokens and 0 on padding. Rows are right-padded: a row's real tokens come first.

Notation: ``logp`` = log pi(a_t | s_t) under the policy being optimised, ``old_logp`` the same
under the policy that sampled the rollout, ``ref_logp`` under the frozen reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

KLEstimator = Literal["k1", "k2", "k3"]

__all__ = ["AdaptiveKLController", "FixedKLController", "RunningMoments", "gae",
           "group_advantages", "kl_estimate", "kl_controller", "leave_one_out_advantages",
           "masked_mean", "masked_sum", "masked_var", "masked_whiten", "policy_loss",
           "value_loss"]


# -- masked statistics --------------------------------------------------------------------------
def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (0 when the mask is empty)."""
    return (x * mask).sum() / mask.sum().clamp_min(1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the masked positions (Bessel-corrected when ``unbiased`` and n > 1)."""
    n = mask.sum()
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                  eps: float = 1e-8, reduce_sum: Callable[[float], float] | None = None
                  ) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the masked positions (0 elsewhere); with
    ``shift_mean=False`` the mean is added back (only the scale changes). ``reduce_sum`` (a
    sum of a number over ranks) makes the mean and the Bessel-corrected variance those of the
    masked positions of *every* rank, so a batch split over ranks is whitened as one."""
    if reduce_sum is None:
        mean, var = masked_mean(x, mask), masked_var(x, mask)
    else:
        n = reduce_sum(float(mask.sum()))
        mean_f = reduce_sum(float((x.double() * mask).sum())) / max(n, 1.0)
        sq = reduce_sum(float((((x.double() - mean_f) ** 2) * mask).sum()))
        var_f = sq / (n - 1) if n > 1 else sq / max(n, 1.0)
        mean = torch.tensor(mean_f, dtype=x.dtype, device=x.device)
        var = torch.tensor(var_f, dtype=x.dtype, device=x.device)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


# -- advantages ---------------------------------------------------------------------------------
def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over right-padded rows.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` with ``V_{t+1} = 0`` after a row's last token,
    ``A_t = delta_t + gamma * lam * A_{t+1}``; returns ``(advantages, returns = A + V)``, both
    ``[B, T]`` and 0 on padding. Float64 inside, the input dtype out.
    """
    r, v, m = rewards.double() * mask, values.double() * mask, mask.double()
    b, t = r.shape
    adv = torch.zeros_like(r)
    last = torch.zeros(b, dtype=torch.float64, device=r.device)
    next_value = torch.zeros(b, dtype=torch.float64, device=r.device)
    for i in reversed(range(t)):
        delta = r[:, i] + gamma * next_value - v[:, i]
        last = (delta + gamma * lam * last) * m[:, i]
        adv[:, i] = last
        next_value = v[:, i] * m[:, i]
    returns = (adv + v) * m
    return adv.to(rewards.dtype), returns.to(rewards.dtype)


def group_advantages(rewards: torch.Tensor, scale: bool = True, eps: float = 1e-4
                     ) -> torch.Tensor:
    """GRPO's group-relative advantages (Shao et al. 2024): ``rewards`` ``[N, G]`` (``G``
    completions of each of ``N`` prompts) -> ``(r - mean_group) / (std_group + eps)``, the
    standard deviation Bessel-corrected; ``scale=False`` only subtracts the group mean (Dr.
    GRPO). A group of one has advantage 0."""
    r = rewards.double()
    centred = r - r.mean(dim=1, keepdim=True)
    if scale and r.shape[1] > 1:
        centred = centred / (r.std(dim=1, keepdim=True) + eps)
    return centred.to(rewards.dtype)


def leave_one_out_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024): ``rewards`` ``[N, G]`` with ``G >= 2`` ->
    ``r_i - mean_{j != i} r_j = G / (G - 1) * (r_i - mean_group)``."""
    g = rewards.shape[1]
    if g < 2:
        raise ValueError("the leave-one-out baseline needs at least 2 samples per prompt")
    r = rewards.double()
    baseline = (r.sum(dim=1, keepdim=True) - r) / (g - 1)
    return (r - baseline).to(rewards.dtype)


# -- KL -----------------------------------------------------------------------------------------
def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: KLEstimator = "k1"
                ) -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) from tokens sampled from pi (Schulman, "Approximating
    KL divergence", 2020), with ``d = ref_logp - logp``:

    * ``k1 = -d`` (unbiased, high variance, can be negative);
    * ``k2 = d^2 / 2`` (biased, low variance);
    * ``k3 = exp(d) - 1 - d`` (unbiased, non-negative, low variance; GRPO's choice).
    """
    d = ref_logp - logp
    if kind == "k1":
        return -d
    if kind == "k2":
        return 0.5 * d * d
    if kind == "k3":
        return torch.expm1(d) - d
    raise ValueError(f"unknown KL estimator {kind!r}; expected k1, k2 or k3")


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, coef: float) -> None:
        self.value = float(coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """The adaptive KL coefficient of Ziegler et al. 2019 (fine-tuning LMs from human
    preferences): after each rollout batch of ``n_steps`` samples with measured KL ``kl``,
    ``e = clip(kl / target - 1, -0.2, 0.2)`` and ``coef *= 1 + e * n_steps / horizon``."""

    def __init__(self, init_coef: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError("the adaptive KL controller needs target > 0 and horizon > 0")
        self.value, self.target, self.horizon = float(init_coef), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.value = float(state["value"])


def kl_controller(coef: float, target: float | None, horizon: int
                  ) -> FixedKLController | AdaptiveKLController:
    """A fixed controller, or an adaptive one when ``target`` is set."""
    if target is None:
        return FixedKLController(coef)
    return AdaptiveKLController(coef, target, horizon)


class RunningMoments:
    """Running mean and standard deviation of every value seen (Chan et al.'s parallel
    combination of batch moments), for reward normalisation across rollout batches."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: torch.Tensor) -> None:
        x = values.detach().double().flatten()
        n = int(x.numel())
        if n == 0:
            return
        mean = float(x.mean())
        m2 = float(((x - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        """Bessel-corrected; 1.0 until two values were seen."""
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), \
            float(state["m2"])


# -- losses -------------------------------------------------------------------------------------
def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_low: float, clip_high: float | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017), per token.

    ``ratio = exp(logp - old_logp)``; loss ``max(-A * ratio, -A * clip(ratio, 1 - clip_low,
    1 + clip_high))`` (``clip_high`` defaults to ``clip_low``). Returns ``(losses [B, T]``
    (0 on padding), ``stats)`` where ``stats`` holds per-token tensors to sum over the mask:
    ``clipped`` (1 where the clipped term was the larger, i.e. the gradient is cut) and
    ``approx_kl`` (``k3`` of the old policy against the new one).
    """
    hi = clip_low if clip_high is None else clip_high
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + hi)
    losses = torch.maximum(unclipped, clipped) * mask
    stats = {"clipped": (clipped > unclipped).to(logp.dtype).detach() * mask,
             "approx_kl": kl_estimate(logp.detach(), old_logp, "k3") * mask}
    return losses, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               mask: torch.Tensor, clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped value loss, per token: ``0.5 * max((V - R)^2, (V_clip - R)^2)`` with
    ``V_clip = V_old + clip(V - V_old, -clip, clip)``; ``clip=None``: ``0.5 * (V - R)^2``.
    Returns ``(losses [B, T], clipped [B, T])`` (1 where the clipped term was the larger)."""
    plain = (values - returns) ** 2
    if clip is None:
        return 0.5 * plain * mask, torch.zeros_like(plain)
    v_clip = old_values + torch.clamp(values - old_values, -clip, clip)
    clipped = (v_clip - returns) ** 2
    return 0.5 * torch.maximum(plain, clipped) * mask, (clipped > plain).to(values.dtype) * mask
