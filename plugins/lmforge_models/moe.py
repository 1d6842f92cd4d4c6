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
from lmforge_models.dense import Attention, DenseLM, RMSNorm


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


class MoELM(DenseLM):
    """Sparse MoE decoder: :class:`DenseLM` with each block's SwiGLU replaced by
    :class:`SparseMoE` (same attention, norms, rotary and output head).

    ``forward(input_ids [B, T]) -> logits [B, T, vocab_size]``; ``T <= max_seq_len``. After
    each call, ``aux_loss`` is the scaled load-balancing loss (a scalar with gradient).
    """

    block_class = MoEBlock
    config: MoEConfig

    def __init__(self, config: MoEConfig, vocab_size: int) -> None:
        self.aux_loss: torch.Tensor | None = None
        super().__init__(config, vocab_size)

    def reset_parameters(self) -> None:
        """Normal(0, init_std) for every matrix (router and experts included), ones for norms."""
        super().reset_parameters()
        for module in self.modules():
            if isinstance(module, SparseMoE):
                nn.init.normal_(module.w_gate_up, mean=0.0, std=self.config.init_std)
                nn.init.normal_(module.w_down, mean=0.0, std=self.config.init_std)

    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final hidden states ``[B, T, dim]`` (after the last norm); sets ``aux_loss``."""
        out = super().hidden(input_ids)
        aux = torch.stack([block.moe.aux for block in self.blocks]).mean()
        self.aux_loss = aux * self.config.router_aux_loss_coef
        return out

    # -- HFExportable --------------------------------------------------------------------------
    def hf_config(self) -> dict[str, Any]:
        """``config.json`` for ``transformers.MixtralForCausalLM`` (token ids added by the
        exporter)."""
        c = self.config
        out = {k: v for k, v in super().hf_config().items()
               if k not in ("attention_bias", "mlp_bias")}
        out.update({
            "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
            "sliding_window": None, "num_local_experts": c.n_experts,
            "num_experts_per_tok": c.top_k, "router_aux_loss_coef": c.router_aux_loss_coef,
            "router_jitter_noise": 0.0, "output_router_logits": False,
        })
        return out

    def _hf_ffn(self, prefix: str, block: nn.Module) -> dict[str, torch.Tensor]:
        """Router and per-expert weights under ``MixtralForCausalLM`` checkpoint names
        (``w1`` gate, ``w3`` up, ``w2`` down)."""
        moe = block.moe
        out = {prefix + "block_sparse_moe.gate.weight": moe.router.weight}
        for j in range(self.config.n_experts):
            gate, up = moe.w_gate_up[j].split([moe.hidden] * 2, dim=0)
            e = prefix + f"block_sparse_moe.experts.{j}."
            out.update({e + "w1.weight": gate, e + "w2.weight": moe.w_down[j],
                        e + "w3.weight": up})
        return out


def build(config: MoEConfig, vocab_size: int) -> MoELM:
    """The ``architecture`` factory: ``build(config, vocab_size)`` → a freshly initialised model."""
    return MoELM(config, vocab_size)
