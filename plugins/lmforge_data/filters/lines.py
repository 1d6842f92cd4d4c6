"""Line-level web-text filters: ``c4`` (Raffel et al. 2020) and ``fineweb`` (Penedo et al. 2024).

``c4`` follows the clean-up that built C4 (TFDS ``c4`` builder, ``c4_utils.clean_page``; the
same rules as datatrove's ``C4QualityFilter``). Each line is stripped, citation marks are
removed, then a line is dropped when it

* does not end in terminal punctuation (``.``, ``!``, ``?``, ``"``), or ends in an ellipsis
  (``no_terminal_punct``);
* has fewer than ``min_words_per_line`` words (``too_few_words``);
* has a word longer than ``max_word_length`` characters (``long_word``);
* mentions ``javascript`` (``javascript``);
* holds a policy/cookie boilerplate phrase (``policy``).

The whole document is dropped when it contains ``lorem ipsum`` (reason ``lorem_ipsum``) or a
``{`` (``curly_bracket``), when no line is left (``no_lines``), or when the kept lines hold
fewer than ``min_sentences`` sentences (``too_few_sentences``; a sentence ends in ``.``, ``!``
or ``?`` followed by a space, a quote or the end — C4 used NLTK's Punkt, which also splits on
those marks). Otherwise the kept lines, joined by newlines, replace the text (reason
``lines_removed``, with the count of lines removed by each rule).

``fineweb`` applies the three rules FineWeb added on top of C4 and Gopher (datatrove
``FineWebQualityFilter``), on the non-blank lines:

* fraction of lines ending in terminal punctuation < 0.12 → ``line_punct_ratio``;
* fraction of lines of at most 30 characters > 0.67 → ``short_line_ratio``;
* characters in repeated lines / characters (newlines excluded) > 0.01 → ``char_dup_ratio``;
* newlines / words > 0.3 → ``list_ratio`` (words: whitespace-separated).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lmforge import FilterResult

C4_END = (".", "?", "!", '"')
ELLIPSIS = ("...", "…")
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
          "use cookies")
CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
SENTENCE_END = re.compile(r"[.!?]+(?=[\s\"'”’)\]]|$)")
#: Marks that end a sentence in the scripts FineWeb's rule is meant for (Latin, CJK,
#: Devanagari, Arabic, Ethiopic ...), closing quotes and brackets after them included.
TERMINAL = tuple(".!?…。！？।॥؟۔።፧」』\"'”’)")


@dataclass(frozen=True)
class C4Filter:
    terminal_punctuation: bool = True
    min_words_per_line: int | None = 3
    max_word_length: int | None = 1000
    javascript: bool = True
    policy: bool = True
    remove_citations: bool = True
    min_sentences: int | None = 5
    lorem_ipsum: bool = True
    curly_bracket: bool = True
    name: str = "c4"

    def __call__(self, text: str) -> FilterResult:
        lower = text.lower()
        if self.lorem_ipsum and "lorem ipsum" in lower:
            return FilterResult(keep=False, reason="lorem_ipsum")
        if self.curly_bracket and "{" in text:
            return FilterResult(keep=False, reason="curly_bracket")
        kept: list[str] = []
        removed: dict[str, int] = {}
        changed = False
        for raw in text.splitlines():
            line = raw.strip()
            if self.remove_citations and "[" in line:
                line = CITATION.sub("", line)
            reason = self.line_problem(line)
            if reason:
                removed[reason] = removed.get(reason, 0) + 1
                continue
            changed |= line != raw
            kept.append(line)
        if not kept:
            return FilterResult(keep=False, reason="no_lines")
        new = "\n".join(kept)
        if self.min_sentences is not None and len(SENTENCE_END.findall(new)) < self.min_sentences:
            return FilterResult(keep=False, reason="too_few_sentences")
        if not removed and not changed and new == text:
            return FilterResult.kept()
        return FilterResult(keep=True, reason="lines_removed", text=new, counts=removed or None)

    def line_problem(self, line: str) -> str | None:
        """The rule that drops ``line`` (already stripped), or ``None``."""
        if self.terminal_punctuation and (not line.endswith(C4_END) or line.endswith(ELLIPSIS)):
            return "no_terminal_punct"
        words = line.split()
        if self.min_words_per_line is not None and len(words) < self.min_words_per_line:
            return "too_few_words"
        if self.max_word_length is not None and any(len(w) > self.max_word_length
                                                    for w in words):
            return "long_word"
        lower = line.lower()
        if self.javascript and "javascript" in lower:
            return "javascript"
        if self.policy and any(p in lower for p in POLICY):
            return "policy"
        return None


@dataclass(frozen=True)
class FineWebFilter:
    min_line_punct_fraction: float | None = 0.12
    max_short_line_fraction: float | None = 0.67
    short_line_chars: int = 30
    max_duplicate_line_char_fraction: float | None = 0.01
    max_newline_word_ratio: float | None = 0.3
    name: str = "fineweb"

    def failed_check(self, text: str) -> str | None:
        """The first failing rule's reason, or ``None``."""
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if not lines:
            return "empty"
        n = len(lines)
        if self.min_line_punct_fraction is not None:
            ending = sum(ln.rstrip().endswith(TERMINAL) for ln in lines)
            if ending / n < self.min_line_punct_fraction:
                return "line_punct_ratio"
        if self.max_short_line_fraction is not None:
            short = sum(len(ln) <= self.short_line_chars for ln in lines)
            if short / n > self.max_short_line_fraction:
                return "short_line_ratio"
        if self.max_duplicate_line_char_fraction is not None:
            seen: set[str] = set()
            dup = 0
            for ln in lines:
                if ln in seen:
                    dup += len(ln)
                else:
                    seen.add(ln)
            chars = len(text) - text.count("\n")
            if chars and dup / chars > self.max_duplicate_line_char_fraction:
                return "char_dup_ratio"
        if self.max_newline_word_ratio is not None:
            words = len(text.split())
            if words and text.count("\n") / words > self.max_newline_word_ratio:
                return "list_ratio"
        return None

    def __call__(self, text: str) -> FilterResult:
        reason = self.failed_check(text)
        return FilterResult.kept() if reason is None else FilterResult(keep=False, reason=reason)


def c4_factory(config: Any) -> C4Filter:
    return C4Filter(**config.model_dump(exclude={"type"}))


def fineweb_factory(config: Any) -> FineWebFilter:
    return FineWebFilter(**config.model_dump(exclude={"type"}))
