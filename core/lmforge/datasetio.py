"""The ``dataset/*`` artifact format, shared by data stages (writers) and their consumers.

A dataset artifact folder holds one sub-folder per split (``train``, ``heldout`` ...), each with
Parquet shards ``shard-00000.parquet`` ..., plus ``artifact.json``::

    {"format": "text" | "chat" | "preference" | "multiple-choice",
     "splits": {"train": {"rows": 1234, "shards": 2}, "heldout": {...}},
     "columns": [...]}

and ``stats.json`` (what the data stage kept, dropped and modified, by reason). Columns by format:
``text``: ``text``; ``chat``: ``messages`` (list of {role, content}); ``preference``: ``prompt``
(messages), ``chosen``, ``rejected`` (assistant replies as strings); ``multiple-choice``:
``question``, ``choices``, ``answer``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.errors import StageInputError

if TYPE_CHECKING:
    import datasets


def read_meta(path: Path) -> dict[str, Any]:
    file = Path(path) / "artifact.json"
    if not file.is_file():
        raise StageInputError(f"{path} is not a dataset artifact: artifact.json is missing")
    return json.loads(file.read_text())


def split_files(path: Path, split: str) -> list[str]:
    """Paths of the Parquet shards of ``split``; a clear error if the split is absent or empty."""
    path = Path(path)
    meta = read_meta(path)
    if split not in meta.get("splits", {}):
        raise StageInputError(f"dataset {path} has no split {split!r}; it has "
                              f"{sorted(meta.get('splits', {}))}")
    files = sorted(str(p) for p in (path / split).glob("*.parquet"))
    if not files or meta["splits"][split].get("rows", 0) == 0:
        raise StageInputError(f"split {split!r} of dataset {path} is empty")
    return files


def load_split(path: Path, split: str, streaming: bool = False
               ) -> datasets.Dataset | datasets.IterableDataset:
    """Open one split with Hugging Face ``datasets`` (memory-mapped, or streamed)."""
    import datasets

    files = split_files(path, split)
    return datasets.load_dataset("parquet", data_files={split: files}, split=split,
                                 streaming=streaming)
