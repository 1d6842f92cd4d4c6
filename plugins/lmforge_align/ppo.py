"""The ``ppo`` stage: PPO (Schulman et al. 2017) against a reward, with a KL penalty to the SFT
model, as in Ziegler et al. 2019 / InstructGPT.

Models: the **policy** (from ``init``), a frozen **reference** (the same weights), a **value
model** — a separate score-head model (``head: score``: one scalar per position) trained with
its own optimizer, initialised from ``value_init`` when wired (usually the reward model: it
already reads completions) or else from ``init`` with a fresh head — and the ``reward``
component. A separate value model keeps the model-call contract (a module returns log-probs or
scores, never hidden states) and keeps value-loss gradients out of the policy; it costs one
more model in memory.

Per iteration, on the rollout batch:

1. ``s`` = reward score of each completion (+ ``rollout.no_stop_penalty`` if it never
   stopped), normalised per ``reward_norm`` (``batch``: whitened; ``running``: divided by the
   running std of every score seen);
2. per-token rewards ``r_t = -beta * KL_t`` (``kl_penalty: reward``; ``KL_t`` the
   ``kl_estimator`` of the sampling policy against the reference), plus ``s`` on the last
   token;
3. values ``V_t`` from the value model; GAE(``gamma``, ``lam``) gives advantages ``A_t`` and
   returns ``R_t = A_t + V_t``; advantages whitened over the batch (``whiten_advantages``);
4. ``loop.epochs`` x ``loop.minibatches`` steps of the clipped policy loss (plus ``beta *
   KL_t`` when ``kl_penalty: loss``) and of the clipped value loss;
5. the KL controller sees the batch's mean per-sequence KL (adaptive when ``kl_target`` is
   set).
"""

from __future__ import annotations

from typing import Any

import torch

from lmforge import dist
from lmforge.modelio import ModelRecipe
from lmforge.training.rl import (
    RunningMoments,
    gae,
    kl_controller,
    kl_estimate,
    masked_whiten,
    policy_loss,
    value_loss,
)
from lmforge.training.state import StateRegistry
from lmforge.training.step import LossOutput, OptimStep
from lmforge_align.rl_stage import RLStage
from lmforge_align.rollout import Batch, micro_split, shuffled_minibatches


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Column of each row's last masked position (``[N]``); rows need at least one."""
    cols = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask > 0, cols, torch.full_like(cols, -1)).max(dim=1).values


class PolicyLoss:
    def __init__(self, cfg: Any, kl_coef: float) -> None:
        self.cfg, self.kl_coef = cfg, kl_coef

    def __call__(self, module: torch.nn.Module, b: dict[str, torch.Tensor]) -> LossOutput:
        cfg, mask = self.cfg, b["mask"]
        logp = module(b["input_ids"], labels=b["labels"],
                      return_logprobs=True).token_logprobs.float()
        losses, stats = policy_loss(logp, b["old_logp"], b["advantages"], mask, cfg.clip_eps,
                                    cfg.clip_eps_high)
        metrics = {"policy_loss": losses.detach().sum(), "clipfrac": stats["clipped"].sum(),
                   "approx_kl": stats["approx_kl"].sum()}
        if cfg.kl_penalty == "loss" and self.kl_coef > 0:
            kl = kl_estimate(logp, b["ref_logp"], cfg.kl_estimator) * mask
            losses = losses + self.kl_coef * kl
            metrics["kl_loss"] = kl.detach().sum()
        return LossOutput(losses.sum(), mask.sum(), metrics)


class ValueLoss:
    def __init__(self, clip: float | None) -> None:
        self.clip = clip

    def __call__(self, module: torch.nn.Module, b: dict[str, torch.Tensor]) -> LossOutput:
        mask = b["mask"]
        v = module(b["input_ids"]).scores.float()
        losses, clipped = value_loss(v, b["values"], b["returns"], mask, self.clip)
        return LossOutput(losses.sum(), mask.sum(), {"value_clipfrac": clipped.sum()})


