"""The ``data/mix`` stage: combine datasets by weights or budgets, as in DoReMi / OLMo mixes.

Each configured source is an input of the stage (``inputs: {web: curate_web, code: ...}``).
The train split of the output is built as follows, sizes measured in ``unit`` (documents,
tokens of the ``tokenizer`` input, or characters):

1. every source's natural size ``S`` is measured (one pass over its train split);
2. targets: a source with a ``budget`` gets exactly that; the rest of ``total`` is shared by
   ``weight`` (normalised). Without ``total``, the largest total is taken for which no
   weighted source has to repeat (the most constrained source is used once);
3. ``max_epochs`` caps a target at ``max_epochs * S`` (the output then holds less of that
   source than asked; the report says so);
4. a target ``T`` is met with ``floor(T / S)`` full copies of the source plus the first
   documents of a seeded permutation whose sizes add up to the rest (the last one may
   overshoot by less than one document): up-sampling repeats, down-sampling subsets;
5. the selected rows of all sources are shuffled together (seeded) and written in shards.

The heldout split is every source's heldout split unsampled (``heldout: concat``), so
per-source evaluation is unchanged by the mix. ``stats.json`` reports, per source, documents
and units in and out, the target and the effective epochs (out / in). Same inputs, config and
seed give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmforge import Stage, StageInputError
from lmforge.datasetio import read_meta, split_files
from lmforge.fsutil import atomic_write_text
from lmforge_data import records as rec


def targets(sizes: Mapping[str, int], config: Any) -> dict[str, float]:
    """Source -> target size in the unit (before ``max_epochs`` caps), see step 2."""
    sources = config.sources
    budgets = {n: float(s.budget) for n, s in sources.items() if s.budget is not None}
    weights = {n: s.weight for n, s in sources.items() if s.weight is not None}
    out = dict(budgets)
    if weights:
        w_sum = sum(weights.values())
        if config.total is not None:
            rest = config.total - sum(budgets.values())
            if rest <= 0:
                raise StageInputError(f"total {config.total} is used up by the budgets "
                                      f"({sum(budgets.values()):.0f}); raise total or lower the "
                                      f"budgets")
        else:
            rest = min(sizes[n] * w_sum / w for n, w in weights.items())
        out.update({n: rest * w / w_sum for n, w in weights.items()})
    return out


def select(sizes: Any, target: float, rng: Any) -> Any:
    """Row indices (with repeats) whose sizes add up to ``target``: full copies, then a prefix
    of a permutation (see step 4). ``sizes``: int64 array of per-document sizes."""
    import numpy as np

    total = int(sizes.sum())
    if total == 0 or target <= 0:
        return np.zeros(0, np.int64)
    full = int(target // total)
    rest = target - full * total
    perm = rng.permutation(len(sizes))
    before = np.cumsum(sizes[perm]) - sizes[perm]  # size taken before each document
    part = perm[before < rest] if rest > 0 else perm[:0]
    return np.concatenate([np.tile(np.arange(len(sizes)), full), part]).astype(np.int64)


def _seed(seed: int, name: str) -> list[int]:
    return [seed & (2**63 - 1), int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")]


class MixStage(Stage):
    """See the module docstring; config :class:`lmforge_data.stage_config.MixConfig`."""

    def check(self) -> None:
        fmt = self.config.format
        for name in self.config.sources:
            art = self.ctx.input(name)
            got = read_meta(art.path).get("format")
            if got != fmt:
                raise StageInputError(f"stage {self.ctx.stage_id!r}: input {name!r} is a "
                                      f"dataset/{got}, the mix's format is {fmt!r}")
            split_files(art.path, "train")

    def _table(self, name: str, split: str) -> Any:
        import pyarrow.parquet as pq

        files = split_files(self.ctx.input(name).path, split)
        schema = rec.arrow_schema(self.config.format)
        table = pq.read_table(files, columns=rec.COLUMNS[self.config.format], memory_map=True)
        return table.cast(schema)

    def _sizes(self, table: Any, tokenizer: Any) -> Any:
        import numpy as np

        unit, fmt = self.config.unit, self.config.format
        if unit == "documents":
            return np.ones(table.num_rows, np.int64)
        out = np.zeros(table.num_rows, np.int64)
        start = 0
        for batch in table.to_batches(max_chunksize=1024):
            texts = ["\n\n".join(rec.texts(r, fmt)) for r in batch.to_pylist()]
            if unit == "chars":
                vals = [len(t) for t in texts]
            else:
                vals = [len(e.ids) for e in tokenizer.encode_batch(texts,
                                                                  add_special_tokens=False)]
            out[start:start + len(vals)] = vals
            start += len(vals)
        return out

    def run(self) -> Mapping[str, Any]:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        c = self.config
        out = self.ctx.output_dir("dataset")
        for old in ["train", "heldout", "stats.json", "artifact.json"]:
            p = out / old
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        tokenizer = None
        if c.unit == "tokens":
            from lmforge.chat import load_tokenizer

            tokenizer = load_tokenizer(self.ctx.input("tokenizer").path).tokenizer
        names = list(c.sources)
        tables, sizes = {}, {}
        with self.ctx.progress(len(names), f"measuring sources ({c.unit})",
                               unit="sources") as bar:
            for name in names:
                tables[name] = self._table(name, "train")
                sizes[name] = self._sizes(tables[name], tokenizer)
                bar.advance(1)
        natural = {n: int(sizes[n].sum()) for n in names}
        empty = [n for n in names if natural[n] == 0]
        if empty:
            raise StageInputError(f"stage {self.ctx.stage_id!r}: sources {empty} have no "
                                  f"{c.unit} in their train split")
        goal = targets(natural, c)
        picked, report = [], {}
        for k, name in enumerate(names):
            cap = c.sources[name].max_epochs
            target = goal[name] if cap is None else min(goal[name], cap * natural[name])
            idx = select(sizes[name], target, np.random.default_rng(_seed(c.seed, name)))
            units_out = int(sizes[name][idx].sum())
            report[name] = {
                "docs_in": int(tables[name].num_rows), "docs_out": int(len(idx)),
                f"{c.unit}_in": natural[name], f"{c.unit}_out": units_out,
                "target": round(goal[name], 3), "capped_by_max_epochs": target < goal[name],
                "epochs": round(units_out / natural[name], 4)}
            picked.append(np.stack([np.full(len(idx), k, np.int64), idx], axis=1))
        order = np.concatenate(picked)
        order = order[np.random.default_rng(_seed(c.seed, "shuffle")).permutation(len(order))]
        offsets = np.cumsum([0] + [tables[n].num_rows for n in names])[:-1]
        combined = pa.concat_tables([tables[n] for n in names])
        rows = offsets[order[:, 0]] + order[:, 1]
        splits = {"train": self._write(out / "train", combined, rows, pq)}
        if c.heldout == "concat":
            held = [self._table(n, "heldout") for n in names
                    if read_meta(self.ctx.input(n).path).get("splits", {}).get(
                        "heldout", {}).get("rows")]
            if held:
                table = pa.concat_tables(held)
                splits["heldout"] = self._write(out / "heldout", table,
                                                np.arange(table.num_rows), pq)
        total_out = sum(r[f"{c.unit}_out"] for r in report.values())
        for r in report.values():
            r["share"] = round(r[f"{c.unit}_out"] / total_out, 6) if total_out else 0.0
        stats = {"format": c.format, "unit": c.unit, "seed": c.seed, "sources": report,
                 "splits": {s: v["rows"] for s, v in splits.items()}}
        atomic_write_text(out / "stats.json", json.dumps(stats, indent=2) + "\n")
        self.ctx.write_artifact_meta("dataset", {"format": c.format, "splits": splits,
                                                 "columns": rec.COLUMNS[c.format],
                                                 "mix": report})
        metrics: dict[str, Any] = {"train_rows": splits["train"]["rows"],
                                   f"train_{c.unit}": total_out}
        for name, r in report.items():
            metrics[f"{name}_epochs"] = r["epochs"]
            metrics[f"{name}_share"] = r["share"]
        self.ctx.log(0, metrics)
        return metrics

    def _write(self, folder: Path, table: Any, rows: Any, pq: Any) -> dict[str, int]:
        """Rows ``rows`` of ``table``, in that order, as shards of ``shard_rows``."""
        folder.mkdir(parents=True, exist_ok=True)
        n = self.config.shard_rows
        shards = max(1, math.ceil(len(rows) / n))
        with self.ctx.progress(shards, f"writing {folder.name}", unit="shards") as bar:
            for i in range(shards):
                part = table.take(rows[i * n:(i + 1) * n])
                final = folder / f"shard-{i:05d}.parquet"
                tmp = folder / f".{final.name}.tmp"
                pq.write_table(part, str(tmp))
                os.replace(tmp, final)
                bar.advance(1)
        return {"rows": int(len(rows)), "shards": shards}


def factory(config: Any, ctx: Any) -> MixStage:
    return MixStage(config, ctx)
