"""Configs of the RL stages ``align/ppo``, ``align/grpo`` and ``align/rloo`` (light: pydantic
and lmforge only). Every key is described in docs/plugins/alignment.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from lmforge import Config
from lmforge.components import Slot
from lmforge.training.config import OptimConfig, check_backend_fits, init_architecture


class RolloutConfig(Config):
    """How completions are sampled from the policy at each iteration."""

    prompts: int = Field(default=8, ge=1, le=2**16, description="Prompts per iteration, over "
                         "all ranks (must be divisible by the number of ranks).")
    samples_per_prompt: int = Field(default=1, ge=1, le=1024, description="Completions sampled "
                                    "per prompt (the group size of GRPO / RLOO).")
    max_new_tokens: int = Field(default=64, ge=1, le=2**16,
                                description="Longest completion, in tokens.")
    max_prompt_tokens: int = Field(default=192, ge=1, le=2**20, description="Longer prompts "
                                   "keep their last tokens (the generation prompt).")
    temperature: float = Field(default=1.0, gt=0, le=10, description="Sampling temperature. "
                               "The objective is on the model's own (temperature 1) "
                               "distribution; this only shapes exploration.")
    top_k: int = Field(default=0, ge=0, description="Sample among the k likeliest tokens "
                       "(0: all).")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass (1: all).")
    batch_size: int = Field(default=16, ge=1, le=4096,
                            description="Rows generated together (prompt x sample).")
    no_stop_penalty: float | None = Field(
        default=None, description="Added to the reward of a completion that ended without the "
        "end-of-turn token (hit max_new_tokens); e.g. -1.0. None: no change.")


class RLLoopConfig(Config):
    """The outer loop: iterations of (rollout, several optimisation epochs over it)."""

    iterations: int = Field(default=20, ge=1, description="Rollout batches.")
    epochs: int = Field(default=1, ge=1, le=64, description="Passes over each rollout batch "
                        "(PPO epochs; GRPO's inner iterations mu).")
    minibatches: int = Field(default=1, ge=1, le=4096, description="Optimizer steps per epoch: "
                             "the rollout batch is shuffled and cut into this many parts.")
    micro_batch_size: int = Field(default=8, ge=1, le=4096, description="Sequences per forward "
                                  "and backward (gradients accumulate over a minibatch).")
    log_every: int = Field(default=1, ge=1, description="Log metrics every N iterations.")
    checkpoint_every: int = Field(default=5, ge=1,
                                  description="Write a resumable checkpoint every N iterations.")
    keep_checkpoints: int = Field(default=2, ge=1, description="How many checkpoints to keep.")
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(
        lr=1e-5, warmup_steps=0, min_lr_ratio=1.0, weight_decay=0.0),
        description="The policy's optimizer; the schedule spans iterations x epochs x "
                    "minibatches steps. Default: constant lr 1e-5, no weight decay.")
    backend: Annotated[Any, Slot("backend")] = Field(
        default={"type": "local"}, description="Where training runs: {type: local} or another "
        "installed backend (ddp, fsdp2). Every rank generates the whole rollout batch, then "
        "trains on its share.")

    @model_validator(mode="after")
    def _warmup_fits(self) -> RLLoopConfig:
        steps = self.iterations * self.epochs * self.minibatches
        if self.optim.warmup_steps >= steps and steps > 1:
            raise ValueError(f"optim.warmup_steps ({self.optim.warmup_steps}) must be smaller "
                             f"than iterations x epochs x minibatches ({steps})")
        return self


class NamedReward(Config):
    """A reward the held-out evaluation also reports, as ``heldout/<name>``."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64,
                      description="Metric name (heldout/<name>).")
    reward: Annotated[Any, Slot("reward")] = Field(description="The reward component.")


