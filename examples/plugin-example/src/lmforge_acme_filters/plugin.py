"""Registration of the ``acme-blocklist`` filter: config model and ``lmforge_components``.

Imported by lmforge at discovery for every command, so only lmforge and pydantic are imported;
the implementation (:mod:`lmforge_acme_filters.blocklist`) is named as a string.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from lmforge import Component, Config, hookimpl

COMPONENT = "acme-blocklist"


class BlocklistConfig(Config):
    """Drop documents that contain blocked words or match blocked regular expressions."""

    words: list[str] = Field(
        default_factory=list,
        description="Blocked words or phrases, matched as whole words (not inside a longer "
                    "word): 'casino' matches 'Casino night' but not 'casinos'.")
    patterns: list[str] = Field(
        default_factory=list,
        description=r"Blocked Python regular expressions, searched anywhere in the text, e.g. "
                    r"'buy\s+now'.")
    case_sensitive: bool = Field(
        default=False, description="Match words and patterns case-sensitively.")
    min_hits: int = Field(
        default=1, ge=1,
        description="Drop a document only when words and patterns match at least this many "
                    "times in total (occurrences, not distinct terms).")

    @field_validator("words")
    @classmethod
    def _words_not_blank(cls, words: list[str]) -> list[str]:
        blank = [i for i, w in enumerate(words) if not w.strip()]
        if blank:
            raise ValueError(f"words[{blank[0]}] is empty; remove it")
        return [w.strip() for w in words]

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for i, p in enumerate(patterns):
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"patterns[{i}] {p!r} is not a valid regular expression: "
                                 f"{exc}") from None
        return patterns

    @model_validator(mode="after")
    def _something_to_block(self) -> BlocklistConfig:
        if not self.words and not self.patterns:
            raise ValueError("give at least one of 'words' or 'patterns'")
        return self


@hookimpl
def lmforge_components() -> list[Component]:
    return [
        Component(kind="filter", name=COMPONENT, config=BlocklistConfig,
                  factory="lmforge_acme_filters.blocklist:BlocklistFilter",
                  description="Drop documents containing blocked words or regexes "
                              "(case-insensitive by default, with a min_hits threshold)."),
    ]
