"""Test-only components for the RL tests (registered with ``lmforge.testing.plugin_manager``):
stages that publish prepared folders (prompt datasets, a tokenizer, a model) as artifacts, and
two small deterministic rewards:

* ``letter-share``: the share of the completion's characters that are ``letter`` — a signal a
  tiny model can learn in a few iterations (it only has to favour tokens holding the letter);
* ``length-target``: ``-|len(completion) - target| / target`` (characters).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from lmforge import Component, Config, Stage, hookimpl, stage
from lmforge.rewards import Reward, RewardOutput, RewardSample


class FolderConfig(Config):
    path: str = Field(description="A prepared artifact folder to publish.")
    format: Literal["prompt", "chat", "text"] = Field(default="prompt",
                                                     description="Dataset format.")


class CopyStage(Stage):
    def run(self) -> dict[str, Any]:
        (name,) = self.ctx.output_kinds
        shutil.copytree(self.config.path, self.ctx.output_dir(name), dirs_exist_ok=True)
        return {}


class LetterConfig(Config):
    letter: str = Field(default="e", min_length=1, max_length=1, description="The letter.")


class LetterShare(Reward):
    def score(self, samples: Sequence[RewardSample]) -> RewardOutput:
        scores, details = [], []
        for s in samples:
            n = s.completion.count(self.config.letter)
            scores.append(n / max(len(s.completion), 1))
            details.append({"count": n})
        return RewardOutput(scores, details)


class LengthConfig(Config):
    target: int = Field(default=20, ge=1, description="Wanted length in characters.")


class LengthTarget(Reward):
    def score(self, samples: Sequence[RewardSample]) -> RewardOutput:
        t = self.config.target
        return RewardOutput([-abs(len(s.completion) - t) / t for s in samples],
                            [{} for _ in samples])


class NeedsModel(Reward):
    """Declares an input it needs (to test the stage's check)."""

    def requires(self) -> dict[str, str]:
        return {"reward_model": "model"}

    def check(self, inputs: Mapping[str, Any]) -> None:
        return None

    def score(self, samples: Sequence[RewardSample]) -> RewardOutput:
        return RewardOutput([0.0] * len(samples), [{} for _ in samples])


class EmptyConfig(Config):
    pass


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        stage("data", "rl-fixture", config=FolderConfig, factory=CopyStage,
              description="Publishes a prepared dataset folder.",
              outputs=lambda cfg: {"dataset": f"dataset/{cfg.format}"}),
        stage("tokenizer", "rl-fixture", config=FolderConfig, factory=CopyStage,
              description="Publishes a prepared tokenizer folder.",
              outputs={"tokenizer": "tokenizer"}),
        stage("import", "rl-fixture", config=FolderConfig, factory=CopyStage,
              description="Publishes a prepared model folder.", outputs={"model": "model"}),
        Component(kind="reward", name="letter-share", config=LetterConfig, factory=LetterShare,
                  description="Share of characters that are the letter."),
        Component(kind="reward", name="length-target", config=LengthConfig,
                  factory=LengthTarget, description="Closeness to a target length."),
        Component(kind="reward", name="needs-model", config=EmptyConfig, factory=NeedsModel,
                  description="Needs a reward_model input."),
    ]
