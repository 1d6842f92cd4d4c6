"""Config models of the rating plugin (light: pydantic and the core only)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from lmforge import Config, Slot
from lmforge.specpath import RELATIVE_HINT, SpecPath, check_files


def _must_exist(path: str | None, what: str, info: ValidationInfo) -> None:
    from pathlib import Path

    if path is not None and check_files(info) and not Path(path).exists():
        raise PydanticCustomError("missing_file", "{message}", {
            "message": f"{what} {path} does not exist ({RELATIVE_HINT})"})


class HumanPreferencesConfig(Config):
    """The ``human-preferences`` source: raters' votes from ``lmforge rate`` as preference
    records (for a ``curate`` stage with ``format: preference``)."""

    pairs: SpecPath = Field(description="The pairs that were rated: the JSONL file (or "
                            "dataset/preference folder) given to `lmforge rate`.")
    votes: SpecPath = Field(description="The vote log `lmforge rate` wrote (JSONL). The stage "
                            "key holds this path, not the file's content: after more votes, "
                            "rerun the curate stage with --force.")
    min_votes: int = Field(default=1, ge=1, description="Pairs with fewer labels (answers "
                           "other than skip) are dropped.")
    min_margin: int = Field(default=1, ge=1, description="The majority label must lead the "
                            "next one by at least this many votes (1: a strict majority; a "
                            "split vote is dropped).")
    raters: list[str] | None = Field(default=None, max_length=10_000,
                                     description="Use only these raters' votes (default: all).")

    @model_validator(mode="after")
    def _files(self, info: ValidationInfo) -> Any:
        _must_exist(self.pairs, "pairs file", info)
        _must_exist(self.votes, "vote log", info)
        return self


class ArenaConfig(Config):
    """The ``evaluate/arena`` stage: candidates answer prompts, pairs are judged (a judge
    and/or human votes), Bradley–Terry ratings on the Elo scale with bootstrap intervals."""

    judge: Annotated[Any, Slot("judge")] | None = Field(
        default=None, description="The judge that compares two answers, e.g. {type: "
        "model-prompted} (its model is the 'judge' input). Leave out to use only votes.")
    principle: str | None = Field(default=None, max_length=4000, description="The question "
                                  "the judge is asked (default: the judge's own).")
    votes: SpecPath | None = Field(default=None, description="A vote log from `lmforge rate` "
                                   "on this stage's pairs.jsonl (from an earlier run): human "
                                   "votes join the judge's (or replace them without a judge).")
    split: str = Field(default="heldout", description="Split of the prompts dataset to use.")
    max_prompts: int = Field(default=32, ge=1, le=100_000, description="At most this many "
                             "prompts (the first of the split).")
    max_new_tokens: int = Field(default=64, ge=1, le=32_768, description="Longest answer.")
    temperature: float = Field(default=0.0, ge=0.0, description="0: greedy answers.")
    top_k: int = Field(default=0, ge=0, description="Sample from the k likeliest tokens "
                       "(0: all).")
    backend: Annotated[Any, Slot("backend")] = Field(
        default={"type": "local"}, description="Where the candidates run (one at a time).")
    batch_size: int = Field(default=8, ge=1, le=4096, description="Prompts per generation "
                            "batch and pairs per judge call.")
    ridge: float = Field(default=0.01, gt=0.0, le=10.0, description="L2 penalty on the "
                         "log-strengths: keeps ratings finite when a candidate wins or loses "
                         "every comparison; small enough not to move well-measured ratings.")
    bootstrap: int = Field(default=1000, ge=0, le=100_000, description="Bootstrap rounds for "
                           "the confidence intervals (comparisons resampled with "
                           "replacement); 0: no intervals.")
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0, description="Interval coverage.")
    anchor: Literal["first", "mean"] = Field(default="first", description="'first': the first "
                                             "candidate is rated anchor_rating; 'mean': the "
                                             "mean rating is anchor_rating.")
    anchor_rating: float = Field(default=1000.0, description="The anchor's rating.")
    seed: int = Field(default=0, description="Seed of sampling and of the bootstrap.")

    @model_validator(mode="after")
    def _judged_somehow(self, info: ValidationInfo) -> Any:
        if self.judge is None and self.votes is None:
            raise ValueError("the arena needs a judge, human votes (votes:), or both")
        _must_exist(self.votes, "vote log", info)
        return self

    def check_inputs(self, inputs: dict[str, Any]) -> None:
        cands = inputs.get("candidates", [])
        if len(cands) < 2:
            raise ValueError(f"an arena compares at least two candidates; "
                             f"inputs.candidates lists {len(cands)}")
