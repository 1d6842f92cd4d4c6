"""The ``data/constitutional`` stage: Constitutional AI data from a policy model.

* **SL-CAI** (``mode: sl``): for each prompt the policy answers; then, ``rounds`` times, under
  a principle sampled for (row, round), it critiques its last answer (the conversation so far
  plus the principle's critique request as a user turn) and revises it (plus the critique and
  the revision request). Output ``chat``: the prompt with the final revision as the assistant
  turn (``principles``, ``original``, ``critiques`` recorded per row); with ``preferences:
  true`` also ``preferences``: revision (chosen) over original response (rejected).
* **RL-CAI** (``mode: rl``): two sampled responses per prompt, compared by the judge under the
  ``comparison`` question of a sampled principle, in both orders. Output ``preferences``:
  chosen/rejected by the judge, ``p_chosen``, ``judge``, ``principle`` (its id), the question,
  the raw probabilities (JSON) and ``consistent`` per row.

Rows with an empty or unchanged revision (SL), or with identical responses or a tie (RL), are
left out and counted. Generation is batched; work is checkpointed per chunk of prompts (see
:mod:`lmforge_feedback.rows`), so a killed run continues where it stopped and writes the same
output as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmforge import Stage, StageInputError
from lmforge_feedback.config import ConstitutionalConfig
from lmforge_feedback.constitution import load_constitution
from lmforge_feedback.rows import (
    ChunkStore,
    derived_seed,
    read_prompts,
    run_chunks,
    split_of,
    write_dataset,
)
from lmforge_feedback.stagekit import build_judge, judge_pairs, label_row, label_stats


class ConstitutionalStage(Stage):
    """Stage ``data/constitutional`` (inputs model, tokenizer, prompts, judge?,
    judge_tokenizer?)."""

    config: ConstitutionalConfig

    def check(self) -> None:
        cfg = self.config
        try:
            self.constitution = load_constitution(cfg.constitution)
            if cfg.mode == "rl":
                self.constitution.require("comparison", cfg.constitution, "mode 'rl'")
        except ValueError as exc:
            raise StageInputError(str(exc)) from None
        prompts = self.ctx.input("prompts")
        from lmforge.datasetio import split_files

        split_files(prompts.path, cfg.prompt_split)
        self.judge = build_judge(self.ctx, cfg.judge, "judge") if cfg.mode == "rl" else None

    def run(self) -> Mapping[str, Any]:
        from lmforge_feedback.policy import Policy

        cfg, ctx = self.config, self.ctx
        prompts = read_prompts(ctx.input("prompts"), cfg.prompt_split, cfg.max_prompts)
        seed = derived_seed(ctx.seed, cfg.seed)
        plan = {"config": cfg.model_dump(mode="json"), "seed": ctx.seed,
                "inputs": {n: a.hash for n, a in ctx.inputs.items()},
                "constitution": self.constitution.model_dump(mode="json")}
        store = ChunkStore(ctx.work_dir(), plan)
        policy = Policy(ctx, cfg.backend)
        if self.judge is not None:
            self.judge.setup(ctx, policy.device)
        items = list(enumerate(prompts))
        work = self._sl_chunk if cfg.mode == "sl" else self._rl_chunk
        try:
            with ctx.progress(len(items), f"{cfg.mode.upper()}-CAI", unit="prompt") as bar:
                rows = run_chunks(store, items, cfg.chunk_size,
                                  lambda n, start, chunk: work(policy, seed, n, chunk), bar)
        finally:
            if self.judge is not None:
                self.judge.close()
            policy.close()
        for r in rows:
            r["split"] = split_of(r["index"], seed, cfg.heldout_fraction)
        metrics = (self._write_sl(rows) if cfg.mode == "sl" else self._write_rl(rows))
        metrics["chunks_reused"] = store.reused
        ctx.log(0, metrics)
        return metrics

    # -- SL-CAI -----------------------------------------------------------------------------
    def _sl_chunk(self, policy: Any, seed: int, n: int, chunk: list) -> list[dict[str, Any]]:
        cfg, con = self.config, self.constitution
        gen = cfg.generation
        convs = [p["prompt"] for _, p in chunk]
        original = [r[0] for r in policy.reply(convs, gen, derived_seed(seed, n, "response"))]
        current = list(original)
        history: list[list[dict[str, str]]] = [[] for _ in chunk]
        for rnd in range(cfg.rounds):
            principles = [con.sample(seed, i, rnd) for i, _ in chunk]
            ask = [[*conv, {"role": "assistant", "content": cur},
                    {"role": "user", "content": pr.critique}]
                   for conv, cur, pr in zip(convs, current, principles, strict=True)]
            critiques = [r[0] for r in policy.reply(ask, gen, derived_seed(seed, n, rnd, "c"))]
            revise = [[*a, {"role": "assistant", "content": c},
                       {"role": "user", "content": pr.revision}]
                      for a, c, pr in zip(ask, critiques, principles, strict=True)]
            current = [r[0] for r in policy.reply(revise, gen, derived_seed(seed, n, rnd, "r"))]
            for h, pr, c, rev in zip(history, principles, critiques, current, strict=True):
                h.append({"principle": pr.id, "critique": c, "revision": rev})
        return [{"index": i, "prompt": p["prompt"], "original": o, "revision": c, "rounds": h}
                for (i, p), o, c, h in zip(chunk, original, current, history, strict=True)]

    def _write_sl(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        cfg, ctx = self.config, self.ctx
        label = self.constitution.label
        chat: dict[str, list] = {"train": [], "heldout": []}
        prefs: dict[str, list] = {"train": [], "heldout": []}
        empty = unchanged = 0
        for r in rows:
            if not r["revision"].strip():
                empty += 1
                continue
            principles = [h["principle"] for h in r["rounds"]]
            chat[r["split"]].append({
                "messages": [*r["prompt"], {"role": "assistant", "content": r["revision"]}],
                "original": r["original"], "principles": principles,
                "critiques": [h["critique"] for h in r["rounds"]], "constitution": label})
            if r["revision"] == r["original"] or not r["original"].strip():
                unchanged += 1
                continue
            prefs[r["split"]].append({"prompt": r["prompt"], "chosen": r["revision"],
                                      "rejected": r["original"], "principles": principles,
                                      "constitution": label})
        if not chat["train"] and not chat["heldout"]:
            raise StageInputError(f"stage {ctx.stage_id!r}: every revision was empty; the "
                                  f"policy stops at once (more SFT, or a larger "
                                  f"max_new_tokens, may help)")
        meta = write_dataset(ctx.output_dir("chat"), "chat", chat)
        ctx.write_artifact_meta("chat", {**meta, "constitution": label, "mode": "sl"})
        metrics: dict[str, Any] = {"prompts": len(rows), "revisions": sum(map(len, chat.values())),
                                   "empty_revisions": empty,
                                   "heldout_rows": len(chat["heldout"])}
        if cfg.preferences:
            if not prefs["train"] and not prefs["heldout"]:
                raise StageInputError(f"stage {ctx.stage_id!r}: no revision differs from its "
                                      f"original, so there is no preference pair to write")
            meta = write_dataset(ctx.output_dir("preferences"), "preference", prefs)
            ctx.write_artifact_meta("preferences", {**meta, "constitution": label,
                                                    "mode": "sl"})
            metrics["preference_pairs"] = sum(map(len, prefs.values()))
            metrics["unchanged_revisions"] = unchanged
        return metrics

    # -- RL-CAI -----------------------------------------------------------------------------
    def _rl_chunk(self, policy: Any, seed: int, n: int, chunk: list) -> list[dict[str, Any]]:
        cfg, con = self.config, self.constitution
        convs = [p["prompt"] for _, p in chunk]
        pairs = policy.reply(convs, cfg.generation, derived_seed(seed, n, "pair"), n=2)
        principles = [con.sample(seed, i, 0, need="comparison") for i, _ in chunk]
        verdicts = judge_pairs(self.judge, convs, [p[0] for p in pairs], [p[1] for p in pairs],
                               [pr.comparison for pr in principles])
        out = []
        for (i, _), conv, (a, b), pr, v in zip(chunk, convs, pairs, principles, verdicts,
                                               strict=True):
            row = label_row(conv, a, b, v, cfg.min_confidence)
            row.update(index=i, principle=pr.id, question=pr.comparison)
            out.append(row)
        return out

    def _write_rl(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        ctx = self.ctx
        label = self.constitution.label
        splits: dict[str, list] = {"train": [], "heldout": []}
        for r in rows:
            if r["kept"]:
                splits[r["split"]].append({k: r[k] for k in (
                    "prompt", "chosen", "rejected", "p_chosen", "judge", "principle",
                    "question", "raw", "consistent")} | {"constitution": label})
        if not splits["train"] and not splits["heldout"]:
            dropped = sorted({r["dropped"] for r in rows})
            raise StageInputError(f"stage {ctx.stage_id!r}: no pair was kept ({dropped}); "
                                  f"raise generation.temperature so the two samples differ")
        meta = write_dataset(ctx.output_dir("preferences"), "preference", splits)
        ctx.write_artifact_meta("preferences", {**meta, "constitution": label, "mode": "rl",
                                                "judge": rows[0]["judge"]})
        stats = label_stats(rows)
        drops: dict[str, int] = {}
        for r in rows:
            if not r["kept"]:
                drops[r["dropped"]] = drops.get(r["dropped"], 0) + 1
        return {**stats, "heldout_rows": len(splits["heldout"]),
                **{f"dropped_{k.replace(' ', '_')}": v for k, v in drops.items()}}
