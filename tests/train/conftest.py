"""Fixtures for the training tests: a BPE tokenizer artifact, dataset artifacts, specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import (
    chat_rows,
    make_tokenizer,
    preference_rows,
    real_text,
    write_dataset,
)


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return real_text()


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-assets")
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
