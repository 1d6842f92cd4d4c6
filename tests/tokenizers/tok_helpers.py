"""Test helpers: write dataset artifacts directly, and a stage that feeds a ready folder into a
pipeline (so the tokenizer stage runs through the real runner without the data plugin)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from lmforge import Config, Stage, hookimpl, stage


def write_dataset(path: Path, fmt: str, splits: Mapping[str, Sequence[dict[str, Any]]],
                  rows_per_shard: int = 1000) -> Path:
    """Write a ``dataset/<fmt>`` artifact (Parquet shards per split + artifact.json)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    meta: dict[str, Any] = {"format": fmt, "splits": {}, "columns": []}
    for split, rows in splits.items():
        (path / split).mkdir(parents=True, exist_ok=True)
        shards = 0
        for i in range(0, max(len(rows), 1), rows_per_shard):
            chunk = list(rows[i:i + rows_per_shard])
            if not chunk:
                break
            pq.write_table(pa.Table.from_pylist(chunk), path / split / f"shard-{shards:05d}.parquet")
            shards += 1
        meta["splits"][split] = {"rows": len(rows), "shards": shards}
        if rows:
            meta["columns"] = list(rows[0])
    (path / "artifact.json").write_text(json.dumps(meta))
    return path


class FixtureConfig(Config):
    path: str = Field(description="Folder to publish as this stage's output.")
    kind: str = Field(description="Artifact kind of the folder.")


class FixtureStage(Stage):
    def run(self) -> dict[str, Any]:
        out = self.ctx.output_dir("out")
        shutil.copytree(self.config.path, out, dirs_exist_ok=True)
        return {}


class FixturePlugin:
    """Contributes stage ``data/fixture`` whose single output ``out`` is a copy of ``path``."""

    @hookimpl
    def lmforge_components(self) -> list[Any]:
        return [stage("data", "fixture", config=FixtureConfig, factory=FixtureStage,
                      description="test fixture", outputs=lambda cfg: {"out": cfg.kind})]
