"""Registration of the rewards plugin (light: imported at discovery for every command)."""

from __future__ import annotations

from collections.abc import Sequence

from lmforge import Component, hookimpl
from lmforge_rewards.config import (
    CompositeConfig,
    ExactMatchConfig,
    PythonChecksConfig,
    RewardModelConfig,
    SubprocessSandboxConfig,
)


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        Component(kind="sandbox", name="subprocess", config=SubprocessSandboxConfig,
                  factory="lmforge_rewards.sandbox:build",
                  description="Fresh python -I -S subprocesses with rlimits, no network (user "
                              "+ network + PID namespaces where available), a temporary "
                              "directory and an allow-listed environment"),
        Component(kind="reward", name="python-checks", config=PythonChecksConfig,
                  factory="lmforge_rewards.python_checks:PythonChecks",
                  description="Partial credit: the code parses, its names resolve, its "
                              "doctests pass in the sandbox"),
        Component(kind="reward", name="exact-match", config=ExactMatchConfig,
                  factory="lmforge_rewards.exact_match:ExactMatch",
                  description="1 if the extracted answer equals the reference (GSM8K style)"),
        Component(kind="reward", name="composite", config=CompositeConfig,
                  factory="lmforge_rewards.composite:Composite",
                  description="A weighted sum of other rewards"),
        Component(kind="reward", name="reward-model", config=RewardModelConfig,
                  factory="lmforge_rewards.reward_model:RewardModelReward",
                  description="The score of a trained score-head model (train/reward-model)"),
    ]
