"""Config models for the shared training loop (light: pydantic only)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from lmforge.components import Config, Slot


class OptimConfig(Config):
    """AdamW with linear warmup and cosine decay to ``min_lr_ratio * lr``."""

    lr: float = Field(default=3e-4, gt=0, description="Peak learning rate.")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1,
                                description="Final learning rate as a fraction of lr.")
    warmup_steps: int = Field(default=10, ge=0, description="Linear warmup steps.")
    weight_decay: float = Field(default=0.1, ge=0,
                                description="Decoupled weight decay (not on norms and biases).")
    betas: tuple[float, float] = Field(default=(0.9, 0.95), description="AdamW betas.")
    eps: float = Field(default=1e-8, gt=0)
    grad_clip: float = Field(default=1.0, ge=0,
                             description="Clip the global gradient norm to this (0: no clipping).")


class TrainLoopConfig(Config):
    """How long and how a model is optimised; shared by every training stage."""

    steps: int = Field(default=100, ge=1, description="Optimizer steps.")
    batch_size: int = Field(default=8, ge=1, description="Sequences per micro-batch.")
    grad_accum: int = Field(default=1, ge=1,
                            description="Micro-batches accumulated per optimizer step.")
    seq_len: int = Field(default=256, ge=8, description="Tokens per sequence.")
    log_every: int = Field(default=10, ge=1, description="Log metrics every N steps.")
    checkpoint_every: int = Field(default=50, ge=1,
                                  description="Write a resumable checkpoint every N steps.")
    keep_checkpoints: int = Field(default=2, ge=1, description="How many checkpoints to keep.")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    backend: Annotated[Any, Slot("backend")] = Field(
        default={"type": "local"}, description="Where training runs: {type: local} (one process, "
        "CPU or one GPU) or another installed backend.")

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainLoopConfig:
        if self.optim.warmup_steps >= self.steps and self.steps > 1:
            raise ValueError(f"optim.warmup_steps ({self.optim.warmup_steps}) must be smaller "
                             f"than steps ({self.steps})")
        return self
