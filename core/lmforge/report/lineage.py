"""The lineage graph of a run's stages (who fed whom, through which input slot): a layered
left-to-right layout drawn as inline SVG for the HTML page, and a Mermaid flowchart for the
Markdown one."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from lmforge.report.collect import RunData

KIND_FILL = {"data": "#dbeafe", "tokenizer": "#ede9fe", "train": "#dcfce7", "align": "#fef9c3",
             "evaluate": "#ffedd5", "export": "#e5e7eb", "import": "#e0f2fe"}
STATUS_STROKE = {"complete": "#4b5563", "failed": "#dc2626", "interrupted": "#d97706",
                 "running": "#d97706"}
CHAR_W, NODE_H, GAP_X, GAP_Y, PAD = 7.3, 44, 56, 18, 12


@dataclass
class Placed:
    stage_id: str
    layer: int
    row: int
    x: float = 0.0
    y: float = 0.0


def layout(data: RunData) -> dict[str, Placed]:
    """Layer = longest path from a stage without inputs; rows within a layer ordered by the
    mean row of their neighbours (a few sweeps, to uncross edges)."""
    ids = [s.stage_id for s in data.stages]  # dependencies first
    preds: dict[str, list[str]] = {i: [] for i in ids}
    succs: dict[str, list[str]] = {i: [] for i in ids}
    for e in data.edges:
        preds[e.target].append(e.source)
        succs[e.source].append(e.target)
    layer: dict[str, int] = {}
    for sid in ids:
        layer[sid] = max((layer[p] + 1 for p in preds[sid] if p in layer), default=0)
    columns: dict[int, list[str]] = {}
    for sid in ids:
        columns.setdefault(layer[sid], []).append(sid)
    row = {sid: i for col in columns.values() for i, sid in enumerate(col)}

    def sweep(order: list[int], neighbours: dict[str, list[str]]) -> None:
        for L in order:
            col = columns[L]

            def centre(sid: str) -> float:
                ns = [row[n] for n in neighbours[sid]]
                return sum(ns) / len(ns) if ns else float(row[sid])

            col.sort(key=centre)
            for i, sid in enumerate(col):
                row[sid] = i

    layers = sorted(columns)
    for _ in range(3):
        sweep(layers[1:], preds)
        sweep(layers[-2::-1], succs)
    return {sid: Placed(sid, layer[sid], row[sid]) for sid in ids}


def _label_lines(data: RunData, sid: str) -> tuple[str, str]:
    s = data.stage(sid)
    sub = f"{s.kind} / {s.plugin}" if s.kind else s.status
    if s.status not in ("complete", "") and s.kind:
        sub += f" ({s.status})"
    return sid, sub


def svg(data: RunData) -> str:
    """The lineage as an ``<svg>`` element (no script, no external reference)."""
    placed = layout(data)
    labels = {sid: _label_lines(data, sid) for sid in placed}
    width = max(90.0, max(max(len(a), len(b)) for a, b in labels.values()) * CHAR_W + 2 * PAD)
    tallest = max(sum(1 for p in placed.values() if p.layer == L)
                  for L in {p.layer for p in placed.values()})
    n_layers = max(p.layer for p in placed.values()) + 1
    total_w = n_layers * width + (n_layers - 1) * GAP_X + 2 * PAD
    total_h = tallest * NODE_H + (tallest - 1) * GAP_Y + 2 * PAD
    for p in placed.values():
        count = sum(1 for q in placed.values() if q.layer == p.layer)
        offset = (total_h - 2 * PAD - (count * NODE_H + (count - 1) * GAP_Y)) / 2
        p.x = PAD + p.layer * (width + GAP_X)
        p.y = PAD + offset + p.row * (NODE_H + GAP_Y)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="lineage-graph" role="img" '
           f'width="{total_w:.0f}" height="{total_h:.0f}" '
           f'viewBox="0 0 {total_w:.0f} {total_h:.0f}" font-family="monospace">',
           "<title>lineage of the run's stages</title>",
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
           'fill="#6b7280"/></marker></defs>']
    for e in data.edges:
        a, b = placed[e.source], placed[e.target]
        x1, y1 = a.x + width, a.y + NODE_H / 2
        x2, y2 = b.x, b.y + NODE_H / 2
        dx = max(20.0, (x2 - x1) / 2)
        title = escape(f"{e.source} → {e.target} ({', '.join(e.slots)})")
        out.append(f'<path class="edge" data-source="{escape(e.source)}" '
                   f'data-target="{escape(e.target)}" d="M {x1:.1f} {y1:.1f} C {x1 + dx:.1f} '
                   f'{y1:.1f} {x2 - dx:.1f} {y2:.1f} {x2:.1f} {y2:.1f}" fill="none" '
                   f'stroke="#6b7280" stroke-width="1.4" marker-end="url(#arrow)">'
                   f'<title>{title}</title></path>')
    for sid, p in placed.items():
        s = data.stage(sid)
        top, sub = labels[sid]
        fill = KIND_FILL.get(s.kind, "#f3f4f6")
        stroke = STATUS_STROKE.get(s.status, "#9ca3af")
        dash = "" if s.status in STATUS_STROKE else ' stroke-dasharray="5 3"'
        out.append(f'<g class="node" data-stage="{escape(sid)}"><title>{escape(sid)}: '
                   f'{escape(sub)}</title>'
                   f'<rect x="{p.x:.1f}" y="{p.y:.1f}" width="{width:.1f}" height="{NODE_H}" '
                   f'rx="6" fill="{fill}" stroke="{stroke}" stroke-width="1.5"{dash}/>'
                   f'<text x="{p.x + width / 2:.1f}" y="{p.y + 18:.1f}" text-anchor="middle" '
                   f'font-size="13" font-weight="bold" fill="#111827">{escape(top)}</text>'
                   f'<text x="{p.x + width / 2:.1f}" y="{p.y + 35:.1f}" text-anchor="middle" '
                   f'font-size="11" fill="#374151">{escape(sub)}</text></g>')
    out.append("</svg>")
    return "\n".join(out)


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def mermaid(data: RunData) -> str:
    """A Mermaid ``flowchart LR`` of the lineage (GitHub and many editors draw it)."""
    node = {s.stage_id: f"s{i}" for i, s in enumerate(data.stages)}
    lines = ["flowchart LR"]
    for s in data.stages:
        top, sub = _label_lines(data, s.stage_id)
        lines.append(f'  {node[s.stage_id]}["{_mermaid_text(top)}<br/>{_mermaid_text(sub)}"]')
    for e in data.edges:
        lines.append(f'  {node[e.source]} -- "{_mermaid_text(", ".join(e.slots))}" --> '
                     f'{node[e.target]}')
    return "\n".join(lines)
