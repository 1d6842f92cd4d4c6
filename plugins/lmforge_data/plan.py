"""The curation plan: read partitions -> filter -> dedup keys -> clusters -> split -> shards.

Every phase is a map of a module-level function over picklable tasks, run by an executor
(:class:`lmforge.curation.Executor`); every task writes its files under the stage's work folder
and commits them atomically, so a killed run resumes from the tasks already done:

``parts/p000012/`` (one folder, renamed into place when complete)
    ``records.parquet`` the records that passed the filters (format columns + ``__where``),
    ``split.npy`` their split values (uint64), ``bucket-0003.npy`` their dedup band rows by
    hash bucket, ``result.json`` the partition's counters (what the task returns).
``dedup/level0/n00003.npy``, ``dedup/level1/...``
    (member, root) pairs of the bucket step and of the merge tree
    (:mod:`lmforge_data.dedup.cluster`); ``dedup/drop/p000012.npy`` the dropped ids of each
    partition and ``dedup/summary.json``, written by the last merge.
``shards/train/shard-00000.parquet`` ... and ``shards/done-0003.json``
    the output shards of one shard task, with the sha256 taken while writing them.

``plan.json`` holds the plan's fingerprint (config and partition keys, which name input files
with their sizes and modification times): work left by a run with another fingerprint is
discarded. All ordering is by partition ordinal and row, never by completion, so the output is
the same bytes for any executor and number of workers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.curation import DOC_INDEX_BITS, Partition, PartitionedSource
from lmforge.fsutil import atomic_write_text
from lmforge_data import records as rec
from lmforge_data.chain import FilterChain
from lmforge_data.dedup import cluster
from lmforge_data.stats import FilterStats

WHERE_COL = "__where"
#: Rows per Parquet row group, in the work files and the output shards.
ROW_GROUP = 2048
#: Merge-tree fan-in of the cluster step.
FAN_IN = 8


@dataclass(frozen=True)
class PlanConfig:
    """What every task needs (picklable): shared by all tasks of a run."""

    work: str
    fmt: str
    chain: FilterChain
    filter_names: tuple[str, ...]
    dedup: Any  # a lmforge.curation.Dedup, or None
    buckets: int
    split_by: str
    threshold: int  # split values below it are held out
    batch: int
    label: str  # "stage 'corpus'", prefixed to error locations
    metadata: bool = False  # records carry the filters' metadata column


# --- phase 1: read, filter, key ---------------------------------------------------------------
@dataclass(frozen=True)
class SourceRecipe:
    """How to build a source again in a worker: its factory, its plugin's own config class
    and the config's values. (The config object the spec validated is an instance of a model
    derived at run time, which does not pickle.)"""

    factory: Any  # "module:attr" or a picklable callable
    config_cls: type
    values: dict[str, Any]

    @classmethod
    def of(cls, component: Any, config: Any) -> SourceRecipe:
        return cls(component.factory, component.config,
                   config.model_dump(mode="python", exclude={"type"}))

    def build(self) -> Any:
        import importlib

        factory = self.factory
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = importlib.import_module(module)
            for part in attr.split("."):
                factory = getattr(factory, part)
        return factory(self.config_cls.model_validate(self.values))


@dataclass(frozen=True)
class ReadTask:
    plan: PlanConfig
    ordinal: int
    source: SourceRecipe
    partition: Partition | None  # None: the whole source (it has no partitions)
    limit: int | None  # read at most this many records


def part_dir(work: str | Path, ordinal: int) -> Path:
    return Path(work) / "parts" / f"p{ordinal:06d}"


def part_done(work: str | Path, ordinal: int, limit: int | None) -> dict[str, Any] | None:
    """The committed result of partition ``ordinal`` if it serves ``limit``: read with that
    limit, or read to its end within it."""
    try:
        result = json.loads((part_dir(work, ordinal) / "result.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if result.get("limit") == limit or (result.get("exhausted")
                                        and (limit is None or result["read"] <= limit)):
        return result
    return None


def digest_and_text(record: dict[str, Any], fmt: str) -> tuple[bytes, str]:
    """:func:`lmforge_data.records.digest` of ``record`` and its normalised parts joined by
    spaces (the text a deduplicator sees), normalising each part once."""
    h = hashlib.blake2b(digest_size=16)
    parts = [rec.normalize(s) for s in rec.key_parts(record, fmt)]
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.digest(), " ".join(parts)


def _read(source: Any, partition: Partition | None) -> Iterator[dict[str, Any]]:
    if partition is None:
        return iter(source)
    return source.read(partition)


def read_partition(task: ReadTask) -> dict[str, Any]:
    """Phase 1 for one partition (see the module docstring); returns its counters."""
    p = task.plan
    done = part_done(p.work, task.ordinal, task.limit)
    if done is not None:
        return done
    import pyarrow as pa
    import pyarrow.parquet as pq

    final = part_dir(p.work, task.ordinal)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    schema = rec.arrow_schema(p.fmt, p.metadata).append(pa.field(WHERE_COL, pa.string()))
    fstats = [FilterStats(i, n) for i, n in enumerate(p.filter_names)]
    source = task.source.build()
    counts = {"read": 0, "empty": 0}
    kept_total = 0
    split_values: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    exhausted = True
    base = task.ordinal << DOC_INDEX_BITS

    def flush(batch: list[tuple[dict[str, Any], str]]) -> None:
        nonlocal kept_total
        results = p.chain.apply_chunk([r for r, _ in batch])
        rows, digests, texts, values = [], [], [], []
        for (_, where), (record, outcomes) in zip(batch, results):
            for st, o in zip(fstats, outcomes):
                st.add(o)
            if record is None:
                continue
            group = record.pop(rec.SPLIT_KEY, None)
            meta = record.pop(rec.META_KEY, None)
            if p.metadata:
                record[rec.METADATA_COLUMN] = rec.metadata_json(meta)
            digest, text = digest_and_text(record, p.fmt)
            split_key = digest if group is None else hashlib.blake2b(
                group.encode("utf-8"), digest_size=16).digest()
            values.append(int.from_bytes(split_key[:8], "big"))
            digests.append(digest)
            texts.append(text)
            rows.append({**record, WHERE_COL: where})
        if not rows:
            return
        writer.write_table(pa.Table.from_pylist(rows, schema=schema), row_group_size=ROW_GROUP)
        split_values.append(np.array(values, dtype=np.uint64))
        if p.dedup is not None:
            keys.append(np.asarray(p.dedup.keys(texts, digests), dtype=np.uint64))
        kept_total += len(rows)

    with pq.ParquetWriter(str(tmp / "records.parquet"), schema) as writer:
        batch: list[tuple[dict[str, Any], str]] = []
        it = _read(source, task.partition)
        for i, raw in enumerate(it):
            if task.limit is not None and counts["read"] >= task.limit:
                exhausted = False
                break
            counts["read"] += 1
            where = raw.pop(rec.WHERE_KEY, None) if isinstance(raw, dict) else None
            group = raw.pop(rec.GROUP_KEY, None) if isinstance(raw, dict) else None
            desc = task.partition.key if task.partition is not None else "source"
            where = f"{p.label}, {where or f'{desc} record {i}'}"
            record = rec.to_record(raw, p.fmt, where)
            if p.split_by == "source" and group is not None:
                record[rec.SPLIT_KEY] = group
            if not any(t.strip() for t in rec.texts(record, p.fmt)):
                counts["empty"] += 1
                continue
            batch.append((record, where))
            if len(batch) >= p.batch:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    if task.limit is not None and exhausted and counts["read"] >= task.limit:
        exhausted = False  # stopped at the limit: the partition may hold more
    np.save(tmp / "split.npy", np.concatenate(split_values) if split_values
            else np.zeros(0, np.uint64), allow_pickle=False)
    if p.dedup is not None:
        allkeys = (np.concatenate(keys) if keys
                   else np.zeros((0, p.dedup.bands, p.dedup.words), np.uint64))
        ids = base + np.arange(kept_total, dtype=np.uint64)
        for b, rows in enumerate(cluster.route(allkeys, ids, p.buckets)):
            np.save(tmp / f"bucket-{b:04d}.npy", rows, allow_pickle=False)
    skipped = Counter(getattr(source, "skipped", {}))
    result = {"ordinal": task.ordinal, "limit": task.limit, "exhausted": exhausted,
              "read": counts["read"], "empty": counts["empty"], "kept": kept_total,
              "filters": [st.as_dict() for st in fstats],
              "skipped": {k: v for k, v in sorted(skipped.items()) if v}}
    (tmp / "result.json").write_text(json.dumps(result), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)  # a result for another limit
    os.replace(tmp, final)
    return result


def source_partitions(source: Any, target_bytes: int) -> list[Partition | None]:
    """A source's partitions in read order; ``[None]`` (read whole) for a plain source."""
    if isinstance(source, PartitionedSource):
        parts = list(source.partitions(target_bytes))
        return parts or []
    return [None]


