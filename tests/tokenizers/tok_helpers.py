"""Test helpers: write dataset artifacts directly, and a stage that feeds a ready folder into a
pipeline (so the tokenizer stage runs through the real runner without the data plugin)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from lmforge import Config, Stage, hookimpl, stage
from lmforge.testing import write_dataset_artifact


def write_dataset(path: Path, fmt: str, splits: Mapping[str, Sequence[dict[str, Any]]],
                  rows_per_shard: int = 1000) -> Path:
    """Write a ``dataset/<fmt>`` artifact (Parquet shards per split + artifact.json)."""
    return write_dataset_artifact(path, fmt, splits, rows_per_shard)


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
