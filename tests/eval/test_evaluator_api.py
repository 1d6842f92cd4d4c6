"""The evaluator protocol is core API (``lmforge.evaluation``): a third-party evaluator that
imports only ``lmforge`` runs in the ``evaluate/suite`` stage, on the model and the baseline,
and its progress lines say which model they are about."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pytest
from eval_env import Env
from pydantic import Field

import lmforge.progress
from lmforge import Artifact, Component, Config, StageInputError, hookimpl
from lmforge.evaluation import EvalContext, Evaluator, need_examples
from lmforge.testing import check_plugin, plugin_manager

REPO = Path(__file__).resolve().parents[2]


class CountTokensConfig(Config):
    type: Literal["count-tokens"] = Field(default="count-tokens", description="Selects this.")
    name: str | None = Field(default=None, description="Report label.")
    split: str = Field(default="heldout", description="Split of the text input.")


class CountTokens(Evaluator):
    """A third party's evaluator: held-out tokens and the model's loss on the first document."""

    def requires(self) -> dict[str, str]:
        return {"text": "dataset/text"}

    def run(self, model: Any, tokenizer: Any, inputs: Mapping[str, Artifact], device: Any,
            ctx: EvalContext) -> dict[str, Any]:
        import pyarrow.parquet as pq
        import torch

        from lmforge.datasetio import split_files

        texts = [t for f in split_files(inputs["text"].path, self.config.split)
                 for t in pq.read_table(f).column("text").to_pylist()]
        need_examples(len(texts), "documents", str(inputs["text"].path))
        ids = tokenizer.encode(texts[0])[:model.max_seq_len + 1]
        with ctx.progress(1, "scoring", unit="doc") as bar:
            out = model(torch.tensor([ids[:-1]], device=device),
                        labels=torch.tensor([ids[1:]], device=device))
            bar.advance()
        return {"tokens": sum(len(tokenizer.encode(t)) for t in texts),
                "first_loss": float(out.loss_sum) / int(out.num_tokens),
                "which": ctx.model_label}

    def markdown(self, result: Mapping[str, Any]) -> str:
        return f"counted {result['tokens']} tokens"


class ThirdPartyPlugin:
    @hookimpl
    def lmforge_components(self) -> list[Component]:
        return [Component(kind="evaluator", name="count-tokens", config=CountTokensConfig,
                          factory=CountTokens, description="count held-out tokens")]


def test_evaluator_protocol_is_core_api() -> None:
    """What a third party subclasses lives in the core; the eval plugin uses it from there and
    keeps no copy of its own."""
    import lmforge_eval.perplexity

    assert issubclass(lmforge_eval.perplexity.Perplexity, Evaluator)
    assert not (REPO / "plugins" / "lmforge_eval" / "evaluator.py").exists()
    for path in (REPO / "plugins" / "lmforge_eval").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                assert node.name not in ("Evaluator", "EvalContext"), path
    with pytest.raises(StageInputError, match="no documents to evaluate"):
        need_examples(0, "documents", "somewhere")
    for doc in ("architecture.md", "writing-plugins.md"):
        assert "lmforge.evaluation" in (REPO / "docs" / doc).read_text(), doc


def test_third_party_evaluator_runs_in_the_suite(env: Env, monkeypatch) -> None:
    plugin = ThirdPartyPlugin()
    assert check_plugin(plugin) == []
    described: list[str] = []
    task = lmforge.progress.Progress.task

    def record(self, total, description, unit="it"):
        described.append(lmforge.progress.collapse_label(description))
        return task(self, total, description, unit)

    monkeypatch.setattr(lmforge.progress.Progress, "task", record)
    from eval_fakes import FakesPlugin

    import lmforge_eval.plugin as eval_plugin
    import lmforge_torch.plugin as torch_plugin

    pm = env.pm
    env.pm = plugin_manager(eval_plugin, torch_plugin, FakesPlugin(), plugin)
    try:
        report, md = env.run([{"type": "count-tokens"}, {"type": "perplexity"}],
                             baseline=env.biased_dir, text=env.text)
    finally:
        env.pm = pm
    ours, base = report["evaluators"]["count-tokens"], report["baseline_evaluators"]["count-tokens"]
    assert ours["tokens"] == base["tokens"] == sum(len(env.tok.encode(t)) for t in env.heldout)
    assert ours["first_loss"] != base["first_loss"]
    assert ours["which"] == "model m" and base["which"] == "baseline baseline"
    assert "counted" in md
    # progress lines of the model and of the baseline are told apart
    assert "ev: model m: count-tokens: scoring" in described
    assert "ev: baseline baseline: count-tokens: scoring" in described
    assert "ev: model m: perplexity" in described
    assert "ev: baseline baseline: perplexity" in described


def test_the_writing_plugins_evaluator_example_works(env: Env, tmp_path: Path) -> None:
    """The evaluator snippet of docs/writing-plugins.md, registered as the doc says, runs."""
    import re

    from eval_fakes import FakesPlugin, write_dataset

    import lmforge_eval.plugin as eval_plugin
    import lmforge_torch.plugin as torch_plugin

    doc = (REPO / "docs" / "writing-plugins.md").read_text()
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", doc, flags=re.S)
               if "(Evaluator)" in c]
    namespace: dict[str, Any] = {}
    exec(compile(code, "writing-plugins.md", "exec"), namespace)

    class ShoutingLossConfig(Config):
        split: str = Field(default="heldout", description="Split of the text input.")

    class DocPlugin:
        @hookimpl
        def lmforge_components(self) -> list[Component]:
            return [Component("evaluator", "shouting-loss", ShoutingLossConfig,
                              factory=namespace["ShoutingLoss"], description="doc example")]

    shouting = ["THE CAT SAT ON A MAT", "DOGS RAN FAR AWAY"]
    text = write_dataset(tmp_path / "text", "text", {
        "train": [{"text": t} for t in env.train],
        "heldout": [{"text": t} for t in [*shouting, *env.heldout]]})
    pm = env.pm
    env.pm = plugin_manager(eval_plugin, torch_plugin, FakesPlugin(), DocPlugin())
    try:
        report, _ = env.run([{"type": "shouting-loss"}], baseline=env.biased_dir, text=text)
    finally:
        env.pm = pm
    ours = report["evaluators"]["shouting-loss"]
    assert ours["documents"] == 2 and ours["loss"] > 0
    assert report["baseline_evaluators"]["shouting-loss"]["loss"] != ours["loss"]
