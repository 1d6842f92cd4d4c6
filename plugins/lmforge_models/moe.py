"""The ``moe`` architecture: the ``dense`` decoder with sparse Mixtral-style MoE MLPs.

Each block is ``x + attn(rmsnorm(x))`` then ``x + moe(rmsnorm(x))``. The MoE layer is a linear
router (no bias) over ``n_experts`` SwiGLU experts: ``softmax`` over the router logits (float32),
the ``top_k`` most probable experts per token, their probabilities renormalised to sum to 1, and
the experts' outputs summed with those weights.

Dispatch groups the ``tokens * top_k`` assignments by expert (one stable sort), gathers them
with ``index_select``, runs all experts as one grouped matmul (``torch._grouped_mm`` with the
group offsets on the device: no host sync, no loop over experts) and scatters the weighted
results back with ``index_add_``. Where the grouped matmul is unavailable (old torch, fp32 on
CUDA) a loop over experts is the fallback.

Expert weights are stored fused, ``w_gate_up [n_experts, 2 * hidden, dim]`` (gate rows first)
and ``w_down [n_experts, dim, hidden]``; the state-dict adapter writes them under the
per-expert ``MixtralForCausalLM`` checkpoint names (``block_sparse_moe.experts.{j}.w1/w2/w3``).

Auxiliary losses are returned by ``forward`` in :attr:`CausalLMOutput.aux_losses`, never kept
on the module:

* ``load_balancing``: the Switch loss ``n_experts * sum_e f_e * P_e`` averaged over layers,
  times ``router_aux_loss_coef``, where ``f_e`` is the fraction of the ``tokens * top_k``
  assignments routed to expert ``e`` and ``P_e`` the mean router probability of ``e``. It is
  1 * coef for uniform routing. (Transformers' Mixtral counts ``f_e`` per token rather than
  per assignment, so its value is ``top_k`` times this.)
* ``router_z`` (when ``router_z_loss_coef > 0``): the mean squared log-sum-exp of the router
  logits (ST-MoE), averaged over layers, times the coefficient.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge_models.config import MoEConfig
from lmforge_models.dense import Attention, DenseLM, RMSNorm


def _grouped_ok(x: torch.Tensor) -> bool:
    """Whether ``torch._grouped_mm`` runs for ``x``: on CPU in any float dtype, on CUDA in
    bf16 (its kernels need Hopper-class GPUs; older ones take the fallback)."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if x.device.type == "cpu":
        return True
    return (x.device.type == "cuda" and x.dtype == torch.bfloat16
            and torch.cuda.get_device_capability(x.device)[0] >= 9)


def _matmul_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class SparseMoE(nn.Module):
    """Top-k routed SwiGLU experts.

    ``forward(x [..., dim]) -> (y [..., dim], stats)`` where ``stats`` holds this layer's
    ``load_balancing`` and ``router_z`` values (unscaled scalars).
    """

    def __init__(self, dim: int, hidden: int, n_experts: int, top_k: int) -> None:
        super().__init__()
        self.dim, self.hidden, self.n_experts, self.top_k = dim, hidden, n_experts, top_k
        self.router = nn.Linear(dim, n_experts, bias=False)
        self.w_gate_up = nn.Parameter(torch.empty(n_experts, 2 * hidden, dim))
        self.w_down = nn.Parameter(torch.empty(n_experts, dim, hidden))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        shape = x.shape
        flat = x.reshape(-1, self.dim)
        n, k, e = flat.shape[0], self.top_k, self.n_experts
        logits = self.router(flat).float()  # [N, E]
        probs = F.softmax(logits, dim=-1)
        weights, experts = torch.topk(probs, k, dim=-1)  # [N, k]
        weights = weights / weights.sum(dim=-1, keepdim=True)

        assigned = experts.reshape(-1)  # [N*k], assignment a = token a // k
        order = torch.argsort(assigned, stable=True)
        counts = torch.bincount(assigned, minlength=e)
        token_idx = order // k
        gathered = flat.index_select(0, token_idx)  # [N*k, dim], grouped by expert
        y = self._experts(gathered, counts)
        y = y * weights.reshape(-1)[order].unsqueeze(-1).to(y.dtype)
        out = torch.zeros(n, self.dim, dtype=y.dtype, device=y.device).index_add_(0, token_idx, y)

        frac = counts.to(probs.dtype) / (n * k)  # no gradient (a count)
        stats = {"load_balancing": e * torch.sum(frac * probs.mean(dim=0)),
                 "router_z": torch.logsumexp(logits, dim=-1).pow(2).mean()}
        return out.reshape(shape).to(x.dtype), stats

    def _experts(self, tokens: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """SwiGLU of each expert on its contiguous group of ``tokens`` ``[M, dim]``."""
        dt = _matmul_dtype(tokens)
        x = tokens.to(dt)
        if _grouped_ok(x) and all(n * x.element_size() % 16 == 0 for n in (self.dim, self.hidden)):
            offs = torch.cumsum(counts, 0).to(torch.int32)
            h = torch._grouped_mm(x, self.w_gate_up.to(dt).transpose(-2, -1), offs=offs)
            gate, up = h.chunk(2, dim=-1)
            return torch._grouped_mm((F.silu(gate) * up).contiguous(),
                                     self.w_down.to(dt).transpose(-2, -1), offs=offs)
        outs = []
        for j, chunk in enumerate(x.split(counts.tolist(), dim=0)):
            gate, up = F.linear(chunk, self.w_gate_up[j].to(dt)).chunk(2, dim=-1)
            outs.append(F.linear(F.silu(gate) * up, self.w_down[j].to(dt)))
        return torch.cat(outs, dim=0)


class MoEBlock(nn.Module):
    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.moe = SparseMoE(cfg.dim, cfg.hidden_dim, cfg.n_experts, cfg.top_k)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, ssin: torch.Tensor,
                mask: torch.Tensor | None = None, cache: Any = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = x + self.attn(self.attn_norm(x), cos, ssin, mask, cache)
        y, stats = self.moe(self.mlp_norm(x))
        return x + y, stats


class MoELM(DenseLM):
    """Sparse MoE decoder: :class:`DenseLM` with each block's SwiGLU replaced by
    :class:`SparseMoE` (same attention, norms, rotary and output head). Its outputs carry the
    scaled auxiliary losses (see the module docstring)."""

    block_class = MoEBlock
    config: MoEConfig

    def reset_parameters(self) -> None:
        """Normal(0, init_std) for every matrix (router and experts included), ones for norms."""
        super().reset_parameters()
        for module in self.modules():
            if isinstance(module, SparseMoE):
                nn.init.normal_(module.w_gate_up, mean=0.0, std=self.config.init_std)
                nn.init.normal_(module.w_down, mean=0.0, std=self.config.init_std)

    def aux_losses(self, stats: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Layer-averaged router losses scaled by their coefficients (zero coefficients are
        left out)."""
        c = self.config
        out = {}
        for name, coef in (("load_balancing", c.router_aux_loss_coef),
                           ("router_z", c.router_z_loss_coef)):
            if coef > 0 and stats:
                out[name] = torch.stack([s[name] for s in stats]).mean() * coef
        return out


def build(config: MoEConfig, vocab_size: int) -> MoELM:
    """The ``architecture`` factory: ``build(config, vocab_size)`` → a freshly initialised model."""
    return MoELM(config, vocab_size)
