"""Writing one split as Parquet shards, incrementally (the layout of :mod:`lmforge.datasetio`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmforge_data.records import arrow_schema


class ShardWriter:
    """Appends rows to ``<split_dir>/shard-00000.parquet``, ``shard-00001.parquet`` ...

    A shard holds ``shard_rows`` rows (the last one fewer). Rows are buffered and written as a
    row group every ``batch_rows``; a shard is written under a hidden temporary name and renamed
    when closed, so a visible shard is always complete.
    """

    def __init__(self, split_dir: Path, fmt: str, shard_rows: int, batch_rows: int = 2048):
        self.dir = Path(split_dir)
        self.fmt = fmt
        self.shard_rows = shard_rows
        self.batch_rows = max(1, min(batch_rows, shard_rows))
        self.schema = arrow_schema(fmt)
        self.rows = 0
        self.shards = 0
        self._buffer: list[dict[str, Any]] = []
        self._writer: Any = None
        self._in_shard = 0
        self._tmp: Path | None = None

    def write(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        self.rows += 1
        if (len(self._buffer) >= self.batch_rows
                or self._in_shard + len(self._buffer) >= self.shard_rows):
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        while self._buffer:
            if self._writer is None:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._tmp = self.dir / f".shard-{self.shards:05d}.parquet.tmp"
                self._writer = pq.ParquetWriter(str(self._tmp), self.schema)
            room = self.shard_rows - self._in_shard
            take, self._buffer = self._buffer[:room], self._buffer[room:]
            self._writer.write_table(pa.Table.from_pylist(take, schema=self.schema))
            self._in_shard += len(take)
            if self._in_shard >= self.shard_rows:
                self._close_shard()

    def _close_shard(self) -> None:
        assert self._writer is not None and self._tmp is not None
        self._writer.close()
        os.replace(self._tmp, self.dir / f"shard-{self.shards:05d}.parquet")
        self._writer, self._tmp, self._in_shard = None, None, 0
        self.shards += 1

    def close(self) -> dict[str, int]:
        """Write what is buffered, close the last shard; return ``{"rows", "shards"}``."""
        self._flush()
        if self._writer is not None:
            self._close_shard()
        return {"rows": self.rows, "shards": self.shards}

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)
            self._writer = None
