"""Test-only components for the training tests: a tiny real causal LM, a CPU backend, and
fixture stages that publish prepared dataset / tokenizer folders as artifacts.

Registered as a plugin module through ``lmforge.testing.plugin_manager(fakes, ...)``.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from lmforge import Component, Config, Stage, hookimpl, stage
from lmforge.checkpoint import read_state, write_state
from lmforge.interfaces import CausalLMOutput
from lmforge.training.losses import output_from_logits
from lmforge.training.schedule import build_optimizer


# -- architecture -------------------------------------------------------------------------------
class TinyConfig(Config):
    """A one-block pre-norm transformer with learned positions."""

    type: Literal["tiny"] = Field(default="tiny", description="Selects this architecture.")
    dim: int = Field(default=32, description="Width.")
    n_layers: int = Field(default=1, description="Blocks.")
    n_heads: int = Field(default=2, description="Attention heads.")
    max_seq_len: int = Field(default=64, description="Longest sequence.")
    dropout: float = Field(default=0.0, description="Dropout probability (exercises the RNG).")

    def num_parameters(self, vocab_size: int, non_embedding: bool = False) -> int:
        d = self.dim
        block = 2 * (2 * d) + (4 * d * d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
        emb = vocab_size * d + self.max_seq_len * d
        return self.n_layers * block + 2 * d + emb + vocab_size * d


class _Block(nn.Module):
    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.n_heads, self.p = cfg.n_heads, cfg.dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2), is_causal=True)
        x = x + F.dropout(self.proj(a.transpose(1, 2).reshape(b, t, d)), self.p, self.training)
        return x + F.dropout(self.down(F.gelu(self.up(self.ln2(x)))), self.p, self.training)


class TinyLM(nn.Module):
    """Implements the CausalLM protocol: forward(ids [B, T]) -> logits [B, T, V]."""

    def __init__(self, cfg: TinyConfig, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size, self.max_seq_len = vocab_size, cfg.max_seq_len
        self.tok = nn.Embedding(vocab_size, cfg.dim)
        self.pos = nn.Embedding(cfg.max_seq_len, cfg.dim)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.out = nn.Linear(cfg.dim, vocab_size, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
        for blk in self.blocks:
            nn.init.normal_(blk.down.weight, std=0.02 / math.sqrt(2 * cfg.n_layers))

    def init_buffers(self) -> None:
        pass

    def forward(self, input_ids: torch.Tensor, *, labels: torch.Tensor | None = None,
                positions: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, return_logprobs: bool = False,
                logits_to_keep: int | None = None) -> CausalLMOutput:
        """The model-call contract, computed the plain way (full logits): a third-party
        architecture needs nothing from lmforge's kernels."""
        if attention_mask is not None or positions is not None:
            raise NotImplementedError("TinyLM has no padding mask or positions")
        t = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(t, device=input_ids.device))
        for blk in self.blocks:
            x = blk(x)
        logits = self.out(self.norm(x))
        return output_from_logits(logits, labels, return_logprobs, logits_to_keep)

    def num_parameters(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.tok.weight.numel() if non_embedding else n


def build_tiny(config: TinyConfig, vocab_size: int) -> TinyLM:
    return TinyLM(config, vocab_size)


# -- backend ------------------------------------------------------------------------------------
class CpuBackendConfig(Config):
    type: Literal["cpu_test"] = Field(default="cpu_test", description="Selects this backend.")


class CpuBackend:
    """One process on CPU, fp32: the Backend protocol written from scratch (as a third party
    would), with nothing distributed."""

    device = torch.device("cpu")
    rank = 0
    world_size = 1
    precision = "fp32"

    def __init__(self, config: CpuBackendConfig | None = None) -> None:
        self.config = config

    @property
    def is_main(self) -> bool:
        return True

    def build_model(self, recipe: Any) -> nn.Module:
        return recipe.build_full()

    def build_optimizer(self, module: nn.Module, optim: Any) -> torch.optim.Optimizer:
        return build_optimizer(module, optim)

    def no_sync(self, module: nn.Module) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def clip_grad_norm_(self, module: nn.Module, max_norm: float) -> float:
        params = [p for p in module.parameters() if p.grad is not None]
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm or math.inf))

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def save_checkpoint(self, path: Path, module: nn.Module, optimizer: Any) -> None:
        write_state(path, "train", {"model": module.state_dict(),
                                    "optimizer": optimizer.state_dict()})

    def load_checkpoint(self, path: Path, module: nn.Module, optimizer: Any) -> None:
        state = read_state(path, "train")
        module.load_state_dict(state["model"])
        for g in state["optimizer"]["param_groups"]:
            g["betas"] = tuple(g["betas"])
        optimizer.load_state_dict(state["optimizer"])

    def full_state_dict(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def all_reduce_mean(self, value: float) -> float:
        return value

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "cpu_test backend"


# -- fixture stages -----------------------------------------------------------------------------
class FixtureDatasetConfig(Config):
    path: str = Field(description="A prepared dataset artifact folder to publish.")
    format: Literal["text", "chat", "preference"] = Field(default="text",
                                                          description="Its format.")


class FixtureTokenizerConfig(Config):
    path: str = Field(description="A prepared tokenizer artifact folder to publish.")
    vocab_size: int = Field(default=0, description="Its vocabulary size (for plan estimates).")


class CopyStage(Stage):
    """Publishes ``config.path`` as the stage's only output."""

    def run(self) -> dict[str, Any]:
        (name,) = self.ctx.output_kinds
        out = self.ctx.output_dir(name)
        shutil.copytree(self.config.path, out, dirs_exist_ok=True)
        return {}


class CountConfig(Config):
    label: str = Field(default="count", description="Written into the output.")


class CountStage(Stage):
    """A main-rank stage that records every process that ran it: in a multi-process run it
    must run once (on rank 0) and its output must be written once."""

    def run(self) -> dict[str, Any]:
        out = self.ctx.output_dir("dataset")
        with open(self.ctx.stage_dir / "calls.log", "a", encoding="utf-8") as fh:
            fh.write(f"rank {self.ctx.rank} of {self.ctx.world_size}\n")
        (out / "calls.txt").write_text(f"{self.config.label} by rank {self.ctx.rank}\n")
        return {"rank": self.ctx.rank}


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        Component(kind="architecture", name="tiny", config=TinyConfig,
                  factory=build_tiny, description="Tiny test transformer."),
        Component(kind="backend", name="cpu_test", config=CpuBackendConfig,
                  factory=CpuBackend, description="CPU fp32 test backend."),
        stage("data", "fixture", config=FixtureDatasetConfig, factory=CopyStage,
              description="Publishes a prepared dataset folder.",
              outputs=lambda cfg: {"dataset": f"dataset/{cfg.format}"}),
        stage("data", "count", config=CountConfig, factory=CountStage,
              description="Records which ranks ran it.", outputs={"dataset": "dataset/text"}),
        stage("tokenizer", "fixture", config=FixtureTokenizerConfig, factory=CopyStage,
              description="Publishes a prepared tokenizer folder.",
              outputs={"tokenizer": "tokenizer"}),
    ]
