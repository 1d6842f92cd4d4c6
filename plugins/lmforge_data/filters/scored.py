"""Filters scored by an artifact: ``quality`` (a ``classifier``) and ``perplexity`` (a small LM,
as CCNet, Wenzek et al. 2020).

``quality`` keeps a document when the classifier's positive-class probability is within
``[min_score, max_score]`` (reasons ``low_score`` / ``high_score``); the score is kept as
metadata (``quality_score`` by default).

``perplexity`` tokenizes the document with the model's tokenizer (EOS appended, first
``max_tokens`` tokens), calls the model through the model-call contract
(``model(input_ids, labels=..., return_logprobs=True)``, per-token log-probabilities of each
next token) and stores ``perplexity = exp(-mean log p)`` and, with ``buckets``, the CCNet
bucket (0 = head, the lowest perplexity) as metadata. It drops documents above
``max_perplexity`` (reason ``perplexity``) or outside ``keep_buckets`` (reason ``bucket``).
The model is loaded on first use in each worker process, on CPU, in eval mode.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge import FilterResult


@dataclass
class ClassifierFilter:
    input: str = "classifier"
    min_score: float | None = 0.5
    max_score: float | None = None
    metadata_key: str = "quality_score"
    name: str = "quality"
    emits_metadata = True
    model: Any = field(default=None, repr=False)

    def bind(self, inputs: Mapping[str, Any]) -> None:
        from lmforge_data.classifier import TextClassifier

        self.model = TextClassifier.load(inputs[self.input].path)

    def __call__(self, text: str) -> FilterResult:
        if self.model is None:
            raise RuntimeError(f"filter {self.name!r} used before bind(): its classifier input "
                               f"{self.input!r} was not loaded")
        score = self.model.score(text)
        meta = {self.metadata_key: round(score, 4)}
        if self.min_score is not None and score < self.min_score:
            return FilterResult(keep=False, reason="low_score", metadata=meta)
        if self.max_score is not None and score > self.max_score:
            return FilterResult(keep=False, reason="high_score", metadata=meta)
        return FilterResult(keep=True, metadata=meta)


def quality_factory(config: Any) -> ClassifierFilter:
    return ClassifierFilter(input=config.input, min_score=config.min_score,
                            max_score=config.max_score, metadata_key=config.metadata_key)


@dataclass
class PerplexityFilter:
    model_input: str = "model"
    tokenizer_input: str = "tokenizer"
    max_perplexity: float | None = None
    buckets: tuple[float, ...] = ()
    keep_buckets: frozenset[int] | None = None
    max_tokens: int = 512
    batch_size: int = 8
    name: str = "perplexity"
    emits_metadata = True
    model_path: Path | None = None
    tokenizer_path: Path | None = None
    _loaded: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_loaded"] = None  # each worker loads the model itself
        return state

    def bind(self, inputs: Mapping[str, Any]) -> None:
        from lmforge.chat import load_tokenizer

        self.model_path = Path(inputs[self.model_input].path)
        self.tokenizer_path = Path(inputs[self.tokenizer_input].path)
        load_tokenizer(self.tokenizer_path)  # fail at bind time on a bad artifact

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            if self.model_path is None or self.tokenizer_path is None:
                raise RuntimeError("perplexity filter used before bind()")
            from lmforge.chat import load_tokenizer
            from lmforge.modelio import load_model
            from lmforge.plugins import PluginManager

            tok = load_tokenizer(self.tokenizer_path)
            model = load_model(self.model_path, PluginManager.load()).eval()
            self._loaded = (model, tok)
        return self._loaded

    def perplexities(self, texts: list[str]) -> list[float]:
        """Perplexity of each text under the model (first ``max_tokens`` tokens, EOS added)."""
        import torch

        from lmforge.training.losses import IGNORE_INDEX

        model, tok = self._load()
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            seqs = [(tok.encode(t) + [tok.eos_id])[:self.max_tokens + 1]
                    for t in texts[start:start + self.batch_size]]
            width = max(len(s) for s in seqs) - 1
            ids = torch.full((len(seqs), max(width, 1)), tok.pad_id, dtype=torch.long)
            labels = torch.full((len(seqs), max(width, 1)), IGNORE_INDEX, dtype=torch.long)
            for i, s in enumerate(seqs):  # position t predicts token t + 1
                ids[i, :len(s) - 1] = torch.tensor(s[:-1])
                labels[i, :len(s) - 1] = torch.tensor(s[1:])
            with torch.inference_mode():
                lp = model(ids, labels=labels, return_logprobs=True).token_logprobs.float()
            counts = (labels != IGNORE_INDEX).sum(dim=1)
            for total, n in zip(lp.sum(dim=1).tolist(), counts.tolist()):
                out.append(math.exp(-total / n) if n else float("inf"))
        return out

    def decide(self, ppl: float) -> FilterResult:
        meta: dict[str, Any] = {"perplexity": round(ppl, 3)}
        bucket = bisect.bisect_right(self.buckets, ppl) if self.buckets else None
        if bucket is not None:
            meta["perplexity_bucket"] = bucket
        if self.max_perplexity is not None and ppl > self.max_perplexity:
            return FilterResult(keep=False, reason="perplexity", metadata=meta)
        if self.keep_buckets is not None and bucket not in self.keep_buckets:
            return FilterResult(keep=False, reason="bucket", metadata=meta)
        return FilterResult(keep=True, metadata=meta)

    def __call__(self, text: str) -> FilterResult:
        return self.decide(self.perplexities([text])[0])


def perplexity_factory(config: Any) -> PerplexityFilter:
    return PerplexityFilter(
        model_input=config.model, tokenizer_input=config.tokenizer,
        max_perplexity=config.max_perplexity, buckets=tuple(config.buckets),
        keep_buckets=None if config.keep_buckets is None else frozenset(config.keep_buckets),
        max_tokens=config.max_tokens, batch_size=config.batch_size)
