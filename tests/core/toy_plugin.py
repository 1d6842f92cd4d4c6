"""A small but real plugin used by the core tests: word counting and a resumable summing stage.

``count`` (data) reads text files and writes word counts; ``accumulate`` (train) walks a number
of steps, checkpointing its running total, and can be told to crash at a step (to test resume).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from lmforge import (
    Component,
    Config,
    InputSlot,
    Slot,
    Stage,
    StageInputError,
    hookimpl,
    stage,
)


class CountConfig(Config):
    path: str = Field(description="text file to count words in")
    lowercase: bool = Field(default=True, description="lowercase before counting")


class Count(Stage):
    def check(self) -> None:
        if not Path(self.config.path).is_file():
            raise StageInputError(f"stage {self.ctx.stage_id!r}: file not found: {self.config.path}")

    def run(self) -> dict[str, Any]:
        text = Path(self.config.path).read_text()
        if self.config.lowercase:
            text = text.lower()
        counts: dict[str, int] = {}
        for w in text.split():
            counts[w] = counts.get(w, 0) + 1
        out = self.ctx.output_dir("counts")
        (out / "counts.json").write_text(json.dumps(counts, sort_keys=True))
        self.ctx.write_artifact_meta("counts", {"words": sum(counts.values())})
        return {"words": sum(counts.values()), "distinct": len(counts)}


class ScaleConfig(Config):
    factor: float = Field(default=1.0, description="multiplier")


class AccumulateConfig(Config):
    steps: int = Field(default=10, ge=1, description="number of steps")
    checkpoint_every: int = Field(default=2, ge=1, description="checkpoint interval")
    crash_at: int | None = Field(default=None, description="raise at this step (tests)")
    scale: Annotated[Any, Slot("scaler")] = Field(default={"type": "linear"},
                                                   description="how each step is scaled")

    def estimate(self, upstream: dict[str, Any]) -> dict[str, Any]:
        return {"steps": self.steps}


class Accumulate(Stage):
    def run(self) -> dict[str, Any]:
        counts = json.loads((self.ctx.input("counts").path / "counts.json").read_text())
        total, start = 0.0, 0
        latest = self.ctx.checkpoints.latest_valid() if self.ctx.resumed else None
        if self.ctx.resumed and latest is not None:
            import torch

            state = self.ctx.checkpoints.load(latest)
            total, start = float(state["total"].item()), int(state["step"])
            self.ctx.truncate_metrics(start)
        crash = int(os.environ.get("TOY_CRASH_AT", "0")) or self.config.crash_at
        delay = float(os.environ.get("TOY_STEP_SECONDS", "0"))
        for step in range(start + 1, self.config.steps + 1):
            if delay:
                import time

                time.sleep(delay)
            if crash is not None and step == crash:
                raise RuntimeError(f"crash requested at step {step}")
            total += len(counts) * step * self.config.scale.factor
            self.ctx.log(step, {"total": total})
            if step % self.config.checkpoint_every == 0:
                import torch

                self.ctx.checkpoints.save(step, {"total": torch.tensor(total), "step": step})
        out = self.ctx.output_dir("result")
        (out / "total.txt").write_text(f"{total}\n")
        return {"total": total}


@hookimpl
def lmforge_components() -> list[Component]:
    return [
        stage("data", "count", config=CountConfig, factory=Count, description="count words",
              outputs={"counts": "dataset/text"}),
        stage("train", "accumulate", config=AccumulateConfig, factory=Accumulate,
              description="sum over steps with checkpoints",
              inputs={"counts": InputSlot(("dataset/text",))}, outputs={"result": "model"}),
        Component("scaler", "linear", ScaleConfig, factory=dict, description="scale linearly"),
        Component("scaler", "double", ScaleConfig, factory=dict, description="scale twice"),
    ]