# --- phase 2: clusters ------------------------------------------------------------------------
@dataclass(frozen=True)
class BucketTask:
    work: str
    bucket: int
    ordinals: tuple[int, ...]
    words: int


def bucket_step(task: BucketTask) -> int:
    out = Path(task.work) / "dedup" / "level0" / f"n{task.bucket:05d}.npy"
    if not out.exists():
        parts = [cluster.load(part_dir(task.work, o) / f"bucket-{task.bucket:04d}.npy")
                 for o in task.ordinals]
        cluster.save(out, cluster.bucket_pairs(parts, task.words))
    return task.bucket


@dataclass(frozen=True)
class MergeTask:
    work: str
    level: int
    index: int
    inputs: tuple[str, ...]
    final: bool
    ordinals: tuple[int, ...]
    sample: int


def merge_step(task: MergeTask) -> int:
    """Merge (member, root) pair files; the final merge also writes, per partition, the ids
    it drops (``dedup/drop/p*.npy``) and ``dedup/summary.json``."""
    work = Path(task.work)
    out = work / "dedup" / f"level{task.level}" / f"n{task.index:05d}.npy"
    if task.final:
        if (work / "dedup" / "summary.json").exists():
            return task.index
    elif out.exists():
        return task.index
    pairs = cluster.merge_pairs([cluster.load(Path(p)) for p in task.inputs])
    if not task.final:
        cluster.save(out, pairs)
        return task.index
    order = np.argsort(pairs[:, 0], kind="stable")
    pairs = pairs[order]
    members, roots = pairs[:, 0], pairs[:, 1]
    owner = members >> np.uint64(DOC_INDEX_BITS)
    for o in task.ordinals:
        lo, hi = np.searchsorted(owner, [o, o + 1])
        cluster.save(work / "dedup" / "drop" / f"p{o:06d}.npy",
                     members[lo:hi] & np.uint64((1 << DOC_INDEX_BITS) - 1))
    unique_roots, sizes = np.unique(roots, return_counts=True)
    summary = {"clusters": int(len(unique_roots)), "dropped": int(len(members)),
               "largest_cluster": int(sizes.max() + 1) if len(sizes) else 0,
               "sample": [[int(m), int(r)] for m, r in pairs[:task.sample]]}
    atomic_write_text(work / "dedup" / "summary.json", json.dumps(summary))
    return task.index


