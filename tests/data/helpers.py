"""Small helpers shared by the data plugin's tests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PARAGRAPH = ("The river runs through the old town and the children play with the dogs near "
             "the water. In the morning the market opens, and people come to buy bread, fruit "
             "and fish that have been brought from the villages of the valley. Most of them "
             "stay to talk with their friends before they go back to work in the fields.")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return path


def curate_spec(config: dict[str, Any], stage_id: str = "corpus") -> dict[str, Any]:
    return {"name": "t", "stages": [{"id": stage_id, "kind": "data", "plugin": "curate",
                                     "config": config}]}


def read_split(out: Path, split: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for f in sorted((out / split).glob("shard-*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows
