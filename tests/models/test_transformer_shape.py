"""The neutral transformer description (``ArchitectureConfig.transformer()``) agrees with the
module the architecture builds and with its Hugging Face config."""

from __future__ import annotations

import dataclasses

from lmforge.interfaces import ArchitectureConfig, TransformerShape
from lmforge_models.config import DenseConfig, MoEConfig
from lmforge_models.dense import build as build_dense
from lmforge_models.moe import build as build_moe


def test_dense_description_matches_the_module_and_hf_config() -> None:
    cfg = DenseConfig(dim=64, n_layers=3, n_heads=4, n_kv_heads=2, ffn_hidden=96,
                      max_seq_len=32, rope_theta=5e5, norm_eps=1e-6, tie_embeddings=True)
    assert isinstance(cfg, ArchitectureConfig)
    shape = cfg.transformer()
    assert isinstance(shape, TransformerShape) and not shape.is_moe
    assert (shape.dim, shape.n_layers, shape.n_heads, shape.n_kv_heads, shape.head_dim,
            shape.ffn_hidden, shape.max_seq_len) == (64, 3, 4, 2, 16, 96, 32)
    assert (shape.activation, shape.norm, shape.tie_embeddings) == ("swiglu", "rmsnorm", True)
    hf = cfg.hf_config(100)
    assert (hf["hidden_size"], hf["num_hidden_layers"], hf["num_attention_heads"],
            hf["num_key_value_heads"], hf["intermediate_size"], hf["rope_theta"],
            hf["rms_norm_eps"]) == (shape.dim, shape.n_layers, shape.n_heads, shape.n_kv_heads,
                                    shape.ffn_hidden, shape.rope_theta, shape.norm_eps)
    model = build_dense(cfg, 100)
    qkv = model.blocks[0].attn.qkv.weight
    assert qkv.shape == ((shape.n_heads + 2 * shape.n_kv_heads) * shape.head_dim, shape.dim)
    assert model.blocks[0].mlp.down.weight.shape == (shape.dim, shape.ffn_hidden)
    # Default ffn (the Llama rule) is described by the size actually used.
    assert DenseConfig(dim=64, multiple_of=32).transformer().ffn_hidden == 192


def test_moe_description_adds_the_experts() -> None:
    cfg = MoEConfig(dim=32, n_layers=2, n_heads=4, ffn_hidden=48, n_experts=4, top_k=2,
                    router_aux_loss_coef=0.02, router_z_loss_coef=0.001, max_seq_len=16)
    shape = cfg.transformer()
    assert shape.is_moe and (shape.n_experts, shape.top_k) == (4, 2)
    assert (shape.router_aux_loss_coef, shape.router_z_loss_coef) == (0.02, 0.001)
    dense_part = dataclasses.replace(shape, n_experts=0, top_k=0, router_aux_loss_coef=0.0,
                                     router_z_loss_coef=0.0)
    assert dense_part == DenseConfig(**{k: v for k, v in cfg.model_dump().items() if k in
                                        DenseConfig.model_fields and k != "type"}).transformer()
    model = build_moe(cfg, 50)
    assert model.blocks[0].moe.w_gate_up.shape == (4, 2 * shape.ffn_hidden, shape.dim)
