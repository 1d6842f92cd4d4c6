"""The ``lm-eval`` evaluator: ``lm_eval.simple_evaluate`` in-process on the evaluated model.

Tasks come from the task YAML files in ``include_path`` only (the harness's own task registry
is not indexed, so nothing is looked up or downloaded from the Hub); their ``dataset_path`` /
``dataset_kwargs`` should name local files, e.g. ``dataset_path: json`` with
``dataset_kwargs: {data_files: {test: /path/questions.jsonl}}``. The model is wrapped in
:class:`lmforge_lmeval.adapter.LmforgeLM`. Metrics are reported as ``<task>/<metric>`` (e.g.
``mc/acc``); standard errors and the harness's per-task configs go into report.json.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmforge import Artifact, StageInputError
from lmforge.evaluation import EvalContext, Evaluator

INSTALL_HINT = ("the lm-eval evaluator needs lm-evaluation-harness: pip install "
                "'lmforge[lm-eval]' (or pip install 'lm-eval[hf]')")


def import_lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError as exc:
        raise StageInputError(f"{INSTALL_HINT} ({exc})") from None
    return lm_eval


def task_manager(include_path: str) -> Any:
    """The harness's task manager over ``include_path`` only."""
    import_lm_eval()
    from lm_eval.tasks import TaskManager

    path = Path(include_path)
    if not path.is_dir():
        raise StageInputError(f"lm-eval include_path {path} is not a folder; point it at the "
                              f"folder that holds your task YAML files")
    return TaskManager(include_path=str(path), include_defaults=False)


def flatten(results: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """``({"<task>/<metric>": value}, {"<task>/<metric>_stderr": value})`` from
    ``simple_evaluate``'s ``results`` (keys ``"<metric>,<filter>"``; the filter is dropped when
    it is ``none``)."""
    metrics: dict[str, float] = {}
    stderrs: dict[str, Any] = {}
    for task, values in results.items():
        for key, value in values.items():
            if key == "alias" or "," not in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            name = f"{task}/{metric}" if filt == "none" else f"{task}/{metric}[{filt}]"
            if metric.endswith("_stderr"):
                stderrs[name] = value if math.isfinite(value) else None
            else:
                metrics[name] = float(value)
    return metrics, stderrs


class LmEval(Evaluator):
    """Config: :class:`lmforge_lmeval.config.LmEvalConfig`."""

    def check(self, inputs: Mapping[str, Artifact]) -> None:
        tm = task_manager(self.config.include_path)
        known = set(tm.all_tasks)
        missing = [t for t in self.config.tasks if t not in known]
        if missing:
            raise StageInputError(f"lm-eval: no task named {missing} in {self.config.include_path}"
                                  f" (its YAML files define: {sorted(known)[:20]})")

    def run(self, model: Any, tokenizer: Any, inputs: Mapping[str, Artifact], device: Any,
            ctx: EvalContext) -> dict[str, Any]:
        lm_eval = import_lm_eval()
        from lmforge_lmeval.adapter import LmforgeLM

        cfg = self.config
        adapter = LmforgeLM(model, tokenizer, device, batch_size=ctx.batch_size,
                            max_gen_toks=cfg.max_gen_toks, seed=cfg.seed)
        limit = cfg.limit or ctx.max_examples
        with ctx.progress(None, f"lm-eval {', '.join(cfg.tasks)}", unit="task"):
            out = lm_eval.simple_evaluate(
                model=adapter, tasks=list(cfg.tasks), task_manager=task_manager(cfg.include_path),
                num_fewshot=cfg.num_fewshot, limit=limit, bootstrap_iters=cfg.bootstrap_iters,
                log_samples=False, random_seed=cfg.seed, numpy_random_seed=cfg.seed,
                torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed)
        metrics, stderrs = flatten(out["results"])
        if not metrics:
            raise StageInputError(f"lm-eval returned no metrics for {cfg.tasks}")
        return {**metrics, "stderr": stderrs,
                "n_samples": {t: v.get("effective", v.get("original"))
                              for t, v in (out.get("n-samples") or {}).items()},
                "versions": dict(out.get("versions") or {})}

    def markdown(self, result: Mapping[str, Any]) -> str:
        rows = ["| task/metric | value | stderr |", "|---|---|---|"]
        stderr = result.get("stderr", {})
        for key, value in result.items():
            if isinstance(value, float):
                err = stderr.get(f"{key}_stderr")
                rows.append(f"| {key} | {value:.4f} | {'' if err is None else f'{err:.4f}'} |")
        return "lm-evaluation-harness results (in-process, local tasks):\n\n" + "\n".join(rows)
