"""Fixtures for the rewards tests: a stage that publishes a prepared artifact folder, a tiny
tokenizer, a preference set with a planted signal and a small 'SFT' model artifact."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from lmforge import Config, Stage, hookimpl, stage
from lmforge.testing import write_dataset_artifact, write_tokenizer_artifact

KINDS = ("model", "tokenizer", "dataset/preference", "dataset/prompt")


class PublishConfig(Config):
    path: str = Field(description="A prepared artifact folder to publish.")
    kind: Literal["model", "tokenizer", "dataset/preference", "dataset/prompt"] = Field(
        description="Its artifact kind.")


class PublishStage(Stage):
    def run(self) -> dict[str, Any]:
        shutil.copytree(self.config.path, self.ctx.output_dir("out"), dirs_exist_ok=True)
        return {}


class PublishPlugin:
    @hookimpl
    def lmforge_components(self) -> list:
        return [stage("data", "publish", config=PublishConfig, factory=PublishStage,
                      description="test fixture: publish a prepared artifact", inputs={},
                      outputs=lambda cfg: {"out": cfg.kind})]


TOPICS = ["the weather", "a recipe for soup", "the train times", "a good book", "sorting lists",
          "python decorators", "the capital of France", "prime numbers", "a birthday gift",
          "learning to swim", "fixing a bike", "planting tomatoes", "a short poem",
          "the rules of chess", "saving money", "writing a letter", "cleaning windows",
          "a walk in the park", "painting a fence", "baking bread"]


def preference_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """Planted signal: the chosen reply is courteous, the rejected one rude; the topic varies."""
    rows = []
    for i in range(offset, offset + n):
        topic = TOPICS[i % len(TOPICS)]
        rows.append({"prompt": [{"role": "user", "content": f"Tell me about {topic}."}],
                     "chosen": f"Gladly! Here is {topic}, thank you for asking.",
                     "rejected": f"No. {topic} is boring, go away.",
                     "rating_gap": float(i % 3)})
    return rows


def make_assets(root: Path) -> dict[str, Path]:
    rows = preference_rows(64)
    held = preference_rows(24, offset=7)  # other topic/offset combinations
    texts = [r["chosen"] + " " + r["rejected"] + " " + r["prompt"][0]["content"] for r in rows]
    tok = write_tokenizer_artifact(root / "tokenizer", texts * 3, vocab_size=300)
    prefs = write_dataset_artifact(root / "prefs", "preference", {"train": rows, "heldout": held})
    return {"tokenizer": tok, "preference": prefs}


def save_lm(path: Path, vocab: int, seed: int = 0, **kw: Any) -> Path:
    """A small dense LM artifact with random weights (stands in for an SFT model)."""
    import torch

    import lmforge_models.plugin
    from lmforge.modelio import save_model
    from lmforge.testing import plugin_manager
    from lmforge_models.dense import build

    pm = plugin_manager(lmforge_models.plugin)
    arch = pm.component_config_model("architecture", "dense")(
        type="dense", dim=32, n_layers=2, n_heads=4, multiple_of=16, max_seq_len=64, **kw)
    torch.manual_seed(seed)
    save_model(path, build(arch, vocab).state_dict(), arch, vocab)
    return path
