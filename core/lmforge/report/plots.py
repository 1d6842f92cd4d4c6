"""Training curves as PNG (matplotlib, Agg canvas; imported only here, when a report with a
training stage is written — ``lmforge validate`` and ``plugins list`` never load matplotlib).

One figure per training stage: the loss (``train/loss``, and ``heldout/loss`` where the stage
evaluated held-out data) and the learning rate (``train/lr``) against the step.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from lmforge.report.collect import StageInfo

#: Line colours; the browser test looks for them in the rendered page.
TRAIN_COLOUR = "#1f77b4"
HELDOUT_COLOUR = "#ff7f0e"
LR_COLOUR = "#2ca02c"
#: Points drawn per line at most: a long run's curve is thinned to this many steps.
MAX_POINTS = 4000


def thin(points: Sequence[tuple[int, float]], limit: int = MAX_POINTS
         ) -> list[tuple[int, float]]:
    """Every k-th point so that at most ``limit`` remain, the last point always kept."""
    if len(points) <= limit:
        return list(points)
    stride = -(-len(points) // (limit - 1))
    out = list(points[::stride])
    if out[-1] != points[-1]:
        out.append(points[-1])
    return out


def training_figure(stage: StageInfo, dpi: int = 100) -> bytes:
    """PNG bytes of ``stage``'s loss and learning-rate curves."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9.6, 3.4), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, lr_ax = fig.subplots(1, 2)
    train = thin(stage.series.get("train/loss", []))
    heldout = thin(stage.series.get("heldout/loss", []))
    lr = thin(stage.series.get("train/lr", []))
    marker = "o" if len(train) < 30 else None
    loss_ax.plot([s for s, _ in train], [v for _, v in train], color=TRAIN_COLOUR,
                 linewidth=2, marker=marker, markersize=3, label="train/loss")
    if heldout:
        loss_ax.plot([s for s, _ in heldout], [v for _, v in heldout], color=HELDOUT_COLOUR,
                     linewidth=2, marker="o", markersize=5, label="heldout/loss")
    loss_ax.set_title(f"{stage.stage_id}: loss")
    loss_ax.legend(loc="upper right", fontsize="small")
    if lr:
        lr_ax.plot([s for s, _ in lr], [v for _, v in lr], color=LR_COLOUR, linewidth=2,
                   marker="o" if len(lr) < 30 else None, markersize=3)
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    else:
        lr_ax.text(0.5, 0.5, "no train/lr logged", ha="center", va="center",
                   transform=lr_ax.transAxes, color="#666666")
    lr_ax.set_title(f"{stage.stage_id}: learning rate")
    for ax in (loss_ax, lr_ax):
        ax.set_xlabel("step")
        ax.grid(True, color="#e5e5e5", linewidth=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
