"""The ``moe`` architecture: the ``dense`` decoder with sparse Mixtral-style MoE MLPs.

Each block is ``x + attn(rmsnorm(x))`` then ``x + moe(rmsnorm(x))``. The MoE layer is a linear
router (no bias) over ``n_experts`` SwiGLU experts: ``softmax`` over the router logits (float32),
the ``top_k`` most probable experts per token, their probabilities renormalised to sum to 1, and
the experts' outputs summed with those weights.

Dispatch groups the ``tokens * top_k`` assignments by expert (one stable sort), gathers each
expert's tokens with ``index_select``, runs the expert on them as one matmul and scatters the
weighted results back with ``index_add_``: a loop over experts, none over tokens.

Expert weights are stored fused, ``w_gate_up [n_experts, 2 * hidden, dim]`` (gate rows first)
and ``w_down [n_experts, dim, hidden]``; :meth:`MoELM.hf_state_dict` writes them under the
per-expert ``MixtralForCausalLM`` checkpoint names (``block_sparse_moe.experts.{j}.w1/w2/w3``),
which transformers 5 fuses again on load.

After every ``hidden``/``forward`` the model exposes ``aux_loss``: the Switch load-balancing
loss ``n_experts * sum_e f_e * P_e`` averaged over layers, times ``router_aux_loss_coef``, where
``f_e`` is the fraction of the ``tokens * top_k`` assignments routed to expert ``e`` and ``P_e``
the mean router probability of ``e``. It is 1 * coef for uniform routing. (Transformers' Mixtral
counts ``f_e`` per token rather than per assignment, so its value is ``top_k`` times this.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge_models.config import MoEConfig
from lmforge_models.dense import Attention, RMSNorm, rotary_tables, signed_sin


class SparseMoE(nn.Module):
    """Top-k routed SwiGLU experts. ``forward(x [..., dim]) -> [..., dim]``; sets ``aux``."""

    def __init__(self, dim: int, hidden: int, n_experts: int, top_k: int) -> None:
        super().__init__()
        self.dim, self.hidden, self.n_experts, self.top_k = dim, hidden, n_experts, top_k
        self.router = nn.Linear(dim, n_experts, bias=False)
        self.w_gate_up = nn.Parameter(torch.empty(n_experts, 2 * hidden, dim))
        self.w_down = nn.Parameter(torch.empty(n_experts, dim, hidden))
        self.aux: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.dim)
        n, k, e = flat.shape[0], self.top_k, self.n_experts
        probs = F.softmax(self.router(flat).float(), dim=-1)  # [N, E]
        weights, experts = torch.topk(probs, k, dim=-1)  # [N, k]
        weights = weights / weights.sum(dim=-1, keepdim=True)

        assigned = experts.reshape(-1)  # [N*k], assignment a = token a // k
        order = torch.argsort(assigned, stable=True)
        counts = torch.bincount(assigned, minlength=e)
        token_idx = order // k
        gathered = flat.index_select(0, token_idx)  # [N*k, dim], grouped by expert
        outs = []
        for j, chunk in enumerate(gathered.split(counts.tolist(), dim=0)):
            if chunk.shape[0] == 0:
                continue
            gate, up = F.linear(chunk, self.w_gate_up[j]).chunk(2, dim=-1)
            outs.append(F.linear(F.silu(gate) * up, self.w_down[j]))
        y = torch.cat(outs, dim=0)
        y = y * weights.reshape(-1)[order].unsqueeze(-1).to(y.dtype)
        out = torch.zeros(n, self.dim, dtype=y.dtype, device=y.device).index_add_(0, token_idx, y)

        frac = counts.to(probs.dtype) / (n * k)  # no gradient (a count)
        self.aux = e * torch.sum(frac * probs.mean(dim=0))
        return out.reshape(shape).to(x.dtype)


class MoEBlock(nn.Module):
    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.moe = SparseMoE(cfg.dim, cfg.hidden_dim, cfg.n_experts, cfg.top_k)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, ssin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, ssin)
        return x + self.moe(self.mlp_norm(x))


class MoELM(nn.Module):
    """Sparse MoE decoder implementing :class:`lmforge.interfaces.CausalLM` and ``HFExportable``.

    ``forward(input_ids [B, T]) -> logits [B, T, vocab_size]``; ``T <= max_seq_len``. After
    each call, ``aux_loss`` is the scaled load-balancing loss (a scalar with gradient).
    """

    def __init__(self, config: MoEConfig, vocab_size: int) -> None:
        super().__init__()
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        self.config = config
        self.vocab_size = int(vocab_size)
        self.max_seq_len = config.max_seq_len
        self.embed = nn.Embedding(vocab_size, config.dim)
        self.blocks = nn.ModuleList(MoEBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.dim, vocab_size,
                                                                    bias=False)
        cos, sin = rotary_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_ssin", signed_sin(sin), persistent=False)
        self.aux_loss: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) for every matrix (router and experts included), ones for norms."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
            elif isinstance(module, SparseMoE):
                nn.init.normal_(module.w_gate_up, mean=0.0, std=std)
                nn.init.normal_(module.w_down, mean=0.0, std=std)

    # -- CausalLM ------------------------------------------------------------------------------
    @property
    def head_weight(self) -> torch.Tensor:
        """The ``[vocab, dim]`` output matrix: ``head(h) == h @ head_weight.T``."""
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final hidden states ``[B, T, dim]`` (after the last norm); sets ``aux_loss``."""
        t = input_ids.shape[1]
        if t > self.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds the model's max_seq_len "
                             f"{self.max_seq_len}; shorten the input or raise max_seq_len")
        cos, ssin = self.rope_cos[:t], self.rope_ssin[:t]
        x = self.embed(input_ids)
        aux = []
        for block in self.blocks:
            x = block(x, cos, ssin)
            aux.append(block.moe.aux)
        self.aux_loss = torch.stack(aux).mean() * self.config.router_aux_loss_coef
        return self.norm(x)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., vocab_size]`` from hidden states ``[..., dim]``."""
        return F.linear(hidden, self.head_weight)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(input_ids))

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Unique trainable parameters (all experts); ``non_embedding`` leaves out the token
        embedding."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token at ``seq_len`` (see :meth:`MoEConfig.flops_per_token`)."""
        return self.config.flops_per_token(seq_len, self.vocab_size)

    # -- HFExportable --------------------------------------------------------------------------
    def hf_config(self) -> dict[str, Any]:
        """``config.json`` for ``transformers.MixtralForCausalLM`` (token ids added by the
        exporter)."""
        c = self.config
        return {
            "architectures": ["MixtralForCausalLM"],
            "model_type": "mixtral",
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
            "sliding_window": None,
            "attention_dropout": 0.0,
            "num_local_experts": c.n_experts,
            "num_experts_per_tok": c.top_k,
            "router_aux_loss_coef": c.router_aux_loss_coef,
            "router_jitter_noise": 0.0,
            "output_router_logits": False,
            "tie_word_embeddings": c.tie_embeddings,
            "initializer_range": c.init_std,
            "torch_dtype": "float32",
            "use_cache": True,
        }

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under ``MixtralForCausalLM`` checkpoint names (detached, contiguous;
        per-expert ``w1`` gate, ``w3`` up, ``w2`` down; ``lm_head.weight`` omitted when tied)."""
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
                p + "block_sparse_moe.gate.weight": block.moe.router.weight,
                p + "input_layernorm.weight": block.attn_norm.weight,
                p + "post_attention_layernorm.weight": block.mlp_norm.weight,
            })
            moe = block.moe
            for j in range(c.n_experts):
                gate, up = moe.w_gate_up[j].split([moe.hidden] * 2, dim=0)
                e = p + f"block_sparse_moe.experts.{j}."
                out[e + "w1.weight"] = gate
                out[e + "w2.weight"] = moe.w_down[j]
                out[e + "w3.weight"] = up
        out["model.norm.weight"] = self.norm.weight
        if self.lm_head is not None:
            out["lm_head.weight"] = self.lm_head.weight
        return {k: v.detach().contiguous().clone() for k, v in out.items()}


def build(config: MoEConfig, vocab_size: int) -> MoELM:
    """The ``architecture`` factory: ``build(config, vocab_size)`` → a freshly initialised model."""
    return MoELM(config, vocab_size)
