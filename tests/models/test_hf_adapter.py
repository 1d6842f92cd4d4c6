"""The Hugging Face adapter on the architecture configs (``dense``, ``moe``): state-dict round
trips, key errors, ``hf_config`` / ``from_hf_config`` round trips and what is refused.

No transformers needed here (``test_export.py`` checks transformers itself loads the names)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lmforge.interfaces import ArchitectureConfig
from lmforge_models import dense, moe
from lmforge_models.config import DenseConfig, MoEConfig

V = 53


def _dense(**kw: Any) -> DenseConfig:
    base: dict[str, Any] = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=24,
                                ffn_hidden=40)
    base.update(kw)
    return DenseConfig(**base)


def _moe(**kw: Any) -> MoEConfig:
    base: dict[str, Any] = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=24,
                                ffn_hidden=24, n_experts=3, top_k=2)
    base.update(kw)
    return MoEConfig(**base)


def _build(cfg: DenseConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    return (moe.build if isinstance(cfg, MoEConfig) else dense.build)(cfg, V)


CONFIGS = {
    "dense-untied": lambda: _dense(),
    "dense-tied-mha": lambda: _dense(tie_embeddings=True, n_kv_heads=4),
    "moe-untied": lambda: _moe(),
    "moe-tied-mqa": lambda: _moe(tie_embeddings=True, n_kv_heads=1),
}


@pytest.fixture(params=list(CONFIGS))
def cfg(request: pytest.FixtureRequest) -> DenseConfig:
    return CONFIGS[request.param]()


def _expected_hf_names(cfg: DenseConfig) -> set[str]:
    names = {"model.embed_tokens.weight", "model.norm.weight"}
    if not cfg.tie_embeddings:
        names.add("lm_head.weight")
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        names |= {p + f"self_attn.{n}_proj.weight" for n in "qkvo"}
        names |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight"}
        if isinstance(cfg, MoEConfig):
            names.add(p + "block_sparse_moe.gate.weight")
            names |= {p + f"block_sparse_moe.experts.{j}.w{k}.weight"
                      for j in range(cfg.n_experts) for k in (1, 2, 3)}
        else:
            names |= {p + f"mlp.{n}_proj.weight" for n in ("gate", "up", "down")}
    return names


def test_configs_implement_the_protocol(cfg: DenseConfig) -> None:
    assert isinstance(cfg, ArchitectureConfig)
    assert type(cfg).hf_model_types == (("mixtral",) if isinstance(cfg, MoEConfig)
                                        else ("llama",))


def test_to_hf_names_and_shapes(cfg: DenseConfig) -> None:
    sd = _build(cfg).state_dict()
    hf = cfg.to_hf(sd)
    assert set(hf) == _expected_hf_names(cfg)
    q, kv, d, h = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.dim, cfg.hidden_dim
    assert hf["model.layers.1.self_attn.q_proj.weight"].shape == (q, d)
    assert hf["model.layers.1.self_attn.k_proj.weight"].shape == (kv, d)
    assert hf["model.layers.1.self_attn.v_proj.weight"].shape == (kv, d)
    assert hf["model.embed_tokens.weight"].shape == (V, d)
    # q/k/v are the row blocks of the fused qkv matrix, in that order (no permutation)
    qkv = sd["blocks.1.attn.qkv.weight"]
    assert torch.equal(hf["model.layers.1.self_attn.q_proj.weight"], qkv[:q])
    assert torch.equal(hf["model.layers.1.self_attn.k_proj.weight"], qkv[q:q + kv])
    assert torch.equal(hf["model.layers.1.self_attn.v_proj.weight"], qkv[q + kv:])
    if isinstance(cfg, MoEConfig):
        w1 = hf["model.layers.0.block_sparse_moe.experts.2.w1.weight"]
        w2 = hf["model.layers.0.block_sparse_moe.experts.2.w2.weight"]
        w3 = hf["model.layers.0.block_sparse_moe.experts.2.w3.weight"]
        assert w1.shape == w3.shape == (h, d) and w2.shape == (d, h)
        assert torch.equal(w1, sd["blocks.0.moe.w_gate_up"][2, :h])  # gate rows first
        assert torch.equal(w3, sd["blocks.0.moe.w_gate_up"][2, h:])
        assert torch.equal(w2, sd["blocks.0.moe.w_down"][2])
    else:
        gate_up = sd["blocks.0.mlp.gate_up.weight"]
        assert torch.equal(hf["model.layers.0.mlp.gate_proj.weight"], gate_up[:h])
        assert torch.equal(hf["model.layers.0.mlp.up_proj.weight"], gate_up[h:])
    assert all(t.is_contiguous() and not t.requires_grad for t in hf.values())


def test_adapter_round_trip_is_exact(cfg: DenseConfig) -> None:
    model = _build(cfg)
    sd = model.state_dict()
    back = cfg.from_hf(cfg.to_hf(sd))
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert back[k].shape == v.shape and back[k].dtype == v.dtype, k
        assert torch.equal(back[k], v), k
    # and it loads into a fresh module, which then computes the same logits
    other = (moe.build if isinstance(cfg, MoEConfig) else dense.build)(cfg, V)
    other.load_state_dict(back, strict=True)
    x = torch.randint(0, V, (2, 7))
    with torch.no_grad():
        assert torch.equal(other(x).logits, model(x).logits)


def test_from_hf_ignores_rotary_buffers_and_a_tied_lm_head(cfg: DenseConfig) -> None:
    sd = _build(cfg).state_dict()
    hf = cfg.to_hf(sd)
    hf["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    if cfg.tie_embeddings:  # some checkpoints store the tied head anyway
        hf["lm_head.weight"] = hf["model.embed_tokens.weight"].clone()
    back = cfg.from_hf(hf)
    assert set(back) == set(sd)


def test_from_hf_names_a_missing_key(cfg: DenseConfig) -> None:
    hf = cfg.to_hf(_build(cfg).state_dict())
    name = ("model.layers.1.block_sparse_moe.experts.1.w3.weight" if isinstance(cfg, MoEConfig)
            else "model.layers.1.mlp.up_proj.weight")
    del hf[name]
    with pytest.raises(ValueError, match="missing") as err:
        cfg.from_hf(hf)
    assert name in str(err.value)
    hf = cfg.to_hf(_build(cfg).state_dict())
    del hf["model.norm.weight"]
    with pytest.raises(ValueError, match="'model.norm.weight'"):
        cfg.from_hf(hf)


def test_from_hf_names_an_unexpected_key(cfg: DenseConfig) -> None:
    hf = cfg.to_hf(_build(cfg).state_dict())
    hf["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(cfg.dim)
    with pytest.raises(ValueError, match="unexpected") as err:
        cfg.from_hf(hf)
    assert "model.layers.0.self_attn.q_proj.bias" in str(err.value)
    # a layer the config does not have
    hf = cfg.to_hf(_build(cfg).state_dict())
    hf[f"model.layers.{cfg.n_layers}.input_layernorm.weight"] = torch.ones(cfg.dim)
    with pytest.raises(ValueError, match=f"model.layers.{cfg.n_layers}.input_layernorm"):
        cfg.from_hf(hf)


def test_untied_config_needs_lm_head() -> None:
    cfg = _dense()
    hf = cfg.to_hf(_build(cfg).state_dict())
    del hf["lm_head.weight"]
    with pytest.raises(ValueError, match="lm_head.weight"):
        cfg.from_hf(hf)


# -- configs ---------------------------------------------------------------------------------
def test_hf_config_round_trips_to_an_equal_config(cfg: DenseConfig) -> None:
    cfg = cfg.model_copy(update=dict(rope_theta=5000.0, norm_eps=1e-6, init_std=0.05,
                                     max_seq_len=48))
    hf = cfg.hf_config(V)
    assert hf["vocab_size"] == V and hf["hidden_size"] == 32 and hf["rope_theta"] == 5000.0
    assert hf["intermediate_size"] == cfg.hidden_dim and hf["head_dim"] == cfg.head_dim
    assert hf["model_type"] == type(cfg).hf_model_types[0]
    back = type(cfg).from_hf_config(hf)
    assert type(back) is type(cfg)
    assert back == cfg, (back.model_dump(), cfg.model_dump())
    if isinstance(cfg, MoEConfig):
        assert hf["num_local_experts"] == cfg.n_experts and hf["num_experts_per_tok"] == 2


def test_moe_hf_config_carries_the_aux_coef() -> None:
    cfg = _moe(router_aux_loss_coef=0.03)
    back = MoEConfig.from_hf_config(cfg.hf_config(V))
    assert back.router_aux_loss_coef == 0.03 and back == cfg


def test_from_hf_config_reads_transformers5_rope_parameters() -> None:
    hf = _dense().hf_config(V)
    del hf["rope_theta"]
    hf["rope_parameters"] = {"rope_type": "default", "rope_theta": 123.0}
    assert DenseConfig.from_hf_config(hf).rope_theta == 123.0


@pytest.mark.parametrize("cls", [DenseConfig, MoEConfig], ids=["dense", "moe"])
@pytest.mark.parametrize("key,value", [
    ("rope_scaling", {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    ("rope_parameters", {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}),
    ("attention_bias", True),
    ("mlp_bias", True),
    ("hidden_act", "gelu"),
    ("sliding_window", 4096),
])
def test_from_hf_config_refuses_what_it_cannot_represent(cls: type[DenseConfig], key: str,
                                                         value: Any) -> None:
    good = (_moe() if cls is MoEConfig else _dense()).hf_config(V)
    assert cls.from_hf_config(good) is not None
    bad = dict(good, **{key: value})
    with pytest.raises(ValueError) as err:
        cls.from_hf_config(bad)
    msg = str(err.value)
    assert key in msg, msg
    if key.startswith("rope"):
        assert "llama3" in msg
    if key == "hidden_act":
        assert "gelu" in msg


def test_from_hf_config_names_a_missing_required_key() -> None:
    hf = _moe().hf_config(V)
    del hf["num_local_experts"]
    with pytest.raises(ValueError, match="num_local_experts"):
        MoEConfig.from_hf_config(hf)
    hf = _dense().hf_config(V)
    del hf["hidden_size"]
    with pytest.raises(ValueError, match="hidden_size"):
        DenseConfig.from_hf_config(hf)
