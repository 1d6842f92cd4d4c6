"""The run report (``lmforge report RUN_DIR``, also written at the end of ``lmforge run``).

One HTML page and its Markdown twin about a whole run folder, built from the core's artifact
formats only (so any plugin's stages appear in it):

* **stages** — kind, plugin, status, time and headline metric of each (manifests);
* **lineage** — which stage feeds which, through which input (the manifests' ``inputs``);
* **training** — loss (``train/loss``, ``heldout/loss``) and learning-rate (``train/lr``) curves
  of every stage that logged a training loss (its ``metrics.jsonl``), its final metrics and its
  held-out metrics over the steps;
* **evaluation** — the metrics of every ``evaluate`` stage side by side, and model against
  baseline where a stage had one (manifest metrics; ``baseline/<name>`` is the baseline's);
* **data** — splits, sources and per-filter counts of every ``dataset/*`` output
  (``artifact.json``, ``stats.json``);
* metrics of the other stages (tokenizer, export ...).

Files: ``<out_dir>/report.html`` (self-contained: plots are PNG data URIs, the lineage inline
SVG), ``report.md`` and ``plots/<stage>.png`` (the Markdown's images). The default ``out_dir`` is
``<run_dir>/_report``: a stage id starts with a letter, so no stage folder can be called that.
matplotlib is imported only when there is a curve to draw.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lmforge.report.collect import NotARunFolder, RunData, StageInfo, collect_run

__all__ = ["REPORT_DIR", "NotARunFolder", "ReportFiles", "RunData", "StageInfo", "collect_run",
           "default_report_dir", "write_report"]

#: Folder of the run report inside a run folder.
REPORT_DIR = "_report"


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    plots: list[Path]


def default_report_dir(run_dir: Path) -> Path:
    return Path(run_dir) / REPORT_DIR


def write_report(run_dir: Path, out_dir: Path | None = None, *,
                 stage_ids: Iterable[str] | None = None, title: str | None = None) -> ReportFiles:
    """Write the report of ``run_dir`` into ``out_dir`` (default ``<run_dir>/_report``).

    ``stage_ids`` (a pipeline's stages, in order) limits it to those stages and lists the ones
    not run yet; by default every stage folder of ``run_dir`` is in it. Each file is written
    atomically, and only if its content changed (the report holds no clock time of its own, so
    a run that reused every stage leaves it untouched); plots of stages no longer in the report
    are removed. Raises
    :class:`NotARunFolder` when ``run_dir`` holds no stage.
    """
    from lmforge.fsutil import atomic_write_bytes
    from lmforge.report.plots import training_figure
    from lmforge.report.render import Plot, build_blocks, render_html, render_markdown

    data = collect_run(Path(run_dir), stage_ids, title)
    out = Path(out_dir) if out_dir is not None else default_report_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    blocks = build_blocks(data, training_figure)
    plots = [b for b in blocks if isinstance(b, Plot)]
    written = []

    def write(path: Path, content: bytes) -> None:
        # An unchanged file is left alone: rerunning a finished pipeline rewrites nothing.
        try:
            if path.read_bytes() == content:
                return
        except OSError:
            pass
        atomic_write_bytes(path, content)

    for p in plots:
        write(out / p.file_name, p.png)
        written.append(out / p.file_name)
    plot_dir = out / "plots"
    if plot_dir.is_dir():
        for stale in plot_dir.glob("*.png"):
            if stale not in written:
                stale.unlink(missing_ok=True)
    html, md = out / "report.html", out / "report.md"
    write(md, render_markdown(blocks, out).encode("utf-8"))
    write(html, render_html(blocks, out, f"lmforge run report: {data.title}").encode("utf-8"))
    return ReportFiles(html=html, markdown=md, plots=written)
