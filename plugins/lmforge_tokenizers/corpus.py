"""Stream the texts of a dataset artifact in batches (never the whole split in memory)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge import StageInputError
from lmforge.datasetio import read_meta, split_files

#: Columns read per dataset format.
COLUMNS = {"text": ["text"], "chat": ["messages"], "preference": ["prompt", "chosen", "rejected"]}


@dataclass
class CorpusStats:
    """What was read: documents, characters, and the set of distinct characters."""

    documents: int = 0
    chars: int = 0
    distinct: set[str] = field(default_factory=set)


def dataset_format(path: Path) -> str:
    fmt = read_meta(path).get("format")
    if fmt not in COLUMNS:
        raise StageInputError(f"dataset {path} has format {fmt!r}; a tokenizer can be trained on "
                              f"{sorted(COLUMNS)} datasets")
    return str(fmt)


def _contents(messages: Any, where: str) -> list[str]:
    if not isinstance(messages, list):
        raise StageInputError(f"{where}: expected a list of {{role, content}} messages, got "
                              f"{type(messages).__name__}")
    out = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, str):
            raise StageInputError(f"{where}: message {m!r:.80} has no string 'content'")
        out.append(content)
    return out


def _row_text(fmt: str, row: dict[str, Any], where: str) -> str | None:
    """The text of one record that the tokenizer learns from (None: skip the record)."""
    if fmt == "text":
        text = row["text"]
        if text is not None and not isinstance(text, str):
            raise StageInputError(f"{where}: 'text' must be a string, got {type(text).__name__}")
        return text
    if fmt == "chat":
        return "\n".join(_contents(row["messages"], where))
    parts = _contents(row["prompt"], where)
    for col in ("chosen", "rejected"):
        if not isinstance(row[col], str):
            raise StageInputError(f"{where}: {col!r} must be a string")
        parts.append(row[col])
    return "\n".join(parts)


def iter_batches(path: Path, split: str, *, batch_size: int = 1000,
                 max_documents: int | None = None, max_chars: int | None = None,
                 stats: CorpusStats | None = None, track_distinct: bool = False
                 ) -> Iterator[list[str]]:
    """Yield lists of at most ``batch_size`` texts from ``split``, in shard order.

    Stops after ``max_documents`` texts or once ``max_chars`` characters were yielded (the
    document crossing the limit is included). ``stats`` (if given) is updated as texts are
    yielded; ``track_distinct`` also collects the distinct characters.
    """
    import pyarrow.parquet as pq

    fmt = dataset_format(path)
    stats = stats if stats is not None else CorpusStats()
    for file in split_files(path, split):
        pf = pq.ParquetFile(file)
        row_base = 0
        for record_batch in pf.iter_batches(batch_size=batch_size, columns=COLUMNS[fmt]):
            rows = record_batch.to_pylist()
            out: list[str] = []
            for i, row in enumerate(rows):
                text = _row_text(fmt, row, f"{file} row {row_base + i}")
                if not text:
                    continue
                out.append(text)
                stats.documents += 1
                stats.chars += len(text)
                if track_distinct:
                    stats.distinct.update(text)
                if (max_documents is not None and stats.documents >= max_documents) or \
                        (max_chars is not None and stats.chars >= max_chars):
                    yield out
                    return
            row_base += len(rows)
            if out:
                yield out
