"""The report's content as a list of blocks (headings, paragraphs, tables, plots, the lineage),
built once from :class:`RunData` and rendered twice: a self-contained HTML page (plots as PNG
data URIs, the lineage as inline SVG) and Markdown (plots as files beside it, the lineage as a
Mermaid flowchart). Both therefore say the same thing."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from lmforge._version import __version__
from lmforge.report.collect import RunData, StageInfo, is_number


# -- blocks --------------------------------------------------------------------------------------
@dataclass
class Link:
    text: str
    target: Path  # a file; rendered relative to the report's folder


@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Para:
    parts: list[str | Link]
    css: str = ""


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    css: str = ""  # class of the HTML table (the tests find tables by it)
    numeric: set[int] = field(default_factory=set)  # right-aligned columns
    folded: str = ""  # HTML: shown folded under this summary line


@dataclass
class Plot:
    stage_id: str
    png: bytes
    alt: str
    name: str = ""  # a figure a stage drew itself (see _stage_figures); "" for the core's plots

    @property
    def key(self) -> str:
        # "." never occurs in a stage id, so a stage's figure cannot take another's name
        return f"{self.stage_id}.{self.name}" if self.name else self.stage_id

    @property
    def file_name(self) -> str:
        return f"plots/{self.key}.png"


@dataclass
class Lineage:
    svg: str
    mermaid: str


Block = Heading | Para | Table | Plot | Lineage


def format_number(value: Any) -> str:
    """How the report writes a number: whole numbers in full with thousands separators
    (``129,383``), others with 4 significant digits (``5.817``, ``0.0003``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.4g}"
    return str(value)


def format_change(value: float | int) -> str:
    text = format_number(value)
    return text if text.startswith("-") or value == 0 else f"+{text}"


def _seconds(s: StageInfo) -> str:
    if s.seconds is None:
        return "—"
    sec = float(s.seconds)
    return f"{sec:.1f}s" if sec < 120 else f"{int(sec // 60)}m{int(sec % 60):02d}s"


def _status(s: StageInfo) -> str:
    if s.status == "complete":
        return "resumed" if s.resumed else "complete"
    return s.status


def _counts(mapping: Any) -> str:
    """``{"redacted": 15}`` -> ``redacted: 15`` ("—" when empty)."""
    if not isinstance(mapping, Mapping) or not mapping:
        return "—"
    return ", ".join(f"{k}: {format_number(v)}" for k, v in mapping.items())


# -- sections ------------------------------------------------------------------------------------
def overview(data: RunData) -> list[Block]:
    from lmforge.summary import headline

    statuses: dict[str, int] = {}
    for s in data.stages:
        statuses[_status(s)] = statuses.get(_status(s), 0) + 1
    total = sum(float(s.seconds or 0) for s in data.stages)
    # No clock time of its own: the report of an unchanged run folder is the same file.
    last = max((s.finished for s in data.stages if s.finished is not None), default=None)
    when = (f" The last stage finished {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last))}."
            if last is not None else "")
    blocks: list[Block] = [
        Para([f"Run folder: {data.run_dir}"]),
        Para([f"{len(data.stages)} stages ("
              + ", ".join(f"{n} {k}" for k, n in statuses.items())
              + f"); {total:.1f}s of stage time in all.{when} Report by lmforge "
              f"{__version__}."]),
        Table(["stage", "kind", "plugin", "status", "time", "headline metric"],
              [[s.stage_id, s.kind or "—", s.plugin or "—", _status(s), _seconds(s),
                headline(s.model_metrics() or s.metrics) or "—"] for s in data.stages],
              css="stages", numeric={4}),
    ]
    for s in data.stages:
        if s.error:
            blocks.append(Para([f"{s.stage_id} {s.status}: {s.error}"], css="error"))
    return blocks


def lineage_section(data: RunData) -> list[Block]:
    from lmforge.report.lineage import mermaid, svg

    blocks: list[Block] = [Lineage(svg(data), mermaid(data))]
    if data.edges:
        blocks.append(Table(["from", "to", "input"],
                            [[e.source, e.target, ", ".join(e.slots)] for e in data.edges],
                            css="edges", folded=f"the {len(data.edges)} edges: which stage "
                            "feeds which, through which input"))
    else:
        blocks.append(Para(["No stage takes another's output."]))
    return blocks