def merge_tree(work: str, buckets: int, ordinals: tuple[int, ...], sample: int
               ) -> list[list[MergeTask]]:
    """The levels of merge tasks over the ``buckets`` level-0 files; the last level has one
    task, marked final."""
    level, files = 0, [str(Path(work) / "dedup" / "level0" / f"n{b:05d}.npy")
                       for b in range(buckets)]
    levels: list[list[MergeTask]] = []
    while True:
        groups = [files[i:i + FAN_IN] for i in range(0, len(files), FAN_IN)]
        level += 1
        final = len(groups) == 1
        tasks = [MergeTask(work, level, i, tuple(g), final, ordinals if final else (), sample)
                 for i, g in enumerate(groups)]
        levels.append(tasks)
        if final:
            return levels
        files = [str(Path(work) / "dedup" / f"level{level}" / f"n{i:05d}.npy")
                 for i in range(len(groups))]


# --- phase 3: split and write -----------------------------------------------------------------
def _dropped(work: str | Path, ordinal: int) -> np.ndarray:
    path = Path(work) / "dedup" / "drop" / f"p{ordinal:06d}.npy"
    return cluster.load(path) if path.exists() else np.zeros(0, np.uint64)


@dataclass(frozen=True)
class CountTask:
    work: str
    ordinal: int
    threshold: int
    reserve: int
    wanted: tuple[int, ...]  # row indices in this partition whose `where` is wanted


