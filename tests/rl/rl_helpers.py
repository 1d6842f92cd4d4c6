"""Assets and specs for the RL tests: a tokenizer, prompt/chat datasets, a tiny dense model
(random initialisation: RL tests check the algorithms, not language)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WORDS = ("the quick brown fox jumps over the lazy dog while seven eager bees hum "
         "a tune about sorting lists and reading files in python").split()


def prompt_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    return [{"prompt": [{"role": "user", "content": f"Say something about {WORDS[i % len(WORDS)]}"
                         f" number {i}."}], "reference": WORDS[i % len(WORDS)]}
            for i in range(offset, offset + n)]


def chat_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": f"Name word {i}."},
                          {"role": "assistant", "content": WORDS[i % len(WORDS)]}]}
            for i in range(offset, offset + n)]


def make_assets(root: Path) -> dict[str, Path]:
    import torch

    from lmforge.modelio import save_model
    from lmforge.testing import plugin_manager, write_dataset_artifact, write_tokenizer_artifact

    texts = [json.dumps(r) for r in prompt_rows(64) + chat_rows(32)] + [" ".join(WORDS)] * 4
    tok = write_tokenizer_artifact(root / "tokenizer", texts, vocab_size=300)
    prompts = write_dataset_artifact(root / "prompts", "prompt", {
        "train": prompt_rows(32), "heldout": prompt_rows(8, offset=100)})
    chats = write_dataset_artifact(root / "chats", "chat", {
        "train": chat_rows(16), "heldout": chat_rows(4, offset=100)})
    import lmforge_models.plugin as models

    pm = plugin_manager(models)
    arch_cls = pm.component_config_model("architecture", "dense")
    arch = arch_cls.model_validate({"type": "dense", "dim": 32, "n_layers": 1, "n_heads": 2,
                                    "multiple_of": 16, "max_seq_len": 128})
    vocab = json.loads((tok / "artifact.json").read_text())["vocab_size"]
    component = pm.get_component("architecture", "dense")
    torch.manual_seed(0)
    model = component.load_factory()(arch, vocab_size=vocab)
    save_model(root / "model", model.state_dict(), arch, vocab)
    (root / "model" / "artifact.json").write_text(json.dumps({
        "architecture": arch.model_dump(mode="json"), "vocab_size": vocab}))
    scorer = arch.with_head("score")
    torch.manual_seed(1)
    rm = component.load_factory()(scorer, vocab_size=vocab)
    save_model(root / "rm", rm.state_dict(), scorer, vocab)
    (root / "rm" / "artifact.json").write_text(json.dumps({
        "architecture": scorer.model_dump(mode="json"), "vocab_size": vocab}))
    problems = write_dataset_artifact(root / "problems", "prompt", {
        "train": problem_rows(8), "heldout": problem_rows(4, offset=50)})
    return {"tokenizer": tok, "prompts": prompts, "chats": chats, "model": root / "model",
            "rm": root / "rm", "problems": problems}


def problem_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """Coding problems as python-functions' prompt mode writes them (tests = doctests)."""
    rows = []
    for i in range(offset, offset + n):
        name = f"add_{i}"
        doc = f"Add {i} to x.\n\n    >>> {name}(1)\n    {i + 1}\n    "
        rows.append({"prompt": [{"role": "user", "content": f"Write `{name}(x)`: {doc}"}],
                     "tests": doc, "entry_point": name,
                     "reference": f"def {name}(x):\n    return x + {i}\n"})
    return rows


def make_pm() -> Any:
    import rl_fakes

    import lmforge_align.plugin as align
    import lmforge_models.plugin as models
    import lmforge_torch.plugin as torch_plugin
    from lmforge.testing import plugin_manager

    return plugin_manager(align, models, torch_plugin, rl_fakes)


def rl_spec(assets: dict[str, Path], plugin: str, config: dict[str, Any],
            data: str = "prompts", extra_inputs: dict[str, str] | None = None) -> dict[str, Any]:
    fmt = "chat" if data == "chats" else "prompt"
    return {"name": "rl", "seed": 0, "stages": [
        {"id": "data", "kind": "data", "plugin": "rl-fixture",
         "config": {"path": str(assets[data]), "format": fmt}},
        {"id": "tok", "kind": "tokenizer", "plugin": "rl-fixture",
         "config": {"path": str(assets["tokenizer"])}},
        {"id": "sft", "kind": "import", "plugin": "rl-fixture",
         "config": {"path": str(assets["model"])}},
        {"id": "rl", "kind": "align", "plugin": plugin,
         "inputs": {"dataset": "data", "tokenizer": "tok", "init": "sft",
                    **(extra_inputs or {})},
         "config": config}]}


def loop(**kw: Any) -> dict[str, Any]:
    base = {"iterations": 4, "epochs": 1, "minibatches": 1, "micro_batch_size": 8,
            "checkpoint_every": 2, "log_every": 1,
            "optim": {"lr": 1e-2, "warmup_steps": 0, "min_lr_ratio": 1.0, "weight_decay": 0.0},
            "backend": {"type": "local", "device": "cpu", "precision": "fp32"}}
    base.update(kw)
    return base


def rollout(**kw: Any) -> dict[str, Any]:
    base = {"prompts": 4, "samples_per_prompt": 4, "max_new_tokens": 12, "max_prompt_tokens": 48,
            "batch_size": 16}
    base.update(kw)
    return base


def metrics(stage_dir: Path) -> list[dict[str, Any]]:
    path = stage_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
