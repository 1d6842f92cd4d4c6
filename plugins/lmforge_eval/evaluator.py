"""The plugin-internal evaluator protocol (only the ``evaluate/suite`` stage calls evaluators).

A component of kind ``evaluator`` has a factory ``factory(config)`` that returns an object with:

* ``requires() -> dict[str, str]`` — stage inputs that must be wired (name -> artifact kind), given
  the config; the stage turns a missing one into a :class:`lmforge.StageInputError` at check time;
* ``check(inputs: dict[str, Artifact]) -> None`` — cheap validation (splits exist, a task file
  parses) before the model is loaded;
* ``run(model, tokenizer, inputs, device, ctx) -> dict`` — ``model`` is a
  :class:`lmforge.interfaces.CausalLM` in eval mode on ``device``, ``tokenizer`` a
  :class:`lmforge.chat.TokenizerArtifact`, ``inputs`` the wired artifacts, ``ctx`` an
  :class:`EvalContext`. Returns a JSON-able dict: top-level numbers are the metrics (logged and
  shown in the summary); other values (lists of generations ...) go into ``report.json``;
* ``markdown(result) -> str`` — the evaluator's section of ``report.md`` beyond the metrics table
  (may return "").

Evaluators run under ``torch.inference_mode()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmforge import StageInputError

if TYPE_CHECKING:
    from lmforge import Artifact, StageContext


@dataclass
class EvalContext:
    """What the suite gives an evaluator besides model, tokenizer and inputs."""

    stage: StageContext
    label: str  # the evaluator's name in the report
    batch_size: int
    max_examples: int | None

    def progress(self, total: int | None, description: str, unit: str = "it") -> Any:
        return self.stage.progress(total, f"{self.label}: {description}", unit=unit)


class Evaluator:
    """Base class with the optional parts of the protocol."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def requires(self) -> dict[str, str]:
        return {}

    def check(self, inputs: Mapping[str, Artifact]) -> None:
        from lmforge.datasetio import split_files

        split = getattr(self.config, "split", None)
        for name in self.requires():
            if split is not None and name in inputs:
                split_files(inputs[name].path, split)

    def run(self, model: Any, tokenizer: Any, inputs: Mapping[str, Artifact], device: Any,
            ctx: EvalContext) -> dict[str, Any]:
        raise NotImplementedError

    def markdown(self, result: Mapping[str, Any]) -> str:
        return ""


def need_examples(n: int, what: str, where: str) -> None:
    if n == 0:
        raise StageInputError(f"{where}: no {what} to evaluate")
