"""Shared setup of the feedback tests: a tokenizer, a tiny seeded dense model saved as a real
``model`` artifact, prompt and preference datasets, a plugin that publishes folders as
artifacts and contributes test-only judges/rewards, and a stage-context stand-in for calling
judges directly."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from lmforge import Artifact, Config, Stage, hookimpl, stage
from lmforge.components import Component
from lmforge.judging import Classification, Comparison, Judge, Verdict
from lmforge.rewards import Reward, RewardOutput
from lmforge.testing import write_dataset_artifact, write_tokenizer_artifact

WORDS = ("the cat sat on a mat while dogs ran far away and birds sang in tall green trees "
         "A B 1 2 3 4 5 6 7 8 9 yes no good bad answer response").split()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


class FixtureConfig(Config):
    path: str = Field(description="Folder to publish as this stage's output.")
    kind: str = Field(description="Artifact kind of the folder.")


class FixtureStage(Stage):
    def run(self) -> dict[str, Any]:
        shutil.copytree(self.config.path, self.ctx.output_dir("out"), dirs_exist_ok=True)
        return {}


class PlantedJudgeConfig(Config):
    type: str = Field(default="planted", description="Selects this judge.")
    table: str = Field(description="JSON file: response -> probability that the response "
                       "shown first wins when it is that response (0.5 when missing).")


class PlantedJudge(Judge):
    """A judge with known answers: P(first shown wins) = ``table[first response]``, asked in
    both orders and swap-averaged like a real judge, so for (a, b)
    ``p_a = (table[a] + 1 - table[b]) / 2``."""

    name = "planted"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.table = json.loads(Path(config.table).read_text())

    def compare(self, items: Sequence[Comparison]) -> list[Verdict]:
        from lmforge.judging import swap_average

        out = []
        for it in items:
            first = self.table.get(it.a, 0.5)  # a shown first: P(A) = P(a)
            b_first = self.table.get(it.b, 0.5)  # b shown first: P(A) = P(b)
            p, consistent = swap_average(first, 1.0 - b_first)
            out.append(Verdict(p_a=p, raw={"ab": {"A": first, "B": 1 - first},
                                           "ba": {"A": b_first, "B": 1 - b_first}},
                               judge=self.name, principle=it.principle, consistent=consistent))
        return out

    def classify(self, items: Sequence[Classification]) -> list[dict[str, float]]:
        out = []
        for it in items:
            yes = 0.9 if ("refuse" in it.question and "cannot" in it.response) or (
                "harm" in it.question and "poison" in it.response) else 0.1
            out.append({it.answers[0]: yes, it.answers[1]: 1 - yes})
        return out


class CountConfig(Config):
    type: str = Field(default="count-word", description="Selects this reward.")
    word: str = Field(default="good", description="Word counted.")


class CountReward(Reward):
    """reward = occurrences of ``word`` in the completion (a rule with known answers)."""

    def score(self, samples: Any) -> RewardOutput:
        scores = [float(s.completion.split().count(self.config.word)) for s in samples]
        return RewardOutput(scores=scores, details=[{} for _ in samples])


class TestPlugin:
    """``data/fixture`` (publish a folder), judge ``planted``, reward ``count-word``."""

    @hookimpl
    def lmforge_components(self) -> list[Component]:
        return [
            stage("data", "fixture", config=FixtureConfig, factory=FixtureStage,
                  description="test fixture", outputs=lambda cfg: {"out": cfg.kind}),
            Component(kind="judge", name="planted", config=PlantedJudgeConfig,
                      factory=PlantedJudge, description="test judge"),
            Component(kind="reward", name="count-word", config=CountConfig,
                      factory=CountReward, description="test reward"),
        ]


plugin = TestPlugin()


def plugins(*extra: Any) -> Any:
    """A plugin manager with the installed plugins and the test plugin."""
    from lmforge.testing import plugin_manager

    return plugin_manager(plugin, *extra, autoload=True)


class Env:
    """Artifacts on disk: ``tok``, ``model`` (dense, seeded random), ``prompts``
    (dataset/prompt), ``pairs`` (dataset/preference)."""

    def __init__(self, root: Path, max_seq_len: int = 384) -> None:
        import torch

        from lmforge.chat import load_tokenizer
        from lmforge.modelio import save_model

        rng = random.Random(0)
        self.root = root
        texts = [sentence(rng, rng.randint(4, 16)) for _ in range(200)]
        self.tok_dir = write_tokenizer_artifact(root / "tok", texts, vocab_size=320,
                                                min_frequency=1)
        self.tok = load_tokenizer(self.tok_dir)
        self.pm = plugins()
        arch_model = self.pm.component_config_model("architecture", "dense")
        self.arch = arch_model.model_validate({"type": "dense", "dim": 32, "n_layers": 2,
                                               "n_heads": 4, "max_seq_len": max_seq_len,
                                               "multiple_of": 16})
        from lmforge.modelio import build_module

        torch.manual_seed(0)
        model = build_module(self.arch, self.tok.vocab_size, self.pm)
        with torch.no_grad():  # larger weights than the init: sharper, prompt-dependent output
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0, 0.3)
        self.model_dir = root / "model"
        save_model(self.model_dir, model.state_dict(), self.arch, self.tok.vocab_size)
        self.prompts = [[{"role": "user", "content": sentence(rng, 5)}] for _ in range(10)]
        self.prompts_dir = write_dataset_artifact(root / "prompts", "prompt", {
            "train": [{"prompt": p, "reference": sentence(rng, 4)} for p in self.prompts]})

    def artifact(self, path: Path, kind: str, stage_id: str = "fixture") -> Artifact:
        return Artifact(kind=kind, path=Path(path), hash=f"{stage_id}-hash-0000",
                        stage_id=stage_id)

    def fixtures(self, **named: tuple[Path, str]) -> list[dict[str, Any]]:
        return [{"id": sid, "kind": "data", "plugin": "fixture",
                 "config": {"path": str(p), "kind": k}} for sid, (p, k) in named.items()]


class StageStandIn:
    """What judges use of a :class:`lmforge.StageContext`: inputs, stage_id, plugins,
    load_model, work_dir."""

    def __init__(self, env: Env, inputs: dict[str, Artifact], work: Path) -> None:
        self.inputs = inputs
        self.stage_id = "test"
        self.plugins = env.pm
        self._work = work

    def load_model(self, artifact: Any, **kw: Any) -> Any:
        from lmforge.modelio import load_model

        return load_model(artifact.path, self.plugins, **kw)

    def work_dir(self, name: str = "work") -> Path:
        path = self._work / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@hookimpl
def lmforge_components() -> list[Component]:
    """The test plugin's components when this module is loaded with ``lmforge run -p``."""
    return plugin.lmforge_components()
