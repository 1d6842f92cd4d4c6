"""The ``hf`` source: any dataset ``datasets.load_dataset`` can open, streamed by default."""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

from lmforge import StageInputError
from lmforge.curation import Partition
from lmforge_data.paths import is_glob
from lmforge_data.records import WHERE_KEY, remap


def _looks_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.exists(os.path.expanduser(name))


class HFSource:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.skipped: Counter[str] = Counter()

    def describe(self) -> str:
        c = self.config
        sub = f"/{c.config_name}" if c.config_name else ""
        return f"hf:{c.name}{sub}[{c.split}]"

    def _local_files(self) -> list[str]:
        df = self.config.data_files
        if df is None:
            return []
        if isinstance(df, dict):
            values = [v for vs in df.values() for v in ([vs] if isinstance(vs, str) else vs)]
        else:
            values = [df] if isinstance(df, str) else list(df)
        return [v for v in values if "://" not in v and not v.startswith("hf://")]

    def check(self) -> None:
        """Local folders and data files must exist; Hub names are checked when loading."""
        name = self.config.name
        if _looks_local(name) and not os.path.exists(os.path.expanduser(name)):
            raise StageInputError(f"hf source: local dataset {name!r} does not exist")
        base = os.path.expanduser(name) if os.path.isdir(os.path.expanduser(name)) else ""
        for pattern in self._local_files():
            full = os.path.join(base, pattern) if base and not os.path.isabs(pattern) else pattern
            found = glob.glob(full, recursive=True) if is_glob(full) else (
                [full] if os.path.exists(full) else [])
            if not found and (base or not _hub_like(name)):
                raise StageInputError(f"hf source {self.describe()}: data_files {pattern!r} "
                                      f"matches no file")

    def _load(self) -> Any:
        import datasets

        c = self.config
        name = os.path.expanduser(c.name) if _looks_local(c.name) else c.name
        try:
            return datasets.load_dataset(name, c.config_name, split=c.split,
                                         streaming=c.streaming, data_files=c.data_files,
                                         revision=c.revision)
        except Exception as exc:  # noqa: BLE001 - datasets raises many types
            raise StageInputError(f"hf source {self.describe()}: cannot load the dataset: "
                                  f"{type(exc).__name__}: {exc}") from None

    def _rows(self, rows: Any, where_base: str, first: int = 0) -> Iterator[dict[str, Any]]:
        c = self.config
        for i, row in enumerate(rows, start=first):
            where = f"{where_base} row {i}"
            out = remap(row, c.text_field, c.fields, where)
            out[WHERE_KEY] = where
            yield out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._rows(self._load(), self.describe())

    # -- partitions (lmforge.curation.PartitionedSource) -----------------------------------
    def partitions(self, target_bytes: int) -> list[Partition]:
        """Streaming: the dataset's own shards (``IterableDataset.n_shards``, usually its
        files). Otherwise: contiguous row ranges of about ``target_bytes`` of Arrow data."""
        ds = self._load()
        base = self.describe()
        rev = self.config.revision or ""
        if self.config.streaming:
            n = max(1, int(getattr(ds, "n_shards", 1) or 1))
            return [Partition(f"{base}@{rev}#shard{i}of{n}", ("shard", i, n)) for i in range(n)]
        rows = len(ds)
        nbytes = int(getattr(ds.data, "nbytes", 0) or 0)
        per = max(1, rows * target_bytes // nbytes) if nbytes else rows or 1
        fp = getattr(ds, "_fingerprint", "")
        return [Partition(f"{base}@{rev}:{fp}#rows{a}-{min(a + per, rows)}",
                          ("rows", a, min(a + per, rows))) for a in range(0, max(rows, 1), per)]

    def read(self, partition: Partition) -> Iterator[dict[str, Any]]:
        ds = self._load()
        mode, a, b = partition.data
        if mode == "shard":
            return self._rows(ds.shard(num_shards=b, index=a), f"{self.describe()} shard {a}")
        return self._rows(ds.select(range(a, b)), self.describe(), first=a)


def _hub_like(name: str) -> bool:
    """Builder names ('json', 'parquet') take local data_files; Hub ids have an owner/."""
    return "/" in name and not _looks_local(name)


def hf(config: Any) -> HFSource:
    return HFSource(config)
