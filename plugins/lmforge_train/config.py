"""Configs of the ``train`` stages (light: pydantic and lmforge only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field

from lmforge import Config, Slot
from lmforge.training.config import TrainLoopConfig


def _estimate(config: Any, upstream: Mapping[str, Any], arch: Any) -> dict[str, Any]:
    # stagekit is light (numpy only) but keep even that out of discovery.
    from lmforge.training.stagekit import upstream_estimate

    return upstream_estimate(config, upstream, arch)


class PretrainConfig(Config):
    """Next-token prediction on a text dataset, packed into fixed-length blocks."""

    model: Annotated[Any, Slot("architecture"), Field(
        description="The architecture to train, e.g. {type: dense, dim: 256, n_layers: 4}. "
                    "With an 'init' input it must equal the init model's architecture.")]
    loop: TrainLoopConfig = Field(default_factory=TrainLoopConfig,
                                  description="Steps, batch, sequence length, optimizer, backend.")
    num_proc: int = Field(default=1, ge=1, description="Processes used to tokenise the dataset.")
    eval_batches: int = Field(default=20, ge=0, description="At most this many batches of the "
                              "dataset's 'heldout' split are evaluated at the end (0: none).")

    def estimate(self, upstream: Mapping[str, Any]) -> dict[str, Any]:
        """Parameters, training tokens and ``6 * N * D`` FLOPs for ``lmforge plan``."""
        return _estimate(self, upstream, self.model)


class SFTConfig(Config):
    """Supervised fine-tuning on chat conversations; loss on assistant tokens only."""

    loop: TrainLoopConfig = Field(default_factory=TrainLoopConfig,
                                  description="Steps, batch, sequence length, optimizer, backend. "
                                  "Conversations longer than seq_len + 1 tokens are truncated.")
    num_proc: int = Field(default=1, ge=1, description="Processes used to tokenise the dataset.")
    eval_batches: int = Field(default=20, ge=0, description="At most this many batches of the "
                              "dataset's 'heldout' split are evaluated at the end (0: none).")

    def estimate(self, upstream: Mapping[str, Any]) -> dict[str, Any]:
        """Training tokens (upper bound: padded length) and, when the init stage's architecture
        is known, parameters and FLOPs."""
        return _estimate(self, upstream, getattr(upstream.get("init"), "model", None))
