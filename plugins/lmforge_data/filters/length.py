"""The ``length`` filter: character and word count bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmforge import FilterResult


@dataclass(frozen=True)
class LengthFilter:
    """Drops a document whose stripped length or word count is out of bounds.

    Reasons: ``too_short``, ``too_long`` (characters), ``too_few_words``, ``too_many_words``.
    """

    min_chars: int = 1
    max_chars: int | None = None
    min_words: int = 0
    max_words: int | None = None
    name: str = "length"

    def __call__(self, text: str) -> FilterResult:
        n = len(text.strip())
        if n < self.min_chars:
            return FilterResult(keep=False, reason="too_short")
        if self.max_chars is not None and n > self.max_chars:
            return FilterResult(keep=False, reason="too_long")
        if self.min_words or self.max_words is not None:
            words = len(text.split())
            if words < self.min_words:
                return FilterResult(keep=False, reason="too_few_words")
            if self.max_words is not None and words > self.max_words:
                return FilterResult(keep=False, reason="too_many_words")
        return FilterResult.kept()


def factory(config: Any) -> LengthFilter:
    return LengthFilter(min_chars=config.min_chars, max_chars=config.max_chars,
                        min_words=config.min_words, max_words=config.max_words)
