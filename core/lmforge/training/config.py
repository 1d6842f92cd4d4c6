"""Config models for the shared training loop (light: pydantic only)."""

from __future__ import annotations

from collections.abc import Mapping
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
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = \
        Field(default=(0.9, 0.95), description="AdamW betas (beta1, beta2), each in [0, 1).")
    eps: float = Field(default=1e-8, gt=0)
    grad_clip: float = Field(default=1.0, ge=0,
                             description="Clip the global gradient norm to this (0: no clipping).")


class TrainLoopConfig(Config):
    """How long and how a model is optimised; shared by every training stage."""

    steps: int = Field(default=100, ge=1, description="Optimizer steps.")
    batch_size: int = Field(default=8, ge=1, le=2**20, description="Sequences per micro-batch.")
    grad_accum: int = Field(default=1, ge=1,
                            description="Micro-batches accumulated per optimizer step.")
    seq_len: int = Field(default=256, ge=8, le=2**20, description="Tokens per sequence.")
    log_every: int = Field(default=10, ge=1, description="Log metrics every N steps.")
    checkpoint_every: int = Field(default=50, ge=1,
                                  description="Write a resumable checkpoint every N steps.")
    keep_checkpoints: int = Field(default=2, ge=1, description="How many checkpoints to keep.")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    backend: Annotated[Any, Slot("backend")] = Field(
        default={"type": "local"}, description="Where training runs: {type: local} (one process, "
        "CPU or one GPU) or another installed backend.")

    @model_validator(mode="after")
    def _micro_batch_allocatable(self) -> TrainLoopConfig:
        # 2**27 tokens: input ids alone take 1 GiB, activations terabytes at any useful width.
        if self.batch_size * self.seq_len > 2**27:
            raise ValueError(f"batch_size * seq_len = {self.batch_size * self.seq_len} tokens per "
                             f"micro-batch is more than any machine can hold (at most 2**27); "
                             f"lower batch_size and raise grad_accum instead")
        return self

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainLoopConfig:
        if self.optim.warmup_steps >= self.steps and self.steps > 1:
            raise ValueError(f"optim.warmup_steps ({self.optim.warmup_steps}) must be smaller "
                             f"than steps ({self.steps})")
        return self


def check_seq_len_fits(loop: TrainLoopConfig, architecture: Any, what: str) -> None:
    """Refuse ``loop.seq_len`` longer than the ``max_seq_len`` of ``architecture`` (when it has
    one) with a :class:`lmforge.ConfigValueError` at ``loop.seq_len``; for config validators and
    ``check_inputs`` of training stages."""
    from lmforge.errors import ConfigValueError

    max_len = getattr(architecture, "max_seq_len", None)
    if isinstance(max_len, int) and loop.seq_len > max_len:
        raise ConfigValueError(
            f"loop.seq_len ({loop.seq_len}) is longer than the max_seq_len of {what} ({max_len}); "
            f"lower loop.seq_len to at most {max_len}, or raise max_seq_len",
            ("loop", "seq_len"))


def check_backend_fits(loop: TrainLoopConfig, architecture: Any, what: str) -> None:
    """Ask ``loop.backend`` whether it can train ``architecture`` (when the spec fixes it):
    a backend config may define ``check_architecture(architecture, loop)``, raising
    :class:`lmforge.ConfigValueError` (a key of the backend's config) or ``ValueError`` — e.g.
    Megatron's tensor-parallel size must divide the attention heads. Re-raised as a
    :class:`lmforge.ConfigValueError` at ``loop.backend.<key>`` naming ``what``; for config
    validators and ``check_inputs`` of training stages."""
    from lmforge.errors import ConfigValueError

    check = getattr(loop.backend, "check_architecture", None)
    if architecture is None or not callable(check) or not hasattr(architecture, "model_dump"):
        return
    try:
        check(architecture, loop)
    except ConfigValueError as exc:
        raise ConfigValueError(f"{exc.message} ({what})",
                               ("loop", "backend", *exc.path)) from None
    except ValueError as exc:
        raise ConfigValueError(f"{exc} ({what})", ("loop", "backend")) from None


def init_architecture(inputs: Mapping[str, Any]) -> tuple[Any, str]:
    """The architecture of a stage's ``init`` input when the spec fixes it (None otherwise),
    and how to name it in a message."""
    init = inputs.get("init")
    if init is None:
        return None, ""
    return init.architecture, f"the init model (stage {init.stage_id!r})"