def count_split(task: CountTask) -> dict[str, Any]:
    """Kept rows of one partition by split, its ``reserve`` train rows of smallest split
    value (candidates to be moved to held-out), and the ``where`` of wanted rows."""
    d = part_dir(task.work, task.ordinal)
    values = cluster.load(d / "split.npy")
    live = np.ones(len(values), dtype=bool)
    live[_dropped(task.work, task.ordinal).astype(np.int64)] = False
    held = live & (values < np.uint64(task.threshold))
    train = live & ~held
    candidates: list[list[int]] = []
    if task.reserve:
        idx = np.flatnonzero(train)
        pick = idx[np.argsort(values[idx], kind="stable")[:task.reserve]]
        candidates = [[int(values[i]), int(i)] for i in pick]
    wheres: dict[int, str] = {}
    if task.wanted:
        import pyarrow.parquet as pq

        col = pq.read_table(d / "records.parquet", columns=[WHERE_COL]).column(0)
        wheres = {i: col[i].as_py() for i in task.wanted}
    return {"train": int(train.sum()), "heldout": int(held.sum()), "candidates": candidates,
            "wheres": wheres}


@dataclass(frozen=True)
class ShardSpec:
    split: str
    index: int
    pieces: tuple[tuple[int, int, int], ...]  # (ordinal, lo, hi) of the split's kept rows


@dataclass(frozen=True)
class ShardTask:
    work: str
    fmt: str
    threshold: int
    index: int
    shards: tuple[ShardSpec, ...]
    moved: tuple[tuple[int, tuple[int, ...]], ...]  # ordinal -> rows moved train->heldout
    metadata: bool = False  # shards have the filters' metadata column