def training_section(data: RunData, plot: Callable[[StageInfo], bytes]) -> list[Block]:
    blocks: list[Block] = []
    for s in data.training:
        blocks.append(Heading(3, f"{s.stage_id} ({s.kind} / {s.plugin})", f"train-{s.stage_id}"))
        loss = s.series["train/loss"]
        (s0, v0), (s1, v1) = loss[0], loss[-1]
        blocks.append(Para([f"train/loss {format_number(v0)} at step {s0} → "
                            f"{format_number(v1)} at step {s1} ({len(loss)} points logged)."]))
        blocks.append(Plot(s.stage_id, plot(s), f"{s.stage_id}: loss and learning rate"))
        final = s.final_values()
        if final:
            blocks.append(Table(["metric", "final value"],
                                [[k, format_number(v)] for k, v in final.items()],
                                css="final", numeric={1}))
        heldout = {k: dict(v) for k, v in s.series.items() if k.startswith("heldout/")}
        steps = sorted({step for pts in heldout.values() for step in pts})
        if len(steps) > 1:
            keys = list(heldout)
            blocks.append(Table(["step", *keys],
                                [[str(st), *(format_number(heldout[k][st]) if st in heldout[k]
                                             else "—" for k in keys)] for st in steps],
                                css="heldout", numeric=set(range(len(keys) + 1))))
    return blocks


def _report_link(s: StageInfo, run_dir: Path) -> list[Link]:
    """Links to the ``report`` outputs of ``s`` (their report.md, else .html or .json)."""
    links = []
    for kind, path in s.outputs.values():
        if kind == "report":
            for file in ("report.md", "report.html", "report.json"):
                if (path / file).is_file():
                    try:
                        text = (path / file).relative_to(run_dir).as_posix()
                    except ValueError:
                        text = str(path / file)
                    links.append(Link(text, path / file))
                    break
    return links


def evaluation_section(data: RunData) -> list[Block]:
    evals = data.evaluations
    if not evals:
        return []
    keys: list[str] = []
    for s in evals:
        keys += [k for k in s.model_metrics() if k not in keys]
    # a stage without a single 'model' input (an arena's list of candidates) is named alone
    headers = ["metric"] + [f"{s.stage_id} (model: {s.input_stage('model')})"
                            if s.input_stage("model") else s.stage_id for s in evals]
    rows = [[k] + [format_number(s.model_metrics()[k]) if k in s.model_metrics() else "—"
                   for s in evals] for k in keys]
    blocks: list[Block] = [
        Para(["Each evaluate stage's model, metric by metric (a stage given a baseline model "
              "is compared with it below)."]),
        Table(headers, rows, css="eval-across", numeric=set(range(1, len(headers)))),
    ]
    for s in evals:
        base = s.baseline_metrics()
        model = s.model_metrics()
        links = _report_link(s, data.run_dir)
        if not base and not links:
            continue
        title = s.stage_id
        if base:
            title += f": {s.input_stage('model') or 'model'} against baseline " \
                     f"{s.input_stage('baseline') or '?'}"
        blocks.append(Heading(3, title, f"eval-{s.stage_id}"))
        if base:
            rows = []
            for k, v in model.items():
                if k in base:
                    rows.append([k, format_number(v), format_number(base[k]),
                                 format_change(v - base[k])])
                else:
                    rows.append([k, format_number(v), "—", "—"])
            blocks.append(Table(["metric", "model", "baseline", "change"], rows,
                                css="eval-baseline", numeric={1, 2, 3}))
        if links:
            blocks.append(Para(["The stage's own report: ", *links]))
        blocks += _stage_figures(s)
    return blocks


#: What a stage's figure may be: a PNG file directly in its report folder, at most this big.
FIGURE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}\.png$")
FIGURE_MAX_BYTES = 8 * 1024 * 1024