class PPOStage(RLStage):
    algorithm = "ppo"

    def setup_models(self) -> None:
        ctx, cfg, be = self.ctx, self.config, self.backend
        source = ctx.inputs.get("value_init") or ctx.input("init")
        self.value_recipe = ModelRecipe.from_artifact(source.path, ctx.plugins,
                                                      seed=ctx.seed + 1, head="score")
        self.value = be.build_model(self.value_recipe)
        self.value_opt = be.build_optimizer(self.value, cfg.value_optim)
        self.value_step = OptimStep(be, self.value, self.value_opt, cfg.value_optim,
                                    self.total_steps)
        self.kl_ctl = kl_controller(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        self.reward_stats = RunningMoments()

    def register_state(self, state: StateRegistry) -> None:
        state.add("value_schedule", self.value_step)
        state.add("kl_controller", self.kl_ctl)
        state.add("reward_stats", self.reward_stats)

    def register_models(self, state: StateRegistry) -> None:
        state.add_model("value", self.value, self.value_opt, folder="value")

    def reduce_sum(self, value: float) -> float:
        """Sum of a number over ranks (batch statistics span every rank's share)."""
        be = self.backend
        return be.all_reduce_mean(value) * be.world_size if be.world_size > 1 else value

    @torch.no_grad()
    def values(self, batch: Batch) -> torch.Tensor:
        be, mb = self.backend, self.config.loop.micro_batch_size
        out = torch.zeros_like(batch.mask)
        was = self.value.training
        self.value.eval()
        try:
            for start in range(0, len(batch), mb):
                idx = torch.arange(start, min(start + mb, len(batch)))
                rows = batch.rows(idx, ())
                with be.autocast():
                    s = self.value(rows["input_ids"].to(be.device)).scores
                out[idx, :s.shape[1]] = s.float().cpu() * rows["mask"]
        finally:
            self.value.train(was)
        return out

    def normalised_scores(self, scores: torch.Tensor) -> torch.Tensor:
        norm = self.config.reward_norm
        if norm == "batch":
            return masked_whiten(scores, torch.ones_like(scores), reduce_sum=self.reduce_sum)
        if norm == "running":
            everyone = torch.cat([torch.as_tensor(s) for s in dist.all_gather(scores)]) \
                if dist.is_distributed() else scores
            self.reward_stats.update(everyone)
            return scores / self.reward_stats.std
        return scores

    def prepare(self, batch: Batch, iteration: int) -> dict[str, float]:
        cfg, be = self.config, self.backend
        self.fill_logprobs(batch)
        m = self.rollout_metrics(batch)
        mask = batch.mask
        kl = self.kl_per_token(batch)
        seq_kl = be.all_reduce_mean(float(kl.sum(1).mean()))
        beta = self.kl_ctl.value
        rewards = -beta * kl if cfg.kl_penalty == "reward" else torch.zeros_like(kl)
        last = last_token_index(mask)
        rows = torch.arange(len(batch))
        rewards[rows, last] += self.normalised_scores(batch.scores)
        values = self.values(batch)
        adv, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            adv = masked_whiten(adv, mask, reduce_sum=self.reduce_sum)
        batch.tensors.update(values=values, advantages=adv, returns=returns)
        m.update({"rollout/kl": seq_kl, "rollout/kl_coef": beta,
                  "rollout/value": be.all_reduce_mean(float((values * mask).sum()
                                                            / mask.sum().clamp_min(1))),
                  "rollout/non_score_reward": be.all_reduce_mean(
                      float((-beta * kl).sum(1).mean()))})
        self.kl_ctl.update(seq_kl, cfg.rollout.prompts * cfg.rollout.samples_per_prompt)
        return m

    def optimise(self, batch: Batch, iteration: int) -> dict[str, float]:
        cfg = self.config
        loop = cfg.loop
        pol = PolicyLoss(cfg, self.kl_ctl.value)
        val = ValueLoss(cfg.value_clip)
        pkeys = ["old_logp", "advantages"] + (["ref_logp"] if cfg.kl_penalty == "loss" else [])
        sums: dict[str, float] = {}
        steps = 0
        for epoch in range(loop.epochs):
            for part in shuffled_minibatches(len(batch), loop.minibatches, self.ctx.seed,
                                             iteration, epoch):
                parts = micro_split(part, loop.micro_batch_size)
                p = self.policy_step(pol, [batch.rows(i, pkeys) for i in parts])
                v = self.value_step(val, [batch.rows(i, ["values", "returns"]) for i in parts])
                for k, x in p.items():
                    if k not in ("tokens", "loss"):
                        sums[k] = sums.get(k, 0.0) + float(x)
                sums["loss"] = sums.get("loss", 0.0) + p["loss"]
                sums["value_loss"] = sums.get("value_loss", 0.0) + v["loss"]
                sums["value_clipfrac"] = sums.get("value_clipfrac", 0.0) + v["value_clipfrac"]
                sums["value_grad_norm"] = sums.get("value_grad_norm", 0.0) + v["grad_norm"]
                steps += 1
        return {f"train/{k}": x / steps for k, x in sums.items()}
