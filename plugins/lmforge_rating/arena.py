"""The ``evaluate/arena`` stage: several models answer the same prompts; every pair of answers
is compared by a judge and/or by people (``lmforge rate`` votes); Bradley–Terry ratings on the
Elo scale with bootstrap intervals, a win-rate matrix and a plot.

Steps: (1) each candidate in turn is built by the backend, answers every prompt through
:func:`lmforge.generation.generate`, and is released before the next (one model in memory);
answers are cached in the stage's ``work/`` folder, so a resumed stage does not regenerate
them (the judge's verdicts too, batch by batch). (2) For each prompt and each pair of candidates ``(i, j)``, ``i`` before ``j`` in the
candidates list, an item ``"<prompt>:<i's stage>:<j's stage>"`` with ``response_a`` from
``i``. (3) The judge (which asks in both orders itself) gives ``p_a``, used as ``i``'s share of
the win; each rater's label of an item is one more comparison (a: 1, b: 0, tie: 0.5).
(4) :mod:`lmforge_rating.bradley_terry` fits the ratings.

Outputs (``report``): ``report.json`` and ``report.md`` (ratings with intervals, win rates,
counts, rater–judge agreement when both are given), ``ratings.png`` (listed in
``artifact.json`` as a figure: the run report shows it), ``pairs.jsonl`` (the items, for
``lmforge rate``), ``verdicts.jsonl`` (the judge's ``p_a`` per item) and ``answers.jsonl``.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmforge import Stage, StageInputError
from lmforge.fsutil import atomic_write_bytes, atomic_write_text

PLOT = "ratings.png"


class ArenaStage(Stage):
    # -- checks --------------------------------------------------------------------------------
    def _candidates(self) -> list[tuple[str, Any]]:
        arts = self.ctx.input_list("candidates")
        if len(arts) < 2:
            raise StageInputError(f"stage {self.ctx.stage_id!r}: an arena compares at least "
                                  f"two candidates, got {len(arts)}")
        labels = [a.stage_id for a in arts]
        return [(label if labels.count(label) == 1 else f"{label}#{k}", a)
                for k, (label, a) in enumerate(zip(labels, arts))]

    def check(self) -> None:
        self._candidates()
        if self.config.votes is not None:
            from lmforge_rating.votes import read_votes

            read_votes(Path(self.config.votes))
        if self.config.judge is not None:
            judge = self.ctx.build("judge", self.config.judge)
            self._check_judge(judge)

    def _check_judge(self, judge: Any) -> None:
        for slot, kind in judge.requires().items():
            art = self.ctx.inputs.get(slot)
            if art is None or art.kind != kind:
                raise StageInputError(f"stage {self.ctx.stage_id!r}: judge "
                                      f"{self.config.judge.type!r} needs input {slot!r} "
                                      f"({kind}); wire it under 'inputs:'")
        judge.check(self.ctx.inputs)

    # -- prompts and answers ---------------------------------------------------------------------
    def _prompts(self) -> list[list[dict[str, str]]]:
        from lmforge.datasetio import load_split

        art = self.ctx.input("prompts")
        rows = load_split(art.path, self.config.split)
        out: list[list[dict[str, str]]] = []
        for row in rows:
            if art.kind == "dataset/prompt":
                messages = [dict(m) for m in row["prompt"]]
            else:
                msgs = [dict(m) for m in row["messages"]]
                first = next((k for k, m in enumerate(msgs) if m["role"] == "assistant"),
                             len(msgs))
                messages = msgs[:first]
            if messages:
                out.append(messages)
            if len(out) >= self.config.max_prompts:
                break
        if not out:
            raise StageInputError(f"stage {self.ctx.stage_id!r}: split {self.config.split!r} of "
                                  f"{art.path} holds no prompt")
        return out

    def _answers(self, backend: Any, label: str, art: Any, tok: Any, tok_hash: str,
                 prompts: list[list[dict[str, str]]], device: Any) -> list[str]:
        from lmforge.chat import END, encode_chat
        from lmforge.generation import SamplingParams, generate
        from lmforge.modelio import ModelRecipe

        cfg = self.config
        key = hashlib.sha256(json.dumps(
            [art.hash, tok_hash, prompts, cfg.max_new_tokens, cfg.temperature, cfg.top_k,
             cfg.seed], sort_keys=True).encode()).hexdigest()[:20]
        cache = self.ctx.work_dir() / f"answers-{key}.json"
        if cache.is_file():
            try:
                cached = json.loads(cache.read_text(encoding="utf-8"))
                if isinstance(cached, list) and len(cached) == len(prompts):
                    return [str(a) for a in cached]
            except ValueError:
                pass  # a damaged cache is regenerated
        stop = tuple(t for t in (tok.eos_id, tok.tokenizer.token_to_id(END)) if t is not None)
        encoded = [encode_chat(tok.tokenizer, p, add_generation_prompt=True)[0] for p in prompts]
        model = backend.build_model(ModelRecipe.from_artifact(art.path, self.ctx.plugins))
        model.eval()
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                top_k=cfg.top_k, stop_ids=stop, seed=cfg.seed)
        with self.ctx.progress(len(prompts), f"{label} answers", unit="prompt") as bar:
            outs = []
            for start in range(0, len(encoded), cfg.batch_size):
                chunk = encoded[start:start + cfg.batch_size]
                outs += generate(model, chunk, params, pad_id=tok.pad_id, device=device,
                                 batch_size=cfg.batch_size)
                bar.advance(len(chunk))
        answers = [tok.decode(c.token_ids).strip() for c in outs]
        del model, outs
        gc.collect()
        atomic_write_text(cache, json.dumps(answers))
        return answers

    # -- comparisons --------------------------------------------------------------------------
    def _judge(self, items: list[dict[str, Any]], device: Any) -> list[dict[str, Any]]:
        """The judge's verdict on every item, in order. Verdicts are appended to a cache in
        ``work/`` batch by batch (flushed and fsync'ed), so a resumed stage asks the judge
        only about the pairs it had not answered."""
        import os

        from lmforge.judging import Comparison

        cfg = self.config
        key = hashlib.sha256(json.dumps(
            [cfg.judge.model_dump(mode="json"), cfg.principle,
             [[it["id"], it["response_a"], it["response_b"]] for it in items]],
            sort_keys=True).encode()).hexdigest()[:20]
        cache = self.ctx.work_dir() / f"verdicts-{key}.jsonl"
        done: dict[str, dict[str, Any]] = {}
        if cache.is_file():
            for line in cache.read_text(encoding="utf-8", errors="replace").splitlines():
                try:  # a line cut short by a kill is judged again
                    row = json.loads(line)
                    done[str(row["id"])] = row
                except (ValueError, KeyError, TypeError):
                    continue
        todo = [it for it in items if it["id"] not in done]
        if todo:
            judge = self.ctx.build("judge", cfg.judge)
            self._check_judge(judge)
            judge.setup(self.ctx, device)
            try:
                with self.ctx.progress(len(items), "judging", unit="pair") as bar, \
                        open(cache, "a", encoding="utf-8") as fh:
                    bar.advance(len(items) - len(todo))
                    for start in range(0, len(todo), cfg.batch_size):
                        batch = todo[start:start + cfg.batch_size]
                        verdicts = judge.compare([Comparison(it["prompt"], it["response_a"],
                                                             it["response_b"], cfg.principle)
                                                  for it in batch])
                        if len(verdicts) != len(batch):
                            raise RuntimeError(f"judge {cfg.judge.type!r} returned "
                                               f"{len(verdicts)} verdicts for {len(batch)} pairs")
                        lines = []
                        for it, v in zip(batch, verdicts):
                            p_a = float(v.p_a)
                            if not 0.0 <= p_a <= 1.0:
                                raise RuntimeError(f"judge {cfg.judge.type!r} gave p_a={p_a} "
                                                   f"for {it['id']}; a probability is in [0, 1]")
                            row = {"id": it["id"], "p_a": p_a, "consistent": v.consistent,
                                   "judge": v.judge, "principle": v.principle, "raw": v.raw}
                            done[it["id"]] = row
                            lines.append(json.dumps(row) + "\n")
                        fh.write("".join(lines))
                        fh.flush()
                        os.fsync(fh.fileno())
                        bar.advance(len(batch))
            finally:
                judge.close()
        return [done[it["id"]] for it in items]

    def _votes(self, ids: set[str]) -> tuple[dict[str, dict[str, str]], dict[str, int]]:
        from lmforge_rating.labels import human_labels
        from lmforge_rating.votes import read_votes

        votes = read_votes(Path(self.config.votes))
        labels = human_labels(votes)
        known = {i: by for i, by in labels.items() if i in ids}
        stats = {"answers": len(votes), "labels": sum(len(by) for by in known.values()),
                 "items": len(known), "raters": len({r for by in known.values() for r in by}),
                 "labels_for_unknown_items": sum(len(by) for i, by in labels.items()
                                                 if i not in ids)}
        return known, stats

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> Mapping[str, Any]:
        from lmforge.chat import load_tokenizer
        from lmforge_rating.agreement import agreement_report
        from lmforge_rating.bradley_terry import Comparisons, ratings, win_matrix

        cfg = self.config
        cands = self._candidates()
        labels = [label for label, _ in cands]
        backend = self.ctx.build("backend", cfg.backend)
        device = backend.device
        tok_art = self.ctx.input("tokenizer")
        tok = load_tokenizer(tok_art.path)
        prompts = self._prompts()
        answers = [self._answers(backend, label, art, tok, tok_art.hash, prompts, device)
                   for label, art in cands]

        items = []
        for p, prompt in enumerate(prompts):
            for i in range(len(cands)):
                for j in range(i + 1, len(cands)):
                    items.append({"id": f"{p}:{labels[i]}:{labels[j]}", "prompt": prompt,
                                  "response_a": answers[i][p], "response_b": answers[j][p],
                                  "model_a": labels[i], "model_b": labels[j],
                                  "_pair": (i, j)})
        by_id = {it["id"]: it for it in items}

        comps: dict[str, list[tuple[int, int, float]]] = {"judge": [], "human": []}
        verdicts: list[dict[str, Any]] = []
        if cfg.judge is not None:
            verdicts = self._judge(items, device)
            for v in verdicts:
                i, j = by_id[v["id"]]["_pair"]
                comps["judge"].append((i, j, v["p_a"]))
        human: dict[str, dict[str, str]] = {}
        vote_stats: dict[str, int] = {}
        if cfg.votes is not None:
            human, vote_stats = self._votes(set(by_id))
            share = {"a": 1.0, "b": 0.0, "tie": 0.5}
            for item_id, by in sorted(human.items()):
                i, j = by_id[item_id]["_pair"]
                comps["human"] += [(i, j, share[lab]) for _, lab in sorted(by.items())]
        everything = comps["judge"] + comps["human"]
        if not everything:
            raise StageInputError(f"stage {self.ctx.stage_id!r}: nothing to rate: the vote log "
                                  f"{cfg.votes} has no vote on this arena's pairs (rate "
                                  f"{self.ctx.output_dir('report') / 'pairs.jsonl'} first)")

        fits = {}
        sources = [("all", everything)] + [(k, v) for k, v in comps.items()
                                           if v and len(v) != len(everything)]
        for name, rows in sources:
            c = Comparisons.of(rows)
            r = ratings(len(cands), c, ridge=cfg.ridge, anchor=cfg.anchor,
                        anchor_rating=cfg.anchor_rating, rounds=cfg.bootstrap,
                        confidence=cfg.confidence, seed=cfg.seed)
            rate, count = win_matrix(len(cands), c)
            fits[name] = {
                "comparisons": len(rows),
                "ratings": {labels[k]: {
                    "rating": float(r.rating[k]),
                    "low": None if r.low is None else float(r.low[k]),
                    "high": None if r.high is None else float(r.high[k])}
                    for k in range(len(cands))},
                "win_rate": {labels[a]: {labels[b]: (None if count[a, b] == 0
                                                      else float(rate[a, b]))
                                         for b in range(len(cands)) if b != a}
                             for a in range(len(cands))},
                "games": {labels[a]: {labels[b]: int(count[a, b]) for b in range(len(cands))
                                      if b != a} for a in range(len(cands))},
            }

        report: dict[str, Any] = {
            "stage": self.ctx.stage_id, "candidates": labels,
            "candidate_artifacts": {label: {"path": str(a.path), "hash": a.hash}
                                    for label, a in cands},
            "prompts": len(prompts), "pairs": len(items),
            "judge": None if cfg.judge is None else cfg.judge.model_dump(mode="json"),
            "principle": cfg.principle, "votes": vote_stats or None,
            "method": {"model": "Bradley-Terry, maximum likelihood with an L2 ridge",
                       "ridge": cfg.ridge, "scale": "Elo: 400/ln(10) per unit of log-strength",
                       "anchor": cfg.anchor, "anchor_rating": cfg.anchor_rating,
                       "bootstrap_rounds": cfg.bootstrap, "confidence": cfg.confidence,
                       "seed": cfg.seed},
            "fits": fits,
        }
        if verdicts:
            flags = [v["consistent"] for v in verdicts if v["consistent"] is not None]
            report["judge_position_consistency"] = (sum(flags) / len(flags)) if flags else None
        if verdicts and human:
            judge_labels = {v["id"]: ("a" if v["p_a"] > 0.5 else "b" if v["p_a"] < 0.5
                                      else "tie") for v in verdicts}
            report["raters_vs_judge"] = agreement_report(human, judge=judge_labels)
        elif human:
            report["raters"] = agreement_report(human)

        out = self.ctx.output_dir("report")
        self._write_jsonl(out / "pairs.jsonl", [{k: v for k, v in it.items() if k != "_pair"}
                                                for it in items])
        self._write_jsonl(out / "answers.jsonl", [
            {"prompt": prompts[p], **{labels[k]: answers[k][p] for k in range(len(cands))}}
            for p in range(len(prompts))])
        if verdicts:
            self._write_jsonl(out / "verdicts.jsonl", verdicts)
        from lmforge_rating.arena_report import figure, markdown

        atomic_write_bytes(out / PLOT, figure(report))
        atomic_write_text(out / "report.json", json.dumps(report, indent=2, sort_keys=True))
        atomic_write_text(out / "report.md", markdown(report))
        self.ctx.write_artifact_meta("report", {
            "format": "arena", "candidates": labels,
            "figures": [{"file": PLOT, "caption": "Arena ratings (Elo scale, "
                         f"{cfg.confidence:.0%} bootstrap intervals) and win rates"}]})

        main = fits["all"]
        metrics: dict[str, Any] = {"comparisons": main["comparisons"], "pairs": len(items)}
        for label in labels:
            metrics[f"rating/{label}"] = round(main["ratings"][label]["rating"], 1)
        if verdicts and report.get("judge_position_consistency") is not None:
            metrics["judge_consistency"] = round(report["judge_position_consistency"], 4)
        return metrics

    @staticmethod
    def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
