"""Test plugin for the arena: a ``fixture`` stage that hands on a folder as an artifact of a
given kind, and a ``length-test`` judge that prefers the longer answer (asked in both orders,
like real judges)."""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from lmforge import Component, Config, Stage, hookimpl, stage
from lmforge.judging import Comparison, Judge, Verdict, swap_average


class FixtureConfig(Config):
    path: str = Field(description="folder to hand on")
    kind: str = Field(description="its artifact kind")


class Fixture(Stage):
    def run(self) -> dict[str, Any]:
        out = self.ctx.output_dir("out")
        shutil.copytree(self.config.path, out, dirs_exist_ok=True)
        return {}


class LengthJudgeConfig(Config):
    scale: float = Field(default=10.0, description="characters per unit of log-odds")


def length_p(first: str, second: str, scale: float) -> float:
    """P(the first shown is better): a logistic in the length difference."""
    return 1.0 / (1.0 + math.exp(-(len(first) - len(second)) / scale))


class LengthJudge(Judge):
    name = "length-test"
    calls: list[int] = []

    def compare(self, items: Sequence[Comparison]) -> list[Verdict]:
        LengthJudge.calls.append(len(items))
        if CrashOnce.armed and len(LengthJudge.calls) == CrashOnce.at:
            CrashOnce.armed = False
            raise RuntimeError("judge crashed (test)")
        out = []
        for it in items:
            ab = length_p(it.a, it.b, self.config.scale)
            ba = 1.0 - length_p(it.b, it.a, self.config.scale)  # a shown second
            p, consistent = swap_average(ab, ba)
            out.append(Verdict(p_a=p, raw={"ab": {"A": ab}, "ba": {"B": ba}},
                               judge="length-test", principle=it.principle,
                               consistent=consistent))
        return out


@hookimpl
def lmforge_components() -> list[Component]:
    return [stage("data", "fixture", config=FixtureConfig, factory=Fixture,
                  outputs=lambda cfg: {"out": cfg.kind}),
            Component(kind="judge", name="length-test", config=LengthJudgeConfig,
                      factory=LengthJudge, description="prefers longer answers (tests)")]


class CrashOnce:
    """``LengthJudge`` raises at its ``n``-th call while ``armed`` (a killed judge)."""

    armed = False
    at = 2
