"""Configs of the ``train`` stages (light: pydantic and lmforge only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, model_validator

from lmforge import Config, ConfigValueError, Slot
from lmforge.training.config import (
    TrainLoopConfig,
    check_backend_fits,
    check_seq_len_fits,
    init_architecture,
)

if TYPE_CHECKING:
    from lmforge.spec.validate import UpstreamInput


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
    num_proc: int = Field(default=1, ge=1, le=1024,
                          description="Processes used to tokenise the dataset.")
    eval_batches: int = Field(default=20, ge=0, description="At most this many batches of the "
                              "dataset's 'heldout' split are evaluated at the end (0: none).")

    def estimate(self, upstream: Mapping[str, Any]) -> dict[str, Any]:
        """Parameters, training tokens and ``6 * N * D`` FLOPs for ``lmforge plan``."""
        return _estimate(self, upstream, self.model)

    @model_validator(mode="after")
    def _seq_len_fits_model(self) -> PretrainConfig:
        check_seq_len_fits(self.loop, self.model, "config.model")
        check_backend_fits(self.loop, self.model, "config.model")
        return self

    def check_inputs(self, inputs: Mapping[str, UpstreamInput]) -> None:
        """Validation of the wiring: an ``init`` model whose architecture the spec fixes must
        have exactly ``config.model`` (as :meth:`PretrainStage.check` requires at run time)."""
        arch, what = init_architecture(inputs)
        if arch is None or not hasattr(self.model, "model_dump"):
            return
        have, want = arch.model_dump(mode="json"), self.model.model_dump(mode="json")
        if have != want:
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise ConfigValueError(f"config.model differs from the architecture of {what} in "
                                   f"{', '.join(diff)}; continued pre-training keeps the "
                                   f"architecture, so make them equal", ("model",))

    def output_architecture(self, inputs: Mapping[str, UpstreamInput]) -> Any:
        """The architecture of the ``model`` this stage writes: ``config.model``."""
        return self.model


class SFTConfig(Config):
    """Supervised fine-tuning on chat conversations; loss on assistant tokens only."""

    loop: TrainLoopConfig = Field(default_factory=TrainLoopConfig,
                                  description="Steps, batch, sequence length, optimizer, backend. "
                                  "Conversations longer than seq_len + 1 tokens are truncated.")
    num_proc: int = Field(default=1, ge=1, le=1024,
                          description="Processes used to tokenise the dataset.")
    eval_batches: int = Field(default=20, ge=0, description="At most this many batches of the "
                              "dataset's 'heldout' split are evaluated at the end (0: none).")

    def estimate(self, upstream: Mapping[str, Any]) -> dict[str, Any]:
        """Training tokens (upper bound: padded length) and, when the init stage's architecture
        is known, parameters and FLOPs."""
        return _estimate(self, upstream, getattr(upstream.get("init"), "model", None))

    def check_inputs(self, inputs: Mapping[str, UpstreamInput]) -> None:
        """Validation of the wiring: ``loop.seq_len`` fits the init model's max_seq_len when
        the spec fixes its architecture (it is checked again from model.json at run time)."""
        arch, what = init_architecture(inputs)
        check_seq_len_fits(self.loop, arch, what)
        check_backend_fits(self.loop, arch, what)

    def output_architecture(self, inputs: Mapping[str, UpstreamInput]) -> Any:
        """Fine-tuning keeps the architecture: that of the ``init`` model, when known."""
        return init_architecture(inputs)[0]
