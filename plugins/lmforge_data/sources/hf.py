"""The ``hf`` source: any dataset ``datasets.load_dataset`` can open, streamed by default."""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

from lmforge import StageInputError
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

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import datasets

        c = self.config
        name = os.path.expanduser(c.name) if _looks_local(c.name) else c.name
        try:
            ds = datasets.load_dataset(name, c.config_name, split=c.split, streaming=c.streaming,
                                       data_files=c.data_files, revision=c.revision)
        except Exception as exc:  # noqa: BLE001 - datasets raises many types
            raise StageInputError(f"hf source {self.describe()}: cannot load the dataset: "
                                  f"{type(exc).__name__}: {exc}") from None
        where_base = self.describe()
        for i, row in enumerate(ds):
            where = f"{where_base} row {i}"
            out = remap(row, c.text_field, c.fields, where)
            out[WHERE_KEY] = where
            yield out


def _hub_like(name: str) -> bool:
    """Builder names ('json', 'parquet') take local data_files; Hub ids have an owner/."""
    return "/" in name and not _looks_local(name)


def hf(config: Any) -> HFSource:
    return HFSource(config)
