"""The ``data/curate`` stage: sources -> filters -> dedup -> train/heldout Parquet shards.

Output ``dataset`` (kind ``dataset/<format>``, layout of :mod:`lmforge.datasetio`)::

    train/shard-00000.parquet ...   heldout/shard-00000.parquet ...
    artifact.json   {"format", "splits": {"train": {"rows", "shards"}, ...}, "columns"}
    stats.json      what was read, kept, dropped and modified, by source, filter and reason,
                    and the dedup clusters (with a sample of dropped documents)

The stage builds a plan (:mod:`lmforge_data.plan`) and runs its phases on an executor
(``local`` worker processes, or ``ray``): partitions of the sources are read and filtered in
parallel, dedup keys are clustered by hash bucket, and shards are written in parallel, each
hashed as it is written (the runner does not re-read them). Every task commits its files in
the stage's ``work/curate`` folder, so a killed stage resumes from the tasks already done, and
the output is the same bytes whatever the executor, its workers or the interruptions.

Rows keep read order (sources in order, partitions in order, records in order) within each
split. The split of a row depends only on its normalised content (or its source unit with
``split_by: source``), so reruns give the same split; when fewer than ``heldout_min`` rows are
held out, the train rows of smallest split hash move to held-out.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmforge import Stage, StageInputError
from lmforge.curation import DOC_INDEX_BITS
from lmforge.fsutil import atomic_write_text
from lmforge_data import plan as pl
from lmforge_data import records as rec
from lmforge_data.chain import FilterChain
from lmforge_data.filter_inputs import build_filters
from lmforge_data.stats import merge_filters

SPLITS = ("train", "heldout")
#: Documents named in stats.json as examples of what dedup dropped.
DEDUP_SAMPLE = 10


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

    def _dedup(self) -> Any:
        """The deduplicator, or None (``dedup: false``); ``dedup: true`` is ``exact``."""
        d = self.config.dedup
        if d is True:
            from lmforge_data.dedup.exact import ExactDedup

            return ExactDedup()
        return self.ctx.build("dedup", d) if d else None

    def _executor(self) -> Any:
        """The executor; ``local`` without ``workers`` (and the default) uses ``num_proc``."""
        c = self.config
        if c.executor is None or (getattr(c.executor, "type", None) == "local"
                                  and c.executor.workers is None):
            from lmforge_data.executors.local import LocalExecutor

            return LocalExecutor(c.num_proc)
        return self.ctx.build("executor", c.executor)

    def _parallel(self) -> bool:
        c = self.config
        if c.executor is None or getattr(c.executor, "type", None) == "local":
            workers = getattr(c.executor, "workers", None) or c.num_proc
            return workers > 1
        return True

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
        if self._parallel():
            for cfg in self.config.filters:
                try:
                    pickle.dumps(build_filters(self.ctx, [cfg])[0])
                except Exception as exc:  # noqa: BLE001
                    raise StageInputError(f"{self._where()}: filter {cfg.type!r} cannot be sent "
                                          f"to worker processes ({exc}); use num_proc: 1 and "
                                          f"the local executor") from None

    # -- run -------------------------------------------------------------------------------
    def run(self) -> Mapping[str, Any]:
        c = self.config
        out = self.ctx.output_dir("dataset")
        for old in [*SPLITS, "stats.json", "artifact.json"]:  # a previous, failed attempt
            p = out / old
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        work = self.ctx.work_dir("work") / "curate"
        dedup = self._dedup()

        parts = [(i, p) for i, src in enumerate(self.sources())
                 for p in pl.source_partitions(src, c.partition_bytes)]
        if len(parts) >= 1 << (64 - DOC_INDEX_BITS):
            raise StageInputError(f"{self._where()}: {len(parts)} partitions; raise "
                                  f"partition_bytes")
        fp = pl.fingerprint(c.model_dump_json(), parts)
        kept_work = pl.prepare_work(work, fp)
        try:
            return self._run_plan(out, work, dedup, parts, kept_work)
        except StageInputError:
            # bad input: what was done is of no use to a corrected run (another key)
            shutil.rmtree(work, ignore_errors=True)
            raise

    def _run_plan(self, out: Path, work: Path, dedup: Any, parts: list[tuple[int, Any]],
                  kept_work: bool) -> dict[str, Any]:
        c = self.config
        fmt = c.format
        with self._executor() as executor:
            buckets = max(1, min(c.dedup_buckets or 2 * executor.workers, 4096))
            chain = FilterChain(build_filters(self.ctx, c.filters), fmt)
            plan = pl.PlanConfig(
                work=str(work), fmt=fmt, chain=chain,
                filter_names=tuple(getattr(f, "type", "?") for f in c.filters), dedup=dedup,
                buckets=buckets, split_by=c.split_by,
                threshold=int(c.heldout_fraction * 2**64), batch=c.chunk_size,
                label=self._where(), metadata=chain.metadata)
            results = self._read_phase(executor, plan, parts, resumed=kept_work)
            ordinals = tuple(r["ordinal"] for r in results)
            summary = self._dedup_phase(executor, plan, ordinals) if dedup else None
            splits, files, counts = self._write_phase(executor, plan, results, summary)
        return self._finish(out, work, plan, parts, results, summary, splits, files, counts,
                            dedup, executor.describe())

    def _read_phase(self, executor: Any, plan: pl.PlanConfig, parts: list[tuple[int, Any]],
                    resumed: bool) -> list[dict[str, Any]]:
        """Phase 1 over every partition (in waves when ``max_documents`` bounds the read)."""
        c = self.config
        sources = [pl.SourceRecipe.of(self.ctx.plugins.get_component("source", cfg.type), cfg)
                   for cfg in c.sources]
        results: list[dict[str, Any]] = []
        limit = c.max_documents
        total = 0
        wave = len(parts) if limit is None else max(1, 2 * executor.workers)
        label = "reading and filtering" + (" (resumed)" if resumed else "")
        with self.ctx.progress(len(parts), label, unit="partitions") as bar:
            start = 0
            while start < len(parts) and (limit is None or total < limit):
                batch = parts[start:start + wave]
                remaining = None if limit is None else limit - total
                tasks = [pl.ReadTask(plan, start + k, sources[s], p, remaining)
                         for k, (s, p) in enumerate(batch)]
                for task, r in zip(tasks, executor.map(pl.read_partition, tasks)):
                    if limit is not None and total >= limit:
                        break
                    if limit is not None and r["read"] > limit - total:
                        # the task read past what the earlier partitions left: read it again
                        task = pl.ReadTask(plan, task.ordinal, task.source, task.partition,
                                           limit - total)
                        r = pl.read_partition(task)
                    total += r["read"]
                    r["source"] = batch[task.ordinal - start][0]
                    results.append(r)
                    bar.advance(1, docs=sum(x["read"] for x in results),
                                kept=sum(x["kept"] for x in results))
                start += wave
        return results

    def _dedup_phase(self, executor: Any, plan: pl.PlanConfig, ordinals: tuple[int, ...]
                     ) -> dict[str, Any]:
        work = Path(plan.work)
        summary_file = work / "dedup" / "summary.json"
        if not summary_file.exists():
            tasks = [pl.BucketTask(plan.work, b, ordinals, plan.dedup.words)
                     for b in range(plan.buckets)]
            levels = pl.merge_tree(plan.work, plan.buckets, ordinals, DEDUP_SAMPLE)
            with self.ctx.progress(len(tasks) + sum(map(len, levels)), "dedup clusters",
                                   unit="tasks") as bar:
                for _ in executor.map(pl.bucket_step, tasks):
                    bar.advance(1)
                for level in levels:
                    for _ in executor.map(pl.merge_step, level):
                        bar.advance(1)
        return json.loads(summary_file.read_text("utf-8"))

    def _write_phase(self, executor: Any, plan: pl.PlanConfig, results: list[dict[str, Any]],
                     summary: dict[str, Any] | None
                     ) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]],
                                dict[str, Any]]:
        c = self.config
        reserve = c.heldout_min if c.heldout_fraction > 0 else 0
        mask = (1 << DOC_INDEX_BITS) - 1
        wanted: dict[int, list[int]] = {}
        for m, r in (summary or {}).get("sample", []):
            for doc in (m, r):
                wanted.setdefault(doc >> DOC_INDEX_BITS, []).append(doc & mask)
        tasks = [pl.CountTask(plan.work, r["ordinal"], plan.threshold, reserve,
                              tuple(sorted(set(wanted.get(r["ordinal"], [])))))
                 for r in results]
        counts = list(executor.map(pl.count_split, tasks))
        wheres = {(t.ordinal << DOC_INDEX_BITS) | i: w
                  for t, cnt in zip(tasks, counts) for i, w in cnt["wheres"].items()}
        held_total = sum(x["heldout"] for x in counts)
        train_total = sum(x["train"] for x in counts)
        candidates = sorted((v, t.ordinal, i) for t, cnt in zip(tasks, counts)
                            for v, i in cnt["candidates"])
        move = min(max(0, reserve - held_total), len(candidates), max(0, train_total - 1))
        moved: dict[int, list[int]] = {}
        for _, ordinal, i in candidates[:move]:
            moved.setdefault(ordinal, []).append(i)
        per_split = {
            "train": [(t.ordinal, cnt["train"] - len(moved.get(t.ordinal, [])))
                      for t, cnt in zip(tasks, counts)],
            "heldout": [(t.ordinal, cnt["heldout"] + len(moved.get(t.ordinal, [])))
                        for t, cnt in zip(tasks, counts)]}
        specs = [s for split in SPLITS for s in pl.shard_specs(split, per_split[split],
                                                              c.shard_rows)]
        avg = max(1, sum(r["kept"] for r in results) // max(1, len(results)))
        groups = pl.group_shards(specs, max(c.shard_rows, avg))
        moved_t = tuple((o, tuple(sorted(v))) for o, v in sorted(moved.items()))
        shard_tasks = [pl.ShardTask(plan.work, plan.fmt, plan.threshold, i, g, moved_t,
                                    metadata=plan.metadata) for i, g in enumerate(groups)]
        files: list[dict[str, Any]] = []
        with self.ctx.progress(len(specs), "writing shards", unit="shards") as bar:
            for written in executor.map(pl.write_shards, shard_tasks):
                files += written
                bar.advance(len(written))
        splits = {s: {"rows": sum(n for _, n in per_split[s]),
                      "shards": sum(1 for f in files if f["split"] == s)} for s in SPLITS}
        return splits, files, {"moved": move, "wheres": wheres}

    def _finish(self, out: Path, work: Path, plan: pl.PlanConfig, parts: list[Any],
                results: list[dict[str, Any]], summary: dict[str, Any] | None,
                splits: dict[str, dict[str, int]], files: list[dict[str, Any]],
                extra: dict[str, Any], dedup: Any, executor: str) -> dict[str, Any]:
        c = self.config
        fmt = c.format
        per_source = [{"source": s.describe(), "type": getattr(cfg, "type", "?"), "read": 0,
                       "empty": 0} for s, cfg in zip(self.sources(), c.sources)]
        skipped: list[Counter[str]] = [Counter() for _ in per_source]
        for r in results:
            per_source[r["source"]]["read"] += r["read"]
            per_source[r["source"]]["empty"] += r["empty"]
            skipped[r["source"]].update(r["skipped"])
        for stats, sk in zip(per_source, skipped):
            stats["skipped"] = dict(sorted(sk.items()))
        fstats = merge_filters(list(plan.filter_names), (r["filters"] for r in results))
        docs_in = sum(s["read"] for s in per_source)
        empty = sum(s["empty"] for s in per_source)
        docs_out = splits["train"]["rows"] + splits["heldout"]["rows"]
        dedup_dropped = summary["dropped"] if summary else 0
        dropped_by: Counter[str] = Counter()
        for st in fstats:
            dropped_by.update({f"{st.name}:{r}": n for r, n in st.dropped_by.items()})
        if empty:
            dropped_by["input:empty"] = empty
        if dedup_dropped:
            dropped_by["dedup:duplicate"] = dedup_dropped

        if docs_out == 0:
            described = ", ".join(s["source"] for s in per_source)
            if docs_in == 0:
                raise StageInputError(f"{self._where()}: the sources yielded no documents "
                                      f"({described}); check the files and their contents")
            top = ", ".join(f"{r} ({n})" for r, n in dropped_by.most_common(5))
            raise StageInputError(f"{self._where()}: all {docs_in} documents read from "
                                  f"{described} were dropped; top reasons: {top}. Loosen "
                                  f"those filters or check the sources")

        # publish: shards move from the work folder into the output, hashes already known
        recorded: dict[str, tuple[int, str]] = {}
        for f in files:
            dst = out / f["path"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(work / "shards" / f["path"], dst)
            recorded[f["path"]] = (f["size"], f["sha256"])
        if c.heldout_fraction == 0 and splits["heldout"]["rows"] == 0:
            del splits["heldout"]
        dedup_stats: dict[str, Any] = {"enabled": dedup is not None, "dropped": dedup_dropped}
        if dedup is not None and summary is not None:
            wheres = extra["wheres"]
            dedup_stats.update({
                "type": dedup.name, "params": dedup.describe_params(),
                "clusters": summary["clusters"], "largest_cluster": summary["largest_cluster"],
                "dropped_sample": [{"dropped": wheres.get(m, str(m)),
                                    "kept": wheres.get(r, str(r))}
                                   for m, r in summary["sample"]]})
        stats = {
            "format": fmt, "docs_in": docs_in, "docs_out": docs_out,
            "sources": per_source,
            "filters": [st.as_dict() for st in fstats],
            "dedup": dedup_stats,
            "dropped_by_reason": dict(dropped_by.most_common()),
            "splits": {s: v["rows"] for s, v in splits.items()},
            "heldout_moved_from_train": extra["moved"],
            "partitions": len(results),
        }
        atomic_write_text(out / "stats.json", json.dumps(stats, indent=2) + "\n")
        self.ctx.write_artifact_meta("dataset", {"format": fmt, "splits": splits,
                                                 "columns": rec.columns(fmt, plan.metadata)})
        self.ctx.record_output_files("dataset", recorded)
        shutil.rmtree(work, ignore_errors=True)
        metrics: dict[str, Any] = {
            "docs_in": docs_in, "docs_out": docs_out, "train_rows": splits["train"]["rows"],
            "heldout_rows": splits.get("heldout", {}).get("rows", 0),
            "dropped": docs_in - docs_out, "dedup_dropped": dedup_dropped,
        }
        if summary is not None:
            metrics["dedup_clusters"] = summary["clusters"]
        self.ctx.log(docs_in, metrics)
        metrics["dropped_by"] = ", ".join(f"{r}={n}" for r, n in dropped_by.most_common(5)) \
            or "none"
        metrics["executor"] = executor
        return metrics


def factory(config: Any, ctx: Any) -> CurateStage:
    return CurateStage(config, ctx)
