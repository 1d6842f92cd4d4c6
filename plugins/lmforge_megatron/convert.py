"""Weights between canonical Hugging Face names and Megatron-Core's sharded ``GPTModel`` layout.

The canonical state dict is the architecture's ``to_hf`` output: ``LlamaForCausalLM`` names for
a dense :class:`lmforge.interfaces.TransformerShape`, ``MixtralForCausalLM`` names with experts.
Every Megatron parameter of one rank is described by :func:`segments`: the slices of canonical
tensors it is the concatenation of (along one dimension) —

* ``embedding.word_embeddings.weight`` / ``output_layer.weight``: this tensor-parallel rank's
  rows of the vocabulary, padded with zero rows up to the padded vocabulary;
* ``self_attention.linear_qkv.weight``: Megatron interleaves q, k and v per key/value group
  (``[q of group 0, k0, v0, q of group 1, ...]``) and gives each rank whole groups;
* ``mlp.linear_fc1.weight``: gate then up, each this rank's rows of the hidden size (so the
  local ``chunk(2)`` is ``(gate, up)``); ``linear_proj`` / ``linear_fc2`` split columns;
* experts: ``mlp.experts.local_experts.{j}`` (or Transformer Engine's grouped
  ``mlp.experts.linear_fc1.weight{j}``) is global expert ``ep_rank * E / ep + j``, split over
  the expert tensor-parallel ranks like a dense MLP;
* norms and the router are whole on every rank.

Both directions use the same description, so ``canonical -> local shards -> canonical`` is
exact (pure slicing and concatenation), whatever the layout. Imports torch only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

#: Megatron state-dict entries that are not weights (Transformer Engine's fp8 metadata).
EXTRA_STATE = "_extra_state"


@dataclass(frozen=True)
class Layout:
    """What one rank holds: the model's shape and vocabulary, and this rank's coordinates."""

    shape: Any  # lmforge.interfaces.TransformerShape
    vocab_size: int
    padded_vocab: int
    tp_rank: int = 0
    tp: int = 1
    ep_rank: int = 0
    ep: int = 1
    etp_rank: int = 0
    etp: int = 1


#: One piece of a local tensor: ``(canonical name or None for zero padding, start, length)``
#: along the segment dimension.
Piece = tuple[str | None, int, int]


def padded_vocab_size(vocab_size: int, multiple: int, tp: int) -> int:
    """The vocabulary rounded up to a multiple of ``multiple * tp`` (Megatron's rule)."""
    step = multiple * tp
    return -(-vocab_size // step) * step


def _rows(name: str, start: int, length: int, limit: int) -> list[Piece]:
    """Rows ``start .. start + length`` of ``name`` (which has ``limit`` rows), padded."""
    end = min(start + length, limit)
    out: list[Piece] = []
    if end > start:
        out.append((name, start, end - start))
    pad = length - max(end - start, 0)
    if pad:
        out.append((None, 0, pad))
    return out


_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
_LOCAL_EXPERT = re.compile(r"^mlp\.experts\.local_experts\.(\d+)\.(linear_fc[12])\.weight$")
_GROUPED_EXPERT = re.compile(r"^mlp\.experts\.(linear_fc[12])\.weight(\d+)$")


def segments(key: str, lay: Layout, layer_of: Callable[[int], int]
             ) -> tuple[int, list[Piece]] | None:
    """``(dim, pieces)``: the local tensor ``key`` is the concatenation along ``dim`` of the
    canonical slices ``pieces`` (each narrowed along the same ``dim``); ``None`` for an entry
    that is not a weight. ``layer_of(i)`` maps local layer ``i`` to its global index."""
    s = lay.shape
    if key.endswith(EXTRA_STATE):
        return None
    if key in ("embedding.word_embeddings.weight", "output_layer.weight"):
        name = ("model.embed_tokens.weight" if key.startswith("embedding") or s.tie_embeddings
                else "lm_head.weight")
        rows = lay.padded_vocab // lay.tp
        return 0, _rows(name, lay.tp_rank * rows, rows, lay.vocab_size)
    if key == "decoder.final_layernorm.weight":
        return 0, [("model.norm.weight", 0, s.dim)]
    m = _LAYER.match(key)
    if m is None:
        raise KeyError(f"unknown Megatron parameter {key!r}")
    layer, rest = layer_of(int(m.group(1))), m.group(2)
    hf = f"model.layers.{layer}."
    hd, tp, r = s.head_dim, lay.tp, lay.tp_rank
    if rest in ("input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight"):
        return 0, [(hf + "input_layernorm.weight", 0, s.dim)]
    if rest in ("pre_mlp_layernorm.weight", "mlp.linear_fc1.layer_norm_weight"):
        return 0, [(hf + "post_attention_layernorm.weight", 0, s.dim)]
    if rest == "self_attention.linear_qkv.weight":
        per_group = s.n_heads // s.n_kv_heads
        groups = s.n_kv_heads // tp
        pieces: list[Piece] = []
        for g in range(r * groups, (r + 1) * groups):
            pieces += [(hf + "self_attn.q_proj.weight", g * per_group * hd, per_group * hd),
                       (hf + "self_attn.k_proj.weight", g * hd, hd),
                       (hf + "self_attn.v_proj.weight", g * hd, hd)]
        return 0, pieces
    if rest == "self_attention.linear_proj.weight":
        cols = s.n_heads * hd // tp
        return 1, [(hf + "self_attn.o_proj.weight", r * cols, cols)]
    if not s.is_moe:
        f = s.ffn_hidden // tp
        if rest == "mlp.linear_fc1.weight":
            return 0, [(hf + "mlp.gate_proj.weight", r * f, f),
                       (hf + "mlp.up_proj.weight", r * f, f)]
        if rest == "mlp.linear_fc2.weight":
            return 1, [(hf + "mlp.down_proj.weight", r * f, f)]
        raise KeyError(f"unknown Megatron parameter {key!r}")
    moe = hf + "block_sparse_moe."
    if rest == "mlp.router.weight":
        return 0, [(moe + "gate.weight", 0, s.n_experts)]
    m = _LOCAL_EXPERT.match(rest)
    if m is not None:
        local, fc = int(m.group(1)), m.group(2)
    else:
        m = _GROUPED_EXPERT.match(rest)
        if m is None:
            raise KeyError(f"unknown Megatron parameter {key!r}")
        fc, local = m.group(1), int(m.group(2))
    e = lay.ep_rank * (s.n_experts // lay.ep) + local
    f = s.ffn_hidden // lay.etp
    start = lay.etp_rank * f
    if fc == "linear_fc1":
        return 0, [(moe + f"experts.{e}.w1.weight", start, f),
                   (moe + f"experts.{e}.w3.weight", start, f)]
    return 1, [(moe + f"experts.{e}.w2.weight", start, f)]


def is_replicated(pieces: list[Piece], canonical_shapes: Mapping[str, tuple[int, ...]],
                  dim: int) -> bool:
    """Whether the pieces cover their canonical tensors whole (norms, router): every
    tensor-parallel rank then holds the same copy."""
    return all(name is not None and start == 0 and length == canonical_shapes[name][dim]
               for name, start, length in pieces)


def local_tensor(key: str, like: torch.Tensor, canonical: Mapping[str, torch.Tensor],
                 lay: Layout, layer_of: Callable[[int], int]) -> torch.Tensor | None:
    """The value of local parameter ``key`` (shaped and typed like ``like``) from the
    canonical state dict; ``None`` for an entry that is not a weight."""
    seg = segments(key, lay, layer_of)
    if seg is None:
        return None
    dim, pieces = seg
    parts = []
    for name, start, length in pieces:
        if name is None:
            shape = list(like.shape)
            shape[dim] = length
            parts.append(torch.zeros(shape, dtype=torch.float32))
        else:
            if name not in canonical:
                raise KeyError(f"the canonical weights lack {name!r} (needed for Megatron's "
                               f"{key!r})")
            parts.append(canonical[name].narrow(dim, start, length).float())
    value = torch.cat(parts, dim=dim) if len(parts) > 1 else parts[0]
    if tuple(value.shape) != tuple(like.shape):
        raise ValueError(f"Megatron parameter {key!r} has shape {tuple(like.shape)} but the "
                         f"canonical weights give {tuple(value.shape)}")
    return value


def local_pieces(key: str, value: torch.Tensor, lay: Layout, layer_of: Callable[[int], int]
                 ) -> list[tuple[str, int, int, torch.Tensor]]:
    """The inverse of :func:`local_tensor`: ``(canonical name, dim, start, slice)`` for each
    piece of local parameter ``key`` (padding dropped)."""
    seg = segments(key, lay, layer_of)
    if seg is None:
        return []
    dim, pieces = seg
    out = []
    offset = 0
    for name, start, length in pieces:
        if name is not None:
            out.append((name, dim, start, value.narrow(dim, offset, length)))
        offset += length
    return out


def canonical_shapes(shape: Any, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Every canonical (HF-named) tensor's shape."""
    s, hd = shape, shape.head_dim
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab_size, s.dim),
                                       "model.norm.weight": (s.dim,)}
    if not s.tie_embeddings:
        out["lm_head.weight"] = (vocab_size, s.dim)
    for i in range(s.n_layers):
        p = f"model.layers.{i}."
        out.update({p + "self_attn.q_proj.weight": (s.n_heads * hd, s.dim),
                    p + "self_attn.k_proj.weight": (s.n_kv_heads * hd, s.dim),
                    p + "self_attn.v_proj.weight": (s.n_kv_heads * hd, s.dim),
                    p + "self_attn.o_proj.weight": (s.dim, s.n_heads * hd),
                    p + "input_layernorm.weight": (s.dim,),
                    p + "post_attention_layernorm.weight": (s.dim,)})
        if s.is_moe:
            moe = p + "block_sparse_moe."
            out[moe + "gate.weight"] = (s.n_experts, s.dim)
            for e in range(s.n_experts):
                out.update({moe + f"experts.{e}.w1.weight": (s.ffn_hidden, s.dim),
                            moe + f"experts.{e}.w3.weight": (s.ffn_hidden, s.dim),
                            moe + f"experts.{e}.w2.weight": (s.dim, s.ffn_hidden)})
        else:
            out.update({p + "mlp.gate_proj.weight": (s.ffn_hidden, s.dim),
                        p + "mlp.up_proj.weight": (s.ffn_hidden, s.dim),
                        p + "mlp.down_proj.weight": (s.dim, s.ffn_hidden)})
    return out


def assemble(pieces: Iterable[tuple[str, int, int, torch.Tensor]], shape: Any,
             vocab_size: int) -> dict[str, torch.Tensor]:
    """The canonical state dict (fp32, CPU) from every rank's pieces; a tensor some piece
    of which is missing is an error naming it."""
    shapes = canonical_shapes(shape, vocab_size)
    out = {name: torch.empty(sh, dtype=torch.float32) for name, sh in shapes.items()}
    covered = {name: 0 for name in shapes}
    seen: set[tuple[str, int, int]] = set()
    for name, dim, start, value in pieces:
        if name not in out:
            raise KeyError(f"unexpected canonical name {name!r}")
        out[name].narrow(dim, start, value.shape[dim]).copy_(value.detach().float().cpu())
        if (name, dim, start) not in seen:
            seen.add((name, dim, start))
            covered[name] += value.shape[dim]
    missing = [n for n, sh in shapes.items() if covered[n] < sh[_dim_of(n)]]
    if missing:
        raise ValueError(f"gathered Megatron weights do not cover {missing[:5]}")
    return out


def _dim_of(name: str) -> int:
    """The dimension along which ``name`` is split (columns for o_proj, down_proj, w2)."""
    return 1 if name.endswith(("o_proj.weight", "down_proj.weight", ".w2.weight")) else 0
