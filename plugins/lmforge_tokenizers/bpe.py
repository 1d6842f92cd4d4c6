"""The ``bpe`` tokenizer stage: train a byte-level BPE and write a ``tokenizer`` artifact.

Artifact layout (see :mod:`lmforge.chat`): ``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json`` (so ``transformers.AutoTokenizer`` loads the folder, chat template
included) and ``artifact.json`` (``vocab_size``, ``special_tokens`` name -> id, ``eos_id``,
``pad_id``, corpus statistics).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmforge import Stage, StageInputError
from lmforge.chat import EOS, PAD, jinja_template
from lmforge.datasetio import read_meta, split_files
from lmforge.fsutil import atomic_write_text
from lmforge_tokenizers.config import BPEConfig
from lmforge_tokenizers.corpus import CorpusStats, dataset_format, iter_batches


def build_tokenizer() -> Any:
    """An untrained byte-level BPE pipeline: no normalizer (exact round trip), ByteLevel
    pre-tokenizer without prefix space, ByteLevel decoder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(batches: Any, config: BPEConfig) -> Any:
    """Train on an iterator of text batches; returns a ``tokenizers.Tokenizer``."""
    from tokenizers import pre_tokenizers, trainers

    tok = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size, min_frequency=config.min_frequency,
        special_tokens=list(config.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(batches, trainer=trainer)
    return tok


def compression(tok: Any, texts: list[str]) -> dict[str, float]:
    """Characters and UTF-8 bytes per token over ``texts``."""
    n_tokens = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    chars = sum(len(t) for t in texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {"chars_per_token": chars / max(n_tokens, 1), "bytes_per_token": n_bytes / max(n_tokens, 1),
            "tokens": float(n_tokens)}


def tokenizer_config(config: BPEConfig) -> dict[str, Any]:
    """``tokenizer_config.json`` for ``transformers`` (PreTrainedTokenizerFast + chat template)."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": jinja_template(),
        "eos_token": EOS,
        "pad_token": PAD,
        "bos_token": None,
        "unk_token": None,
        "additional_special_tokens": [t for t in config.special_tokens if t not in (EOS, PAD)],
        "model_max_length": config.model_max_length,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
    }


def special_tokens_map(config: BPEConfig) -> dict[str, Any]:
    return {"eos_token": EOS, "pad_token": PAD,
            "additional_special_tokens": [t for t in config.special_tokens if t not in (EOS, PAD)]}


def save_tokenizer(tok: Any, out: Path, config: BPEConfig) -> None:
    """Write the three tokenizer files atomically (temp name, then rename)."""
    tmp = out / ".tokenizer.json.tmp"
    tok.save(str(tmp))
    os.replace(tmp, out / "tokenizer.json")
    atomic_write_text(out / "tokenizer_config.json", json.dumps(tokenizer_config(config), indent=2))
    atomic_write_text(out / "special_tokens_map.json",
                      json.dumps(special_tokens_map(config), indent=2))


class BPEStage(Stage):
    """Stage ``tokenizer/bpe`` (input ``dataset``, output ``tokenizer``)."""

    config: BPEConfig

    def check(self) -> None:
        art = self.ctx.input("dataset")
        dataset_format(art.path)
        try:
            split_files(art.path, self.config.split)
        except StageInputError as exc:
            raise StageInputError(f"stage {self.ctx.stage_id!r}: cannot train on split "
                                  f"{self.config.split!r}: {exc}; set 'split' in the stage config"
                                  ) from None

    def run(self) -> Mapping[str, Any]:
        cfg = self.config
        art = self.ctx.input("dataset")
        stats = CorpusStats()
        with self.ctx.progress(None, "reading corpus", unit="doc") as bar:
            def batches() -> Any:
                for batch in iter_batches(art.path, cfg.split, batch_size=cfg.batch_size,
                                          max_documents=cfg.max_documents,
                                          max_chars=cfg.max_chars, stats=stats,
                                          track_distinct=True):
                    bar.advance(len(batch))
                    yield batch

            tok = train_bpe(batches(), cfg)
        got = tok.get_vocab_size()
        if got < cfg.vocab_size:
            raise StageInputError(
                f"stage {self.ctx.stage_id!r}: the corpus (split {cfg.split!r} of {art.path}: "
                f"{stats.documents} documents, {stats.chars} chars, {len(stats.distinct)} distinct "
                f"characters) supports only {got} tokens at min_frequency={cfg.min_frequency}, "
                f"but vocab_size is {cfg.vocab_size}; lower vocab_size to at most {got}, lower "
                f"min_frequency, raise max_documents/max_chars, or add data")
        out = self.ctx.output_dir("tokenizer")
        save_tokenizer(tok, out, cfg)

        splits = read_meta(art.path).get("splits", {})
        comp_split = cfg.heldout_split if splits.get(cfg.heldout_split, {}).get("rows") else cfg.split
        sample: list[str] = []
        for batch in iter_batches(art.path, comp_split, batch_size=cfg.batch_size,
                                  max_documents=cfg.compression_documents):
            sample += batch
        comp = compression(tok, sample)
        special = {t: tok.token_to_id(t) for t in cfg.special_tokens}
        self.ctx.write_artifact_meta("tokenizer", {
            "type": "bpe", "vocab_size": got, "special_tokens": special,
            "eos_id": special[EOS], "pad_id": special[PAD],
            "model_max_length": cfg.model_max_length,
            "corpus": {"dataset": str(art.path), "split": cfg.split,
                       "documents": stats.documents, "chars": stats.chars},
            "compression": {"split": comp_split, **comp},
        })
        metrics = {"vocab_size": got, "train_documents": stats.documents,
                   "train_chars": stats.chars, "chars_per_token": comp["chars_per_token"],
                   "bytes_per_token": comp["bytes_per_token"], "compression_split": comp_split}
        self.ctx.log(0, {k: v for k, v in metrics.items() if not isinstance(v, str)})
        return metrics
