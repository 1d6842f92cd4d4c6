"""Protocols for non-stage components, so plugins interoperate through the core only.

A plugin never imports another plugin: a training stage builds an architecture with
``ctx.build("architecture", config.model, vocab_size=...)`` and relies only on the protocol
below; a data stage runs any installed ``filter`` the same way. Torch types are named only for
type checkers; nothing here imports torch.

Factory signatures by component kind (``ctx.build(kind, config, ...)`` calls them):

==============  =====================================================  =====================
kind            factory call                                           returns
==============  =====================================================  =====================
architecture    ``factory(config, vocab_size: int)``                   :class:`CausalLM`
backend         ``factory(config)``                                    :class:`Backend`
source          ``factory(config)``                                    :class:`Source`
filter          ``factory(config)``                                    :class:`Filter`
tracker         ``factory(config, run_dir: Path)``                     a pluggy plugin object
==============  =====================================================  =====================
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


# --- models ------------------------------------------------------------------------------
@runtime_checkable
class CausalLM(Protocol):
    """A decoder-only language model (a ``torch.nn.Module``).

    ``forward(input_ids)`` takes ``input_ids``: LongTensor ``[batch, seq]`` and returns logits
    ``[batch, seq, vocab_size]`` (float). Position ``t`` predicts token ``t + 1``.
    ``forward(x) == head(hidden(x))``: losses use the two halves to avoid materialising the full
    logits tensor (see :mod:`lmforge.training.losses`).
    """

    vocab_size: int
    max_seq_len: int

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor: ...

    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final hidden states ``[batch, seq, dim]`` (after the last norm)."""
        ...

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Project hidden states ``[..., dim]`` to logits ``[..., vocab_size]``."""
        ...

    def num_parameters(self, non_embedding: bool = False) -> int: ...


class HFExportable(Protocol):
    """A model that can be written in Hugging Face ``transformers`` format."""

    def hf_config(self) -> dict[str, Any]:
        """The ``config.json`` content (``architectures``, ``model_type`` ...)."""
        ...

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under the HF model's parameter names."""
        ...


# --- execution backends ------------------------------------------------------------------
class Backend(Protocol):
    """Where and how training runs: device, precision, process group, model wrapping."""

    device: torch.device
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool: ...

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move to device, wrap (DDP/FSDP) and compile as configured; returns the module to call."""
        ...

    def autocast(self) -> AbstractContextManager[Any]:
        """Context for forward passes (bf16 autocast where configured and supported)."""
        ...

    def all_reduce_mean(self, value: float) -> float:
        """Mean of a scalar across ranks (identity on one process)."""
        ...

    def barrier(self) -> None: ...

    def close(self) -> None: ...


# --- data ------------------------------------------------------------------------------------
class Source(Protocol):
    """A stream of records (dicts). Must not load a corpus larger than memory at once."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def describe(self) -> str:
        """Where the records come from (shown in errors and stats)."""
        ...


@dataclass(frozen=True)
class FilterResult:
    """A filter's decision on one document.

    ``keep=False`` drops the document, ``reason`` says why (counted in the stage manifest).
    ``text`` set to a new string means the document was modified (e.g. PII redacted), with
    ``reason`` naming what changed.
    """

    keep: bool
    reason: str = ""
    text: str | None = None
    counts: Mapping[str, int] | None = None  # e.g. {"email": 2} for a redaction

    @classmethod
    def kept(cls) -> FilterResult:
        return _KEPT


_KEPT = FilterResult(keep=True)


class Filter(Protocol):
    """Decides on one document's text. Must be picklable (filters run in worker processes)."""

    name: str

    def __call__(self, text: str) -> FilterResult: ...
