"""File sources: ``jsonl``, ``parquet`` and ``text``. All stream; none loads a file whole
(except ``text`` in ``file`` mode, where one file is one document).

Records carry ``_where`` ("<file> line 12", "<file> row 3") for error messages. ``skipped``
counts what a source passed over, by reason (shown in ``stats.json``).
"""

from __future__ import annotations

import codecs
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge import StageInputError
from lmforge.curation import Partition
from lmforge_data.paths import as_list, expand, group_files
from lmforge_data.records import WHERE_KEY, remap


class _FileSource:
    kind = "files"

    def __init__(self, config: Any) -> None:
        self.config = config
        self.skipped: Counter[str] = Counter()
        self._files: list[Path] | None = None

    def files(self) -> list[Path]:
        if self._files is None:
            self._files = expand(self.config.path)
        return self._files

    def check(self) -> None:
        self.files()

    def describe(self) -> str:
        paths = as_list(self.config.path)
        return f"{self.kind}:{paths[0] if len(paths) == 1 else paths}"

    # -- partitions (lmforge.curation.PartitionedSource) -----------------------------------
    def partitions(self, target_bytes: int) -> list[Partition]:
        """Consecutive files grouped up to about ``target_bytes`` (a larger file alone)."""
        return group_files(self.files(), target_bytes)

    def read(self, partition: Partition) -> Iterator[dict[str, Any]]:
        for path in partition.data:
            yield from self._read_file(Path(path))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for path in self.files():
            yield from self._read_file(path)

    def _read_file(self, path: Path) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def _remap(self, row: dict[str, Any], where: str) -> dict[str, Any]:
        out = remap(row, self.config.text_field, self.config.fields, where)
        out[WHERE_KEY] = where
        return out


class JsonlSource(_FileSource):
    """One JSON object per non-blank line."""

    kind = "jsonl"

    def _read_file(self, path: Path) -> Iterator[dict[str, Any]]:
        with open(path, encoding=self.config.encoding) as fh:
            index = 0
            try:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    where = f"{path} line {lineno} (record {index})"
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        # Some messages end in "at" ("Invalid control character at").
                        raise StageInputError(f"{where}: not valid JSON ("
                                              f"{exc.msg.removesuffix(' at')} at column "
                                              f"{exc.colno}); each line must be one JSON "
                                              f"object") from None
                    if not isinstance(row, dict):
                        raise StageInputError(f"{where}: expected a JSON object, got "
                                              f"{type(row).__name__}")
                    index += 1
                    yield self._remap(row, where)
            except UnicodeDecodeError as exc:
                raise StageInputError(f"{path}: not valid {self.config.encoding} ({exc}); "
                                      f"set the source's 'encoding'") from None


class ParquetSource(_FileSource):
    """Parquet files, read one record batch at a time."""

    kind = "parquet"

    def _open(self, path: Path) -> Any:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(str(path))
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
            raise StageInputError(f"{path}: not a readable Parquet file: {exc}") from None
        columns = self.config.columns
        if columns:
            missing = sorted(set(columns) - set(pf.schema_arrow.names))
            if missing:
                raise StageInputError(f"{path}: no column(s) {missing}; it has "
                                      f"{pf.schema_arrow.names}")
        return pf

    def partitions(self, target_bytes: int) -> list[Partition]:
        """Row groups of each file, consecutive ones grouped up to about ``target_bytes``
        (compressed size); a partition never spans two files."""
        out: list[Partition] = []
        for path in self.files():
            pf = self._open(path)
            meta, stat = pf.metadata, path.stat()
            first = 0
            group: list[int] = []
            size = start = 0
            for rg in range(meta.num_row_groups):
                rg_bytes = meta.row_group(rg).total_byte_size
                if group and size + rg_bytes > target_bytes:
                    out.append(self._partition(path, stat, group, start, size))
                    group, size = [], 0
                if not group:
                    start = first
                group.append(rg)
                size += rg_bytes
                first += meta.row_group(rg).num_rows
            if group or not out:
                out.append(self._partition(path, stat, group, start, size))
        return out

    @staticmethod
    def _partition(path: Path, stat: Any, groups: list[int], first_row: int, size: int
                   ) -> Partition:
        span = f"#rg{groups[0]}-{groups[-1]}" if groups else "#empty"
        return Partition(f"{path}{span}:{stat.st_size}:{stat.st_mtime_ns}",
                         (str(path), groups, first_row), size)

    def read(self, partition: Partition) -> Iterator[dict[str, Any]]:
        path, groups, row_index = partition.data
        if not groups:
            return
        pf = self._open(Path(path))
        for batch in pf.iter_batches(batch_size=self.config.batch_rows, row_groups=groups,
                                     columns=self.config.columns):
            for row in batch.to_pylist():
                yield self._remap(row, f"{path} row {row_index}")
                row_index += 1

    def _read_file(self, path: Path) -> Iterator[dict[str, Any]]:
        pf = self._open(path)
        row_index = 0
        for batch in pf.iter_batches(batch_size=self.config.batch_rows,
                                     columns=self.config.columns):
            for row in batch.to_pylist():
                yield self._remap(row, f"{path} row {row_index}")
                row_index += 1


class TextSource(_FileSource):
    """Plain text: one document per file, or per non-empty line."""

    kind = "text"

    def _remap(self, row: dict[str, Any], where: str) -> dict[str, Any]:
        row[WHERE_KEY] = where
        return row

    def _decodes(self, path: Path) -> bool:
        decoder = codecs.getincrementaldecoder(self.config.encoding)()
        try:
            with open(path, "rb") as fh:
                while block := fh.read(1 << 20):
                    decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
        return True

    def _read_file(self, path: Path) -> Iterator[dict[str, Any]]:
        if self.config.mode == "file":
            try:
                text = path.read_text(encoding=self.config.encoding)
            except UnicodeDecodeError:
                self.skipped["undecodable"] += 1
                return
            yield self._remap({"text": text}, str(path))
            return
        if not self._decodes(path):  # check first: never emit half a file
            self.skipped["undecodable"] += 1
            return
        with open(path, encoding=self.config.encoding) as fh:
            for lineno, line in enumerate(fh, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield self._remap({"text": line}, f"{path} line {lineno}")


def jsonl(config: Any) -> JsonlSource:
    return JsonlSource(config)


def parquet(config: Any) -> ParquetSource:
    return ParquetSource(config)


def text(config: Any) -> TextSource:
    return TextSource(config)
