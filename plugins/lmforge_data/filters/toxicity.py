"""The ``toxicity`` filter: a word-list/regex scorer, optionally with a classifier.

The list format is documented in ``wordlists/toxicity_en.txt`` (the default list) and in
docs/plugins/data.md: ``[category]`` headers, one term per line (whole words, case-insensitive),
``term*`` for a prefix, ``re:`` for a regex, ``#`` comments. A category's score is its number
of matches divided by the document's number of whitespace-separated words; the document is
dropped (reason: the category's name) when a score exceeds the category's threshold. Scores of
categories that matched are kept as metadata (``toxicity``: {category: score}). With a
classifier input the positive-class probability is also computed (metadata
``toxicity_score``) and a document above ``max_classifier_score`` is dropped (reason
``classifier``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge import FilterResult, StageInputError

DEFAULT_LIST = Path(__file__).with_name("wordlists") / "toxicity_en.txt"


def parse_word_list(path: Path) -> dict[str, list[str]]:
    """category -> regex pieces, in file order; errors name the file and line."""
    try:
        lines = Path(path).read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise StageInputError(f"cannot read word list {path}: {exc}") from None
    out: dict[str, list[str]] = {}
    category: str | None = None
    for no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            category = line[1:-1].strip()
            if not re.fullmatch(r"[\w-]+", category):
                raise StageInputError(f"{path}:{no}: category name {category!r} must be letters, "
                                      f"digits, '_' or '-'")
            out.setdefault(category, [])
            continue
        if category is None:
            raise StageInputError(f"{path}:{no}: term {line!r} comes before any [category] "
                                  f"header; start the file with e.g. [profanity]")
        if line.startswith("re:"):
            piece = line[3:]
            try:
                re.compile(piece)
            except re.error as exc:
                raise StageInputError(f"{path}:{no}: bad regular expression {piece!r}: {exc}"
                                      ) from None
        else:
            prefix = line.endswith("*")
            words = line.rstrip("*").split()
            if not words:
                raise StageInputError(f"{path}:{no}: empty term")
            piece = r"\b" + r"\s+".join(re.escape(w) for w in words) + (r"\w*" if prefix
                                                                        else r"\b")
        out[category].append(f"(?:{piece})")
    if not any(out.values()):
        raise StageInputError(f"word list {path} has no terms")
    return out


@dataclass
class ToxicityFilter:
    patterns: dict[str, re.Pattern[str]]
    threshold: float = 0.0
    thresholds: dict[str, float] = field(default_factory=dict)
    classifier_input: str | None = None
    max_classifier_score: float = 0.5
    name: str = "toxicity"
    emits_metadata = True
    classifier: Any = field(default=None, repr=False)

    def bind(self, inputs: Mapping[str, Any]) -> None:
        from lmforge_data.classifier import TextClassifier

        if self.classifier_input:
            self.classifier = TextClassifier.load(inputs[self.classifier_input].path)

    def scores(self, text: str) -> dict[str, float]:
        """category -> matches / words, for categories with at least one match."""
        words = len(text.split())
        out = {}
        for cat, pattern in self.patterns.items():
            n = sum(1 for _ in pattern.finditer(text))
            if n:
                out[cat] = n / max(words, 1)
        return out

    def __call__(self, text: str) -> FilterResult:
        scores = self.scores(text)
        meta: dict[str, Any] = {"toxicity": {k: round(v, 5) for k, v in scores.items()}} \
            if scores else {}
        for cat, score in scores.items():
            if score > self.thresholds.get(cat, self.threshold):
                return FilterResult(keep=False, reason=cat, metadata=meta)
        if self.classifier_input:
            if self.classifier is None:
                raise RuntimeError("toxicity filter used before bind(): its classifier input "
                                   f"{self.classifier_input!r} was not loaded")
            p = self.classifier.score(text)
            meta["toxicity_score"] = round(p, 4)
            if p > self.max_classifier_score:
                return FilterResult(keep=False, reason="classifier", metadata=meta)
        return FilterResult(keep=True, metadata=meta or None)


def factory(config: Any) -> ToxicityFilter:
    path = Path(config.word_list) if config.word_list else DEFAULT_LIST
    parsed = parse_word_list(path)
    if config.categories is not None:
        unknown = sorted(set(config.categories) - set(parsed))
        if unknown:
            raise StageInputError(f"toxicity filter: categories {unknown} are not in {path} "
                                  f"(it has {sorted(parsed)})")
        parsed = {k: v for k, v in parsed.items() if k in config.categories}
    unknown = sorted(set(config.thresholds) - set(parsed))
    if unknown:
        raise StageInputError(f"toxicity filter: thresholds name categories {unknown} that "
                              f"{path} does not have (it has {sorted(parsed)})")
    patterns = {k: re.compile("|".join(v), re.IGNORECASE) for k, v in parsed.items() if v}
    return ToxicityFilter(patterns=patterns, threshold=config.threshold,
                          thresholds=dict(config.thresholds),
                          classifier_input=config.classifier,
                          max_classifier_score=config.max_classifier_score)