class _HashingFile:
    """A binary file that hashes what is written to it (for pyarrow's ParquetWriter)."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.sha = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        mv = memoryview(data)
        self.sha.update(mv)
        self.size += mv.nbytes
        return self._fh.write(mv)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._fh.flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def close(self) -> None:
        if not self.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self.closed = True


def _split_mask(work: str, ordinal: int, split: str, threshold: int,
                moved: dict[int, tuple[int, ...]]) -> np.ndarray:
    values = cluster.load(part_dir(work, ordinal) / "split.npy")
    held = values < np.uint64(threshold)
    if moved.get(ordinal):
        held[list(moved[ordinal])] = True
    mask = held if split == "heldout" else ~held
    mask[_dropped(work, ordinal).astype(np.int64)] = False
    return mask


def write_shards(task: ShardTask) -> list[dict[str, Any]]:
    """Write the task's output shards (``shards/<split>/shard-NNNNN.parquet``); return, per
    shard, its split, relative path, rows, size and sha256 (taken while writing)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    work = Path(task.work)
    done = work / "shards" / f"done-{task.index:05d}.json"
    try:
        recorded = json.loads(done.read_text("utf-8"))
        if all((work / "shards" / r["path"]).is_file()
               and (work / "shards" / r["path"]).stat().st_size == r["size"] for r in recorded):
            return recorded
    except (OSError, ValueError, KeyError, TypeError):
        pass
    columns = rec.columns(task.fmt, task.metadata)
    schema = rec.arrow_schema(task.fmt, task.metadata)
    moved = dict(task.moved)
    cache: dict[tuple[int, str], Any] = {}

    def rows_of(ordinal: int, split: str) -> Any:
        if (ordinal, split) not in cache:
            cache.clear()  # shards go through partitions in order: one is enough
            table = pq.read_table(part_dir(work, ordinal) / "records.parquet", columns=columns)
            mask = _split_mask(task.work, ordinal, split, task.threshold, moved)
            cache[(ordinal, split)] = table.filter(pa.array(mask))
        return cache[(ordinal, split)]

    out = []
    for shard in task.shards:
        rel = f"{shard.split}/shard-{shard.index:05d}.parquet"
        path = work / "shards" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        pieces = [rows_of(o, shard.split).slice(lo, hi - lo) for o, lo, hi in shard.pieces]
        table = pa.concat_tables(pieces).cast(schema) if pieces else schema.empty_table()
        fh = _HashingFile(tmp)
        try:
            with pq.ParquetWriter(fh, schema) as writer:
                writer.write_table(table, row_group_size=ROW_GROUP)
        finally:
            fh.close()
        os.replace(tmp, path)
        out.append({"split": shard.split, "path": rel, "rows": table.num_rows,
                    "size": fh.size, "sha256": fh.sha.hexdigest()})
    atomic_write_text(done, json.dumps(out))
    return out


def shard_specs(split: str, counts: Sequence[tuple[int, int]], shard_rows: int
                ) -> list[ShardSpec]:
    """Cut a split's rows — ``counts``: (ordinal, kept rows of this split) in read order —
    into shards of ``shard_rows`` rows (the last fewer)."""
    specs: list[ShardSpec] = []
    pieces: list[tuple[int, int, int]] = []
    room = shard_rows
    for ordinal, n in counts:
        lo = 0
        while lo < n:
            take = min(room, n - lo)
            pieces.append((ordinal, lo, lo + take))
            lo += take
            room -= take
            if room == 0:
                specs.append(ShardSpec(split, len(specs), tuple(pieces)))
                pieces, room = [], shard_rows
    if pieces:
        specs.append(ShardSpec(split, len(specs), tuple(pieces)))
    return specs


def group_shards(specs: Sequence[ShardSpec], min_rows: int) -> list[tuple[ShardSpec, ...]]:
    """Consecutive shards grouped into tasks of at least ``min_rows`` rows (small shards of
    one partition then share one read of it)."""
    groups: list[tuple[ShardSpec, ...]] = []
    cur: list[ShardSpec] = []
    rows = 0
    for s in specs:
        cur.append(s)
        rows += sum(hi - lo for _, lo, hi in s.pieces)
        if rows >= min_rows:
            groups.append(tuple(cur))
            cur, rows = [], 0
    if cur:
        groups.append(tuple(cur))
    return groups


def fingerprint(config_json: str, partitions: Sequence[tuple[int, Partition | None]]) -> str:
    h = hashlib.sha256(config_json.encode())
    for source, part in partitions:
        h.update(f"\n{source}:{part.key if part is not None else '<whole source>'}".encode())
    return h.hexdigest()


def prepare_work(work: Path, fp: str) -> bool:
    """Make ``work`` hold this plan's files only; True when earlier work is kept."""
    plan_file = work / "plan.json"
    try:
        if json.loads(plan_file.read_text("utf-8")).get("fingerprint") == fp:
            return True
    except (OSError, ValueError, AttributeError):
        pass
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan_file, json.dumps({"fingerprint": fp}))
    return False
