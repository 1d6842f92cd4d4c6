"""Config of the ``wandb`` tracker (pydantic only: imported at plugin discovery)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmforge import Config

WandbMode = Literal["auto", "online", "offline", "disabled"]


class WandbConfig(Config):
    """Where and how a pipeline run is logged to Weights & Biases."""

    project: str | None = Field(
        default=None, description="W&B project. Default: WANDB_PROJECT, else the pipeline name.")
    entity: str | None = Field(
        default=None, description="W&B entity (user or team). Default: your default entity.")
    name: str | None = Field(
        default=None, description="Display name of the W&B run. Default: the pipeline name.")
    group: str | None = Field(
        default=None, description="W&B group, e.g. to gather the runs of one sweep.")
    tags: list[str] = Field(default_factory=list, description="Tags of the W&B run.")
    mode: WandbMode = Field(
        default="auto",
        description="auto: online when an API key is configured (WANDB_API_KEY or `wandb "
                    "login`), offline otherwise (WANDB_MODE, if set, wins); online; offline: "
                    "write under <run_dir>/wandb/ and upload later with `wandb sync`; "
                    "disabled: log nothing.")
    log_config: bool = Field(
        default=True, description="Store the pipeline spec (every stage's config) as the W&B "
                                  "run config.")
    system_metrics: bool = Field(
        default=True, description="Let W&B sample CPU/GPU/memory usage while the run is open.")
    init_timeout: float = Field(
        default=15.0, gt=0, le=600,
        description="Seconds to wait for the W&B server when starting an online run (W&B's own "
                    "default is 90). If it does not answer in time, the run is logged offline "
                    "instead, with one warning.")
