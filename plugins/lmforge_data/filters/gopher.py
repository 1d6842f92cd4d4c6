"""The ``gopher`` filter: MassiveText quality and repetition heuristics (Rae et al. 2021, A1).

Each rule is the paper's, measured as datatrove (0.10, ``GopherQualityFilter`` +
``GopherRepetitionFilter``) measures it, so a corpus filtered here keeps the documents a
FineWeb-style pipeline keeps. *Words* are the tokens of spaCy's English tokenizer
(:mod:`lmforge_data.filters.english_words` reproduces it without spaCy): punctuation is split off
into tokens of its own. A *symbol-only* word is made of punctuation marks only (ASCII
punctuation, dashes, quotes, ellipsis, CJK punctuation, control characters; see
:data:`PUNCTUATION`).

Checks, in this order (cheap ones first); the first that fails names the drop reason:

* ``empty``: the text is empty.
* ``duplicate_paragraphs`` / ``duplicate_paragraph_chars``: paragraphs are the stripped text
  split on runs of 2+ newlines; a paragraph equal to an earlier one is a duplicate; the
  fraction is duplicates / paragraphs, the character fraction is their characters / characters
  of the whole text.
* ``duplicate_lines`` / ``duplicate_line_chars``: the same over lines (split on runs of
  newlines).
* ``word_count``: number of words that are not symbol-only, out of ``[min_words, max_words]``.
* ``mean_word_length``: mean length of those words, out of the bounds.
* ``symbol_ratio``: ``#`` count / words, or ``...`` and ``…`` count / words (each on its own),
  above the ratio. Words here include punctuation tokens.
* ``bullet_lines``: share of lines (``str.splitlines``, blank ones included) starting, after
  leading whitespace, with ``•`` or ``-``.
* ``ellipsis_lines``: share of lines ending, before trailing whitespace, with ``...`` or ``…``.
* ``alpha_words``: share of words (punctuation tokens included) with at least one letter.
* ``stop_words``: distinct stop words present as words (case-sensitive: ``The`` is not
  ``the``).
* ``top_<n>gram``: the most frequent word n-gram (the first seen among equals; n-gram text is
  its words joined by one space), its length times its count / characters of the text.
* ``duplicate_<n>gram``: scanning left to right, an n-gram (words concatenated) seen before
  counts its characters and the scan jumps past it; their sum / characters of the text.

With ``code`` on, only ``empty``, ``word_count`` and ``top_<n>gram`` run (code is repetitive
and symbol-heavy by nature: the other checks would throw most of a source tree away).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from lmforge import FilterResult
from lmforge_data.filters.english_words import split_words

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("•", "-")
ELLIPSES = ("...", "…")
# Characters that make a word "symbol-only" when it has nothing else (datatrove's list).
PUNCTUATION = frozenset(
    string.punctuation
    + "«´»–—’“”„…∶━►、。〈〉《》「」【】！％（），．１：；？～"
    + "‼⁇⁈⁉‽؟۔।॥။።፧፨។៕"
    + "".join(map(chr, [*range(0, 9), 11, 12, *range(13, 32), *range(127, 160)])))
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAK = re.compile(r"\n+")


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
        if not text:
            return "empty"
        size = len(text)
        if not self.code:
            reason = self._duplicate_parts(text, size)
            if reason:
                return reason
        words = split_words(text)
        reason = self._quality(text, words) or self._top_ngrams(words, size)
        if reason or self.code:
            return reason
        return self._duplicate_ngrams(words, size)

    # -- repetition -------------------------------------------------------------------------
    def _duplicate_parts(self, text: str, size: int) -> str | None:
        for unit, parts, max_frac, max_chars in (
                ("paragraph", _PARAGRAPH_BREAK.split(text.strip()),
                 self.max_duplicate_paragraph_fraction,
                 self.max_duplicate_paragraph_char_fraction),
                ("line", _LINE_BREAK.split(text), self.max_duplicate_line_fraction,
                 self.max_duplicate_line_char_fraction)):
            dup, dup_chars = duplicate_parts(parts)
            if max_frac is not None and dup / len(parts) > max_frac:
                return f"duplicate_{unit}s"
            if max_chars is not None and dup_chars / size > max_chars:
                return f"duplicate_{unit}_chars"
        return None

    def _top_ngrams(self, words: list[str], size: int) -> str | None:
        for n, limit in sorted(self.max_top_ngram_char_fraction.items()):
            if top_ngram_chars(words, n) / size > limit:
                return f"top_{n}gram"
        return None

    def _duplicate_ngrams(self, words: list[str], size: int) -> str | None:
        for n, limit in sorted(self.max_duplicate_ngram_char_fraction.items()):
            if duplicate_ngram_chars(words, n) / size > limit:
                return f"duplicate_{n}gram"
        return None

    # -- quality ----------------------------------------------------------------------------
    def _quality(self, text: str, words: list[str]) -> str | None:
        counts = Counter(words)
        n_words = len(words)
        content = [(w, c) for w, c in counts.items() if not PUNCTUATION.issuperset(w)]
        n_content = sum(c for _, c in content)
        if (self.min_words is not None and n_content < self.min_words) or (
                self.max_words is not None and n_content > self.max_words):
            return "word_count"
        if self.code or n_words == 0:
            return None
        if n_content:
            mean = sum(len(w) * c for w, c in content) / n_content
            if (self.min_mean_word_length is not None and mean < self.min_mean_word_length) or (
                    self.max_mean_word_length is not None and mean > self.max_mean_word_length):
                return "mean_word_length"
        if self.max_symbol_word_ratio is not None and (
                text.count("#") / n_words > self.max_symbol_word_ratio
                or (text.count("...") + text.count("…")) / n_words > self.max_symbol_word_ratio):
            return "symbol_ratio"
        lines = text.splitlines()
        if lines:
            if self.max_bullet_line_fraction is not None:
                bullets = sum(ln.lstrip().startswith(BULLETS) for ln in lines)
                if bullets / len(lines) > self.max_bullet_line_fraction:
                    return "bullet_lines"
            if self.max_ellipsis_line_fraction is not None:
                ellipses = sum(ln.rstrip().endswith(ELLIPSES) for ln in lines)
                if ellipses / len(lines) > self.max_ellipsis_line_fraction:
                    return "ellipsis_lines"
        if self.min_alpha_word_fraction is not None:
            alpha = sum(c for w, c in counts.items()
                        if w.isalpha() or any(ch.isalpha() for ch in w))
            if alpha / n_words < self.min_alpha_word_fraction:
                return "alpha_words"
        if self.min_stop_words is not None and len(STOP_WORDS & counts.keys()) < self.min_stop_words:
            return "stop_words"
        return None


def duplicate_parts(parts: list[str]) -> tuple[int, int]:
    """(number of parts equal to an earlier part, characters in those parts)."""
    seen: set[str] = set()
    dup = dup_chars = 0
    for p in parts:
        if p in seen:
            dup += 1
            dup_chars += len(p)
        else:
            seen.add(p)
    return dup, dup_chars


def _ngram_tuples(words: list[str], n: int) -> zip:
    return zip(*(islice(words, k, None) for k in range(n)))


def top_ngram_chars(words: list[str], n: int) -> int:
    """Length of the most frequent n-gram (words joined by a space) times its count; among
    n-grams as frequent, the first to occur. Zero when there are fewer than ``n`` words."""
    if len(words) < n:
        return 0
    # words hold no whitespace, so tuples and space-joined strings are the same n-grams
    (gram, count), = Counter(_ngram_tuples(words, n)).most_common(1)
    return (sum(map(len, gram)) + n - 1) * count


def duplicate_ngram_chars(words: list[str], n: int) -> int:
    """Characters of repeated n-grams (words concatenated without a separator), counted left
    to right: an n-gram seen before adds its length and the scan skips its ``n`` words."""
    grams = list(map("".join, _ngram_tuples(words, n)))
    counts = Counter(grams)
    if len(counts) == len(grams):
        return 0
    # n-grams that occur once never count and never match later: visit only the others
    repeated = {g for g, c in counts.items() if c > 1}
    seen: set[str] = set()
    chars = resume = 0
    for i, g in enumerate(grams):
        if g in repeated and i >= resume:
            if g in seen:
                chars += len(g)
                resume = i + n
            else:
                seen.add(g)
    return chars


def factory(config: Any) -> GopherFilter:
    values = config.model_dump(exclude={"type"})
    return GopherFilter(**values)