class _RLConfig(Config):
    """Keys every RL stage shares."""

    reward: Annotated[Any, Slot("reward")] = Field(
        description="The reward component that scores completions, e.g. {type: reward-model} "
                    "or {type: python-checks}.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="Sampling: "
                                   "prompts per iteration, samples per prompt, lengths, "
                                   "temperature.")
    loop: RLLoopConfig = Field(default_factory=RLLoopConfig, description="Iterations, "
                               "epochs and minibatches per rollout batch, optimizer, backend.")
    kl_coef: float = Field(default=0.05, ge=0, description="beta: weight of the KL divergence "
                           "to the reference (the init model); 0 skips the reference entirely.")
    kl_estimator: Literal["k1", "k2", "k3"] = Field(
        default="k1", description="Per-token KL estimate: k1 = log pi - log ref, k2 = half its "
        "square, k3 = exp(-k1) - 1 + k1.")
    kl_penalty: Literal["reward", "loss"] = Field(
        default="reward", description="reward: subtract beta x KL from the reward (per token for "
        "PPO, summed per sequence for RLOO/GRPO); loss: add beta x KL to the loss.")
    clip_eps: float = Field(default=0.2, gt=0, lt=1,
                            description="PPO ratio clip: ratio kept in [1 - eps, 1 + eps_high].")
    clip_eps_high: float | None = Field(default=None, gt=0, lt=10, description="Upper clip "
                                        "(DAPO's clip-higher); None: clip_eps.")
    eval_prompts: int = Field(default=32, ge=0, description="Held-out prompts (the dataset's "
                              "'heldout' split) scored before training and at the end: "
                              "reward, KL to the reference, length. 0: none.")
    eval_rewards: list[NamedReward] = Field(
        default_factory=list, max_length=16, description="More rewards to score the held-out "
        "completions with (not trained on), e.g. a verifiable check next to a reward model: "
        "[{name: python-checks, reward: {type: python-checks}}] logs heldout/python-checks.")

    @model_validator(mode="after")
    def _eval_names(self) -> _RLConfig:
        names = [r.name for r in self.eval_rewards]
        taken = {"reward", "kl", "length", "stopped"}
        bad = sorted({n for n in names if names.count(n) > 1 or n in taken})
        if bad:
            raise ValueError(f"eval_rewards names must be unique and not one of "
                             f"{sorted(taken)}: {bad}")
        return self

    def check_inputs(self, inputs: Mapping[str, Any]) -> None:
        arch, what = init_architecture(inputs)
        check_backend_fits(self.loop, arch, what)  # type: ignore[arg-type]

    def output_architecture(self, inputs: Mapping[str, Any]) -> Any:
        """The policy keeps the architecture of the ``init`` model."""
        return init_architecture(inputs)[0]


class PPOConfig(_RLConfig):
    """PPO with a learned value model, GAE, a KL penalty and reward normalisation."""

    gamma: float = Field(default=1.0, ge=0, le=1, description="Discount per token.")
    lam: float = Field(default=0.95, ge=0, le=1, description="GAE lambda.")
    kl_target: float | None = Field(default=None, gt=0, description="Adaptive KL controller "
                                    "(Ziegler et al.): steer the per-sequence KL to this; None: "
                                    "kl_coef stays fixed.")
    kl_horizon: int = Field(default=10000, ge=1, description="Adaptive controller horizon, in "
                            "samples.")
    value_clip: float | None = Field(default=0.2, gt=0, description="Clip the value change "
                                     "per update to +-this around the rollout's value (None: "
                                     "no clipping).")
    reward_norm: Literal["none", "batch", "running"] = Field(
        default="none", description="Normalise sequence rewards before the KL penalty: batch: "
        "whiten over the rollout batch; running: divide by the running std of every reward "
        "seen (checkpointed).")
    whiten_advantages: bool = Field(default=True,
                                    description="Whiten advantages over the rollout batch.")
    value_optim: OptimConfig = Field(default_factory=lambda: OptimConfig(
        lr=1e-5, warmup_steps=0, min_lr_ratio=1.0, weight_decay=0.0),
        description="The value model's optimizer (same schedule length as the policy's).")


class GroupRLConfig(_RLConfig):
    """GRPO / RLOO: group sampling and a baseline from the group, no value model."""

    scale_rewards: bool = Field(default=True, description="GRPO: divide group-centred rewards "
                                "by the group's standard deviation (False: Dr. GRPO). RLOO "
                                "ignores it.")
    loss_agg: Literal["token", "sequence"] = Field(
        default="token", description="token: mean over every completion token of the batch "
        "(DAPO); sequence: mean over tokens of each completion, then over completions (GRPO "
        "paper).")

    @model_validator(mode="after")
    def _group(self) -> GroupRLConfig:
        if self.rollout.samples_per_prompt < 2:
            raise ValueError("rollout.samples_per_prompt must be at least 2: the baseline is "
                             "computed from each prompt's group of completions")
        return self


class GRPOConfig(GroupRLConfig):
    __doc__ = GroupRLConfig.__doc__
    kl_coef: float = Field(default=0.0, ge=0, description="beta of the KL to the reference "
                           "(0: no reference model is loaded; DeepSeekMath used 0.04).")
    kl_estimator: Literal["k1", "k2", "k3"] = Field(default="k3", description="Per-token KL "
                                                    "estimate (k3: GRPO's).")
    kl_penalty: Literal["reward", "loss"] = Field(default="loss", description="loss: beta x KL "
                                                  "per token in the loss (GRPO); reward: "
                                                  "subtracted from the sequence reward.")
    rollout: RolloutConfig = Field(default_factory=lambda: RolloutConfig(samples_per_prompt=4),
                                   description="Sampling (samples_per_prompt is the group "
                                   "size, at least 2; default 4).")


class RLOOConfig(GroupRLConfig):
    __doc__ = GroupRLConfig.__doc__
    rollout: RolloutConfig = Field(default_factory=lambda: RolloutConfig(samples_per_prompt=4),
                                   description="Sampling (samples_per_prompt is the group "
                                   "size, at least 2; default 4).")
