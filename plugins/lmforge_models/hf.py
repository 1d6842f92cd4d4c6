"""State-dict adapter between lmforge's fused modules and Hugging Face Llama / Mixtral names.

lmforge stores q/k/v as one ``qkv`` matrix ``[q + 2 kv, dim]`` and gate/up as one
``[2 * hidden, dim]`` matrix (MoE: ``w_gate_up [E, 2 * hidden, dim]``, ``w_down [E, dim,
hidden]``); the canonical names split them by rows. Both directions are pure slicing and
concatenation: ``from_hf(to_hf(sd)) == sd`` exactly.

Imports torch inside the functions that move tensors; the config-level functions are light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from lmforge_models.config import DenseConfig

#: Keys some Hugging Face checkpoints carry that are not weights (recomputed buffers).
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def _is_moe(cfg: DenseConfig) -> bool:
    return hasattr(cfg, "n_experts")


# -- configs -------------------------------------------------------------------------------------
def _is_score(cfg: DenseConfig) -> bool:
    return getattr(cfg, "head", "lm") == "score"


def llama_config(cfg: DenseConfig, vocab_size: int) -> dict[str, Any]:
    """``config.json`` for ``LlamaForCausalLM`` (``MixtralForCausalLM`` for an MoE config);
    with a score head ``LlamaForSequenceClassification`` / ``MixtralForSequenceClassification``
    with ``num_labels: 1`` (the exporter adds ``pad_token_id``, which transformers needs to find
    each row's last real token)."""
    out: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(vocab_size),
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.init_std,
        "torch_dtype": "float32",
        "use_cache": True,
    }
    if _is_moe(cfg):
        for k in ("attention_bias", "mlp_bias"):
            del out[k]
        out.update({
            "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
            "sliding_window": None, "num_local_experts": cfg.n_experts,  # type: ignore[attr-defined]
            "num_experts_per_tok": cfg.top_k,  # type: ignore[attr-defined]
            "router_aux_loss_coef": cfg.router_aux_loss_coef,  # type: ignore[attr-defined]
            "router_jitter_noise": 0.0, "output_router_logits": False,
        })
    if _is_score(cfg):
        family = "Mixtral" if _is_moe(cfg) else "Llama"
        out.update(architectures=[f"{family}ForSequenceClassification"], num_labels=1,
                   id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    return out


def _rope_theta(hf: Mapping[str, Any]) -> float:
    """``rope_theta`` from a transformers 4 (top level) or 5 (``rope_parameters``) config;
    only the default rotary type is supported."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type")
    if rope_type not in (None, "default"):
        raise ValueError(f"rope type {rope_type!r} (rope_scaling / rope_parameters) is not "
                         f"supported; lmforge's rotary embedding is the default (unscaled) one")
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    return float(theta)


def config_from_hf(cls: type[DenseConfig], hf: Mapping[str, Any]) -> DenseConfig:
    """The lmforge config (of class ``cls``) equal to a Llama / Mixtral ``config.json``."""
    def need(key: str) -> Any:
        if key not in hf:
            raise ValueError(f"config.json lacks {key!r}")
        return hf[key]

    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"hidden_act {act!r} is not supported (lmforge uses SwiGLU with silu)")
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key):
            raise ValueError(f"{key}: true is not supported (lmforge's layers have no biases)")
    if hf.get("sliding_window"):
        raise ValueError(f"sliding_window {hf['sliding_window']} is not supported (lmforge "
                         f"attends over the whole sequence)")
    dim, heads = int(need("hidden_size")), int(need("num_attention_heads"))
    head_dim = hf.get("head_dim")
    if head_dim is not None and int(head_dim) * heads != dim:
        raise ValueError(f"head_dim {head_dim} * num_attention_heads {heads} != hidden_size "
                         f"{dim}; lmforge derives head_dim as hidden_size / heads")
    fields: dict[str, Any] = {
        "dim": dim, "n_layers": int(need("num_hidden_layers")), "n_heads": heads,
        "n_kv_heads": int(hf.get("num_key_value_heads") or heads),
        "ffn_hidden": int(need("intermediate_size")),
        "max_seq_len": int(hf.get("max_position_embeddings", 2048)),
        "rope_theta": _rope_theta(hf), "norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
        "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "init_std": float(hf.get("initializer_range", 0.02)),
    }
    if any(str(a).endswith("ForSequenceClassification") for a in hf.get("architectures") or ()):
        labels = len(hf.get("id2label") or {}) or int(hf.get("num_labels", 2))
        if labels != 1:
            raise ValueError(f"a sequence classifier with {labels} labels is not supported; "
                             f"lmforge's score head has one output (num_labels: 1)")
        fields.update(head="score", tie_embeddings=False)
    if "n_experts" in cls.model_fields:
        fields.update(n_experts=int(need("num_local_experts")),
                      top_k=int(need("num_experts_per_tok")),
                      router_aux_loss_coef=float(hf.get("router_aux_loss_coef", 0.01)))
    return cls(**fields)


# -- state dicts ---------------------------------------------------------------------------------
def to_hf(cfg: DenseConfig, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lmforge names → HF names. ``lm_head.weight`` is left out when embeddings are tied
    (transformers re-ties it on load); a score head is ``score.weight`` ``[1, dim]``."""
    q, kv = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    h = cfg.hidden_dim
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": sd["embed.weight"],
                                    "model.norm.weight": sd["norm.weight"]}
    if _is_score(cfg):
        out["score.weight"] = sd["score.weight"]
    elif not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(cfg.n_layers):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        wq, wk, wv = sd[src + "attn.qkv.weight"].split([q, kv, kv], dim=0)
        out.update({
            dst + "self_attn.q_proj.weight": wq, dst + "self_attn.k_proj.weight": wk,
            dst + "self_attn.v_proj.weight": wv,
            dst + "self_attn.o_proj.weight": sd[src + "attn.out.weight"],
            dst + "input_layernorm.weight": sd[src + "attn_norm.weight"],
            dst + "post_attention_layernorm.weight": sd[src + "mlp_norm.weight"],
        })
        if _is_moe(cfg):
            moe = dst + "block_sparse_moe."
            out[moe + "gate.weight"] = sd[src + "moe.router.weight"]
            w_gate_up, w_down = sd[src + "moe.w_gate_up"], sd[src + "moe.w_down"]
            for j in range(cfg.n_experts):  # type: ignore[attr-defined]
                gate, up = w_gate_up[j].split([h, h], dim=0)
                e = moe + f"experts.{j}."
                out.update({e + "w1.weight": gate, e + "w2.weight": w_down[j],
                            e + "w3.weight": up})
        else:
            gate, up = sd[src + "mlp.gate_up.weight"].split([h, h], dim=0)
            out.update({dst + "mlp.gate_proj.weight": gate, dst + "mlp.up_proj.weight": up,
                        dst + "mlp.down_proj.weight": sd[src + "mlp.down.weight"]})
    return {k: v.detach().contiguous() for k, v in out.items()}


