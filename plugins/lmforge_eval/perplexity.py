"""The ``perplexity`` evaluator and its unigram baseline.

Held-out documents are tokenized, each followed by EOS, and concatenated into one stream
``x_0 .. x_{N-1}``. The stream is cut into windows of ``L`` predictions: window ``k`` feeds
``x[kL : kL+L]`` and predicts ``x[kL+1 : kL+L+1]`` (the last window is shorter), so every token
but the first is scored exactly once with up to ``L`` tokens of context (none from before its
window). Perplexity is ``exp(sum NLL / (N - 1))`` (token-weighted).

The unigram baseline counts the train split's tokens (documents + EOS), smooths with add-one
over the tokenizer's vocabulary ``V``: ``p(t) = (c(t) + 1) / (C + V)``, and scores the same
``N - 1`` tokens. A model that does not beat it has learned nothing beyond token frequencies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lmforge import Artifact, StageInputError
from lmforge.evaluation import EvalContext, Evaluator
from lmforge_eval.batching import loss_sum
from lmforge_eval.data import iter_texts


def encode_documents(tokenizer: Any, batches: Iterable[list[str]]) -> tuple[list[int], int, int]:
    """Token stream of documents each followed by EOS; also the number of documents and of
    UTF-8 bytes."""
    stream: list[int] = []
    docs = n_bytes = 0
    for batch in batches:
        for enc in tokenizer.tokenizer.encode_batch(batch, add_special_tokens=False):
            stream += enc.ids
            stream.append(tokenizer.eos_id)
        docs += len(batch)
        n_bytes += sum(len(t.encode("utf-8")) for t in batch)
    return stream, docs, n_bytes


def windows(stream: Sequence[int], length: int) -> list[tuple[list[int], list[int]]]:
    """``(inputs, targets)`` windows of at most ``length`` predictions covering ``stream[1:]``."""
    out = []
    last = len(stream) - 1
    for s in range(0, last, length):
        e = min(s + length, last)
        out.append((list(stream[s:e]), list(stream[s + 1:e + 1])))
    return out


def unigram_counts(token_batches: Iterable[Sequence[int]], vocab_size: int) -> np.ndarray:
    """Counts ``[vocab_size]`` (int64) of the tokens in ``token_batches``."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for ids in token_batches:
        if len(ids):
            counts += np.bincount(np.asarray(ids, dtype=np.int64), minlength=vocab_size)[:vocab_size]
    return counts


def unigram_perplexity(counts: np.ndarray, tokens: Sequence[int]) -> float:
    """Perplexity of ``tokens`` under the add-one smoothed unigram model of ``counts``."""
    vocab = counts.shape[0]
    logp = np.log(counts.astype(np.float64) + 1.0) - math.log(float(counts.sum()) + vocab)
    idx = np.asarray(tokens, dtype=np.int64)
    return float(np.exp(-logp[idx].mean()))


class Perplexity(Evaluator):
    """See the module docstring; config: :class:`lmforge_eval.config.PerplexityConfig`."""

    def requires(self) -> dict[str, str]:
        return {"text": "dataset/text"}

    def check(self, inputs: Mapping[str, Artifact]) -> None:
        super().check(inputs)
        if self.config.unigram and "text" in inputs:
            from lmforge.datasetio import split_files

            split_files(inputs["text"].path, self.config.train_split)

    def run(self, model: Any, tokenizer: Any, inputs: Mapping[str, Artifact], device: Any,
            ctx: EvalContext) -> dict[str, Any]:
        cfg = self.config
        text = inputs["text"]
        length = min(cfg.seq_len or model.max_seq_len, model.max_seq_len)
        stream, docs, n_bytes = encode_documents(
            tokenizer, iter_texts(text.path, cfg.split, ctx.max_examples))
        if len(stream) < 2:
            raise StageInputError(f"split {cfg.split!r} of {text.path} has no text to score")
        wins = windows(stream, length)
        total = count = 0
        with ctx.progress(len(wins), "perplexity", unit="window") as bar:
            for start in range(0, len(wins), ctx.batch_size):
                chunk = wins[start:start + ctx.batch_size]
                s, n = loss_sum(model, chunk, tokenizer.pad_id, device, len(chunk))
                total += s
                count += n
                bar.advance(len(chunk))
        mean = total / count
        result: dict[str, Any] = {
            "loss": mean, "perplexity": math.exp(mean),
            "bits_per_byte": total / math.log(2) / max(n_bytes, 1),
            "tokens": count, "documents": docs, "seq_len": length,
        }
        if cfg.unigram:
            counts = unigram_counts(
                (e.ids + [tokenizer.eos_id]
                 for batch in iter_texts(text.path, cfg.train_split, cfg.unigram_max_documents)
                 for e in tokenizer.tokenizer.encode_batch(batch, add_special_tokens=False)),
                tokenizer.vocab_size)
            result["unigram_perplexity"] = unigram_perplexity(counts, stream[1:])
            result["unigram_train_tokens"] = int(counts.sum())
        return result

    def markdown(self, result: Mapping[str, Any]) -> str:
        if "unigram_perplexity" not in result:
            return ""
        ratio = result["perplexity"] / result["unigram_perplexity"]
        verdict = "better than" if ratio < 1 else "NOT better than"
        return (f"Model perplexity {result['perplexity']:.3f} vs unigram baseline "
                f"{result['unigram_perplexity']:.3f} on {result['tokens']} held-out tokens: "
                f"the model is {verdict} token frequencies alone (ratio {ratio:.3f}).\n")

