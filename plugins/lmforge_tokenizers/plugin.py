"""Registration of the tokenizer plugin (light: imported at discovery for every command)."""

from __future__ import annotations

from collections.abc import Sequence

from lmforge import Component, InputSlot, hookimpl, stage
from lmforge_tokenizers.config import BPEConfig


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        stage(
            "tokenizer", "bpe",
            config=BPEConfig,
            factory="lmforge_tokenizers.bpe:BPEStage",
            description="Train a byte-level BPE tokenizer (Hugging Face tokenizers) on a dataset",
            inputs={"dataset": InputSlot(
                accepts=("dataset/text", "dataset/chat", "dataset/preference"),
                help="Corpus to learn merges from: its train split (text, chat contents or "
                     "preference prompts and replies).")},
            outputs={"tokenizer": "tokenizer"},
        ),
    ]
