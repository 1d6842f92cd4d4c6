"""The ``data/curate`` stage: sources -> filters -> exact dedup -> train/heldout Parquet shards.

Output ``dataset`` (kind ``dataset/<format>``, layout of :mod:`lmforge.datasetio`)::

    train/shard-00000.parquet ...   heldout/shard-00000.parquet ...
    artifact.json   {"format", "splits": {"train": {"rows", "shards"}, ...}, "columns"}
    stats.json      what was read, kept, dropped and modified, by source, filter and reason

Documents stream through in chunks; memory holds one chunk per worker, one 16-byte hash per
distinct kept document, and at most ``heldout_min`` rows waiting for the split decision.
The split of a row depends only on its normalised content, so reruns give the same split.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import pickle
import shutil
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from lmforge import Stage, StageInputError
from lmforge.fsutil import atomic_write_text
from lmforge_data import records as rec
from lmforge_data.chain import FilterChain, Outcome, run_chunks

SPLITS = ("train", "heldout")


class FilterStats:
    """Per-filter counters: seen/kept/dropped/modified, reasons, redaction counts."""

    def __init__(self, index: int, name: str) -> None:
        self.index, self.name = index, name
        self.kept = self.dropped = self.modified = 0
        self.dropped_by: Counter[str] = Counter()
        self.modified_by: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    def add(self, outcome: Outcome) -> None:
        status, reason, counts = outcome
        if status == "dropped":
            self.dropped += 1
            self.dropped_by[reason] += 1
        elif status == "modified":
            self.modified += 1
            self.modified_by[reason] += 1
            self.counts.update(counts or {})
        else:
            self.kept += 1

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name,
                "seen": self.kept + self.dropped + self.modified, "kept": self.kept,
                "dropped": self.dropped, "modified": self.modified,
                "dropped_by_reason": dict(self.dropped_by.most_common()),
                "modified_by_reason": dict(self.modified_by.most_common()),
                "counts": dict(sorted(self.counts.items()))}


class CurateStage(Stage):
    """See the module docstring; config: :class:`lmforge_data.config.CurateConfig`."""

    def __init__(self, config: Any, ctx: Any) -> None:
        super().__init__(config, ctx)
        self._sources: list[Any] | None = None

    # -- setup -----------------------------------------------------------------------------
    def _where(self) -> str:
        return f"stage {self.ctx.stage_id!r}"

    def sources(self) -> list[Any]:
        if self._sources is None:
            self._sources = [self.ctx.build("source", c) for c in self.config.sources]
        return self._sources

    def check(self) -> None:
        fmt = self.config.format
        for i, (cfg, src) in enumerate(zip(self.config.sources, self.sources())):
            label = f"{self._where()}, source {i} ({getattr(cfg, 'type', '?')})"
            mode = getattr(cfg, "mode", None)
            if cfg.type == "python-functions" and mode != fmt:
                raise StageInputError(f"{label}: mode {mode!r} does not match the stage's "
                                      f"format {fmt!r}; set both to the same value")
            if cfg.type == "text" and fmt != "text":
                raise StageInputError(f"{label}: plain text files give 'text' records but the "
                                      f"stage's format is {fmt!r}; use a jsonl/parquet source")
            check = getattr(src, "check", None)
            if callable(check):
                try:
                    check()
                except StageInputError as exc:
                    raise StageInputError(f"{label}: {exc}") from None
        if self.config.num_proc > 1:
            for cfg in self.config.filters:
                try:
                    pickle.dumps(self.ctx.build("filter", cfg))
                except Exception as exc:  # noqa: BLE001
                    raise StageInputError(f"{self._where()}: filter {cfg.type!r} cannot be sent "
                                          f"to worker processes ({exc}); use num_proc: 1") from None

    # -- reading ---------------------------------------------------------------------------
    def _records(self, per_source: list[dict[str, Any]], empty: Counter[str]
                 ) -> Iterator[dict[str, Any]]:
        fmt = self.config.format
        limit = self.config.max_documents
        total = 0
        for src, stats in zip(self.sources(), per_source):
            for i, raw in enumerate(src):
                if limit is not None and total >= limit:
                    return
                total += 1
                stats["read"] += 1
                where = raw.pop(rec.WHERE_KEY, None) if isinstance(raw, dict) else None
                group = raw.pop(rec.GROUP_KEY, None) if isinstance(raw, dict) else None
                where = f"{self._where()}, {where or f'{src.describe()} record {i}'}"
                record = rec.to_record(raw, fmt, where)
                if self.config.split_by == "source" and group is not None:
                    record[rec.SPLIT_KEY] = group
                if not any(t.strip() for t in rec.texts(record, fmt)):
                    empty["empty"] += 1
                    stats["empty"] += 1
                    continue
                yield record

    def _chunks(self, records: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        chunk: list[dict[str, Any]] = []
        for r in records:
            chunk.append(r)
            if len(chunk) >= self.config.chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    # -- run -------------------------------------------------------------------------------
    def run(self) -> Mapping[str, Any]:
        from lmforge_data.shards import ShardWriter

        c = self.config
        fmt = c.format
        out = self.ctx.output_dir("dataset")
        for old in [*SPLITS, "stats.json", "artifact.json"]:  # a previous, failed attempt
            p = out / old
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        filters = [self.ctx.build("filter", f) for f in c.filters]
        chain = FilterChain(filters, fmt)
        fstats = [FilterStats(i, getattr(f, "type", "?")) for i, f in enumerate(c.filters)]
        per_source = [{"source": s.describe(), "type": getattr(cfg, "type", "?"), "read": 0,
                       "empty": 0} for s, cfg in zip(self.sources(), c.sources)]
        empty: Counter[str] = Counter()
        writers = {s: ShardWriter(out / s, fmt, c.shard_rows) for s in SPLITS}
        seen: set[bytes] = set()
        dedup_dropped = 0
        # train rows with the smallest split hashes, held back in case heldout_min needs them:
        # a max-heap of (-hash, seq, row) of at most `reserve` rows.
        reserve = c.heldout_min if c.heldout_fraction > 0 else 0
        held: list[tuple[int, int, dict[str, Any]]] = []
        seq = 0
        threshold = int(c.heldout_fraction * 2**64)
        try:
            with self.ctx.progress(c.max_documents, "curating", unit="docs") as bar:
                chunks = self._chunks(self._records(per_source, empty))
                for chunk, results in run_chunks(chain, chunks, c.num_proc):
                    for record, outcomes in results:
                        for st, o in zip(fstats, outcomes):
                            st.add(o)
                        if record is None:
                            continue
                        key = rec.digest(record, fmt)
                        if c.dedup:
                            if key in seen:
                                dedup_dropped += 1
                                continue
                            seen.add(key)
                        group = record.pop(rec.SPLIT_KEY, None)
                        split_key = key if group is None else hashlib.blake2b(
                            group.encode("utf-8"), digest_size=16).digest()
                        value = int.from_bytes(split_key[:8], "big")
                        if value < threshold:
                            writers["heldout"].write(record)
                        elif reserve:
                            seq += 1
                            item = (-value, seq, record)
                            if len(held) < reserve:
                                heapq.heappush(held, item)
                            else:
                                writers["train"].write(heapq.heappushpop(held, item)[2])
                        else:
                            writers["train"].write(record)
                    bar.advance(len(chunk), kept=writers["train"].rows + writers["heldout"].rows
                                + len(held))
            held_rows = [r for _, _, r in sorted(held, key=lambda t: (-t[0], t[1]))]
            train_total = writers["train"].rows + len(held_rows)
            move = min(max(0, reserve - writers["heldout"].rows), len(held_rows),
                       max(0, train_total - 1))
            for r in held_rows[:move]:
                writers["heldout"].write(r)
            for r in held_rows[move:]:
                writers["train"].write(r)
            splits = {s: w.close() for s, w in writers.items()}
        except BaseException:
            for w in writers.values():
                w.abort()
            for s in SPLITS:
                shutil.rmtree(out / s, ignore_errors=True)
            raise

        docs_in = sum(s["read"] for s in per_source)
        docs_out = splits["train"]["rows"] + splits["heldout"]["rows"]
        dropped_by: Counter[str] = Counter()
        for st in fstats:
            dropped_by.update({f"{st.name}:{r}": n for r, n in st.dropped_by.items()})
        if empty:
            dropped_by["input:empty"] = empty["empty"]
        if dedup_dropped:
            dropped_by["dedup:duplicate"] = dedup_dropped
        for src, stats in zip(self.sources(), per_source):
            stats["skipped"] = dict(sorted(getattr(src, "skipped", {}).items()))

        if docs_out == 0:
            for s in SPLITS:
                shutil.rmtree(out / s, ignore_errors=True)
            described = ", ".join(s["source"] for s in per_source)
            if docs_in == 0:
                raise StageInputError(f"{self._where()}: the sources yielded no documents "
                                      f"({described}); check the files and their contents")
            top = ", ".join(f"{r} ({n})" for r, n in dropped_by.most_common(5))
            raise StageInputError(f"{self._where()}: all {docs_in} documents read from "
                                  f"{described} were dropped; top reasons: {top}. Loosen "
                                  f"those filters or check the sources")

        if c.heldout_fraction == 0 and splits["heldout"]["rows"] == 0:
            del splits["heldout"]
        stats = {
            "format": fmt, "docs_in": docs_in, "docs_out": docs_out,
            "sources": per_source,
            "filters": [st.as_dict() for st in fstats],
            "dedup": {"enabled": c.dedup, "dropped": dedup_dropped},
            "dropped_by_reason": dict(dropped_by.most_common()),
            "splits": {s: v["rows"] for s, v in splits.items()},
        }
        atomic_write_text(out / "stats.json", json.dumps(stats, indent=2) + "\n")
        self.ctx.write_artifact_meta("dataset", {"format": fmt, "splits": splits,
                                                 "columns": rec.COLUMNS[fmt]})
        metrics: dict[str, Any] = {
            "docs_in": docs_in, "docs_out": docs_out, "train_rows": splits["train"]["rows"],
            "heldout_rows": splits.get("heldout", {}).get("rows", 0),
            "dropped": docs_in - docs_out, "dedup_dropped": dedup_dropped,
        }
        self.ctx.log(docs_in, metrics)
        metrics["dropped_by"] = ", ".join(f"{r}={n}" for r, n in dropped_by.most_common(5)) \
            or "none"
        return metrics


def factory(config: Any, ctx: Any) -> CurateStage:
    return CurateStage(config, ctx)
