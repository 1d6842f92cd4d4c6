"""The evaluator protocol: what a component of kind ``evaluator`` implements (public API).

An ``evaluate`` stage (the first-party ``evaluate/suite``) builds each configured evaluator with
``ctx.build("evaluator", config)``, i.e. ``factory(config)``, and calls the object it returns:

* ``requires() -> dict[str, str]`` — stage inputs that must be wired (name -> artifact kind),
  given the config; the stage turns a missing one into a :class:`lmforge.StageInputError` at
  check time;
* ``check(inputs: Mapping[str, Artifact]) -> None`` — cheap validation (splits exist, a task
  file parses) before the model is loaded; raise :class:`lmforge.StageInputError`;
* ``run(model, tokenizer, inputs, device, ctx) -> dict`` — ``model`` is a
  :class:`lmforge.interfaces.CausalLM` in eval mode on ``device`` (called through the
  model-call contract: ``model(input_ids, labels=..., return_logprobs=..., logits_to_keep=...)``
  returning a :class:`lmforge.interfaces.CausalLMOutput`), ``tokenizer`` a
  :class:`lmforge.chat.TokenizerArtifact`, ``inputs`` the wired artifacts, ``ctx`` an
  :class:`EvalContext`. Returns a JSON-able dict: top-level numbers are the metrics (logged and
  shown in the summary); other values (lists of generations ...) go into ``report.json``. With a
  ``baseline`` input, ``run`` is called a second time with the baseline model
  (``ctx.model_label`` tells which);
* ``markdown(result) -> str`` — the evaluator's section of ``report.md`` beyond the metrics
  table (may return "").

Evaluators run under ``torch.inference_mode()``. The config model should have a ``type``
literal (as every component's) and may have ``name`` (the label in the report) and ``split``
(the dataset split :meth:`Evaluator.check` checks). :class:`Evaluator` implements the optional
parts. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmforge.errors import StageInputError

if TYPE_CHECKING:
    from lmforge.stages import Artifact, StageContext

__all__ = ["EvalContext", "Evaluator", "need_examples"]


@dataclass
class EvalContext:
    """What the evaluate stage gives an evaluator besides model, tokenizer and inputs.

    ``stage``: the :class:`lmforge.StageContext`; ``label``: the evaluator's name in the report;
    ``batch_size``: sequences per forward pass; ``max_examples``: at most this many documents /
    questions ... (``None``: all); ``model_label``: which model this call evaluates, e.g.
    ``"model sft"`` or ``"baseline pretrain"`` (slot and producing stage), shown in progress.
    """

    stage: StageContext
    label: str
    batch_size: int
    max_examples: int | None
    model_label: str = "model"

    def progress(self, total: int | None, description: str, unit: str = "it") -> Any:
        """``stage.progress`` with the model and the evaluator named: the line reads
        ``<stage>: <model_label>: <label>: <description>``."""
        return self.stage.progress(total, f"{self.model_label}: {self.label}: {description}",
                                   unit=unit)


class Evaluator:
    """Base class with the optional parts of the protocol; subclasses implement :meth:`run`."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def requires(self) -> dict[str, str]:
        return {}

    def check(self, inputs: Mapping[str, Artifact]) -> None:
        """Default: the config's ``split`` (if it has one) exists in every required input."""
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
    """Raise a :class:`lmforge.StageInputError` (``"<where>: no <what> to evaluate"``) when
    ``n`` is 0, rather than report metrics of nothing."""
    if n == 0:
        raise StageInputError(f"{where}: no {what} to evaluate")
