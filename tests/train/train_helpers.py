"""Helpers for the training tests: a BPE tokenizer artifact, dataset artifacts, specs."""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import train_fakes

from lmforge.testing import write_dataset_artifact, write_tokenizer_artifact


def real_text(min_chars: int = 40_000) -> list[str]:
    """Real English prose: docstrings of standard-library modules, one document per paragraph."""
    docs: list[str] = []
    total = 0
    for name in ("json", "argparse", "collections", "functools", "itertools", "pathlib",
                 "textwrap", "logging", "subprocess", "inspect", "typing", "dataclasses",
                 "contextlib", "unittest", "http.client", "email", "csv", "shutil", "tarfile"):
        mod = importlib.import_module(name)
        for obj in [mod, *vars(mod).values()]:
            doc = inspect.getdoc(obj) if (inspect.ismodule(obj) or inspect.isclass(obj)
                                          or inspect.isfunction(obj)) else None
            for para in (doc or "").split("\n\n"):
                para = " ".join(para.split())
                if len(para) > 80 and para not in docs:
                    docs.append(para)
                    total += len(para)
        if total >= min_chars:
            break
    return docs


def make_tokenizer(folder: Path, corpus: list[str], vocab_size: int = 384) -> Path:
    """Train a byte-level BPE with lmforge's special tokens; write a tokenizer artifact."""
    return write_tokenizer_artifact(folder, corpus, vocab_size)


def write_dataset(folder: Path, fmt: str, splits: dict[str, list[dict[str, Any]]]) -> Path:
    """A dataset artifact per :mod:`lmforge.datasetio` (one Parquet shard per split)."""
    return write_dataset_artifact(folder, fmt, splits)


def chat_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """Deterministic arithmetic chats: the assistant answers a sum."""
    rows = []
    for i in range(offset, offset + n):
        a, b = i % 7, (i * 3) % 5
        rows.append({"messages": [
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"It is {a + b}."}]})
    return rows


def preference_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """Pairs where the preferred reply is polite and the rejected one rude."""
    rows = []
    for i in range(offset, offset + n):
        rows.append({"prompt": [{"role": "user", "content": f"Tell me about item {i}."}],
                     "chosen": "Sure, happy to help.",
                     "rejected": "No. Go away."})
    return rows


def _real_plugins() -> list[Any] | None:
    """The real dense architecture and local backend, once their plugins exist."""
    try:
        models = importlib.import_module("lmforge_models.plugin")
        backend = importlib.import_module("lmforge_torch.plugin")
        importlib.import_module("lmforge_models.dense")
    except Exception:  # noqa: BLE001 - not written yet
        return None
    return [models, backend]


REAL = _real_plugins()


def make_pm(real: bool = False) -> Any:
    import lmforge_align.plugin as align
    import lmforge_train.plugin as train
    from lmforge.testing import plugin_manager

    extra = list(REAL or []) if real else []
    return plugin_manager(train, align, train_fakes, *extra)


def model_cfg(real: bool = False, **kw: Any) -> dict[str, Any]:
    if real:
        return {"type": "dense", "dim": 32, "n_layers": 1, "n_heads": 2, "multiple_of": 16,
                "max_seq_len": 64, **kw}
    return {"type": "tiny", "dim": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 64, **kw}


def backend_cfg(real: bool = False) -> dict[str, Any]:
    return {"type": "local", "device": "cpu", "precision": "fp32"} if real else {"type": "cpu_test"}


def loop_cfg(real: bool = False, **kw: Any) -> dict[str, Any]:
    base = {"steps": 12, "batch_size": 4, "seq_len": 32, "log_every": 1, "checkpoint_every": 4,
            "optim": {"lr": 3e-3, "warmup_steps": 2, "weight_decay": 0.01},
            "backend": backend_cfg(real)}
    base.update(kw)
    return base


def base_stages(assets: dict[str, Path], fmt: str = "text") -> list[dict[str, Any]]:
    return [
        {"id": "data", "kind": "data", "plugin": "fixture",
         "config": {"path": str(assets[fmt]), "format": fmt}},
        {"id": "bpe", "kind": "tokenizer", "plugin": "fixture",
         "config": {"path": str(assets["tokenizer"]), "vocab_size": 384}},
    ]


def pretrain_spec(assets: dict[str, Path], real: bool = False, loop: dict | None = None,
                  model: dict | None = None, run_dir: str = "") -> dict[str, Any]:
    return {"name": "t", "seed": 0, "stages": base_stages(assets) + [
        {"id": "pretrain", "kind": "train", "plugin": "pretrain",
         "inputs": {"dataset": "data", "tokenizer": "bpe"},
         "config": {"model": model or model_cfg(real), "loop": loop or loop_cfg(real)}}]}


def metrics(stage_dir: Path) -> list[dict[str, Any]]:
    path = stage_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def loss_curve(stage_dir: Path, key: str = "train/loss") -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in metrics(stage_dir) if key in r]


Factory = Callable[..., Any]
