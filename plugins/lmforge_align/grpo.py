"""The ``grpo`` and ``rloo`` stages: policy optimisation with a baseline from a group of samples.

Each prompt is sampled ``G = rollout.samples_per_prompt`` times; a completion's advantage is its
(sequence) reward against its group's:

* GRPO (Shao et al. 2024): ``A_i = (r_i - mean(r)) / (std(r) + 1e-4)`` (``scale_rewards``;
  without it, ``r_i - mean(r)``);
* RLOO (Ahmadian et al. 2024): ``A_i = r_i - mean_{j != i} r_j``.

Every completion token gets its sequence's advantage in PPO's clipped objective against the
policy that sampled it. With ``kl_coef > 0`` the KL to the frozen reference enters as a loss
term ``beta * KL_t`` per token (``kl_penalty: loss``, GRPO's default, estimator k3) or is
subtracted from the sequence reward before the baseline (``kl_penalty: reward``: ``r_i - beta *
sum_t KL_t``, RLOO's default). With one epoch and one minibatch the policy cannot change before
the step, so the rollout log-probs are not recomputed (the ratio is 1, its gradient that of
plain policy gradient).
"""

from __future__ import annotations

from typing import Any

import torch

from lmforge.training.rl import (
    group_advantages,
    kl_estimate,
    leave_one_out_advantages,
    policy_loss,
)
from lmforge.training.step import LossOutput
from lmforge_align.rl_stage import RLStage
from lmforge_align.rollout import Batch, micro_split, shuffled_minibatches, token_logprobs


class GroupPolicyLoss:
    """The clipped objective of GRPO/RLOO on one micro-batch (``old_logp`` absent: the policy
    that sampled is the current one, detached)."""

    def __init__(self, cfg: Any, use_old: bool) -> None:
        self.cfg, self.use_old = cfg, use_old

    def __call__(self, module: torch.nn.Module, b: dict[str, torch.Tensor]) -> LossOutput:
        cfg, mask = self.cfg, b["mask"]
        logp = module(b["input_ids"], labels=b["labels"], return_logprobs=True).token_logprobs
        logp = logp.float()
        old = b["old_logp"] if self.use_old else logp.detach()
        adv = b["advantages"][:, None].expand_as(logp)
        losses, stats = policy_loss(logp, old, adv, mask, cfg.clip_eps, cfg.clip_eps_high)
        metrics: dict[str, torch.Tensor | float] = {}
        if cfg.kl_coef > 0 and cfg.kl_penalty == "loss":
            kl = kl_estimate(logp, b["ref_logp"], cfg.kl_estimator) * mask
            losses = losses + cfg.kl_coef * kl
            metrics["kl"] = kl.detach()
        if cfg.loss_agg == "token":
            weight, count = mask, mask.sum()
        else:  # each completion weighs the same: its tokens' mean, then the mean over rows
            weight = mask / mask.sum(1, keepdim=True).clamp_min(1)
            count = torch.tensor(float(mask.shape[0]))
        out = {"clipfrac": stats["clipped"], "approx_kl": stats["approx_kl"], **metrics}
        return LossOutput((losses * weight).sum(), count,
                          {k: (v * weight).sum().detach() for k, v in out.items()})


class GroupRLStage(RLStage):
    """GRPO / RLOO (see the module docstring); :attr:`baseline` picks the advantage."""

    baseline = "group"

    def _reuses_rollout_logprobs(self) -> bool:
        loop = self.config.loop
        return loop.epochs == 1 and loop.minibatches == 1

    def prepare(self, batch: Batch, iteration: int) -> dict[str, float]:
        cfg, be = self.config, self.backend
        mb = cfg.loop.micro_batch_size
        if not self._reuses_rollout_logprobs():
            batch.tensors["old_logp"] = token_logprobs(self.policy, batch, mb, be)
        m = self.rollout_metrics(batch)
        g = cfg.rollout.samples_per_prompt
        rewards = batch.scores.double().view(-1, g)  # rows are ordered (prompt, sample)
        if cfg.kl_coef > 0:
            assert self.reference is not None
            batch.tensors["ref_logp"] = token_logprobs(self.reference, batch, mb, be)
            old = batch.tensors.get("old_logp")
            if old is None:
                old = token_logprobs(self.policy, batch, mb, be) if cfg.kl_penalty == "reward" \
                    else None
            if old is not None:
                kl = (kl_estimate(old, batch.tensors["ref_logp"], cfg.kl_estimator)
                      * batch.mask).sum(1)
                m["rollout/kl"] = be.all_reduce_mean(float(kl.mean()))
                if cfg.kl_penalty == "reward":
                    rewards = rewards - cfg.kl_coef * kl.double().view(-1, g)
        if self.baseline == "loo":
            adv = leave_one_out_advantages(rewards)
        else:
            adv = group_advantages(rewards, scale=cfg.scale_rewards)
        batch.tensors["advantages"] = adv.float().flatten()
        std = batch.scores.view(-1, g).std(dim=1)
        m["rollout/solved_groups"] = be.all_reduce_mean(float((std == 0).float().mean()))
        return m

    def optimise(self, batch: Batch, iteration: int) -> dict[str, float]:
        cfg = self.config
        loop = cfg.loop
        use_old = not self._reuses_rollout_logprobs()
        loss_fn = GroupPolicyLoss(cfg, use_old)
        keys = ["advantages"] + (["old_logp"] if use_old else []) + \
            (["ref_logp"] if cfg.kl_coef > 0 and cfg.kl_penalty == "loss" else [])
        sums: dict[str, float] = {}
        steps = 0
        for epoch in range(loop.epochs):
            for part in shuffled_minibatches(len(batch), loop.minibatches, self.ctx.seed,
                                             iteration, epoch):
                micro = [batch.rows(idx, keys) for idx in micro_split(part, loop.micro_batch_size)]
                out = self.policy_step(loss_fn, micro)
                for k, v in out.items():
                    if k != "tokens":
                        sums[k] = sums.get(k, 0.0) + float(v)
                steps += 1
        return {f"train/{k}": v / steps for k, v in sums.items()}


class GRPOStage(GroupRLStage):
    algorithm = "grpo"
    baseline = "group"


class RLOOStage(GroupRLStage):
    algorithm = "rloo"
    baseline = "loo"
