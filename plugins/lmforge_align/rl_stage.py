"""The outer loop the RL stages share (PPO, GRPO, RLOO), built from the core's training pieces.

Per iteration ``i`` (``loop.iterations`` of them):

1. **rollout** — :class:`lmforge_align.rollout.Roller` samples the iteration's prompts and
   scores this rank's share with the ``reward`` component;
2. **prepare** (the subclass) — log-probs of the sampling policy (``old_logp``), of the frozen
   reference (``ref_logp``, when ``kl_coef > 0``), values, advantages;
3. **optimise** — ``loop.epochs`` passes over the batch, each shuffled from ``(seed, i,
   epoch)`` and cut into ``loop.minibatches`` optimizer steps of one
   :class:`lmforge.training.step.OptimStep` per trained model (micro-batches of
   ``loop.micro_batch_size`` sequences accumulate);
4. **log** every ``log_every`` and **checkpoint** every ``checkpoint_every`` iterations.

The checkpoint (:class:`lmforge.training.state.StateRegistry`) holds the policy (and value
model) with their optimizers, the iteration, the schedule positions, the KL controller, the
running reward statistics and every rank's RNG. Rollouts, shuffles and sampling depend only on
``(seed, iteration)``, so a run resumed at an iteration boundary reproduces an uninterrupted
one exactly on CPU.

Before training and at the end, ``eval_prompts`` prompts of the dataset's ``heldout`` split are
sampled once each (seeded, the rollout's sampling settings) and scored: ``heldout/reward``,
``heldout/kl`` (summed k1 to the reference per completion), ``heldout/length``,
``heldout/stopped``, and ``heldout/<name>`` for each of ``eval_rewards`` (rewards only
reported, never trained on). Logged at step 0 (the init model) and at the last iteration. Every
rank evaluates all of them (equal work; only the main rank logs).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from lmforge import Stage, StageInputError
from lmforge.datasetio import read_meta
from lmforge.generation import generate
from lmforge.modelio import ModelRecipe
from lmforge.rewards import RewardSample
from lmforge.training.loop import build_backend, check_world_size
from lmforge.training.rl import kl_estimate
from lmforge.training.stagekit import (
    finish_training_model,
    init_model_info,
    load_tokenizer_input,
)
from lmforge.training.state import StateOf, StateRegistry, seed_everything
from lmforge.training.step import OptimStep
from lmforge_align.rollout import (
    Batch,
    Prompts,
    Roller,
    build_batch,
    load_prompts,
    token_logprobs,
)

#: the "iteration" whose sampling seed the held-out evaluation uses (no training iteration's)
EVAL_SEED = 2**30 + 7


class RLStage(Stage):
    """Base of the RL stages: subclasses set up extra models (:meth:`setup_models`), fill a
    rollout batch's per-token tensors (:meth:`prepare`) and run its optimisation
    (:meth:`optimise`)."""

    config: Any

    # -- checks ------------------------------------------------------------------------------
    def check(self) -> None:
        ctx, cfg = self.ctx, self.config
        load_tokenizer_input(ctx)
        meta = read_meta(ctx.input("dataset").path)
        if "train" not in meta.get("splits", {}):
            raise StageInputError(f"stage {ctx.stage_id!r}: dataset {ctx.input('dataset').path} "
                                  f"has no 'train' split")
        arch, _, path = init_model_info(ctx)
        if getattr(cfg.loop.backend, "type", "local") == "megatron":
            raise StageInputError(f"stage {ctx.stage_id!r}: RL stages do not run on the megatron "
                                  f"backend yet; use local, ddp or fsdp2")
        max_len = arch.get("max_seq_len")
        need = cfg.rollout.max_prompt_tokens + cfg.rollout.max_new_tokens + 1
        if max_len is not None and need > max_len:
            raise StageInputError(
                f"stage {ctx.stage_id!r}: rollout.max_prompt_tokens + rollout.max_new_tokens + 1 "
                f"= {need} is longer than the init model's max_seq_len ({max_len}, {path}); lower "
                f"them")
        for where, rcfg in [("reward", cfg.reward)] + [
                (f"eval_rewards[{i}]", r.reward) for i, r in enumerate(cfg.eval_rewards)]:
            reward = ctx.build("reward", rcfg)
            try:
                for name, kind in reward.requires().items():
                    if name not in ctx.inputs:
                        raise StageInputError(
                            f"stage {ctx.stage_id!r}: {where} {rcfg.type!r} needs input "
                            f"{name!r} (a {kind} artifact); wire it under inputs: {{{name}: "
                            f"<stage id>}}")
                reward.check(ctx.inputs)
            finally:
                reward.close()

    # -- hooks for subclasses --------------------------------------------------------------------
    def setup_models(self) -> None:
        """Build models besides the policy and reference (PPO: the value model)."""

    def prepare(self, batch: Batch, iteration: int) -> dict[str, float]:
        """Fill ``batch.tensors`` (advantages ...); returns rollout metrics."""
        raise NotImplementedError

    def optimise(self, batch: Batch, iteration: int) -> dict[str, float]:
        """Run the epochs of one iteration; returns training metrics (means over steps)."""
        raise NotImplementedError

    def stage_state(self) -> dict[str, Any]:
        """Extra checkpointed state of the subclass (JSON-able)."""
        return {}

    def load_stage_state(self, state: dict[str, Any]) -> None:
        return None

    # -- the run ------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        ctx, cfg = self.ctx, self.config
        loop = cfg.loop
        seed_everything(ctx.seed)
        self.tok = load_tokenizer_input(ctx)
        be = self.backend = build_backend(ctx, loop)
        if cfg.rollout.prompts % be.world_size:
            raise StageInputError(f"stage {ctx.stage_id!r}: rollout.prompts "
                                  f"({cfg.rollout.prompts}) must be divisible by the number of "
                                  f"ranks ({be.world_size})")
        ctx.checkpoints.keep = loop.keep_checkpoints
        self.total_steps = loop.iterations * loop.epochs * loop.minibatches
        self.recipe = ModelRecipe.from_artifact(ctx.input("init").path, ctx.plugins,
                                                seed=ctx.seed)
        self.policy = be.build_model(self.recipe)
        self.policy_opt = be.build_optimizer(self.policy, loop.optim)
        self.policy_step = OptimStep(be, self.policy, self.policy_opt, loop.optim,
                                     self.total_steps)
        need_ref = cfg.kl_coef > 0 or cfg.eval_prompts > 0
        self.reference = self._frozen(self.recipe) if need_ref else None
        self.reward = ctx.build("reward", cfg.reward)
        self.reward.setup(ctx, be.device)
        self.eval_rewards: dict[str, Any] = {}
        if cfg.eval_prompts:
            for r in cfg.eval_rewards:
                self.eval_rewards[r.name] = ctx.build("reward", r.reward)
                self.eval_rewards[r.name].setup(ctx, be.device)
        dataset = ctx.input("dataset").path
        prompts = load_prompts(dataset, "train", self.tok, cfg.rollout.max_prompt_tokens)
        splits = read_meta(dataset).get("splits", {})
        self.eval_set: Prompts | None = None
        if cfg.eval_prompts and splits.get("heldout", {}).get("rows", 0):
            self.eval_set = load_prompts(dataset, "heldout", self.tok,
                                         cfg.rollout.max_prompt_tokens, cfg.eval_prompts)
        self.roller = Roller(prompts, self.tok, cfg.rollout, self.reward, be, ctx.seed)
        self.iteration = 0
        self._metrics_records: int | None = None
        self.setup_models()

        self.state = StateRegistry(ctx, be)
        self.state.add("rl", StateOf(self._state, self._load_state))
        self.state.add("policy_schedule", self.policy_step)
        self.register_state(self.state)
        self.state.add_model("policy", self.policy, self.policy_opt, folder="policy")
        self.register_models(self.state)
        resumed = self._resume()
        try:
            if self.iteration == 0 and self.eval_set is not None:
                self.evaluate(0)
            self._loop()
            final = self.evaluate(loop.iterations) if self.eval_set is not None else {}
        finally:
            self.reward.close()
            for extra in self.eval_rewards.values():
                extra.close()
        metrics = {k: v for k, v in ctx.last_metrics.items()
                   if k.startswith(("rollout/", "train/"))}
        metrics.update(final)
        metrics.update({"iterations": loop.iterations, "prompts": len(prompts),
                        "resumed_from": resumed})
        finish_training_model(ctx, be, self.policy, self.recipe,
                              {"iterations": loop.iterations, "algorithm": self.algorithm,
                               "optimizer_steps": self.policy_step.step})
        return metrics

    algorithm = "rl"

    def register_state(self, state: StateRegistry) -> None:
        """Register extra values (KL controller, reward statistics)."""

    def register_models(self, state: StateRegistry) -> None:
        """Register extra trained models (the value model)."""

    def _frozen(self, recipe: ModelRecipe) -> torch.nn.Module:
        """A frozen copy on this rank's device (not wrapped: it never gets gradients)."""
        module = recipe.build_full().to(self.backend.device)
        module.requires_grad_(False)
        return module.eval()

    def _state(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "world_size": self.backend.world_size,
                "data": {"prompts": len(self.roller.prompts), "seed": self.ctx.seed},
                "metrics_records": self.ctx.metrics_records(), "stage": self.stage_state()}

    def _load_state(self, state: dict[str, Any]) -> None:
        check_world_size(self.ctx, int(state["world_size"]), self.backend.world_size)
        data = {"prompts": len(self.roller.prompts), "seed": self.ctx.seed}
        if dict(state["data"]) != data:
            raise StageInputError(
                f"stage {self.ctx.stage_id!r}: the checkpoint was made on different prompts "
                f"({dict(state['data'])}) than this run's ({data}); delete "
                f"{self.ctx.checkpoints.root} or rerun with --force {self.ctx.stage_id}")
        self.iteration = int(state["iteration"])
        self._metrics_records = state.get("metrics_records")
        self.load_stage_state(dict(state.get("stage", {})))

    def _resume(self) -> int | None:
        if not self.ctx.resumed:
            return None
        path = self.state.resume()
        if self.backend.is_main:
            if path is None:
                self.ctx.truncate_metrics(0)
            else:
                self.ctx.truncate_metrics(self.iteration, self._metrics_records)
        return self.iteration if path is not None else None

    def _loop(self) -> None:
        ctx, loop = self.ctx, self.config.loop
        window: dict[str, float] = {}
        count = 0
        with ctx.progress(loop.iterations, "rl", unit="iteration") as bar:
            if self.iteration:
                bar.set(self.iteration)
            while self.iteration < loop.iterations:
                start = time.perf_counter()
                batch = self.roller.iteration(self.policy, self.iteration)
                gen_s = time.perf_counter() - start
                m = self.prepare(batch, self.iteration)
                m.update(self.optimise(batch, self.iteration))
                m["time/generate_s"] = gen_s
                m["time/iteration_s"] = time.perf_counter() - start
                self.iteration += 1
                for k, v in m.items():
                    window[k] = window.get(k, 0.0) + float(v)
                count += 1
                if self.iteration % loop.log_every == 0 or self.iteration == loop.iterations:
                    ctx.log(self.iteration, {k: v / count for k, v in window.items()
                                             if not k.startswith("time/")})
                    window, count = {}, 0
                bar.advance(1, reward=round(m["rollout/reward"], 3))
                if self.iteration % loop.checkpoint_every == 0:
                    self.state.save(self.iteration)

    # -- shared pieces ------------------------------------------------------------------------------
    def rollout_metrics(self, batch: Batch) -> dict[str, float]:
        """Reward, length, stop fraction and the sampled entropy estimate, over all ranks."""
        be = self.backend
        mean = be.all_reduce_mean
        n = float(len(batch))
        tokens = float(batch.mask.sum())
        total_tokens = mean(tokens)
        return {
            "rollout/reward": mean(float(batch.scores.sum())) / mean(n),
            "rollout/reward_std": mean(float(batch.scores.std())) if len(batch) > 1 else 0.0,
            "rollout/length": total_tokens / mean(n),
            "rollout/stopped": mean(float(batch.stopped.float().sum())) / mean(n),
            # -E[log pi(a)] over sampled tokens: a Monte-Carlo estimate of the entropy (per token)
            "rollout/entropy": mean(float(-(batch.gen_logp * batch.mask).sum())) / total_tokens
            if total_tokens else 0.0,
        }

    def kl_per_token(self, batch: Batch) -> torch.Tensor:
        """The per-token KL estimate of the sampling policy to the reference (``[N, L]``)."""
        return kl_estimate(batch.tensors["old_logp"], batch.tensors["ref_logp"],
                           self.config.kl_estimator) * batch.mask

    def fill_logprobs(self, batch: Batch) -> None:
        mb = self.config.loop.micro_batch_size
        batch.tensors["old_logp"] = token_logprobs(self.policy, batch, mb, self.backend)
        if self.reference is not None and self.config.kl_coef > 0:
            batch.tensors["ref_logp"] = token_logprobs(self.reference, batch, mb, self.backend)
        else:
            batch.tensors["ref_logp"] = batch.tensors["old_logp"].clone()

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        """Score the held-out prompts (see the module docstring); logs and returns them."""
        assert self.eval_set is not None
        roller, cfg = self.roller, self.config
        params = roller.params(EVAL_SEED, 1)  # one seeded sample per prompt, the same every call
        be = self.backend
        ids = self.eval_set.ids
        completions = generate(self.policy, ids, params, pad_id=self.tok.pad_id,
                               device=be.device, batch_size=cfg.rollout.batch_size,
                               autocast=be.autocast)
        completions = sorted(completions, key=lambda c: c.prompt_index)
        inp, labels, mask, gen, lengths, stopped = build_batch(ids, completions, self.tok.pad_id)
        texts = [self.tok.decode(c.token_ids) for c in completions]
        samples = [RewardSample(prompt=self.eval_set.messages[i], completion=t,
                                reference=self.eval_set.reference[i],
                                tests=self.eval_set.tests[i], meta=self.eval_set.meta[i])
                   for i, t in enumerate(texts)]
        scores = torch.tensor(self.reward.score(samples).scores, dtype=torch.float64)
        b = Batch(inp, labels, mask, scores.float(), torch.arange(len(ids)), gen, lengths,
                  stopped)
        out = {"heldout/reward": float(scores.mean()),
               **{f"heldout/{name}": float(sum(r.score(samples).scores) / len(samples))
                  for name, r in self.eval_rewards.items()},
               "heldout/length": float(mask.sum() / len(ids)),
               "heldout/stopped": float(stopped.float().mean())}
        if self.reference is not None:
            mb = cfg.loop.micro_batch_size
            lp = token_logprobs(self.policy, b, mb, be)
            ref = token_logprobs(self.reference, b, mb, be)
            out["heldout/kl"] = float(((lp - ref) * mask).sum() / len(ids))
        self.ctx.log(step, out)
        return out

