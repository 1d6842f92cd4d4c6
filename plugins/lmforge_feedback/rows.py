"""Rows in and out of the feedback stages: prompts from datasets, resumable chunks of finished
rows in the stage's work folder, and dataset artifacts written atomically.

**Resumption.** A stage cuts its work into chunks of ``chunk_size`` rows, numbered from 0. A
chunk is computed from its own rows and a seed derived from the stage seed and the chunk
number only, so it comes out the same whatever ran before it; when done it is written as
``<work>/chunks/chunk-<n>.jsonl`` (temp file, then rename). A rerun after a kill reads the
chunks that exist and computes the rest: the output equals an uninterrupted run's. The folder
also holds ``plan.json`` (a hash of the config and the inputs); chunks of another plan are
discarded.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmforge import StageInputError
from lmforge.chat import validate_messages
from lmforge.errors import IntegrityWarning
from lmforge.fsutil import atomic_write_text


def derived_seed(*parts: Any) -> int:
    """A 31-bit seed from any parts (stable across processes and Python versions; small
    enough for :func:`lmforge.generation.generate`'s per-batch seed arithmetic)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def split_of(index: int, seed: int, heldout_fraction: float) -> str:
    """``"heldout"`` for about ``heldout_fraction`` of rows (by a hash of the row index and
    seed), else ``"train"``."""
    if heldout_fraction <= 0:
        return "train"
    u = derived_seed("split", seed, index) / 2**31
    return "heldout" if u < heldout_fraction else "train"


# -- reading ----------------------------------------------------------------------------------
def iter_rows(path: Path, split: str, columns: Sequence[str]) -> Iterable[tuple[dict, str]]:
    """``(row, where)`` for every row of ``split`` of a dataset artifact."""
    import pyarrow.parquet as pq

    from lmforge.datasetio import split_files

    for file in split_files(path, split):
        pf = pq.ParquetFile(file)
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise StageInputError(f"{file}: missing column(s) {missing}; has "
                                  f"{pf.schema_arrow.names}")
        base = 0
        for batch in pf.iter_batches(batch_size=512, columns=list(columns)):
            rows = batch.to_pylist()
            for i, row in enumerate(rows):
                yield row, f"{file} row {base + i}"
            base += len(rows)


def read_prompts(artifact: Any, split: str, limit: int | None) -> list[dict[str, Any]]:
    """Prompts from a ``dataset/prompt`` (``prompt`` messages, optional ``reference``), a
    ``dataset/chat`` (the messages before the first assistant turn; that turn is the
    reference) or a ``dataset/preference`` (``prompt``; ``chosen`` is the reference).
    Returns ``[{"prompt": messages, "reference": str | None}]``."""
    import pyarrow.parquet as pq

    from lmforge.datasetio import split_files

    kind = artifact.kind
    out: list[dict[str, Any]] = []
    if kind == "dataset/chat":
        for row, where in iter_rows(artifact.path, split, ["messages"]):
            msgs = validate_messages(row["messages"], where, need_assistant=False)
            first = next((i for i, m in enumerate(msgs) if m["role"] == "assistant"), len(msgs))
            if first == 0:
                continue
            ref = msgs[first]["content"] if first < len(msgs) else None
            out.append({"prompt": msgs[:first], "reference": ref})
            if limit is not None and len(out) >= limit:
                break
    else:
        ref_col = "chosen" if kind == "dataset/preference" else "reference"
        names = pq.ParquetFile(split_files(artifact.path, split)[0]).schema_arrow.names
        cols = ["prompt"] + ([ref_col] if ref_col in names else [])
        for row, where in iter_rows(artifact.path, split, cols):
            msgs = validate_messages(row["prompt"], f"{where} ('prompt')", need_assistant=False)
            out.append({"prompt": msgs, "reference": row.get(ref_col)})
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise StageInputError(f"split {split!r} of {artifact.path} holds no prompts")
    return out


# -- resumable chunks -------------------------------------------------------------------------
class ChunkStore:
    """Finished chunks of rows under ``<work>/chunks`` (see the module docstring)."""

    def __init__(self, work: Path, plan: Mapping[str, Any]) -> None:
        self.dir = Path(work) / "chunks"
        self.dir.mkdir(parents=True, exist_ok=True)
        fingerprint = hashlib.sha256(json.dumps(plan, sort_keys=True, default=str)
                                     .encode()).hexdigest()
        plan_file = self.dir / "plan.json"
        old = None
        if plan_file.is_file():
            try:
                old = json.loads(plan_file.read_text()).get("fingerprint")
            except (OSError, ValueError, AttributeError):
                old = None
        if old != fingerprint:
            for f in self.dir.glob("chunk-*.jsonl"):
                f.unlink()
            atomic_write_text(plan_file, json.dumps({"fingerprint": fingerprint}))
        self.reused = 0

    def path(self, n: int) -> Path:
        return self.dir / f"chunk-{n:06d}.jsonl"

    def load(self, n: int) -> list[dict[str, Any]] | None:
        """The rows of chunk ``n`` if it was finished, else None (a damaged file is reported
        and recomputed)."""
        path = self.path(n)
        if not path.is_file():
            return None
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            head = json.loads(lines[0])
            rows = [json.loads(line) for line in lines[1:]]
            if head.get("rows") != len(rows):
                raise ValueError(f"{head.get('rows')} rows announced, {len(rows)} found")
        except (OSError, ValueError, IndexError, AttributeError) as exc:
            warnings.warn(f"checkpointed chunk {path} is damaged ({exc}); it is computed again",
                          IntegrityWarning, stacklevel=2)
            path.unlink(missing_ok=True)
            return None
        self.reused += 1
        return rows

    def save(self, n: int, rows: Sequence[Mapping[str, Any]]) -> None:
        text = json.dumps({"rows": len(rows)}) + "\n"
        text += "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        atomic_write_text(self.path(n), text)


def run_chunks(store: ChunkStore, items: Sequence[Any], chunk_size: int, work: Any,
               bar: Any = None) -> list[dict[str, Any]]:
    """Rows of every chunk of ``items``: ``work(chunk_index, start, chunk_items) -> rows``
    for chunks not already in ``store`` (saved as each finishes), in order."""
    rows: list[dict[str, Any]] = []
    for n, start in enumerate(range(0, len(items), chunk_size)):
        chunk = items[start:start + chunk_size]
        done = store.load(n)
        if done is None:
            done = work(n, start, chunk)
            store.save(n, done)
        rows += done
        if bar is not None:
            bar.advance(len(chunk))
    return rows


# -- writing ----------------------------------------------------------------------------------
def write_dataset(out: Path, fmt: str, splits: Mapping[str, Sequence[Mapping[str, Any]]]
                  ) -> dict[str, Any]:
    """Write a ``dataset/<fmt>`` artifact's shards (one per non-empty split, each under a
    hidden temp name then renamed) and ``stats.json``; return its ``artifact.json`` meta (the
    caller writes it with ``ctx.write_artifact_meta``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    meta: dict[str, Any] = {"format": fmt, "splits": {}, "columns": []}
    for split, rows in splits.items():
        if not rows:
            continue
        table = pa.Table.from_pylist([dict(r) for r in rows])
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".shard-00000.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, folder / "shard-00000.parquet")
        meta["splits"][split] = {"rows": len(rows), "shards": 1}
        meta["columns"] = table.column_names
    atomic_write_text(out / "stats.json", json.dumps(
        {"rows": {s: len(r) for s, r in splits.items()}}, sort_keys=True))
    return meta
