"""Config models of the language, quality, perplexity, toxicity, C4 and FineWeb filters
(pydantic only: imported at discovery).

A filter whose config defines ``requires() -> dict[str, str]`` reads stage inputs (input name
-> artifact kind): the ``curate`` stage then takes those inputs (see
:func:`lmforge_data.filter_inputs.curate_inputs`) and hands the wired artifacts to the filter's
``bind(inputs)`` before any document is filtered.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from lmforge import Config, ConfigValueError
from lmforge.specpath import SpecPath

#: ISO 639-1 codes of the languages lingua-language-detector 2.x knows.
LINGUA_LANGUAGES = frozenset(
    "af ar az be bg bn bs ca cs cy da de el en eo es et eu fa fi fr ga gu he hi hr hu hy id is "
    "it ja ka kk ko la lg lt lv mi mk mn mr ms nb nl nn pa pl pt ro ru sk sl sn so sq sr st sv "
    "sw ta te th tl tn tr ts uk ur vi xh yo zh zu".split())


def _check_codes(codes: Any) -> Any:
    for i, code in enumerate(codes or ()):
        if code not in LINGUA_LANGUAGES:
            raise ConfigValueError(f"{code!r} is not an ISO 639-1 code lingua detects; known: "
                                   f"{', '.join(sorted(LINGUA_LANGUAGES))}", (i,))
    return codes


# --- language ---------------------------------------------------------------------------------
class LanguageFilterConfig(Config):
    """Detect each document's language with lingua (models ship in the wheel; nothing is
    downloaded); keep the documents of ``languages`` whose confidence reaches the threshold."""

    languages: list[str] | None = Field(default=None, description="ISO 639-1 codes of the "
                                        "languages to keep, e.g. [en, de]. Default: keep every "
                                        "language (the filter then only labels documents and "
                                        "drops those under the confidence threshold).")
    min_score: float = Field(default=0.5, ge=0.0, le=1.0, description="Minimum confidence "
                             "(lingua's relative confidence of the top language, 0..1) to keep "
                             "a document. Default 0.5.")
    thresholds: dict[str, float] = Field(default_factory=dict, description="Per-language "
                                         "minimum confidence overriding min_score, e.g. "
                                         "{en: 0.8, nn: 0.3} (close languages such as nb/nn "
                                         "or hr/sr/bs share confidence, so need lower ones).")
    candidates: list[str] | None = Field(default=None, description="Languages the detector "
                                         "chooses among (ISO 639-1). Default: all 75 lingua "
                                         "knows. Fewer candidates are faster and use less "
                                         "memory, but text in a language left out is assigned "
                                         "to the closest candidate (with lower confidence).")
    low_accuracy: bool = Field(default=False, description="lingua's low-accuracy mode: "
                               "trigrams only, about 7x faster, less reliable under ~120 "
                               "characters.")
    max_chars: int = Field(default=2000, ge=20, description="Detect on the first max_chars "
                           "characters (cut at a space) of each document. Default 2000.")

    @field_validator("languages", "candidates")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        return _check_codes(value)

    @field_validator("thresholds")
    @classmethod
    def _threshold_codes(cls, value: dict[str, float]) -> dict[str, float]:
        for code, v in value.items():
            if code not in LINGUA_LANGUAGES:
                raise ConfigValueError(f"{code!r} is not an ISO 639-1 code lingua detects",
                                       (code,))
            if not 0.0 <= v <= 1.0:
                raise ConfigValueError(f"threshold {v} is not in [0, 1]", (code,))
        return value

    @model_validator(mode="after")
    def _kept_are_candidates(self) -> Any:
        if self.candidates is not None and self.languages is not None:
            missing = [c for c in self.languages if c not in self.candidates]
            if missing:
                raise ConfigValueError(f"languages {missing} are not among the candidates, so "
                                       f"no document would be detected as them; add them to "
                                       f"candidates", ("candidates",))
        if self.candidates is not None and len(self.candidates) < 2:
            raise ConfigValueError("give at least two candidates (with one, every document "
                                   "is that language)", ("candidates",))
        return self


# --- classifier-scored filters -------------------------------------------------------------------
class ClassifierFilterConfig(Config):
    """Score each document with a ``classifier`` artifact (from a ``classifier`` stage) and keep
    it when the score (probability of the positive class) is within bounds."""

    input: str = Field(default="classifier", description="Name of the curate stage input that "
                       "holds the classifier artifact: the stage then takes "
                       "'inputs: {<input>: <classifier stage id>}'.")
    min_score: float | None = Field(default=0.5, ge=0.0, le=1.0, description="Drop documents "
                                    "scoring below this (reason 'low_score'). Default 0.5.")
    max_score: float | None = Field(default=None, ge=0.0, le=1.0, description="Drop documents "
                                    "scoring above this (reason 'high_score'), e.g. for a "
                                    "toxicity classifier. Default: no bound.")
    metadata_key: str = Field(default="quality_score", min_length=1, description="Metadata "
                              "key the score is stored under.")

    def requires(self) -> dict[str, str]:
        return {self.input: "classifier"}

    @model_validator(mode="after")
    def _bounds(self) -> Any:
        if self.min_score is not None and self.max_score is not None \
                and self.min_score > self.max_score:
            raise ConfigValueError(f"min_score {self.min_score} > max_score {self.max_score}: "
                                   f"every document would be dropped", ("min_score",))
        return self


class PerplexityFilterConfig(Config):
    """CCNet-style: the perplexity of each document under a small LM (a ``model`` artifact and
    its ``tokenizer``) as metadata, a head/middle/tail bucket, and an optional bound."""

    model: str = Field(default="model", description="Curate stage input holding the model.")
    tokenizer: str = Field(default="tokenizer", description="Curate stage input holding the "
                           "model's tokenizer.")
    max_perplexity: float | None = Field(default=None, gt=1.0, description="Drop documents "
                                         "above this perplexity (reason 'perplexity'). "
                                         "Default: keep all (label only).")
    buckets: list[float] = Field(default_factory=list, description="Increasing perplexity "
                                 "cut-offs that split documents into buckets, e.g. the 33rd "
                                 "and 66th percentiles of a reference sample as in CCNet "
                                 "(head < p33 <= middle < p66 <= tail). Stored as metadata "
                                 "'perplexity_bucket' (0 = head). Default: none.")
    keep_buckets: list[int] | None = Field(default=None, description="Keep only documents in "
                                           "these buckets (0 = head), e.g. [0, 1] drops the "
                                           "tail. Default: all.")
    max_tokens: int = Field(default=512, ge=2, le=1_000_000, description="Score the first "
                            "max_tokens tokens of each document.")
    batch_size: int = Field(default=8, ge=1, le=4096, description="Documents per forward pass "
                            "(used when the filter scores a chunk).")

    def requires(self) -> dict[str, str]:
        return {self.model: "model", self.tokenizer: "tokenizer"}

    @model_validator(mode="after")
    def _buckets(self) -> Any:
        if any(b <= a for a, b in zip(self.buckets, self.buckets[1:])):
            raise ConfigValueError("bucket cut-offs must increase", ("buckets",))
        if self.keep_buckets is not None:
            bad = [b for b in self.keep_buckets if not 0 <= b <= len(self.buckets)]
            if bad:
                raise ConfigValueError(f"buckets {bad} do not exist: with {len(self.buckets)} "
                                       f"cut-offs they are 0..{len(self.buckets)}",
                                       ("keep_buckets",))
        return self


# --- toxicity -------------------------------------------------------------------------------------
class ToxicityFilterConfig(Config):
    """Word-list/regex toxicity scorer (list format in docs/plugins/data.md), optionally with a
    toxicity ``classifier`` artifact as a second opinion."""

    word_list: SpecPath | None = Field(default=None, description="A word-list file (format: "
                                       "'[category]' headers, one term per line, 'word*' for a "
                                       "prefix, 're:' for a regex, '#' comments). Default: the "
                                       "small English list shipped with lmforge.")
    threshold: float = Field(default=0.0, ge=0.0, le=1.0, description="A document is dropped "
                             "when, for some category, matches / words exceeds this. Default "
                             "0: any match drops it (C4's bad-words rule).")
    thresholds: dict[str, float] = Field(default_factory=dict, description="Per-category "
                                         "thresholds overriding 'threshold', e.g. "
                                         "{profanity: 0.01}.")
    categories: list[str] | None = Field(default=None, description="Only score these "
                                         "categories of the list. Default: all.")
    classifier: str | None = Field(default=None, description="Also score with the classifier "
                                   "artifact of this curate stage input (positive class = "
                                   "toxic).")
    max_classifier_score: float = Field(default=0.5, ge=0.0, le=1.0, description="With "
                                        "'classifier': drop documents the classifier scores "
                                        "above this (reason 'classifier').")

    def requires(self) -> dict[str, str]:
        return {self.classifier: "classifier"} if self.classifier else {}

    @field_validator("thresholds")
    @classmethod
    def _in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for k, v in value.items():
            if not 0.0 <= v <= 1.0:
                raise ConfigValueError(f"threshold {v} is not in [0, 1]", (k,))
        return value


# --- line filters -----------------------------------------------------------------------------
class C4FilterConfig(Config):
    """C4's clean-up (Raffel et al. 2020, the TFDS ``c4`` builder): drop bad lines, then drop
    the document when too little is left or it trips a page rule."""

    terminal_punctuation: bool = Field(default=True, description="Drop lines that do not end "
                                       "in terminal punctuation (. ! ? \" or an ellipsis).")
    min_words_per_line: int | None = Field(default=3, ge=1, description="Drop lines with fewer "
                                           "words. Default 3.")
    max_word_length: int | None = Field(default=1000, ge=1, description="Drop lines with a "
                                        "longer word. Default 1000.")
    javascript: bool = Field(default=True, description="Drop lines that mention 'javascript'.")
    policy: bool = Field(default=True, description="Drop lines with boilerplate: 'terms of "
                         "use', 'privacy policy', 'cookie policy', 'uses cookies', 'use of "
                         "cookies', 'use cookies'.")
    remove_citations: bool = Field(default=True, description="Remove Wikipedia-style "
                                   "citation marks ([1], [edit], [citation needed]) from lines.")
    min_sentences: int | None = Field(default=5, ge=1, description="Drop the document when the "
                                      "kept lines hold fewer sentences. Default 5.")
    lorem_ipsum: bool = Field(default=True, description="Drop documents containing 'lorem "
                              "ipsum'.")
    curly_bracket: bool = Field(default=True, description="Drop documents containing '{' "
                                "(code, templates).")


class FineWebFilterConfig(Config):
    """FineWeb's extra quality rules (Penedo et al. 2024; datatrove ``FineWebQualityFilter``)."""

    min_line_punct_fraction: float | None = Field(default=0.12, ge=0.0, le=1.0, description=
                                                  "Drop when fewer lines than this fraction "
                                                  "end in terminal punctuation. Default 0.12.")
    max_short_line_fraction: float | None = Field(default=0.67, ge=0.0, le=1.0, description=
                                                  "Drop when more lines than this fraction "
                                                  "are short. Default 0.67.")
    short_line_chars: int = Field(default=30, ge=1, description="A line of at most this many "
                                  "characters is short. Default 30.")
    max_duplicate_line_char_fraction: float | None = Field(default=0.01, ge=0.0, le=1.0,
                                                           description="Drop when repeated "
                                                           "lines hold more than this fraction "
                                                           "of the characters. Default 0.01.")
    max_newline_word_ratio: float | None = Field(default=0.3, ge=0.0, description="Drop when "
                                                 "newlines / words exceeds this (lists of "
                                                 "fragments). Default 0.3.")
