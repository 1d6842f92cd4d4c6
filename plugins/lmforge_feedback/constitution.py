"""Constitutions: a versioned YAML list of principles (light: pydantic, PyYAML, lmforge).

A constitution file looks like::

    format: 1                 # the file format (this module reads format 1)
    name: example
    version: "2026.1"         # yours: recorded in every row made under it
    principles:
      - id: harmless
        critique: "Identify ways in which the assistant's last response is harmful ..."
        revision: "Rewrite the assistant's response to remove everything harmful ..."
        comparison: "Which response is less harmful?"   # the judge's question (RL-CAI)
        weight: 1.0           # relative chance of being sampled (default 1)

It is read with the spec's own bounded safe loader (:func:`lmforge.spec.source.load_yaml`) and
validated by :class:`Constitution` (unknown keys are errors); a problem is a ``ValueError``
whose message names the file, the line and the key path.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

FORMAT = 1


class Principle(BaseModel):
    """One principle: how to critique, how to revise, and what to ask a judge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, description="Unique name, recorded per row.")
    critique: str = Field(min_length=1, description="Critique request (SL-CAI), a user turn.")
    revision: str = Field(min_length=1, description="Revision request (SL-CAI), a user turn.")
    comparison: str | None = Field(default=None, min_length=1, description="The question a "
                                   "judge answers when comparing two responses (RL-CAI, "
                                   "ai-preferences); required for those.")
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False,
                          description="Relative sampling weight.")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError(f"principle id {v!r} may only hold letters, digits, '_', '.', '-'")
        return v


class Constitution(BaseModel):
    """A versioned list of principles."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = Field(description="File format version; this release reads 1.")
    name: str = Field(min_length=1, description="Name of the constitution.")
    version: str = Field(min_length=1, description="Your version of it (recorded per row).")
    description: str = Field(default="", description="Free text.")
    principles: list[Principle] = Field(min_length=1, description="The principles.")

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v: object) -> object:
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("principles")
    @classmethod
    def _unique(cls, v: list[Principle]) -> list[Principle]:
        seen: set[str] = set()
        for p in v:
            if p.id in seen:
                raise ValueError(f"principle id {p.id!r} appears twice; ids must be unique")
            seen.add(p.id)
        return v

    @property
    def label(self) -> str:
        """``name@version``, recorded with every row."""
        return f"{self.name}@{self.version}"

    def sample(self, seed: int, row: int, round_: int = 0,
               need: str | None = None) -> Principle:
        """The principle for ``row`` (and ``round_``): a weighted draw from a generator seeded
        by the three numbers only, so a row gets the same principle in any run or resume.
        ``need``: only principles with this field set (e.g. ``"comparison"``)."""
        pool = [p for p in self.principles if need is None or getattr(p, need) is not None]
        if not pool:
            raise ValueError(f"constitution {self.label}: no principle has {need!r}")
        rng = random.Random(f"{seed}:{row}:{round_}")
        return rng.choices(pool, weights=[p.weight for p in pool], k=1)[0]

    def require(self, field: str, path: str, why: str) -> None:
        """A ValueError naming the principles that lack ``field`` (needed for ``why``)."""
        missing = [p.id for p in self.principles if getattr(p, field) is None]
        if missing:
            raise ValueError(f"{path}: principle(s) {missing} have no {field!r}, which {why} "
                             f"needs; add '{field}: <question>' to each")


def load_constitution(path: str | Path) -> Constitution:
    """Read and validate a constitution; ``ValueError`` naming file, line and key on a problem."""
    from lmforge.errors import SpecError
    from lmforge.spec.source import format_path, load_spec_file

    try:
        located = load_spec_file(path)
    except SpecError as exc:
        problems = "; ".join(issue.format() for issue in exc.issues)
        raise ValueError(f"constitution {path}: {problems}") from None
    if not isinstance(located.data, dict):
        raise ValueError(f"{path}:1: a constitution is a mapping with format, name, version and "
                         f"principles (see docs/plugins/feedback.md)")
    try:
        return Constitution.model_validate(located.data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            file, line = located.where(loc)
            where = f"{file}:{line}" if line else file
            lines.append(f"{where}: {format_path(loc) or '<top>'}: {err['msg']}")
        raise ValueError("bad constitution: " + "; ".join(lines)) from None
