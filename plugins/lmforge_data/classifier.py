"""A fastText-style text classifier: hashed word and character n-grams, a linear model.

Features (scikit-learn ``HashingVectorizer``, MurmurHash3 into ``2**hash_bits`` buckets, l2
normalised): word 1..``word_ngrams``-grams and, when ``char_ngrams`` is set, character
n-grams inside word boundaries (fastText's subword idea). The model is logistic regression
trained by SGD (``SGDClassifier(loss="log_loss")``) with balanced class weights; a score is
the probability of the positive class. This is fastText's supervised model without its
low-rank embedding bottleneck: the same hashed n-gram inputs and linear decision, trained in
seconds on CPU, with weights small enough to store as one float32 vector.

Artifact (kind ``classifier``)::

    classifier.safetensors   "weight": float32 [n_features], "bias": float32 [1]
    classifier.json          {"format": "lmforge-hashed-ngram-logreg", "version": 1,
                              "hash_bits", "word_ngrams", "char_ngrams", "lowercase",
                              "max_chars", "labels": [negative, positive]}
    artifact.json            the stage's metrics (training sizes, heldout accuracy and AUC)

Both files are written under temporary names, then renamed, so a reader never sees half a
classifier.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmforge import StageInputError

FORMAT = "lmforge-hashed-ngram-logreg"
WEIGHTS = "classifier.safetensors"
CONFIG = "classifier.json"


@dataclass(frozen=True)
class FeatureSpec:
    """How texts become features; stored in ``classifier.json``."""

    hash_bits: int = 20
    word_ngrams: int = 2
    char_ngrams: tuple[int, int] | None = (3, 5)
    lowercase: bool = True
    max_chars: int = 4000
    labels: tuple[str, str] = ("negative", "positive")

    @property
    def n_features(self) -> int:
        return (2 if self.char_ngrams else 1) << self.hash_bits


class TextClassifier:
    """A trained classifier: ``scores(texts)`` are positive-class probabilities."""

    def __init__(self, spec: FeatureSpec, weight: Any, bias: float) -> None:
        import numpy as np

        self.spec = spec
        self.weight = np.asarray(weight, dtype=np.float32).reshape(-1)
        self.bias = float(bias)
        if self.weight.shape[0] != spec.n_features:
            raise ValueError(f"weight has {self.weight.shape[0]} entries, features "
                             f"{spec.n_features}")
        self._vectorizers: list[Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_vectorizers"] = None
        return state

    def vectorizers(self) -> list[Any]:
        if self._vectorizers is None:
            self._vectorizers = make_vectorizers(self.spec)
        return self._vectorizers

    def features(self, texts: Sequence[str]) -> Any:
        """Sparse ``[len(texts), n_features]`` matrix."""
        import scipy.sparse as sp

        cut = [t[:self.spec.max_chars] for t in texts]
        parts = [v.transform(cut) for v in self.vectorizers()]
        return parts[0] if len(parts) == 1 else sp.hstack(parts, format="csr")

    def decision(self, texts: Sequence[str]) -> Any:
        return self.features(texts) @ self.weight + self.bias

    def scores(self, texts: Sequence[str]) -> Any:
        """Positive-class probabilities, float64 ``[len(texts)]``."""
        import numpy as np

        z = np.clip(self.decision(texts), -500, 500)
        return 1.0 / (1.0 + np.exp(-z))

    def score(self, text: str) -> float:
        return float(self.scores([text])[0])

    # -- storage -------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write ``classifier.safetensors`` and ``classifier.json`` atomically."""
        import numpy as np
        from safetensors.numpy import save_file

        from lmforge.fsutil import atomic_write_text

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{WEIGHTS}.{os.getpid()}.tmp"
        save_file({"weight": self.weight, "bias": np.array([self.bias], dtype=np.float32)},
                  str(tmp), metadata={"format": FORMAT})
        os.replace(tmp, folder / WEIGHTS)
        config = {"format": FORMAT, "version": 1, **asdict(self.spec)}
        atomic_write_text(folder / CONFIG, json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> TextClassifier:
        """Read a ``classifier`` artifact folder; a clear error when it is not one."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        cfg_file, w_file = folder / CONFIG, folder / WEIGHTS
        if not cfg_file.is_file() or not w_file.is_file():
            raise StageInputError(f"{folder} is not a classifier artifact: {CONFIG} and "
                                  f"{WEIGHTS} are needed (written by a 'classifier' stage)")
        try:
            cfg = json.loads(cfg_file.read_text("utf-8"))
        except ValueError as exc:
            raise StageInputError(f"{cfg_file}: not valid JSON ({exc})") from None
        if cfg.get("format") != FORMAT or cfg.get("version") != 1:
            raise StageInputError(f"{cfg_file}: format {cfg.get('format')!r} version "
                                  f"{cfg.get('version')!r} is not {FORMAT!r} version 1")
        try:
            spec = FeatureSpec(hash_bits=int(cfg["hash_bits"]),
                               word_ngrams=int(cfg["word_ngrams"]),
                               char_ngrams=None if cfg["char_ngrams"] is None
                               else (int(cfg["char_ngrams"][0]), int(cfg["char_ngrams"][1])),
                               lowercase=bool(cfg["lowercase"]), max_chars=int(cfg["max_chars"]),
                               labels=(str(cfg["labels"][0]), str(cfg["labels"][1])))
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise StageInputError(f"{cfg_file}: missing or bad field ({exc!r})") from None
        tensors = load_file(str(w_file))
        if set(tensors) != {"weight", "bias"} or tensors["weight"].shape != (spec.n_features,):
            raise StageInputError(f"{w_file}: expected 'weight' [{spec.n_features}] and "
                                  f"'bias' [1], found "
                                  f"{ {k: list(v.shape) for k, v in tensors.items()} }")
        return cls(spec, tensors["weight"], float(tensors["bias"][0]))


def make_vectorizers(spec: FeatureSpec) -> list[Any]:
    from sklearn.feature_extraction.text import HashingVectorizer

    out = [HashingVectorizer(n_features=1 << spec.hash_bits, analyzer="word",
                             ngram_range=(1, spec.word_ngrams), lowercase=spec.lowercase,
                             alternate_sign=False, norm="l2", dtype="float32")]
    if spec.char_ngrams:
        out.append(HashingVectorizer(n_features=1 << spec.hash_bits, analyzer="char_wb",
                                     ngram_range=tuple(spec.char_ngrams),
                                     lowercase=spec.lowercase, alternate_sign=False,
                                     norm="l2", dtype="float32"))
    return out


def train(positive: Sequence[str], negative: Sequence[str], spec: FeatureSpec, *,
          epochs: int = 10, alpha: float = 1e-6, seed: int = 0) -> TextClassifier:
    """Fit logistic regression by SGD on ``positive`` (label 1) and ``negative`` (label 0)
    texts, classes weighted to balance; deterministic for a given ``seed``."""
    import numpy as np
    from sklearn.linear_model import SGDClassifier

    if not positive or not negative:
        raise StageInputError(f"a classifier needs examples of both classes; got "
                              f"{len(positive)} positive and {len(negative)} negative")
    model = TextClassifier(spec, np.zeros(spec.n_features, np.float32), 0.0)
    x = model.features(list(positive) + list(negative))
    y = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    sgd = SGDClassifier(loss="log_loss", alpha=alpha, max_iter=epochs, tol=None,
                        class_weight="balanced", random_state=seed, shuffle=True)
    sgd.fit(x, y)
    model.weight = sgd.coef_.reshape(-1).astype(np.float32)
    model.bias = float(sgd.intercept_[0])
    return model
