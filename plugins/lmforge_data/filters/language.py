"""The ``language`` filter: language identification with lingua-language-detector.

lingua ships its n-gram models inside the wheel (nothing is downloaded). For each document the
detector gives every candidate language a relative confidence (they sum to 1); the top one is
the document's language. The document is dropped when that language is not one of
``languages`` (reason ``language``) or its confidence is under the language's threshold
(reason ``low_score``). Kept documents carry ``language`` (ISO 639-1) and ``language_score``
as metadata. Text with no letters gets no language (reason ``no_language``).

The detector (a Rust object, not picklable) is built on first use in each process; with all
75 languages in high-accuracy mode it takes about 1 GB of memory once loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmforge import FilterResult


@dataclass
class LanguageFilter:
    """See the module docstring and :class:`lmforge_data.filter_config.LanguageFilterConfig`."""

    languages: frozenset[str] | None = None
    min_score: float = 0.5
    thresholds: dict[str, float] = field(default_factory=dict)
    candidates: tuple[str, ...] | None = None
    low_accuracy: bool = False
    max_chars: int = 2000
    name: str = "language"
    emits_metadata = True  # class attribute: the stage stores the metadata column
    _detector: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_detector"] = None  # rebuilt in the worker
        return state

    def detector(self) -> Any:
        if self._detector is None:
            from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

            if self.candidates is None:
                builder = LanguageDetectorBuilder.from_all_languages()
            else:
                langs = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper()))
                         for c in self.candidates]
                builder = LanguageDetectorBuilder.from_languages(*langs)
            if self.low_accuracy:
                builder = builder.with_low_accuracy_mode()
            self._detector = builder.build()
        return self._detector

    def detect(self, text: str) -> tuple[str | None, float]:
        """``(ISO 639-1 code, confidence)`` of ``text``'s most likely language, or
        ``(None, 0.0)`` when lingua finds none."""
        if len(text) > self.max_chars:
            cut = text.rfind(" ", 0, self.max_chars)
            text = text[:cut if cut > self.max_chars // 2 else self.max_chars]
        values = self.detector().compute_language_confidence_values(text)
        if not values or values[0].value <= 0.0:
            return None, 0.0
        top = values[0]
        return top.language.iso_code_639_1.name.lower(), float(top.value)

    def __call__(self, text: str) -> FilterResult:
        code, score = self.detect(text)
        if code is None:
            return FilterResult(keep=False, reason="no_language")
        meta = {"language": code, "language_score": round(score, 4)}
        if self.languages is not None and code not in self.languages:
            return FilterResult(keep=False, reason="language", metadata=meta)
        if score < self.thresholds.get(code, self.min_score):
            return FilterResult(keep=False, reason="low_score", metadata=meta)
        return FilterResult(keep=True, metadata=meta)


def factory(config: Any) -> LanguageFilter:
    return LanguageFilter(
        languages=None if config.languages is None else frozenset(config.languages),
        min_score=config.min_score, thresholds=dict(config.thresholds),
        candidates=None if config.candidates is None else tuple(config.candidates),
        low_accuracy=config.low_accuracy, max_chars=config.max_chars)
