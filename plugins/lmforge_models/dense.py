"""The ``dense`` architecture: a Llama-family decoder (imports torch; built through the factory).

Layout per block: ``x + attn(rmsnorm(x))`` then ``x + swiglu(rmsnorm(x))``. Attention uses
grouped-query heads, rotary positions with the Hugging Face Llama convention (``rotate_half``
over the two halves of each head), and ``scaled_dot_product_attention(is_causal=True)``.

For speed the q/k/v projections are one ``[q + 2 kv, dim]`` matrix and gate/up one
``[2 * hidden, dim]`` matrix; :meth:`DenseLM.hf_state_dict` splits them into the separate
``LlamaForCausalLM`` weights (row slices, no permutation).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge_models.config import DenseConfig


def rotary_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos``/``sin`` tables ``[max_seq_len, head_dim]`` (each frequency repeated over both halves)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """``sin`` with its first half negated, so that ``rotate_half(x) * sin ==
    swap_halves(x) * signed_sin(sin)`` (saves a negation per call)."""
    half = sin.shape[-1] // 2
    return torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[B, H, T, hd]`` by position as Hugging Face Llama does:
    ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(-x2, x1)``."""
    return _rotate(x, cos, signed_sin(sin))


def _rotate(x: torch.Tensor, cos: torch.Tensor, ssin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    swapped = torch.cat([x[..., half:], x[..., :half]], dim=-1)
    return x * cos + swapped * ssin


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight``, computed in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Attention(nn.Module):
    def __init__(self, cfg: DenseConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        q, kv = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        self.qkv = nn.Linear(cfg.dim, q + 2 * kv, bias=False)
        self.out = nn.Linear(q, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, ssin: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, T, dim]``; ``cos``/``ssin`` ``[T, head_dim]`` (see :func:`signed_sin`)."""
        b, t, _ = x.shape
        h, kv, hd = self.n_heads, self.n_kv, self.head_dim
        qkv = self.qkv(x).view(b, t, h + 2 * kv, hd).transpose(1, 2)  # [B, h+2kv, T, hd]
        qk = _rotate(qkv[:, :h + kv], cos, ssin)  # q and k heads in one pass
        q, k, v = qk[:, :h], qk[:, h:], qkv[:, h + kv:]
        if kv != h:
            k = k.repeat_interleave(h // kv, dim=1)
            v = v.repeat_interleave(h // kv, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, h * hd))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: DenseConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.dim, cfg.hidden_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, ssin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, ssin)
        return x + self.mlp(self.mlp_norm(x))


class DenseLM(nn.Module):
    """Decoder-only LM implementing :class:`lmforge.interfaces.CausalLM` and ``HFExportable``.

    ``forward(input_ids [B, T]) -> logits [B, T, vocab_size]``; ``T <= max_seq_len``.
    Variants (e.g. the MoE model) subclass it and replace ``block_class`` and the
    feed-forward part of the HF mapping (:meth:`_hf_ffn`).
    """

    block_class: type[nn.Module] = Block

    def __init__(self, config: DenseConfig, vocab_size: int) -> None:
        super().__init__()
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        self.config = config
        self.vocab_size = int(vocab_size)
        self.max_seq_len = config.max_seq_len
        self.embed = nn.Embedding(vocab_size, config.dim)
        self.blocks = nn.ModuleList(self.block_class(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.dim, vocab_size,
                                                                    bias=False)
        cos, sin = rotary_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_ssin", signed_sin(sin), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) for every matrix, ones for norms."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    # -- CausalLM ------------------------------------------------------------------------------
    @property
    def head_weight(self) -> torch.Tensor:
        """The ``[vocab, dim]`` output matrix: ``head(h) == h @ head_weight.T``."""
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final hidden states ``[B, T, dim]`` (after the last norm)."""
        t = input_ids.shape[1]
        if t > self.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds the model's max_seq_len "
                             f"{self.max_seq_len}; shorten the input or raise max_seq_len")
        cos, ssin = self.rope_cos[:t], self.rope_ssin[:t]
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, cos, ssin)
        return self.norm(x)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., vocab_size]`` from hidden states ``[..., dim]``."""
        return F.linear(hidden, self.head_weight)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(input_ids))

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Unique trainable parameters; ``non_embedding`` leaves out the token embedding."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token at ``seq_len`` (see :meth:`DenseConfig.flops_per_token`)."""
        return self.config.flops_per_token(seq_len, self.vocab_size)

    # -- HFExportable --------------------------------------------------------------------------
    def hf_config(self) -> dict[str, Any]:
        """``config.json`` for ``transformers.LlamaForCausalLM`` (token ids added by the exporter)."""
        c = self.config
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": c.dim,
            "intermediate_size": c.hidden_dim,
            "num_hidden_layers": c.n_layers,
            "num_attention_heads": c.n_heads,
            "num_key_value_heads": c.kv_heads,
            "head_dim": c.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": c.max_seq_len,
            "rms_norm_eps": c.norm_eps,
            "rope_theta": c.rope_theta,
            "rope_scaling": None,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "tie_word_embeddings": c.tie_embeddings,
            "initializer_range": c.init_std,
            "torch_dtype": "float32",
            "use_cache": True,
        }

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under ``LlamaForCausalLM`` names (detached, contiguous; ``lm_head.weight``
        omitted when embeddings are tied — transformers re-ties it on load)."""
        c = self.config
        q, kv = c.n_heads * c.head_dim, c.kv_heads * c.head_dim
        out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": self.embed.weight}
        for i, block in enumerate(self.blocks):
            p = f"model.layers.{i}."
            wq, wk, wv = block.attn.qkv.weight.split([q, kv, kv], dim=0)
            out.update({
                p + "self_attn.q_proj.weight": wq,
                p + "self_attn.k_proj.weight": wk,
                p + "self_attn.v_proj.weight": wv,
                p + "self_attn.o_proj.weight": block.attn.out.weight,
                p + "input_layernorm.weight": block.attn_norm.weight,
                p + "post_attention_layernorm.weight": block.mlp_norm.weight,
                **self._hf_ffn(p, block),
            })
        out["model.norm.weight"] = self.norm.weight
        if self.lm_head is not None:
            out["lm_head.weight"] = self.lm_head.weight
        return {k: v.detach().contiguous().clone() for k, v in out.items()}

    def _hf_ffn(self, prefix: str, block: nn.Module) -> dict[str, torch.Tensor]:
        """The feed-forward weights of one block under HF names (``prefix`` ends with '.')."""
        gate, up = block.mlp.gate_up.weight.split([block.mlp.hidden] * 2, dim=0)
        return {prefix + "mlp.gate_proj.weight": gate, prefix + "mlp.up_proj.weight": up,
                prefix + "mlp.down_proj.weight": block.mlp.down.weight}


def build(config: DenseConfig, vocab_size: int) -> DenseLM:
    """The ``architecture`` factory: ``build(config, vocab_size)`` → a freshly initialised model."""
    return DenseLM(config, vocab_size)
