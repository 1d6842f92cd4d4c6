"""Fixtures of the Megatron backend's tests: the training tests' assets (tokenizer, text, chat
and preference datasets) and helpers, shared through ``tests/train`` on ``sys.path``.

Megatron-Core's CUDA-only calls are patched for CPU only where the backend runs: in worker
processes that load ``megatron_cpu`` (``lmforge -p megatron_cpu``), never in product code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TRAIN = Path(__file__).resolve().parents[1] / "train"
if str(TRAIN) not in sys.path:
    sys.path.insert(0, str(TRAIN))

from train_helpers import (  # noqa: E402
    chat_rows,
    make_tokenizer,
    preference_rows,
    real_text,
    write_dataset,
)


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    corpus = real_text()
    root = tmp_path_factory.mktemp("megatron-assets")
    chats = chat_rows(64)
    prefs = preference_rows(48)
    tok_corpus = corpus + [json.dumps(r) for r in chats + prefs]
    n_held = max(4, len(corpus) // 10)
    return {
        "tokenizer": make_tokenizer(root / "tokenizer", tok_corpus),
        "text": write_dataset(root / "text", "text", {
            "train": [{"text": t} for t in corpus[n_held:]],
            "heldout": [{"text": t} for t in corpus[:n_held]]}),
        "chat": write_dataset(root / "chat", "chat", {
            "train": chats, "heldout": chat_rows(16, offset=1000)}),
        "preference": write_dataset(root / "preference", "preference", {
            "train": prefs, "heldout": preference_rows(16, offset=1000)}),
    }
