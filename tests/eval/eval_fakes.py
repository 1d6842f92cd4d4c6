"""Test-only pieces for the evaluation tests: a tiny real CausalLM architecture, a stage that
publishes a ready folder as an artifact, and writers for dataset and tokenizer artifacts."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from lmforge import Config, Stage, hookimpl, stage
from lmforge.components import Component
from lmforge.interfaces import CausalLMOutput
from lmforge.testing import write_dataset_artifact, write_tokenizer_artifact
from lmforge.training.losses import output_from_logits


class TinyConfig(Config):
    dim: int = Field(default=16, description="width")
    max_seq_len: int = Field(default=16, description="context length")


class TinyLM(nn.Module):
    """Embedding -> one causal single-head attention block -> LayerNorm -> biased linear head."""

    def __init__(self, config: TinyConfig, vocab_size: int) -> None:
        super().__init__()
        d = config.dim
        self.vocab_size, self.max_seq_len = vocab_size, config.max_seq_len
        self.embed = nn.Embedding(vocab_size, d)
        self.pos = nn.Embedding(config.max_seq_len, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, vocab_size)
        nn.init.normal_(self.embed.weight, std=1.0)

    def init_buffers(self) -> None:
        pass

    def forward(self, input_ids: torch.Tensor, *, labels: torch.Tensor | None = None,
                positions: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, return_logprobs: bool = False,
                logits_to_keep: int | None = None) -> CausalLMOutput:
        """The model-call contract computed with full logits (a biased head: not expressible
        through lmforge's fused kernels)."""
        t = input_ids.shape[1]
        assert t <= self.max_seq_len, (t, self.max_seq_len)
        mask = None
        if attention_mask is not None:  # padding: keys masked, positions count real tokens
            keep = attention_mask.bool()
            if positions is None:
                positions = (keep.long().cumsum(-1) - 1).clamp_min(0)
            eye = torch.eye(t, dtype=torch.bool, device=input_ids.device)
            mask = (torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril()
                    & (keep[:, None, :] | eye))
        if positions is None:
            positions = torch.arange(t, device=input_ids.device)
        x = self.embed(input_ids) + self.pos(positions)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = x + (F.scaled_dot_product_attention(q, k, v, is_causal=True) if mask is None
                 else F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        x = x + self.mlp(x)
        logits = self.out(self.norm(x))
        return output_from_logits(logits, labels, return_logprobs, logits_to_keep)

    def num_parameters(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n


class FixtureConfig(Config):
    path: str = Field(description="Folder to publish as this stage's output.")
    kind: str = Field(description="Artifact kind of the folder.")


class FixtureStage(Stage):
    def run(self) -> dict[str, Any]:
        shutil.copytree(self.config.path, self.ctx.output_dir("out"), dirs_exist_ok=True)
        return {}


class FakesPlugin:
    """Contributes architecture ``tiny-test`` and stage ``data/fixture`` (output ``out`` is a
    copy of ``path`` with artifact kind ``kind``)."""

    @hookimpl
    def lmforge_components(self) -> list[Component]:
        return [
            Component(kind="architecture", name="tiny-test", config=TinyConfig, factory=TinyLM,
                      description="test model"),
            stage("data", "fixture", config=FixtureConfig, factory=FixtureStage,
                  description="test fixture", outputs=lambda cfg: {"out": cfg.kind}),
        ]


def write_dataset(path: Path, fmt: str, splits: Mapping[str, Sequence[dict[str, Any]]]) -> Path:
    """A ``dataset/<fmt>`` artifact: one Parquet shard per split plus artifact.json."""
    return write_dataset_artifact(path, fmt, splits)


def write_tokenizer(path: Path, texts: Sequence[str], vocab_size: int) -> Path:
    """A byte-level BPE ``tokenizer`` artifact trained with raw ``tokenizers``."""
    return write_tokenizer_artifact(path, texts, vocab_size, min_frequency=1)
