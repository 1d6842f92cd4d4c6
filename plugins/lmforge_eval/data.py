"""Read rows of a dataset artifact split lazily, naming each row's shard and index for errors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lmforge.datasetio import split_files


def iter_rows(path: Path, split: str, columns: Sequence[str], limit: int | None = None,
              batch_size: int = 512) -> Iterator[tuple[dict[str, Any], str]]:
    """Yield ``(row, where)`` for the first ``limit`` rows of ``split`` (all if None); ``where``
    is ``"<shard file> row <i>"``. Missing columns raise a :class:`StageInputError`."""
    import pyarrow.parquet as pq

    from lmforge import StageInputError

    n = 0
    for file in split_files(path, split):
        pf = pq.ParquetFile(file)
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise StageInputError(f"{file}: missing column(s) {missing}; has "
                                  f"{pf.schema_arrow.names}")
        base = 0
        for batch in pf.iter_batches(batch_size=batch_size, columns=list(columns)):
            rows = batch.to_pylist()
            for i, row in enumerate(rows):
                if limit is not None and n >= limit:
                    return
                yield row, f"{file} row {base + i}"
                n += 1
            base += len(rows)


def iter_texts(path: Path, split: str, limit: int | None = None, batch_size: int = 512
               ) -> Iterator[list[str]]:
    """Batches of the ``text`` column (empty or null documents skipped)."""
    batch: list[str] = []
    for row, _ in iter_rows(path, split, ["text"], limit, batch_size):
        if row["text"]:
            batch.append(row["text"])
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch
