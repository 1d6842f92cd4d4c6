"""The ``train/classifier`` stage: fit :mod:`lmforge_data.classifier` on two datasets.

Inputs ``positive`` and ``negative`` are dataset artifacts of any format (a record's texts are
joined by blank lines, as filters see them). The ``split`` of each trains; ``eval_split``,
where both have it, measures accuracy and ROC AUC. Output ``classifier``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lmforge import Stage, StageInputError
from lmforge.datasetio import read_meta, split_files
from lmforge_data import records as rec
from lmforge_data.classifier import FeatureSpec, train


def dataset_texts(path: Path, split: str, limit: int | None = None) -> Iterator[str]:
    """The texts of ``split`` of a dataset artifact, one per record, in order."""
    import pyarrow.parquet as pq

    fmt = read_meta(path).get("format", "text")
    columns = rec.COLUMNS.get(fmt)
    if columns is None:
        raise StageInputError(f"dataset {path} has unknown format {fmt!r}")
    n = 0
    for file in split_files(path, split):
        for batch in pq.ParquetFile(file).iter_batches(columns=columns, batch_size=1024):
            for row in batch.to_pylist():
                if limit is not None and n >= limit:
                    return
                n += 1
                yield "\n\n".join(rec.texts(row, fmt))


def has_split(path: Path, split: str) -> bool:
    return bool(read_meta(path).get("splits", {}).get(split, {}).get("rows"))


class ClassifierStage(Stage):
    """See the module docstring; config :class:`lmforge_data.stage_config.ClassifierStageConfig`."""

    def check(self) -> None:
        for name in ("positive", "negative"):
            try:
                split_files(self.ctx.input(name).path, self.config.split)
            except StageInputError as exc:
                raise StageInputError(f"stage {self.ctx.stage_id!r}, input {name!r}: {exc}; set "
                                      f"'split' in the stage config") from None

    def run(self) -> Mapping[str, Any]:
        from sklearn.metrics import roc_auc_score

        c = self.config
        spec = FeatureSpec(hash_bits=c.hash_bits, word_ngrams=c.word_ngrams,
                           char_ngrams=None if c.char_ngrams is None else tuple(c.char_ngrams),
                           lowercase=c.lowercase, max_chars=c.max_chars, labels=tuple(c.labels))
        pos_path, neg_path = self.ctx.input("positive").path, self.ctx.input("negative").path
        with self.ctx.progress(None, "reading examples", unit="docs") as bar:
            pos = [t[:c.max_chars] for t in dataset_texts(pos_path, c.split, c.max_documents)]
            bar.advance(len(pos))
            neg = [t[:c.max_chars] for t in dataset_texts(neg_path, c.split, c.max_documents)]
            bar.advance(len(neg))
        model = train(pos, neg, spec, epochs=c.epochs, alpha=c.alpha, seed=self.ctx.seed)
        metrics: dict[str, Any] = {"train_positive": len(pos), "train_negative": len(neg),
                                   "train_accuracy": _accuracy(model, pos, neg)}
        split = c.eval_split
        if split and has_split(pos_path, split) and has_split(neg_path, split):
            ev_pos, ev_neg = list(dataset_texts(pos_path, split)), list(dataset_texts(neg_path,
                                                                                      split))
            metrics.update(eval_positive=len(ev_pos), eval_negative=len(ev_neg),
                           eval_accuracy=_accuracy(model, ev_pos, ev_neg))
            scores = model.scores(ev_pos + ev_neg)
            metrics["eval_auc"] = float(roc_auc_score([1] * len(ev_pos) + [0] * len(ev_neg),
                                                      scores))
        out = self.ctx.output_dir("classifier")
        model.save(out)
        self.ctx.write_artifact_meta("classifier", {"format": "lmforge-hashed-ngram-logreg",
                                                    "labels": list(c.labels), **metrics})
        self.ctx.log(0, {k: v for k, v in metrics.items()})
        return metrics


def _accuracy(model: Any, pos: list[str], neg: list[str]) -> float:
    import numpy as np

    if not pos and not neg:
        return 0.0
    s = model.scores(pos + neg)
    y = np.array([1] * len(pos) + [0] * len(neg))
    return float(((s >= 0.5) == y).mean())


def factory(config: Any, ctx: Any) -> ClassifierStage:
    return ClassifierStage(config, ctx)
