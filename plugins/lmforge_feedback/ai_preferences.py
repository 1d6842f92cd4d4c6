"""The ``data/ai-preferences`` stage (RLAIF): pairs labelled by a judge.

Pairs come from the ``pairs`` input (a ``dataset/preference``: its ``chosen`` is the gold
label) or are sampled: two responses per prompt of the ``prompts`` input from ``model``. Each
pair is shown to the judge in both orders (for pairs from a dataset, which of chosen/rejected
is ``a`` is drawn per row from the seed, so the gold answer is not always in one position).
The output ``preferences`` has the judge's chosen/rejected, ``p_chosen``, ``judge``,
``principle``, ``raw`` (both orders' probabilities, JSON) and ``consistent`` per row, and for
pairs from a dataset ``gold_agrees`` (the judge chose the gold chosen).

Reported (metrics and ``report.json`` in the output):

* ``gold_agreement`` — fraction of pairs whose judge label equals the gold label (a tie is a
  disagreement), also per split; ``gold_mean_p`` — mean probability the judge gave the gold
  chosen (soft agreement);
* ``position_consistency`` — fraction of pairs where both orders preferred the same response;
  ``first_position_preference`` — mean probability of the response shown first (0.5: no
  position bias);
* ``pairs``, ``kept`` (ties, identical and low-confidence pairs are left out of the dataset).

Work is checkpointed per chunk (resumable), as in ``data/constitutional``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lmforge import Stage, StageInputError
from lmforge_feedback.config import AIPreferencesConfig
from lmforge_feedback.rows import (
    ChunkStore,
    derived_seed,
    iter_rows,
    read_prompts,
    run_chunks,
    split_of,
    write_dataset,
)
from lmforge_feedback.stagekit import build_judge, judge_pairs, label_row, label_stats


def agreement_stats(rows: list[dict[str, Any]]) -> dict[str, float]:
    """``gold_agreement``, ``gold_mean_p`` over rows with a gold label, also per split."""
    gold = [r for r in rows if r.get("gold_a") is not None]
    out: dict[str, float] = {}
    if not gold:
        return out

    def agree(r: dict[str, Any]) -> bool:
        return (r["p_a"] > 0.5) if r["gold_a"] else (r["p_a"] < 0.5)

    def p_gold(r: dict[str, Any]) -> float:
        return r["p_a"] if r["gold_a"] else 1.0 - r["p_a"]

    out["gold_agreement"] = sum(agree(r) for r in gold) / len(gold)
    out["gold_mean_p"] = sum(p_gold(r) for r in gold) / len(gold)
    for split in sorted({r["split"] for r in gold}):
        part = [r for r in gold if r["split"] == split]
        out[f"gold_agreement/{split}"] = sum(agree(r) for r in part) / len(part)
    return out


class AIPreferencesStage(Stage):
    """Stage ``data/ai-preferences`` (inputs pairs? | model + prompts, tokenizer?, judge?,
    judge_tokenizer?)."""

    config: AIPreferencesConfig

    @property
    def source(self) -> str:
        cfg = self.config
        if cfg.source != "auto":
            return cfg.source
        return "pairs" if "pairs" in self.ctx.inputs else "sample"

    def check(self) -> None:
        cfg = self.config
        self.constitution = None
        if cfg.constitution is not None:
            from lmforge_feedback.constitution import load_constitution

            try:
                self.constitution = load_constitution(cfg.constitution)
                self.constitution.require("comparison", cfg.constitution, "ai-preferences")
            except ValueError as exc:
                raise StageInputError(str(exc)) from None
        if self.source == "sample":
            for name in ("model", "tokenizer", "prompts"):
                self.ctx.input(name)
        else:
            from lmforge.datasetio import read_meta

            splits = read_meta(self.ctx.input("pairs").path).get("splits", {})
            if not any(s in splits for s in cfg.splits):
                raise StageInputError(f"stage {self.ctx.stage_id!r}: input 'pairs' has none of "
                                      f"the splits {cfg.splits} (it has {sorted(splits)})")
        self.judge = build_judge(self.ctx, cfg.judge, "judge")

    def _principle(self, seed: int, index: int) -> str | None:
        if self.constitution is not None:
            return self.constitution.sample(seed, index, 0, need="comparison").comparison
        return self.config.principle

    def _items(self) -> list[dict[str, Any]]:
        cfg, ctx = self.config, self.ctx
        if self.source == "sample":
            prompts = read_prompts(ctx.input("prompts"), cfg.prompt_split, cfg.max_prompts)
            return [{"index": i, "prompt": p["prompt"]} for i, p in enumerate(prompts)]
        from lmforge.chat import validate_messages
        from lmforge.datasetio import read_meta

        art = ctx.input("pairs")
        have = read_meta(art.path).get("splits", {})
        items: list[dict[str, Any]] = []
        for split in cfg.splits:
            if split not in have:
                continue
            taken = 0
            for row, where in iter_rows(art.path, split, ["prompt", "chosen", "rejected"]):
                if cfg.max_prompts is not None and taken >= cfg.max_prompts:
                    break
                prompt = validate_messages(row["prompt"], f"{where} ('prompt')",
                                           need_assistant=False)
                for col in ("chosen", "rejected"):
                    if not isinstance(row[col], str):
                        raise StageInputError(f"{where}: {col!r} must be a string")
                items.append({"index": len(items), "split": split, "prompt": prompt,
                              "chosen": row["chosen"], "rejected": row["rejected"]})
                taken += 1
        if not items:
            raise StageInputError(f"stage {ctx.stage_id!r}: input 'pairs' has no rows in "
                                  f"splits {cfg.splits}")
        return items

    def run(self) -> Mapping[str, Any]:
        cfg, ctx = self.config, self.ctx
        seed = derived_seed(ctx.seed, cfg.seed)
        items = self._items()
        plan = {"config": cfg.model_dump(mode="json"), "seed": ctx.seed, "source": self.source,
                "inputs": {n: a.hash for n, a in ctx.inputs.items()}}
        store = ChunkStore(ctx.work_dir(), plan)
        policy = None
        if self.source == "sample":
            from lmforge_feedback.policy import Policy

            policy = Policy(ctx, cfg.backend)
            device = policy.device
        else:
            device = ctx.build("backend", cfg.backend).device
        self.judge.setup(ctx, device)
        try:
            with ctx.progress(len(items), "labelling pairs", unit="pair") as bar:
                rows = run_chunks(store, items, cfg.chunk_size,
                                  lambda n, start, chunk: self._chunk(policy, seed, n, chunk),
                                  bar)
        finally:
            self.judge.close()
            if policy is not None:
                policy.close()
        splits: dict[str, list] = {}
        for r in rows:
            if self.source == "sample":
                r["split"] = split_of(r["index"], seed, cfg.heldout_fraction)
            splits.setdefault(r["split"], [])
            if r["kept"]:
                keep = ["prompt", "chosen", "rejected", "p_chosen", "judge", "principle", "raw",
                        "consistent"] + (["gold_agrees"] if "gold_agrees" in r else [])
                splits[r["split"]].append({k: r[k] for k in keep})
        if not any(splits.values()):
            raise StageInputError(f"stage {ctx.stage_id!r}: the judge labelled no pair "
                                  f"decisively (all ties or identical responses)")
        out = ctx.output_dir("preferences")
        meta = write_dataset(out, "preference", splits)
        metrics = {**label_stats(rows), **agreement_stats(rows), "chunks_reused": store.reused}
        ctx.write_artifact_meta("preferences", {**meta, "judge": rows[0]["judge"],
                                                "source": self.source, "metrics": metrics})
        from lmforge.fsutil import atomic_write_text

        atomic_write_text(out / "report.json", json.dumps(metrics, indent=2, sort_keys=True))
        ctx.log(0, metrics)
        return metrics

    def _chunk(self, policy: Any, seed: int, n: int, chunk: list[dict[str, Any]]
               ) -> list[dict[str, Any]]:
        cfg = self.config
        prompts = [it["prompt"] for it in chunk]
        principles = [self._principle(seed, it["index"]) for it in chunk]
        if policy is not None:
            pairs = policy.reply(prompts, cfg.generation, derived_seed(seed, n, "pair"), n=2)
            a, b, gold = [p[0] for p in pairs], [p[1] for p in pairs], [None] * len(chunk)
        else:
            gold = [derived_seed("order", seed, it["index"]) % 2 == 0 for it in chunk]
            a = [it["chosen"] if g else it["rejected"] for it, g in zip(chunk, gold)]
            b = [it["rejected"] if g else it["chosen"] for it, g in zip(chunk, gold)]
        verdicts = judge_pairs(self.judge, prompts, a, b, principles)
        out = []
        for it, x, y, g, v in zip(chunk, a, b, gold, verdicts, strict=True):
            row = label_row(it["prompt"], x, y, v, cfg.min_confidence)
            row.update(index=it["index"], gold_a=g)
            if "split" in it:
                row["split"] = it["split"]
            if g is not None:
                row["gold_agrees"] = (v.p_a > 0.5) if g else (v.p_a < 0.5)
            out.append(row)
        return out