def _stage_figures(s: StageInfo) -> list[Block]:
    """Figures an evaluate stage drew itself: its ``report`` outputs' ``artifact.json`` may list
    ``"figures": [{"file": "ratings.png", "caption": "..."}]`` — PNG files in that folder (a
    plain name, at most 8 MiB). Anything else is left out of the report, silently: the report
    never fails a run."""
    blocks: list[Block] = []
    for kind, path in s.outputs.values():
        if kind != "report":
            continue
        try:
            meta = json.loads((path / "artifact.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        figures = meta.get("figures") if isinstance(meta, dict) else None
        for fig in figures if isinstance(figures, list) else []:
            name = fig.get("file") if isinstance(fig, dict) else None
            if not isinstance(name, str) or not FIGURE_NAME.match(name):
                continue
            try:
                file = path / name
                if file.stat().st_size > FIGURE_MAX_BYTES:
                    continue
                png = file.read_bytes()
            except OSError:
                continue
            if not png.startswith(b"\x89PNG\r\n\x1a\n"):
                continue
            caption = fig.get("caption")
            blocks.append(Plot(s.stage_id, png, caption if isinstance(caption, str) and caption
                               else f"{s.stage_id}: {name}", name=name[:-4]))
    return blocks


def data_section(data: RunData) -> list[Block]:
    blocks: list[Block] = []
    for s in data.data:
        blocks.append(Heading(3, f"{s.stage_id} ({s.kind} / {s.plugin})", f"data-{s.stage_id}"))
        for d in s.datasets:
            st, meta = d.stats, d.meta
            fmt = meta.get("format") or st.get("format") or d.kind.partition("/")[2]
            splits = meta.get("splits") or {}
            if not isinstance(splits, Mapping):
                splits = {}
            intro = f"Output {d.name!r}: {fmt} dataset"
            if is_number(st.get("docs_in")) and is_number(st.get("docs_out")):
                intro += (f"; {format_number(st['docs_in'])} documents read, "
                          f"{format_number(st['docs_out'])} kept")
            dedup = st.get("dedup")
            if isinstance(dedup, Mapping) and dedup.get("enabled"):
                intro += f"; deduplication dropped {format_number(dedup.get('dropped', 0))}"
            blocks.append(Para([intro + "."]))
            if splits:
                blocks.append(Table(
                    ["split", "rows", "shards"],
                    [[name, format_number(v.get("rows", "—")), format_number(v.get("shards", "—"))]
                     for name, v in splits.items() if isinstance(v, Mapping)],
                    css="splits", numeric={1, 2}))
            sources = [x for x in st.get("sources") or [] if isinstance(x, Mapping)]
            if sources:
                blocks.append(Table(
                    ["source", "type", "read", "empty", "skipped"],
                    [[str(x.get("source", "")), str(x.get("type", "")),
                      format_number(x.get("read", "—")), format_number(x.get("empty", "—")),
                      _counts(x.get("skipped"))] for x in sources],
                    css="sources", numeric={2, 3}))
            filters = [x for x in st.get("filters") or [] if isinstance(x, Mapping)]
            if filters:
                blocks.append(Table(
                    ["filter", "seen", "kept", "dropped", "modified", "dropped by reason",
                     "modified by reason", "counts"],
                    [[str(x.get("name", "")), *(format_number(x.get(k, "—")) for k in
                                                ("seen", "kept", "dropped", "modified")),
                      _counts(x.get("dropped_by_reason")), _counts(x.get("modified_by_reason")),
                      _counts(x.get("counts"))] for x in filters],
                    css="filters", numeric={1, 2, 3, 4}))
            known = {"format", "docs_in", "docs_out", "sources", "filters", "dedup", "splits",
                     "dropped_by_reason"}
            extra = {k: v for k, v in st.items() if k not in known
                     and (is_number(v) or isinstance(v, str))}
            if extra:
                blocks.append(Table(["statistic", "value"],
                                    [[k, format_number(v)] for k, v in extra.items()],
                                    css="data-extra", numeric={1}))
    return blocks


def others_section(data: RunData) -> list[Block]:
    blocks: list[Block] = []
    for s in data.others:
        blocks.append(Heading(3, f"{s.stage_id} ({s.kind} / {s.plugin})", f"stage-{s.stage_id}"))
        blocks.append(Table(["metric", "value"],
                            [[k, format_number(v)] for k, v in s.metrics.items()],
                            css="metrics", numeric={1}))
    return blocks


def build_blocks(data: RunData, plot: Callable[[StageInfo], bytes]) -> list[Block]:
    """Every block of the report, in order. ``plot`` draws a training stage's curves (PNG)."""
    blocks: list[Block] = [Heading(1, f"Run report: {data.title}", "top")]
    sections: list[tuple[str, str, list[Block], str]] = [
        ("Stages", "stages", overview(data), ""),
        ("Lineage", "lineage", lineage_section(data) if data.stages else [],
         "Stages left to right in dependency order; an arrow is an artifact one stage takes "
         "from another (hover over it for the input slot; the table below lists them all)."),
        ("Training", "training", training_section(data, plot),
         "Loss and learning rate against the step, from each stage's metrics.jsonl."),
        ("Evaluation", "evaluation", evaluation_section(data), ""),
        ("Data", "data", data_section(data),
         "What each data stage read, kept, dropped and modified (its dataset's stats.json)."),
        ("Other stages", "other", others_section(data), ""),
    ]
    for title, anchor, body, intro in sections:
        if not body:
            continue
        blocks.append(Heading(2, title, anchor))
        if intro:
            blocks.append(Para([intro]))
        blocks += body
    return blocks


# -- HTML ----------------------------------------------------------------------------------------
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #111827;
       background: #ffffff; }
main { max-width: 1100px; margin: 0 auto; padding: 16px 24px 48px; }
nav { position: sticky; top: 0; background: #f9fafb; border-bottom: 1px solid #e5e7eb;
      padding: 8px 24px; font-size: 14px; }
nav a { margin-right: 14px; color: #1d4ed8; text-decoration: none; }
h1 { font-size: 24px; } h2 { font-size: 20px; margin-top: 36px; border-bottom: 1px solid #e5e7eb; }
h3 { font-size: 16px; margin-top: 24px; }
p.error { color: #b91c1c; white-space: pre-wrap; }
.scroll { overflow-x: auto; margin: 8px 0 16px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #e5e7eb; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 8px 0 12px; }
img.plot { max-width: 100%; height: auto; border: 1px solid #e5e7eb; }
#lineage-graph { max-width: 100%; height: auto; }
summary { cursor: pointer; font-size: 14px; color: #374151; }
"""


def _href(target: Path, out_dir: Path) -> str:
    try:
        return Path(os.path.relpath(Path(target).resolve(), Path(out_dir).resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(target).resolve().as_uri()


def _html_parts(parts: Sequence[str | Link], out_dir: Path) -> str:
    return "".join(escape(p) if isinstance(p, str) else
                   f'<a href="{escape(_href(p.target, out_dir))}">{escape(p.text)}</a>'
                   for p in parts)


def render_html(blocks: Sequence[Block], out_dir: Path, title: str) -> str:
    nav = [f'<a href="#{b.anchor}">{escape(b.text)}</a>' for b in blocks
           if isinstance(b, Heading) and b.level == 2]
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f'<h{b.level} id="{escape(b.anchor)}">{escape(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            css = f' class="{b.css}"' if b.css else ""
            body.append(f"<p{css}>{_html_parts(b.parts, out_dir)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{escape(h)}</th>" for h in b.headers)
            rows = "".join(
                "<tr>" + "".join(f'<td class="num">{escape(c)}</td>' if i in b.numeric
                                 else f"<td>{escape(c)}</td>" for i, c in enumerate(r)) + "</tr>"
                for r in b.rows)
            table = (f'<div class="scroll"><table class="{escape(b.css)}"><thead><tr>{head}'
                     f"</tr></thead><tbody>{rows}</tbody></table></div>")
            if b.folded:
                table = f"<details><summary>{escape(b.folded)}</summary>{table}</details>"
            body.append(table)
        elif isinstance(b, Plot):
            uri = "data:image/png;base64," + base64.b64encode(b.png).decode("ascii")
            body.append(f'<figure><img class="plot" id="plot-{escape(b.key)}" '
                        f'data-stage="{escape(b.stage_id)}" alt="{escape(b.alt)}" '
                        f'src="{uri}"></figure>')
        elif isinstance(b, Lineage):
            body.append(f'<div class="scroll" id="lineage-box">{b.svg}</div>')
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<nav>{''.join(nav)}</nav>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n"
            "</html>\n")


# -- Markdown ------------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_parts(parts: Sequence[str | Link], out_dir: Path) -> str:
    return "".join(p if isinstance(p, str) else
                   f"[{p.text}](<{_href(p.target, out_dir)}>)" for p in parts)


def render_markdown(blocks: Sequence[Block], out_dir: Path) -> str:
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            lines += [_md_parts(b.parts, out_dir), ""]
        elif isinstance(b, Table):
            lines.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
            lines.append("|" + "|".join("---:" if i in b.numeric else "---"
                                        for i in range(len(b.headers))) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows]
            lines.append("")
        elif isinstance(b, Plot):
            lines += [f"![{b.alt}]({b.file_name})", ""]
        elif isinstance(b, Lineage):
            lines += ["```mermaid", b.mermaid, "```", ""]
    return "\n".join(lines).rstrip() + "\n"
