"""The ``dense`` architecture: a Llama-family decoder (imports torch; built through the factory).

Layout per block: ``x + attn(rmsnorm(x))`` then ``x + swiglu(rmsnorm(x))``. Attention uses
grouped-query heads, rotary positions with the Hugging Face Llama convention (``rotate_half``
over the two halves of each head), and ``scaled_dot_product_attention(is_causal=True)``.

For speed the q/k/v projections are one ``[q + 2 kv, dim]`` matrix and gate/up one
``[2 * hidden, dim]`` matrix; the state-dict adapter (:mod:`lmforge_models.hf`) splits them into
the separate ``LlamaForCausalLM`` weights (row slices, no permutation).

``forward`` implements the model-call contract of :class:`lmforge.interfaces.CausalLM`: with
``labels`` it returns the summed loss or per-token log-probs computed chunk-wise by
:mod:`lmforge.training.losses`, so no caller ever needs the model's internals.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.interfaces import CausalLMOutput
from lmforge.training.losses import linear_cross_entropy, linear_token_logprobs
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
    # roll swaps the halves in one kernel, and its backward is a roll too (two slices and a cat
    # cost a zero-filled buffer and a copy per slice in backward).
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * ssin


#: ``scaled_dot_product_attention(enable_gqa=...)`` exists (torch >= 2.5).
_SDPA_GQA = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 5)


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight``, computed in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return _RMSNormFunction.apply(x, self.weight, self.eps)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class _RMSNormFunction(torch.autograd.Function):
    """:class:`RMSNorm` of float32 ``x`` ``[..., D]`` with a hand-derived backward: the same
    forward, but backward is six elementwise kernels and a sum instead of the ten or so autograd
    chains through pow/mean/rsqrt/mul (a few percent of a small model's training step on CPU).

    With ``y = x * r``, ``r = rsqrt(mean(x^2) + eps)`` and ``g_y = grad * weight``:
    ``dx = r * (g_y - y * mean(g_y * y))`` and ``dweight = sum(grad * y)`` over all but the last
    dimension.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        y = x * r
        ctx.save_for_backward(y, r, weight)
        return weight * y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        y, r, weight = ctx.saved_tensors
        gy = grad * weight
        dx = (gy - y * (gy * y).mean(-1, keepdim=True)).mul_(r)
        dw = (grad * y).reshape(-1, y.shape[-1]).sum(0) if ctx.needs_input_grad[1] else None
        return dx, dw, None


class Attention(nn.Module):
    def __init__(self, cfg: DenseConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        q, kv = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        self.qkv = nn.Linear(cfg.dim, q + 2 * kv, bias=False)
        self.out = nn.Linear(q, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, ssin: torch.Tensor,
                mask: torch.Tensor | None = None,
                cache: tuple[torch.Tensor, torch.Tensor, int] | None = None) -> torch.Tensor:
        """``x`` ``[B, T, dim]``; ``cos``/``ssin`` ``[T, head_dim]`` or ``[B, 1, T, head_dim]``
        (see :func:`signed_sin`); ``mask`` ``[B, 1, T, S]`` bool (True: may attend; ``S`` keys)
        or None for plain causal attention; ``cache``: this layer's key/value buffers
        ``[B, kv_heads, max_len, head_dim]`` and the position the new tokens are written at
        (attention then runs over the ``S = start + T`` cached keys)."""
        b, t, _ = x.shape
        h, kv, hd = self.n_heads, self.n_kv, self.head_dim
        qkv = self.qkv(x).view(b, t, h + 2 * kv, hd).transpose(1, 2)  # [B, h+2kv, T, hd]
        # split, not slicing: the backward of a split is one cat, that of each slice a
        # zero-filled buffer of the whole input and a copy.
        qk, v = qkv.split([h + kv, kv], dim=1)
        q, k = _rotate(qk, cos, ssin).split([h, kv], dim=1)  # q and k heads in one pass
        if cache is not None:
            k_buf, v_buf, start = cache
            k_buf[:, :, start:start + t] = k
            v_buf[:, :, start:start + t] = v
            k, v = k_buf[:, :, :start + t], v_buf[:, :, :start + t]
            if _SDPA_GQA:  # decoding: no copy of the whole cache per head group
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=kv != h)
                return self.out(y.transpose(1, 2).reshape(b, t, h * hd))
        if kv != h:
            k = k.repeat_interleave(h // kv, dim=1)
            v = v.repeat_interleave(h // kv, dim=1)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
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

    def forward(self, x: torch.Tensor, cos: torch.Tensor, ssin: torch.Tensor,
                mask: torch.Tensor | None = None, cache: Any = None) -> tuple[torch.Tensor, None]:
        """``(x, aux)``: the block's output and its auxiliary statistics (none here)."""
        x = x + self.attn(self.attn_norm(x), cos, ssin, mask, cache)
        return x + self.mlp(self.mlp_norm(x)), None


class KVCache:
    """Keys and values of every layer for incremental decoding (see :meth:`DenseLM.init_cache`).

    ``k[i]``/``v[i]``: ``[B, kv_heads, max_len, head_dim]``; ``valid`` ``[B, max_len]`` marks
    cached positions that are real tokens (not padding); ``seen`` ``[B]`` counts each row's real
    tokens (the next rotary position); ``length`` is how many positions are filled. Everything
    is allocated once: a decoding step writes one column in place. ``seen_bound`` (a host int,
    ``>= seen.max()``) lets a step skip reading ``seen`` back from the device until a row could
    have outgrown the model's context.
    """

    def __init__(self, n_layers: int, batch: int, kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (batch, kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.valid = torch.zeros(batch, max_len, dtype=torch.bool, device=device)
        self.seen = torch.zeros(batch, dtype=torch.long, device=device)
        self.length = 0
        self.max_len = max_len
        self.seen_bound = 0

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows ``rows`` (LongTensor ``[B']`` of indices), in that order
        (generation drops finished rows with it)."""
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]
        self.valid = self.valid.index_select(0, rows)
        self.seen = self.seen.index_select(0, rows)


class DenseLM(nn.Module):
    """Decoder-only LM implementing :class:`lmforge.interfaces.CausalLM`.

    Variants (e.g. the MoE model) subclass it, replace ``block_class`` and turn the blocks'
    auxiliary statistics into losses (:meth:`aux_losses`). With ``head: score`` the vocabulary
    projection is replaced by ``score`` (``Linear(dim, 1)``) and ``forward`` returns
    :attr:`CausalLMOutput.scores` ``[B, T']`` (float32) instead of logits or losses.
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
        score_head = config.head == "score"
        self.lm_head = (None if config.tie_embeddings or score_head
                        else nn.Linear(config.dim, vocab_size, bias=False))
        # head: score — one scalar per position instead of the vocabulary projection
        self.score = nn.Linear(config.dim, 1, bias=False) if score_head else None
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_ssin", torch.empty(0), persistent=False)
        self.init_buffers()
        self.reset_parameters()

    def init_buffers(self) -> None:
        """(Re)compute the rotary tables on the parameters' device (e.g. after meta init)."""
        c = self.config
        cos, sin = rotary_tables(c.head_dim, c.max_seq_len, c.rope_theta)
        device = self.embed.weight.device
        self.rope_cos = cos.to(device)
        self.rope_ssin = signed_sin(sin).to(device)

    def reset_parameters(self) -> None:
        """Normal(0, init_std) for every matrix, ones for norms."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    @property
    def head_weight(self) -> torch.Tensor:
        """The ``[vocab, dim]`` output matrix: logits are ``h @ head_weight.T`` (a score-head
        model has none: a ``ValueError``)."""
        if self.score is not None:
            raise ValueError("this model has a score head (head: score): it returns scores, "
                             "not logits over the vocabulary")
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    # -- CausalLM ------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, *, labels: torch.Tensor | None = None,
                positions: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, return_logprobs: bool = False,
                logits_to_keep: int | None = None, cache: KVCache | None = None
                ) -> CausalLMOutput:
        """See :class:`lmforge.interfaces.CausalLM` (``input_ids`` ``[B, T]``)."""
        if cache is not None:
            h, stats = self._hidden_cached(input_ids, attention_mask, cache)
        else:
            h, stats = self._hidden(input_ids, positions, attention_mask)
        out = CausalLMOutput(aux_losses=self.aux_losses(stats))
        if self.score is not None:
            if labels is not None:
                raise ValueError("a score-head model (head: score) takes no labels: it returns "
                                 "one score per position, not token losses or log-probs")
            if logits_to_keep:
                h = h[:, -logits_to_keep:]
            out.scores = F.linear(h, self.score.weight).squeeze(-1).float()  # [B, T']
            return out
        w = self.head_weight
        if labels is None:
            if logits_to_keep:
                h = h[:, -logits_to_keep:]
            out.logits = F.linear(h, w)
        elif return_logprobs:
            out.token_logprobs = linear_token_logprobs(h, w, labels)
        else:
            out.loss_sum, out.num_tokens = linear_cross_entropy(h, w, labels)
        return out

    def _hidden(self, input_ids: torch.Tensor, positions: torch.Tensor | None,
                attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, list[Any]]:
        """Final hidden states ``[B, T, dim]`` (after the last norm) and the blocks' aux stats."""
        b, t = input_ids.shape
        if t > self.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds the model's max_seq_len "
                             f"{self.max_seq_len}; shorten the input or raise max_seq_len")
        mask = None
        if attention_mask is not None:
            keep = attention_mask.to(device=input_ids.device, dtype=torch.bool)
            if positions is None:
                positions = (keep.long().cumsum(-1) - 1).clamp_min(0)
            causal = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril()
            # A padding query may attend to itself, so no row of the mask is empty (NaN).
            eye = torch.eye(t, dtype=torch.bool, device=input_ids.device)
            mask = (causal & (keep[:, None, :] | eye))[:, None]  # [B, 1, T, T]
        if positions is None:
            cos, ssin = self.rope_cos[:t], self.rope_ssin[:t]
        else:
            if int(positions.max()) >= self.max_seq_len:
                raise ValueError(f"position {int(positions.max())} exceeds the model's "
                                 f"max_seq_len {self.max_seq_len}")
            cos = self.rope_cos[positions].unsqueeze(1)  # [B, 1, T, hd]
            ssin = self.rope_ssin[positions].unsqueeze(1)
        x = self.embed(input_ids)
        stats = []
        for block in self.blocks:
            x, aux = block(x, cos, ssin, mask)
            if aux is not None:
                stats.append(aux)
        return self.norm(x), stats

    def init_cache(self, batch_size: int, max_len: int, dtype: torch.dtype | None = None
                   ) -> KVCache:
        """An empty :class:`KVCache` of ``max_len`` columns for ``batch_size`` rows, in
        ``dtype`` (default: the parameters'). Columns hold padding too: what is bounded by
        ``max_seq_len`` is each row's count of real tokens."""
        c = self.config
        return KVCache(c.n_layers, batch_size, c.kv_heads, max_len, c.head_dim,
                       dtype or self.embed.weight.dtype, self.embed.weight.device)

    def _hidden_cached(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       cache: KVCache) -> tuple[torch.Tensor, list[Any]]:
        """Hidden states of ``input_ids`` ``[B, T]`` appended to ``cache`` (prefill or one
        decoding step). ``attention_mask`` covers the new tokens only (padding: 0); positions
        continue each row's count of real tokens."""
        b, t = input_ids.shape
        start, end = cache.length, cache.length + t
        if end > cache.max_len:
            raise ValueError(f"the cache holds {cache.max_len} tokens; {end} do not fit")
        dev = input_ids.device
        if attention_mask is None:
            cache.valid[:, start:end] = True
            positions = cache.seen[:, None] + torch.arange(t, device=dev)
            cache.seen += t
        else:
            new = attention_mask.to(device=dev, dtype=torch.bool)
            cache.valid[:, start:end] = new
            positions = (cache.seen[:, None] + new.cumsum(-1) - 1).clamp_min(0)
            cache.seen += new.sum(-1)
        cache.seen_bound += t
        if cache.seen_bound > self.max_seq_len and int(cache.seen.max()) > self.max_seq_len:
            raise ValueError(f"a row of the cache holds {int(cache.seen.max())} tokens, more "
                             f"than the model's max_seq_len {self.max_seq_len}")
        if t == 1:  # a decoding step: every real cached token, and itself
            # additive, in the cache's dtype: built once for all layers (a bool mask would be
            # converted by every attention call)
            mask = torch.zeros(b, 1, 1, end, dtype=cache.k[0].dtype, device=dev)
            mask.masked_fill_(~cache.valid[:, None, None, :end], float("-inf"))
            mask[..., -1] = 0.0
        else:
            q_pos = torch.arange(start, end, device=dev)
            k_pos = torch.arange(end, device=dev)
            causal = k_pos[None, :] <= q_pos[:, None]  # [T, S]
            # a padding query may attend to itself, so no row of the mask is empty (NaN)
            mask = ((causal[None] & cache.valid[:, None, :end])
                    | (k_pos[None, None, :] == q_pos[None, :, None]))[:, None]  # [B, 1, T, S]
        cos = self.rope_cos[positions].unsqueeze(1)
        ssin = self.rope_ssin[positions].unsqueeze(1)
        x = self.embed(input_ids)
        stats = []
        for i, block in enumerate(self.blocks):
            x, aux = block(x, cos, ssin, mask, (cache.k[i], cache.v[i], start))
            if aux is not None:
                stats.append(aux)
        cache.length = end
        return self.norm(x), stats

    def aux_losses(self, stats: list[Any]) -> dict[str, torch.Tensor]:
        """Scaled auxiliary losses from the blocks' statistics (none for the dense model)."""
        return {}

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Unique trainable parameters; ``non_embedding`` leaves out the token embedding."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token at ``seq_len`` (see :meth:`DenseConfig.flops_per_token`)."""
        return self.config.flops_per_token(seq_len, self.vocab_size)


def build(config: DenseConfig, vocab_size: int) -> DenseLM:
    """The ``architecture`` factory: ``build(config, vocab_size)`` → a freshly initialised model."""
    return DenseLM(config, vocab_size)
