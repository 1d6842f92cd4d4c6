"""The ``acme-blocklist`` filter (imported only when a pipeline builds it)."""

from __future__ import annotations

import re
from typing import Any

from lmforge import FilterResult


class BlocklistFilter:
    """Counts matches of blocked words and patterns; drops a document at ``min_hits`` or more.

    ``factory(config)`` as for every lmforge filter. The decision's ``reason`` is the blocked
    term (the word as configured, or the pattern) with the most hits (ties: the first
    configured; the curate stage counts it as ``acme-blocklist:<term>``), and ``counts`` holds
    the hits of every matched term. Only plain values and compiled regexes are kept, so the
    filter pickles into worker processes (``num_proc > 1``).
    """

    name = "acme-blocklist"

    def __init__(self, config: Any) -> None:
        flags = 0 if config.case_sensitive else re.IGNORECASE
        self.min_hits = int(config.min_hits)
        # One alternation for all words (longest first so phrases win over their prefixes);
        # (?<!\w) / (?!\w) instead of \b so words that start or end with symbols still work.
        words = sorted(dict.fromkeys(config.words), key=len, reverse=True)
        self._terms: list[str] = list(dict.fromkeys(config.words))
        self._case_sensitive = bool(config.case_sensitive)
        self._word_of = {self._fold(w): w for w in config.words}
        self._words = (re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words)
                                  + r")(?!\w)", flags) if words else None)
        self._patterns = [(p, re.compile(p, flags)) for p in config.patterns]
        self._terms += [p for p, _ in self._patterns]

    def _fold(self, s: str) -> str:
        return s if self._case_sensitive else s.lower()

    def hits(self, text: str) -> dict[str, int]:
        """Blocked term -> number of matches in ``text`` (terms without matches left out)."""
        counts: dict[str, int] = {}
        if self._words is not None:
            for m in self._words.finditer(text):
                word = self._word_of.get(self._fold(m.group(0)), m.group(0))
                counts[word] = counts.get(word, 0) + 1
        for label, pattern in self._patterns:
            n = sum(1 for _ in pattern.finditer(text))
            if n:
                counts[label] = counts.get(label, 0) + n
        return counts

    def __call__(self, text: str) -> FilterResult:
        counts = self.hits(text)
        if sum(counts.values()) < self.min_hits:
            return FilterResult.kept()
        top = max(counts, key=lambda t: (counts[t], -self._terms.index(t)))
        return FilterResult(keep=False, reason=top, counts=counts)
