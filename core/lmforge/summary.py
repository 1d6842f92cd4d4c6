"""The summary ``lmforge run`` prints at the end (on stdout): one row per stage with what
happened to it, its time and a headline metric, then why stages ran (unless for the first time:
a changed config or input, outputs damaged on disk, a resumed attempt ...), then where the reports
and exported models are.

:func:`summarize` turns a :class:`lmforge.runner.RunResult` (plus the stages' manifests, for
``resumed`` and the output paths) into :class:`StageSummary` rows; :func:`print_summary` renders
them with rich.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: What a :class:`lmforge.runner.StageOutcome` status is called in the summary. A completed
#: stage is "run", or "resumed" when its manifest says it continued an interrupted attempt.
STATUS_NAMES = {"complete": "run", "reused": "reused", "failed": "failed",
                "interrupted": "interrupted", "skipped": "skipped"}
#: Reasons to run a stage that go without saying (not listed under the table).
QUIET_REASONS = ("not run yet",)
#: Artifact kinds listed under the table, with their heading.
LISTED_OUTPUTS = {"report": "reports", "hf-model": "exported models"}


@dataclass(frozen=True)
class StageSummary:
    """One stage of a finished run, as the summary shows it."""

    stage_id: str
    plugin: str
    status: str  # run | resumed | reused | failed | interrupted | skipped
    seconds: float  # time of this run; for a reused stage, of the run that made it
    headline: str  # "name=value", or "" when the stage returned no metric
    outputs: list[tuple[str, Path]] = field(default_factory=list)  # (artifact kind, path)
    reason: str = ""  # why a stage that ran did (its manifest's reason), "" when reused


def headline(metrics: Mapping[str, Any]) -> str:
    """The metric that stands for a stage: the first measurement (a float) it returned, else
    its first metric; as ``name=value`` ("" for none). Stages return measurements before
    counts when they have them (see :meth:`lmforge.Stage.run`)."""
    if not metrics:
        return ""
    floats = [(k, v) for k, v in metrics.items()
              if isinstance(v, float) and not isinstance(v, bool)]
    name, value = floats[0] if floats else next(iter(metrics.items()))
    return f"{name}={format_value(value)}"


def format_value(value: Any) -> str:
    """Numbers short and readable (4 significant digits; 12.3k, 4.5M for large counts)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= div:
            return f"{value / div:.3g}{unit}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _shown_path(kind: str, path: Path) -> Path:
    """A report folder is shown by its ``report.md`` when it has one (the file to open)."""
    if kind == "report" and (path / "report.md").is_file():
        return path / "report.md"
    return path


def summarize(result: Any) -> list[StageSummary]:
    """Rows for ``result`` (a :class:`lmforge.runner.RunResult`), in run order. Each stage's
    manifest under ``result.run_dir`` adds whether it resumed and its outputs' paths."""
    from lmforge.runner import read_manifest

    rows = []
    for s in result.stages:
        manifest = read_manifest(Path(result.run_dir) / s.stage_id) or {}
        status = STATUS_NAMES.get(s.status, s.status)
        if status == "run" and manifest.get("resumed"):
            status = "resumed"
        outputs = []
        if s.status in ("complete", "reused"):
            for rec in (manifest.get("outputs") or {}).values():
                kind = rec.get("kind", "")
                if kind in LISTED_OUTPUTS and rec.get("path"):
                    path = Path(result.run_dir) / s.stage_id / rec["path"]
                    outputs.append((kind, _shown_path(kind, path)))
        reason = str(manifest.get("reason") or "") if status in ("run", "resumed") else ""
        rows.append(StageSummary(stage_id=s.stage_id, plugin=s.plugin, status=status,
                                 seconds=float(s.seconds or 0.0), headline=headline(s.metrics),
                                 outputs=outputs, reason=reason))
    return rows


def print_summary(result: Any, console: Any, report: Path | None = None) -> list[StageSummary]:
    """Print the summary of ``result`` on ``console`` (a rich Console); return its rows.
    ``report``: the run report's HTML file (see :mod:`lmforge.report`), named last."""
    from rich.table import Table
    from rich.text import Text

    rows = summarize(result)
    colour = {"run": "green", "resumed": "yellow", "reused": "dim", "failed": "red",
              "interrupted": "red"}
    table = Table(title=f"summary: {result.run_dir}", title_justify="left")
    for col, justify in (("stage", "left"), ("plugin", "left"), ("status", "left"),
                         ("time", "right"), ("headline metric", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        time = f"{r.seconds:.1f}s" if r.status != "reused" else f"({r.seconds:.1f}s)"
        table.add_row(Text(r.stage_id), Text(r.plugin),
                      Text(r.status, style=colour.get(r.status, "")), time, Text(r.headline))
    console.print(table)
    if any(r.status == "reused" for r in rows):
        console.print(Text("(time in parentheses: of the earlier run whose result was reused)",
                           style="dim"))
    why = [(r.stage_id, r.reason) for r in rows if r.reason and r.reason not in QUIET_REASONS]
    if why:  # a stage that ran again says why (changed config or inputs, damaged outputs ...)
        console.print("why stages ran:")
        width = max(len(sid) for sid, _ in why)
        for sid, reason in why:
            console.print(Text(f"  {sid:<{width}}  {reason}"))
    for kind, heading in LISTED_OUTPUTS.items():
        found = [(r.stage_id, p) for r in rows for k, p in r.outputs if k == kind]
        if found:
            console.print(f"{heading}:")
            width = max(len(sid) for sid, _ in found)
            for sid, p in found:
                console.print(Text(f"  {sid:<{width}}  {p}"))
    if report is not None:
        console.print(Text(f"run report: {report}"))
    return rows
