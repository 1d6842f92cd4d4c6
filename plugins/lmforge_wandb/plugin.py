"""Registration of the ``wandb`` tracker. Light: imports neither wandb nor the tracker module."""

from __future__ import annotations

from lmforge import Component, hookimpl
from lmforge_wandb.config import WandbConfig


@hookimpl
def lmforge_components() -> list[Component]:
    return [
        Component(kind="tracker", name="wandb", config=WandbConfig,
                  factory="lmforge_wandb.tracker:WandbTracker",
                  description="Log metrics, stage summaries and the spec to Weights & Biases "
                              "(online, or offline under <run_dir>/wandb for `wandb sync`)."),
    ]
