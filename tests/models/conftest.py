"""Fixtures for model tests: a tiny byte-level BPE tokenizer artifact and plugin managers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.chat import EOS, PAD, SPECIAL_TOKENS, jinja_template

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I train a language model? Start with clean data.",
    "Tokenizers split text into pieces; models predict the next piece.",
    "Hello world! 12345 67890 — unicode: café, naïve, 日本語.",
] * 20


def write_tokenizer_artifact(path: Path, vocab_size: int = 300) -> Path:
    """A minimal tokenizer artifact (what a tokenizer plugin writes), for tests only."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOS, "pad_token": PAD,
        "chat_template": jinja_template(), "model_max_length": 1024,
    }))
    (path / "special_tokens_map.json").write_text(json.dumps({"eos_token": EOS,
                                                              "pad_token": PAD}))
    (path / "artifact.json").write_text(json.dumps({"vocab_size": tok.get_vocab_size()}))
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokenizer_artifact(tmp_path_factory.mktemp("tok") / "tokenizer")
