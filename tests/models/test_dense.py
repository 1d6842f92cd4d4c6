"""The ``dense`` architecture: the forward contract (logits, loss, logits_to_keep), causality,
left padding and positions, parameter counts, tying, plugin. The Hugging Face adapter is
tested in ``test_hf_adapter.py``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_checks import check_explicit_positions, check_left_padding

import lmforge_models.plugin
from lmforge.interfaces import ArchitectureConfig, CausalLM, CausalLMOutput
from lmforge.testing import check_plugin, plugin_manager
from lmforge_models.config import DenseConfig, llama_ffn_hidden
from lmforge_models.dense import build

V = 97


def tiny(**kw: object) -> DenseConfig:
    base = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=24)
    base.update(kw)
    return DenseConfig(**base)


def test_plugin_conforms() -> None:
    assert check_plugin(lmforge_models.plugin) == []


def test_forward_shapes_and_protocol() -> None:
    cfg = tiny()
    model = build(cfg, V)
    assert isinstance(model, CausalLM) and isinstance(cfg, ArchitectureConfig)
    # the contract is the forward: no public hidden()/head() for callers to bypass it with
    assert not hasattr(model, "hidden") and not hasattr(model, "head")
    x = torch.randint(0, V, (3, 10))
    out = model(x)
    assert isinstance(out, CausalLMOutput)
    assert out.logits.shape == (3, 10, V) and out.logits.dtype == torch.float32
    assert out.loss_sum is None and out.num_tokens is None and out.token_logprobs is None
    assert out.aux_losses == {} and out.aux_loss == 0.0
    assert model.vocab_size == V and model.max_seq_len == 24
    # logits are the final hidden states times the output matrix
    h, _ = model._hidden(x, None, None)
    assert h.shape == (3, 10, 32)
    torch.testing.assert_close(h @ model.head_weight.t(), out.logits)
    # logits_to_keep: only the last positions
    last = model(x, logits_to_keep=1).logits
    assert last.shape == (3, 1, V)
    torch.testing.assert_close(last, out.logits[:, -1:])


def test_forward_with_labels_returns_loss_not_logits() -> None:
    torch.manual_seed(0)
    model = build(tiny(init_std=0.2), V)
    x = torch.randint(0, V, (2, 9))
    y = torch.randint(0, V, (2, 9))
    y[1, :4] = -100
    out = model(x, labels=y)
    assert out.logits is None and out.token_logprobs is None
    assert out.num_tokens.item() == 18 - 4
    naive = F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten(), reduction="sum")
    torch.testing.assert_close(out.loss_sum, naive, rtol=1e-5, atol=1e-5)


def test_causal_future_tokens_do_not_change_past_logits() -> None:
    torch.manual_seed(0)
    model = build(tiny(init_std=0.2), V).eval()
    x = torch.randint(0, V, (2, 16))
    y = x.clone()
    y[:, 9:] = (y[:, 9:] + 1) % V
    with torch.no_grad():
        a, b = model(x).logits, model(y).logits
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert (a[:, 9:] - b[:, 9:]).abs().max() > 1e-3  # and the future does change


def test_left_padding_gives_the_unpadded_logits() -> None:
    torch.manual_seed(0)
    check_left_padding(build(tiny(init_std=0.2), V).eval())


def test_explicit_default_positions_give_identical_logits() -> None:
    torch.manual_seed(0)
    check_explicit_positions(build(tiny(init_std=0.2), V).eval())


def test_positions_beyond_max_seq_len_are_a_clear_error() -> None:
    model = build(tiny(), V)
    with pytest.raises(ValueError, match="position 24 exceeds .* max_seq_len 24"):
        model(torch.zeros(1, 3, dtype=torch.long),
              positions=torch.tensor([[0, 1, 24]]))


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("n_kv", [None, 2, 1])
def test_parameter_count_formula_matches_module(tie: bool, n_kv: int | None) -> None:
    cfg = tiny(tie_embeddings=tie, n_kv_heads=n_kv, ffn_hidden=None if n_kv else 40)
    model = build(cfg, V)
    assert cfg.num_parameters(V) == model.num_parameters() == \
        sum(p.numel() for p in model.parameters())
    assert cfg.num_parameters(V, non_embedding=True) == model.num_parameters(non_embedding=True)
    assert model.num_parameters() - model.num_parameters(non_embedding=True) == V * 32


def test_tied_embeddings_share_one_matrix() -> None:
    tied, untied = build(tiny(tie_embeddings=True), V), build(tiny(), V)
    assert tied.head_weight is tied.embed.weight
    assert untied.head_weight is not untied.embed.weight
    assert untied.num_parameters() - tied.num_parameters() == V * 32
    x = torch.randint(0, V, (1, 5))
    tied(x).logits.sum().backward()
    # the one matrix gets the gradient of both uses (input embedding and output projection)
    assert tied.embed.weight.grad is not None
    rows_used = torch.zeros(V, dtype=torch.bool)
    rows_used[x.flatten()] = True
    assert tied.embed.weight.grad[~rows_used].abs().sum() > 0  # only the head touches these


def test_llama_ffn_rule_and_flops() -> None:
    assert llama_ffn_hidden(4096, 256) == 11008  # Llama-7B
    assert llama_ffn_hidden(256, 256) == 768
    cfg = DenseConfig(dim=256, n_layers=4, n_heads=8, multiple_of=256)
    n = cfg.num_parameters(8192, non_embedding=True)
    assert cfg.flops_per_token(256, 8192) == 6 * n + 6 * 4 * 256 * 256
    assert build(cfg, 8192).flops_per_token(256) == cfg.flops_per_token(256, 8192)


def test_too_long_sequence_is_a_clear_error() -> None:
    model = build(tiny(), V)
    with pytest.raises(ValueError, match="sequence length 25 .* max_seq_len 24"):
        model(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="sequence length 25 .* max_seq_len 24"):
        model(torch.zeros(1, 25, dtype=torch.long), labels=torch.zeros(1, 25, dtype=torch.long))


@pytest.mark.parametrize("bad,msg", [
    (dict(dim=30, n_heads=4), "divisible by n_heads"),
    (dict(n_heads=4, n_kv_heads=3), "divisible by n_kv_heads"),
    (dict(dropout=0.1), "less than or equal to 0"),
    (dict(dimm=3), "Extra inputs"),
])
def test_config_rejects_bad_shapes(bad: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        tiny(**bad)


def test_init_std_is_applied() -> None:
    torch.manual_seed(0)
    model = build(DenseConfig(dim=128, n_layers=1, n_heads=4, init_std=0.05), 500)
    assert abs(model.embed.weight.std().item() - 0.05) < 0.003
    assert torch.all(model.norm.weight == 1)


def test_rotary_matches_transformers_convention() -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama import modeling_llama as ml

    from lmforge_models.dense import apply_rotary, rotary_tables
    cos, sin = rotary_tables(16, 12, 500.0)
    q = torch.randn(1, 2, 12, 16)
    cfg = transformers.LlamaConfig(hidden_size=32, num_attention_heads=2, rope_theta=500.0,
                                   max_position_embeddings=12)
    rope = ml.LlamaRotaryEmbedding(config=cfg)
    hcos, hsin = rope(q, torch.arange(12)[None])
    ref, _ = ml.apply_rotary_pos_emb(q, q, hcos, hsin)
    torch.testing.assert_close(apply_rotary(q, cos, sin), ref)


def test_dense_config_in_a_spec_slot() -> None:
    """The architecture validates as a ``model: {type: dense, ...}`` slot in a spec."""
    pm = plugin_manager(lmforge_models.plugin)
    model_cls = pm.component_config_model("architecture", "dense")
    cfg = model_cls.model_validate({"type": "dense", "dim": 64, "n_heads": 4})
    assert cfg.hidden_dim == 256 and cfg.kv_heads == 4
    with pytest.raises(ValueError):
        model_cls.model_validate({"type": "dense", "dim": 64, "n_heads": 5})


def test_plugin_modules_import_nothing_heavy() -> None:
    import subprocess
    import sys
    code = ("import sys, lmforge_models.plugin, lmforge_torch.plugin, lmforge_export.plugin; "
            "heavy = {'torch', 'transformers', 'tokenizers', 'safetensors', 'numpy'} & "
            "set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
