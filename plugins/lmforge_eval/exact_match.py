"""The ``exact-match`` evaluator: accuracy of generated answers against references.

For each problem of the ``prompts`` input (a ``dataset/prompt`` with ``reference``), the model
answers (greedy by default, through :mod:`lmforge.generation`) and a ``reward`` component —
``exact-match`` by default: extraction regexes (GSM8K's ``#### 42``, the last number),
normalisation (whitespace, thousands separators, case), numeric comparison — scores the answer
against the reference. Accuracy is the mean score. Any reward that needs no stage inputs can
stand in (e.g. a composite of exact-match variants).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmforge import Artifact, StageInputError
from lmforge.evaluation import EvalContext, Evaluator
from lmforge.rewards import RewardSample
from lmforge_eval.prompts import read_problems, sample_completions


class ExactMatchEval(Evaluator):
    """Config: :class:`lmforge_eval.config.ExactMatchEvalConfig`."""

    def requires(self) -> dict[str, str]:
        return {"prompts": "dataset/prompt"}

    def run(self, model: Any, tokenizer: Any, inputs: Mapping[str, Artifact], device: Any,
            ctx: EvalContext) -> dict[str, Any]:
        cfg = self.config
        limit = min(x for x in (cfg.max_problems, ctx.max_examples) if x) if (
            cfg.max_problems or ctx.max_examples) else None
        problems = read_problems(inputs, cfg.split, limit, need=("reference",))
        texts = sample_completions(model, tokenizer, problems, device, ctx, n=1,
                                   temperature=cfg.temperature, top_p=1.0, top_k=0,
                                   max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
        reward = ctx.stage.build("reward", cfg.reward)
        try:
            if reward.requires():
                raise StageInputError(f"evaluator {ctx.label!r}: reward {cfg.reward.type!r} "
                                      f"needs stage inputs {reward.requires()}; use a reward "
                                      f"that needs none (exact-match)")
            reward.setup(ctx.stage, device)
            out = reward.score([RewardSample(prompt=p.prompt, completion=t[0],
                                             reference=p.reference)
                                for p, t in zip(problems, texts)])
        finally:
            reward.close()
        rows = [{"completion": t[0], "reference": p.reference, "score": s, **d}
                for p, t, s, d in zip(problems, texts, out.scores, out.details)]
        return {"accuracy": sum(out.scores) / len(problems), "problems": len(problems),
                "answers": rows[:cfg.show]}

    def markdown(self, result: Mapping[str, Any]) -> str:
        lines = ["| extracted | reference | score |", "|---|---|---|"]
        for r in result.get("answers", []):
            lines.append(f"| {str(r.get('extracted'))[:40]} | {str(r.get('reference'))[:40]} | "
                         f"{r['score']:g} |")
        return "\n".join(lines) + "\n"
