"""The arena's report: Markdown tables and one figure (ratings with intervals, win rates)."""

from __future__ import annotations

import io
import math
from typing import Any


def _n(x: Any, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    labels = report["candidates"]
    main = report["fits"]["all"]
    m = report["method"]
    conf = f"{m['confidence']:.0%}"
    lines = [f"# Arena: {report['stage']}", "",
             f"{len(labels)} candidates, {report['prompts']} prompts, {report['pairs']} pairs, "
             f"{main['comparisons']} comparisons"
             + (f" (judge: {report['judge']['type']})" if report.get("judge") else "")
             + (f"; human votes: {report['votes']['labels']} labels from "
                f"{report['votes']['raters']} raters" if report.get("votes") else "") + ".", "",
             f"Bradley–Terry by maximum likelihood (ridge {m['ridge']}), Elo scale (400 points "
             f"= 10:1 odds), {'the first candidate' if m['anchor'] == 'first' else 'the mean'}"
             f" at {m['anchor_rating']:g}; {conf} intervals from {m['bootstrap_rounds']} "
             f"bootstrap resamples of the comparisons.", ""]
    for name, fit in report["fits"].items():
        title = {"all": "Ratings", "judge": "Judge only", "human": "Human votes only"}[name]
        lines += [f"## {title}", "", f"| candidate | rating | {conf} interval | comparisons |",
                  "|---|---:|---:|---:|"]
        order = sorted(labels, key=lambda k: -fit["ratings"][k]["rating"])
        for k in order:
            r = fit["ratings"][k]
            games = sum(fit["games"][k].values())
            lines.append(f"| {k} | {_n(r['rating'])} | {_n(r['low'])} – {_n(r['high'])} | "
                         f"{games} |")
        lines.append("")
    fit = main
    lines += ["## Win rates", "", "Row's share of the wins against the column (ties count "
              "half; a judge's probability counts as a share).", "",
              "| | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for a in labels:
        cells = ["—" if a == b else _n(fit["win_rate"][a][b], 3) for b in labels]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines.append("")
    consistency = report.get("judge_position_consistency")
    if consistency is not None:
        lines += [f"Judge position consistency (the same answer preferred in both orders): "
                  f"{consistency:.3f}."]
        if consistency < 0.5:
            lines.append("The judge preferred the same position in most pairs: its verdicts "
                         "say more about position than about the answers, and averaged over "
                         "both orders they sit near 0.5. Ratings close together with narrow "
                         "intervals then mean the judge saw little difference, not that the "
                         "models are equal; use a stronger judge or human votes.")
        lines.append("")
    agree = report.get("raters_vs_judge") or report.get("raters")
    if agree:
        lines += [f"Raters: {', '.join(agree['raters'])}; raw agreement "
                  f"{_n(agree['raw_agreement'], 3)}, Fleiss' kappa {_n(agree['fleiss_kappa'], 3)}"
                  f" over {agree['items_with_two_or_more']} items with two or more labels."]
        vs = agree.get("vs_judge")
        if vs:
            lines.append(f"Majority of raters vs judge: agreement {_n(vs['agreement'], 3)}, "
                         f"Cohen's kappa {_n(vs['cohen_kappa'], 3)} over {vs['items']} items.")
        lines.append("")
    lines += ["Ratings whose intervals overlap are not told apart by this arena; with few "
              "prompts, expect wide intervals from a decisive judge or human votes.", ""]
    return "\n".join(lines)


def figure(report: dict[str, Any]) -> bytes:
    """PNG: ratings with interval bars (left), the win-rate matrix (right)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    labels = report["candidates"]
    fit = report["fits"]["all"]
    n = len(labels)
    fig = Figure(figsize=(10, 0.6 * n + 2.2), dpi=100)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
    order = sorted(range(n), key=lambda k: fit["ratings"][labels[k]]["rating"])
    ys = list(range(n))
    vals = [fit["ratings"][labels[k]]["rating"] for k in order]
    lows = [fit["ratings"][labels[k]]["low"] for k in order]
    highs = [fit["ratings"][labels[k]]["high"] for k in order]
    if all(v is not None for v in lows + highs):
        err = [[v - lo for v, lo in zip(vals, lows)], [hi - v for v, hi in zip(vals, highs)]]
        left.errorbar(vals, ys, xerr=err, fmt="o", color="#0b5394", ecolor="#555555",
                      capsize=4)
    else:
        left.plot(vals, ys, "o", color="#0b5394")
    left.set_yticks(ys, [labels[k] for k in order])
    left.set_xlabel("rating (Elo scale)")
    left.set_title("Bradley–Terry ratings" + (
        f" ({report['method']['confidence']:.0%} interval)" if lows[0] is not None else ""))
    left.grid(axis="x", alpha=0.3)
    matrix = [[math.nan if a == b or fit["win_rate"][labels[a]][labels[b]] is None
               else fit["win_rate"][labels[a]][labels[b]] for b in range(n)] for a in range(n)]
    im = right.imshow(matrix, vmin=0.0, vmax=1.0, cmap="RdBu")
    right.set_xticks(range(n), labels, rotation=30, ha="right")
    right.set_yticks(range(n), labels)
    for a in range(n):
        for b in range(n):
            v = matrix[a][b]
            if not math.isnan(v):
                right.text(b, a, f"{v:.2f}", ha="center", va="center",
                           color="white" if abs(v - 0.5) > 0.3 else "black")
    right.set_title("win rate (row vs column)")
    fig.colorbar(im, ax=right, fraction=0.046)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
