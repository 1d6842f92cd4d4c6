"""The judge protocol: what a component of kind ``judge`` implements (public API).

A judge answers "which of two responses to this prompt is better under this principle" and,
optionally, "how good is this response". AI-feedback stages (``data/constitutional``,
``data/ai-preferences``), the ``safety`` evaluator and ``evaluate/arena`` build one with
``ctx.build("judge", config)`` — i.e. ``factory(config)`` — and call:

* ``requires() -> dict[str, str]`` / ``check(inputs)`` / ``setup(stage, device)`` /
  ``close()`` — as for rewards (:mod:`lmforge.rewards`): stage inputs it needs wired (a judge
  model), cheap checks, loading, release;
* ``compare(items: Sequence[Comparison]) -> list[Verdict]`` — one verdict per item, in order.
  Judges remove position bias by asking in both orders and averaging
  (:func:`swap_average`); the verdict keeps both orders' raw probabilities;
* ``score(items: Sequence[tuple[prompt, response]]) -> list[float]`` — optional (raise
  ``NotImplementedError``): an absolute score per response, higher is better;
* ``classify(items: Sequence[Classification]) -> list[dict[str, float]]`` — optional (raise
  ``NotImplementedError``): for a question about one response with a closed set of answers
  ("does the response refuse?"), the probability of each answer (summing to 1); used by the
  ``safety`` evaluator.

``Verdict.judge`` names the judge (type and model) and ``Verdict.principle`` the principle the
question was asked under, so every label a stage writes records who decided and why.
Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.stages import Artifact, StageContext

__all__ = ["Classification", "Comparison", "Judge", "Verdict", "swap_average"]

Messages = Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class Comparison:
    """Responses ``a`` and ``b`` to ``prompt`` (``{"role", "content"}`` messages), to be judged
    under ``principle`` (free text, e.g. "Choose the response that is more helpful and
    honest"; ``None``: the judge's default question)."""

    prompt: Messages
    a: str
    b: str
    principle: str | None = None


@dataclass(frozen=True)
class Classification:
    """A closed question about ``response`` to ``prompt`` (messages): ``question`` (e.g. "Does
    the response refuse the request?") and its possible ``answers`` (e.g. ``("yes", "no")``,
    at least two, distinct)."""

    prompt: Messages
    response: str
    question: str
    answers: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.answers) < 2 or len(set(self.answers)) != len(self.answers):
            raise ValueError(f"a classification needs at least two distinct answers, got "
                             f"{self.answers!r}")


@dataclass
class Verdict:
    """A judge's answer for one :class:`Comparison`.

    ``p_a``: probability that ``a`` is better, after swap averaging; ``p_b = 1 - p_a`` (a tie
    is ``0.5``). ``raw``: the judge's own numbers per order, e.g. ``{"ab": {"A": 0.7, "B":
    0.3}, "ba": {"A": 0.4, "B": 0.6}}`` (in ``"ba"`` the responses were shown swapped, so its
    ``"B"`` is the probability for ``a``). ``consistent``: both orders preferred the same
    response. ``judge``: who decided; ``principle``: under what.
    """

    p_a: float
    raw: dict[str, Any]
    judge: str
    principle: str | None = None
    consistent: bool | None = None

    @property
    def p_b(self) -> float:
        return 1.0 - self.p_a

    @property
    def winner(self) -> str:
        """``"a"``, ``"b"`` or ``"tie"`` (``p_a`` exactly 0.5)."""
        return "a" if self.p_a > 0.5 else "b" if self.p_a < 0.5 else "tie"


def swap_average(p_a_first: float, p_a_second: float) -> tuple[float, bool]:
    """Position-debiased probability that ``a`` is better, from asking twice.

    ``p_a_first``: P(a better) when ``a`` was shown first; ``p_a_second``: P(a better) when
    ``a`` was shown second. Returns their mean and whether both orders agree on the winner
    (both above 0.5, or both below; a 0.5 agrees with nothing).
    """
    mean = (p_a_first + p_a_second) / 2.0
    consistent = (p_a_first > 0.5 and p_a_second > 0.5) or (p_a_first < 0.5 and p_a_second < 0.5)
    return mean, consistent


class Judge:
    """Base class with the optional parts of the protocol; subclasses implement
    :meth:`compare`."""

    name: str = "judge"

    def __init__(self, config: Any) -> None:
        self.config = config

    def requires(self) -> dict[str, str]:
        return {}

    def check(self, inputs: Mapping[str, Artifact]) -> None:
        return None

    def setup(self, stage: StageContext, device: Any) -> None:
        return None

    def compare(self, items: Sequence[Comparison]) -> list[Verdict]:
        raise NotImplementedError

    def score(self, items: Sequence[tuple[Messages, str]]) -> list[float]:
        raise NotImplementedError(f"judge {self.name!r} gives no absolute scores; use a "
                                  f"judge that does (model-likelihood, reward)")

    def classify(self, items: Sequence[Classification]) -> list[dict[str, float]]:
        raise NotImplementedError(f"judge {self.name!r} cannot answer closed questions about "
                                  f"a response; use a judge that can (model-prompted, "
                                  f"openai-compatible)")

    def close(self) -> None:
        return None
