"""Fixtures for model tests: a tiny byte-level BPE tokenizer artifact and plugin managers."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge import testing

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I train a language model? Start with clean data.",
    "Tokenizers split text into pieces; models predict the next piece.",
    "Hello world! 12345 67890 — unicode: café, naïve, 日本語.",
] * 20


def write_tokenizer_artifact(path: Path, vocab_size: int = 300) -> Path:
    """A minimal tokenizer artifact (what a tokenizer plugin writes), for tests only."""
    return testing.write_tokenizer_artifact(path, CORPUS, vocab_size)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokenizer_artifact(tmp_path_factory.mktemp("tok") / "tokenizer")
