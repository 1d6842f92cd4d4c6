"""The ``exact-match`` reward: 1.0 when the completion's extracted answer equals the
reference's, else 0.0 (see :class:`lmforge_rewards.config.ExactMatchConfig`).

Extraction tries the configured patterns in order; the first that finds anything wins, and
within a pattern the *last* match in the text (a model's final answer comes last). Both
answers are then normalised — surrounding whitespace and ``strip_chars`` removed, ``remove``
substrings (thousands separators) deleted, case folded — and compared as numbers when both
parse as numbers (``3.50 == 3.5``), else as strings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from lmforge.rewards import Reward, RewardOutput, RewardSample

LAST_NUMBER = "last-number"
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")


class Matcher:
    """Extraction and normalisation of :class:`ExactMatchConfig` (also used by the exact-match
    evaluator through this reward)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        flags = re.MULTILINE | (0 if config.case_sensitive else re.IGNORECASE)
        self.patterns = [p if p == LAST_NUMBER else re.compile(p, flags)
                         for p in config.extract]

    def extract(self, text: str) -> str | None:
        for pattern in self.patterns:
            if pattern == LAST_NUMBER:
                found = _NUMBER.findall(text)
                if found:
                    return found[-1]
                continue
            matches = list(pattern.finditer(text))  # type: ignore[union-attr]
            if matches:
                m = matches[-1]
                return m.group(1) if m.re.groups else m.group(0)
        return None

    def normalise(self, answer: str) -> str:
        c = self.config
        out = answer.strip()
        for sub in c.remove:
            out = out.replace(sub, "")
        out = out.strip(c.strip_chars).strip()
        return out if c.case_sensitive else out.casefold()

    def number(self, answer: str) -> Decimal | None:
        if not self.config.numeric:
            return None
        try:
            value = Decimal(answer)
        except InvalidOperation:
            return None
        return value if value.is_finite() else None

    def reference_answer(self, reference: str) -> str:
        if self.config.extract_reference:
            found = self.extract(reference)
            if found is not None:
                return found
        return reference

    def equal(self, predicted: str, reference: str) -> bool:
        a, b = self.normalise(predicted), self.normalise(reference)
        na, nb = self.number(a), self.number(b)
        if na is not None and nb is not None:
            return na == nb
        return a == b


class ExactMatch(Reward):
    """Config: :class:`lmforge_rewards.config.ExactMatchConfig`. Samples need ``reference``."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.matcher = Matcher(config)

    def score(self, samples: Sequence[RewardSample]) -> RewardOutput:
        scores, details = [], []
        for i, sample in enumerate(samples):
            if sample.reference is None:
                raise ValueError(f"exact-match: sample {i} has no reference answer; the prompts "
                                 f"dataset needs a 'reference' column")
            gold = self.matcher.reference_answer(str(sample.reference))
            got = self.matcher.extract(sample.completion)
            ok = got is not None and self.matcher.equal(got, gold)
            scores.append(1.0 if ok else 0.0)
            details.append({"extracted": got, "reference": self.matcher.normalise(gold),
                            "match": ok})
        return RewardOutput(scores, details)
