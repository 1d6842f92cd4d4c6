"""Fixtures of the generation tests: a tiny dense model artifact and its tokenizer on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge import testing

CORPUS = [
    "Question: what colour is the sky? Answer: blue",
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b",
    "Hello world! A small model answers small questions.",
    "cats sit on mats and dogs run in parks",
] * 20


@pytest.fixture(scope="session")
def gen_artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(model artifact dir, tokenizer artifact dir)``: a randomly initialised dense model
    (seeded) saved through lmforge.modelio, as a training stage writes it."""
    import torch

    from lmforge.modelio import save_model
    from lmforge_models.config import DenseConfig
    from lmforge_models.dense import build

    root = tmp_path_factory.mktemp("gen")
    tok = testing.write_tokenizer_artifact(root / "tokenizer", CORPUS, vocab_size=320)
    cfg = DenseConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=16,
                      max_seq_len=96, init_std=0.2)
    torch.manual_seed(0)
    model = build(cfg, 320)
    save_model(root / "model", model.state_dict(), cfg, 320)
    return root / "model", tok
