"""The ``gopher`` filter: MassiveText quality and repetition heuristics (Rae et al. 2021).

Checks run in this order; the first that fails names the drop reason:

``word_count``, ``mean_word_length``, ``symbol_ratio``, ``ellipsis_lines``, ``bullet_lines``,
``alpha_words``, ``stop_words``, ``duplicate_lines``, ``duplicate_line_chars``,
``duplicate_paragraphs``, ``duplicate_paragraph_chars``, ``top_<n>gram``, ``duplicate_<n>gram``.

With ``code`` on, only ``word_count`` and ``top_<n>gram`` run (code is repetitive by nature:
the other checks would throw most of a source tree away).

Words are whitespace-separated tokens. The n-gram checks use words lower-cased with surrounding
punctuation stripped, and measure characters as the sum of word lengths.
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lmforge import FilterResult

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("•", "-", "*", "‣", "◦", "●", "·")
_PUNCT = string.punctuation + "“”‘’«»…–—"


@dataclass(frozen=True)
class GopherFilter:
    """Thresholds as in :class:`lmforge_data.config.GopherFilterConfig`; ``None`` disables."""

    code: bool = False
    min_words: int | None = 50
    max_words: int | None = 100_000
    min_mean_word_length: float | None = 3.0
    max_mean_word_length: float | None = 10.0
    max_symbol_word_ratio: float | None = 0.1
    max_ellipsis_line_fraction: float | None = 0.3
    max_bullet_line_fraction: float | None = 0.9
    min_alpha_word_fraction: float | None = 0.8
    min_stop_words: int | None = 2
    max_duplicate_line_fraction: float | None = 0.3
    max_duplicate_line_char_fraction: float | None = 0.2
    max_duplicate_paragraph_fraction: float | None = 0.3
    max_duplicate_paragraph_char_fraction: float | None = 0.2
    max_top_ngram_char_fraction: dict[int, float] = field(
        default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    max_duplicate_ngram_char_fraction: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
    name: str = "gopher"

    def __call__(self, text: str) -> FilterResult:
        reason = self.failed_check(text)
        return FilterResult.kept() if reason is None else FilterResult(keep=False, reason=reason)

    def failed_check(self, text: str) -> str | None:
        """The name of the first failing check, or ``None`` when the document passes."""
        words = text.split()
        n = len(words)
        if (self.min_words is not None and n < self.min_words) or (
                self.max_words is not None and n > self.max_words):
            return "word_count"
        if n == 0:
            return None
        if not self.code:
            reason = self._natural_language(text, words)
            if reason:
                return reason
        return self._ngrams(words)

    # -- natural-language checks ------------------------------------------------------------
    def _natural_language(self, text: str, words: list[str]) -> str | None:
        n = len(words)
        mean = sum(len(w) for w in words) / n
        if (self.min_mean_word_length is not None and mean < self.min_mean_word_length) or (
                self.max_mean_word_length is not None and mean > self.max_mean_word_length):
            return "mean_word_length"
        if self.max_symbol_word_ratio is not None:
            symbols = text.count("#") + text.count("...") + text.count("…")
            if symbols / n > self.max_symbol_word_ratio:
                return "symbol_ratio"
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if lines:
            if self.max_ellipsis_line_fraction is not None:
                ell = sum(ln.endswith(("...", "…")) for ln in lines)
                if ell / len(lines) > self.max_ellipsis_line_fraction:
                    return "ellipsis_lines"
            if self.max_bullet_line_fraction is not None:
                bul = sum(ln.startswith(BULLETS) for ln in lines)
                if bul / len(lines) > self.max_bullet_line_fraction:
                    return "bullet_lines"
        if self.min_alpha_word_fraction is not None:
            alpha = sum(any(c.isalpha() for c in w) for w in words)
            if alpha / n < self.min_alpha_word_fraction:
                return "alpha_words"
        if self.min_stop_words is not None:
            present = {w.strip(_PUNCT).lower() for w in words} & STOP_WORDS
            if len(present) < self.min_stop_words:
                return "stop_words"
        for unit, parts, max_frac, max_chars in (
                ("lines", lines, self.max_duplicate_line_fraction,
                 self.max_duplicate_line_char_fraction),
                ("paragraphs", _paragraphs(text), self.max_duplicate_paragraph_fraction,
                 self.max_duplicate_paragraph_char_fraction)):
            frac, chars = duplicate_fractions(parts)
            if max_frac is not None and frac > max_frac:
                return f"duplicate_{unit}"
            if max_chars is not None and chars > max_chars:
                return f"duplicate_{unit[:-1]}_chars"
        return None

    # -- repetition -------------------------------------------------------------------------
    def _ngrams(self, raw_words: list[str]) -> str | None:
        if not (self.max_top_ngram_char_fraction or self.max_duplicate_ngram_char_fraction):
            return None
        words = [w.strip(_PUNCT).lower() or w for w in raw_words]
        total = sum(len(w) for w in words)
        if total == 0:
            return None
        for n, limit in sorted(self.max_top_ngram_char_fraction.items()):
            if top_ngram_char_fraction(words, n, total) > limit:
                return f"top_{n}gram"
        if self.code:
            return None  # code repeats 5-10 word runs by nature (calls, signatures)
        for n, limit in sorted(self.max_duplicate_ngram_char_fraction.items()):
            if duplicate_ngram_char_fraction(words, n, total) > limit:
                return f"duplicate_{n}gram"
        return None


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def duplicate_fractions(parts: list[str]) -> tuple[float, float]:
    """(fraction of parts that repeat an earlier one, fraction of characters in those)."""
    if not parts:
        return 0.0, 0.0
    seen: set[str] = set()
    dup = dup_chars = 0
    for p in parts:
        if p in seen:
            dup += 1
            dup_chars += len(p)
        else:
            seen.add(p)
    total_chars = sum(len(p) for p in parts)
    return dup / len(parts), (dup_chars / total_chars if total_chars else 0.0)


def top_ngram_char_fraction(words: list[str], n: int, total: int | None = None) -> float:
    """Characters in all occurrences of the most frequent word n-gram / characters in words.

    Zero when no n-gram occurs twice.
    """
    if len(words) < n:
        return 0.0
    total = total if total is not None else sum(len(w) for w in words)
    counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    gram, count = max(counts.items(), key=lambda kv: (kv[1], sum(map(len, kv[0]))))
    if count < 2 or not total:
        return 0.0
    return sum(len(w) for w in gram) * count / total


def duplicate_ngram_char_fraction(words: list[str], n: int, total: int | None = None) -> float:
    """Characters of words covered by an n-gram occurring more than once / characters in words."""
    if len(words) < n:
        return 0.0
    total = total if total is not None else sum(len(w) for w in words)
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(words)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            for j in range(i, i + n):
                covered[j] = True
    dup = sum(len(w) for w, c in zip(words, covered) if c)
    return dup / total if total else 0.0


def factory(config: Any) -> GopherFilter:
    values = config.model_dump(exclude={"type"})
    return GopherFilter(**values)
