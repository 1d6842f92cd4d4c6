"""The ``pass-at-k`` evaluator: functional correctness of generated code (HumanEval style).

For each problem of the ``prompts`` input (a ``dataset/prompt`` with ``tests`` — doctest
examples — and ``entry_point``), ``n`` completions are sampled (:mod:`lmforge.generation`); the
code of each (:func:`lmforge.codecheck.extract_code`) runs against the tests in a ``sandbox``
component (:func:`lmforge.codecheck.doctest_program`), and passes when every example passes.
With ``c`` of ``n`` passing, the unbiased estimator of Chen et al. (2021) is

    pass@k = 1 - C(n - c, k) / C(n, k)

averaged over problems, computed as ``1 - prod_{i = n-c+1}^{n} (1 - k / i)``: no factorials,
no overflow, exact to float precision for any n.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmforge import Artifact
from lmforge.evaluation import EvalContext, Evaluator
from lmforge_eval.prompts import read_problems, sample_completions


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from ``c`` correct of ``n`` samples (``k <= n``)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


class PassAtK(Evaluator):
    """Config: :class:`lmforge_eval.config.PassAtKConfig`."""

    def requires(self) -> dict[str, str]:
        return {"prompts": "dataset/prompt"}

    def run(self, model: Any, tokenizer: Any, inputs: Mapping[str, Artifact], device: Any,
            ctx: EvalContext) -> dict[str, Any]:
        from lmforge.codecheck import doctest_program, extract_code, new_nonce, parse_report
        from lmforge.sandbox import SandboxJob, run_many

        cfg = self.config
        limit = min(x for x in (cfg.max_problems, ctx.max_examples) if x) if (
            cfg.max_problems or ctx.max_examples) else None
        problems = read_problems(inputs, cfg.split, limit, need=("tests", "entry_point"))
        texts = sample_completions(model, tokenizer, problems, device, ctx, n=cfg.n,
                                   temperature=cfg.temperature, top_p=cfg.top_p,
                                   top_k=cfg.top_k, max_new_tokens=cfg.max_new_tokens,
                                   seed=cfg.seed)
        jobs, nonces = [], []
        for p, samples in zip(problems, texts):
            for text in samples:
                nonce = new_nonce()
                code = extract_code(text, p.entry_point)
                jobs.append(SandboxJob(doctest_program(code, p.tests or "", p.entry_point or ""),
                                       stdin=nonce + "\n", timeout_s=cfg.timeout_s))
                nonces.append(nonce)
        sandbox = ctx.stage.build("sandbox", cfg.sandbox)
        try:
            with ctx.progress(len(jobs), "running tests", unit="program") as bar:
                results = []
                step = max(1, 4 * int(getattr(sandbox, "workers", 4) or 4))
                for start in range(0, len(jobs), step):
                    results += run_many(sandbox, jobs[start:start + step])
                    bar.advance(len(jobs[start:start + step]))
        finally:
            sandbox.close()
        passed = [bool((r := parse_report(res.stdout, nonce)) and r.ok)
                  for res, nonce in zip(results, nonces)]
        rows, per_problem = [], []
        for i, (p, samples) in enumerate(zip(problems, texts)):
            ok = passed[i * cfg.n:(i + 1) * cfg.n]
            per_problem.append(sum(ok))
            rows.append({"entry_point": p.entry_point, "correct": sum(ok), "samples": cfg.n,
                         "example": samples[ok.index(True)] if any(ok) else samples[0],
                         "example_passed": any(ok)})
        metrics: dict[str, Any] = {
            f"pass@{k}": sum(pass_at_k(cfg.n, c, k) for c in per_problem) / len(problems)
            for k in cfg.ks}
        limits = [res.limit for res in results if res.limit]
        metrics.update({"problems": len(problems), "samples_per_problem": cfg.n,
                        "solved": sum(1 for c in per_problem if c),
                        "runs_ended_by_a_limit": len(limits), "problems_detail": rows})
        return metrics

    def markdown(self, result: Mapping[str, Any]) -> str:
        lines = ["| problem | correct / samples |", "|---|---|"]
        for r in result.get("problems_detail", []):
            lines.append(f"| `{r['entry_point']}` | {r['correct']} / {r['samples']} |")
        return "\n".join(lines) + "\n"
