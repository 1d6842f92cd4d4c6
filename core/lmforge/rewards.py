"""The reward protocol: what a component of kind ``reward`` implements (public API).

A reward scores completions of prompts. RL stages (``align/ppo``, ``align/grpo``,
``align/rloo``), evaluators and AI-feedback stages build one with
``ctx.build("reward", config)`` — i.e. ``factory(config)`` — and call the object it returns:

* ``requires() -> dict[str, str]`` — stage inputs the reward needs wired (name -> artifact
  kind), e.g. ``{"reward_model": "model"}``; the stage turns a missing one into a
  :class:`lmforge.StageInputError` at check time, naming the reward;
* ``check(inputs: Mapping[str, Artifact]) -> None`` — cheap validation before anything loads;
* ``setup(stage: StageContext, device) -> None`` — load what scoring needs (a model onto
  ``device``, a sandbox built with ``stage.build("sandbox", ...)``); called once, on every rank
  that scores;
* ``score(samples: Sequence[RewardSample]) -> RewardOutput`` — one float per sample (higher
  is better) and a JSON-able dict of details per sample (what passed, what was extracted, the
  error), in order. Scoring is deterministic for the same samples;
* ``close() -> None`` — release processes and memory.

:class:`Reward` implements the optional parts. A reward that runs untrusted code must run it
through a ``sandbox`` component (:mod:`lmforge.sandbox`), never in the stage's own process
(:mod:`lmforge.codecheck` writes and reads doctest checks). A reward whose config holds other
rewards (``composite``) builds them in its factory with
:func:`lmforge.stages.building_plugins`, so its ``requires()`` can answer before ``setup``.
Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.stages import Artifact, StageContext

__all__ = ["Reward", "RewardOutput", "RewardSample"]


@dataclass(frozen=True)
class RewardSample:
    """One completion to score.

    ``prompt``: the conversation before the completion, a list of ``{"role", "content"}``
    messages (a plain-text prompt is one user message); ``completion``: the generated text
    (the assistant's reply, without the chat template's markers); ``reference``: a gold answer
    where the data has one (``exact-match``); ``tests``: checks for code completions, e.g. the
    doctest source of the function being written (``python-checks``); ``meta``: the dataset
    row's other fields (``entry_point``, a task id ...).
    """

    prompt: Sequence[Mapping[str, str]]
    completion: str
    reference: str | None = None
    tests: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def prompt_text(self) -> str:
        """The last user message (what most rule-based rewards look at)."""
        for message in reversed(self.prompt):
            if message.get("role") == "user":
                return str(message.get("content", ""))
        return ""


@dataclass
class RewardOutput:
    """``scores[i]`` is the reward of ``samples[i]``; ``details[i]`` says why (JSON-able)."""

    scores: list[float]
    details: list[dict[str, Any]]

    def __post_init__(self) -> None:
        if len(self.scores) != len(self.details):
            raise ValueError(f"a reward returned {len(self.scores)} scores but "
                             f"{len(self.details)} details")


class Reward:
    """Base class with the optional parts of the protocol; subclasses implement :meth:`score`."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def requires(self) -> dict[str, str]:
        return {}

    def check(self, inputs: Mapping[str, Artifact]) -> None:
        return None

    def setup(self, stage: StageContext, device: Any) -> None:
        return None

    def score(self, samples: Sequence[RewardSample]) -> RewardOutput:
        raise NotImplementedError

    def close(self) -> None:
        return None