def from_hf(cfg: DenseConfig, hf: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF names → lmforge names (inverse of :func:`to_hf`). A tied model's ``lm_head.weight``
    is dropped if present; missing or unexpected names raise ``ValueError`` naming them."""
    import torch

    hf = {k: v for k, v in hf.items() if not k.endswith(_IGNORED_SUFFIXES)}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in hf:
            raise KeyError(name)
        used.add(name)
        return hf[name]

    out: dict[str, torch.Tensor] = {}
    missing: list[str] = []

    def put(dst: str, build: Any) -> None:
        try:
            out[dst] = build()
        except KeyError as exc:
            missing.append(str(exc.args[0]))

    put("embed.weight", lambda: take("model.embed_tokens.weight"))
    put("norm.weight", lambda: take("model.norm.weight"))
    if _is_score(cfg):
        put("score.weight", lambda: take("score.weight"))
    elif cfg.tie_embeddings:
        used.add("lm_head.weight")
    else:
        put("lm_head.weight", lambda: take("lm_head.weight"))
    for i in range(cfg.n_layers):
        src, dst = f"model.layers.{i}.", f"blocks.{i}."
        put(dst + "attn.qkv.weight", lambda: torch.cat(
            [take(src + f"self_attn.{n}_proj.weight") for n in ("q", "k", "v")], dim=0))
        put(dst + "attn.out.weight", lambda: take(src + "self_attn.o_proj.weight"))
        put(dst + "attn_norm.weight", lambda: take(src + "input_layernorm.weight"))
        put(dst + "mlp_norm.weight", lambda: take(src + "post_attention_layernorm.weight"))
        if _is_moe(cfg):
            moe = src + "block_sparse_moe."
            n = cfg.n_experts  # type: ignore[attr-defined]
            put(dst + "moe.router.weight", lambda: take(moe + "gate.weight"))
            put(dst + "moe.w_gate_up", lambda: torch.stack([torch.cat(
                [take(moe + f"experts.{j}.w1.weight"), take(moe + f"experts.{j}.w3.weight")],
                dim=0) for j in range(n)]))
            put(dst + "moe.w_down", lambda: torch.stack(
                [take(moe + f"experts.{j}.w2.weight") for j in range(n)]))
        else:
            put(dst + "mlp.gate_up.weight", lambda: torch.cat(
                [take(src + "mlp.gate_proj.weight"), take(src + "mlp.up_proj.weight")], dim=0))
            put(dst + "mlp.down.weight", lambda: take(src + "mlp.down_proj.weight"))
    unexpected = sorted(set(hf) - used)
    if missing or unexpected:
        raise ValueError(f"weights do not match architecture {cfg.type!r}: missing "
                         f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected "
                         f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    return out
