"""Render the evaluation report: ``report.json`` (everything) and ``report.md`` (for people)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lmforge.fsutil import atomic_write_text


def metrics_of(result: Mapping[str, Any]) -> dict[str, float | int]:
    """The top-level numbers of an evaluator result (its metrics)."""
    return {k: v for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _fmt(v: float | int) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isnan(v) or math.isinf(v):
        return str(v)
    return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"


def render_markdown(report: Mapping[str, Any], sections: Mapping[str, str]) -> str:
    lines = [f"# Evaluation report: stage `{report['stage']}`", "",
             f"- model: `{report['model']['path']}` ({report['model']['parameters']:,} parameters, "
             f"max_seq_len {report['model']['max_seq_len']})",
             f"- tokenizer: `{report['tokenizer']['path']}` (vocab {report['tokenizer']['vocab_size']})",
             f"- device: {report['device']}"]
    if report.get("note"):
        lines[2:2] = ["> " + line if line.strip() else ">"
                      for line in str(report["note"]).strip().splitlines()] + [""]
    baseline = report.get("baseline_evaluators")
    if baseline is None:
        lines += ["", "| evaluator | metric | value |", "|---|---|---|"]
    else:
        lines += [f"- baseline: `{report['baseline']['path']}`", "",
                  "| evaluator | metric | model | baseline | change |", "|---|---|---|---|---|"]
    for label, result in report["evaluators"].items():
        base = metrics_of(baseline.get(label, {})) if baseline is not None else None
        for k, v in metrics_of(result).items():
            if base is None:
                lines.append(f"| {label} | {k} | {_fmt(v)} |")
            elif k in base:
                lines.append(f"| {label} | {k} | {_fmt(v)} | {_fmt(base[k])} | "
                             f"{_fmt(v - base[k])} |")
            else:
                lines.append(f"| {label} | {k} | {_fmt(v)} | — | — |")
    lines.append("")
    for label, result in report["evaluators"].items():
        extra = sections.get(label, "")
        if extra:
            lines += [f"## {label} ({result.get('type', '')})", "", extra.rstrip(), ""]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: Mapping[str, Any],
                 sections: Mapping[str, str], write: Callable[[Path, str], None] = atomic_write_text
                 ) -> None:
    write(out / "report.json", json.dumps(report, indent=2, sort_keys=False, default=str) + "\n")
    write(out / "report.md", render_markdown(report, sections))
