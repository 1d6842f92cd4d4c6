"""Config models of the ``classifier`` and ``mix`` stages (pydantic only: imported at
discovery)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from lmforge import Config, ConfigValueError

DATASET_KINDS = ("dataset/text", "dataset/chat", "dataset/preference",
                 "dataset/multiple-choice")


class ClassifierStageConfig(Config):
    """``train/classifier``: fit a fastText-style classifier on the user's positive and
    negative examples (two dataset inputs) and write a ``classifier`` artifact."""

    hash_bits: int = Field(default=20, ge=10, le=26, description="Features are hashed into "
                           "2**hash_bits buckets per feature family (word, char). Default 20 "
                           "(4 MiB of float32 weights per family).")
    word_ngrams: int = Field(default=2, ge=1, le=5, description="Word n-grams of length "
                             "1..word_ngrams (fastText's -wordNgrams). Default 2.")
    char_ngrams: tuple[int, int] | None = Field(default=(3, 5), description="Character n-gram "
                                                "lengths [min, max] inside word boundaries "
                                                "(fastText's -minn/-maxn); null: words only. "
                                                "Default [3, 5].")
    lowercase: bool = Field(default=True, description="Lower-case text before hashing.")
    max_chars: int = Field(default=4000, ge=16, description="Use the first max_chars "
                           "characters of each document (training and scoring).")
    epochs: int = Field(default=10, ge=1, le=1000, description="SGD passes over the examples.")
    alpha: float = Field(default=1e-6, gt=0.0, le=1.0, description="L2 regularisation "
                         "strength of the logistic regression. Default 1e-6.")
    split: str = Field(default="train", description="Split of both inputs to train on.")
    eval_split: str | None = Field(default="heldout", description="Split of both inputs to "
                                   "report accuracy and AUC on (skipped where absent); null: "
                                   "none.")
    max_documents: int | None = Field(default=None, ge=1, description="At most this many "
                                      "training documents per class. Default: all.")
    labels: tuple[str, str] = Field(default=("negative", "positive"), description="Names of "
                                    "the classes [negative, positive], stored in the "
                                    "artifact (e.g. [clean, toxic]).")

    @model_validator(mode="after")
    def _char_range(self) -> Any:
        if self.char_ngrams is not None:
            lo, hi = self.char_ngrams
            if not 1 <= lo <= hi <= 10:
                raise ConfigValueError("char_ngrams must be [min, max] with 1 <= min <= max "
                                       "<= 10", ("char_ngrams",))
        return self


class MixSourceConfig(Config):
    """One input of a mix: its share of the output, or its own budget."""

    weight: float | None = Field(default=None, gt=0.0, description="Share of the output "
                                 "(weights are normalised over the sources that have one).")
    budget: int | None = Field(default=None, ge=1, description="Exact amount of this source in "
                               "the output, in the stage's unit (instead of a weight).")
    max_epochs: float | None = Field(default=None, gt=0.0, description="Never repeat this "
                                     "source more than this many times; the mix then takes "
                                     "less of it than asked (reported).")

    @model_validator(mode="after")
    def _one_of(self) -> Any:
        if (self.weight is None) == (self.budget is None):
            raise ConfigValueError("give exactly one of weight or budget")
        return self


class MixConfig(Config):
    """``data/mix``: combine several datasets of one format by weights or budgets, up- or
    down-sampling each source deterministically."""

    sources: dict[str, MixSourceConfig] = Field(min_length=1, description="Input name -> its "
                                                "weight or budget, e.g. {web: {weight: 0.7}, "
                                                "code: {weight: 0.3, max_epochs: 4}}; each name "
                                                "is an input of the stage: inputs: {web: "
                                                "<stage>, code: <stage>}.")
    format: Literal["text", "chat", "preference", "multiple-choice"] = Field(
        default="text", description="Record format of every input and of the output.")
    unit: Literal["documents", "tokens", "chars"] = Field(
        default="tokens", description="What weights and budgets count: documents, tokens of "
        "the 'tokenizer' input (required with 'tokens'), or characters.")
    total: int | None = Field(default=None, ge=1, description="Size of the train split of the "
                              "output in the unit, shared by weight. Default: the largest "
                              "total for which no weighted source is repeated (its natural "
                              "size decides).")
    heldout: Literal["concat", "none"] = Field(default="concat", description="'concat': the "
                                               "output's heldout split is every source's "
                                               "heldout split, unsampled (per-source "
                                               "evaluation stays comparable); 'none': no "
                                               "heldout split.")
    shard_rows: int = Field(default=100_000, ge=1, description="Rows per output shard.")
    seed: int = Field(default=0, description="Seed of the sampling and the shuffle; the same "
                      "seed and inputs give the same bytes.")

    @model_validator(mode="after")
    def _names(self) -> Any:
        for name in self.sources:
            if name in ("tokenizer",) or not name.replace("_", "").replace("-", "").isalnum():
                raise ConfigValueError(f"source name {name!r} must be letters, digits, '_' or "
                                       f"'-' and not 'tokenizer'", ("sources", name))
        if self.total is not None and all(s.weight is None for s in self.sources.values()):
            raise ConfigValueError("total is shared by weight, but no source has a weight",
                                   ("total",))
        return self
