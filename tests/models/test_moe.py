"""The ``moe`` architecture: shapes, causality, padding, counts, routing (grouped matmul and
fallback), aux losses returned by forward, HF parity, training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from model_checks import check_explicit_positions, check_left_padding
from pydantic import Field

import lmforge_export.plugin
import lmforge_models.plugin
from lmforge import Config, Stage, hookimpl, stage
from lmforge.chat import load_tokenizer
from lmforge.interfaces import CausalLM, CausalLMOutput
from lmforge.modelio import save_model
from lmforge.testing import (
    check_plugin,
    plugin_manager,
    run_spec,
    write_dataset_artifact,
    write_tokenizer_artifact,
)
from lmforge_models import moe
from lmforge_models.config import MoEConfig
from lmforge_models.moe import SparseMoE, build

V = 97


def tiny(**kw: Any) -> MoEConfig:
    base: dict[str, Any] = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=24,
                                ffn_hidden=24, n_experts=4, top_k=2)
    base.update(kw)
    return MoEConfig(**base)


def test_plugin_conforms() -> None:
    assert check_plugin(lmforge_models.plugin) == []


def test_moe_config_in_a_spec_slot() -> None:
    pm = plugin_manager(lmforge_models.plugin)
    cfg = pm.component_config_model("architecture", "moe").model_validate(
        {"type": "moe", "dim": 64, "n_heads": 4})
    assert (cfg.n_experts, cfg.top_k, cfg.router_aux_loss_coef, cfg.hidden_dim) == (8, 2, 0.01, 256)


def test_top_k_must_not_exceed_n_experts() -> None:
    with pytest.raises(ValueError, match=r"top_k \(5\) must be at most n_experts \(4\)"):
        tiny(top_k=5)
    assert tiny(top_k=4).top_k == 4


def _attributes(model: torch.nn.Module) -> dict[str, set[str]]:
    return {name: set(vars(m)) for name, m in model.named_modules()}


def test_forward_shapes_protocol_and_aux() -> None:
    model = build(tiny(), V)
    assert isinstance(model, CausalLM)
    x = torch.randint(0, V, (3, 10))
    before = _attributes(model)
    out = model(x)
    assert isinstance(out, CausalLMOutput)
    assert out.logits.shape == (3, 10, V) and out.logits.dtype == torch.float32
    h, stats = model._hidden(x, None, None)
    assert h.shape == (3, 10, 32) and len(stats) == 2  # one entry per MoE layer
    torch.testing.assert_close(h @ model.head_weight.t(), out.logits)
    assert set(out.aux_losses) == {"load_balancing"}  # router_z_loss_coef defaults to 0
    aux = out.aux_loss
    assert aux.dim() == 0 and aux.item() > 0 and aux.requires_grad
    assert aux is not None and torch.equal(aux, out.aux_losses["load_balancing"])
    aux.backward()
    assert model.blocks[0].moe.router.weight.grad.abs().sum() > 0
    # the aux losses are returned, never kept: no module gained state from the forward
    assert _attributes(model) == before
    for m in model.modules():
        assert not hasattr(m, "aux_loss") and not hasattr(m, "aux"), type(m).__name__


def test_aux_losses_follow_the_coefficients() -> None:
    x = torch.randint(0, V, (2, 12))
    off = build(tiny(router_aux_loss_coef=0.0, router_z_loss_coef=0.0), V)
    out = off(x)
    assert out.aux_losses == {} and out.aux_loss == 0.0

    model = build(tiny(router_aux_loss_coef=0.0, router_z_loss_coef=0.25), V)
    with torch.no_grad():
        for block in model.blocks:
            block.moe.router.weight.zero_()
    out = model(x)
    assert set(out.aux_losses) == {"router_z"}
    # zero router: every logit is 0, log-sum-exp = log(n_experts) for every token and layer
    want = 0.25 * torch.log(torch.tensor(4.0)) ** 2
    torch.testing.assert_close(out.aux_losses["router_z"], want)

    both = build(tiny(router_aux_loss_coef=0.02, router_z_loss_coef=0.001), V)
    out = both(x)
    assert set(out.aux_losses) == {"load_balancing", "router_z"}
    torch.testing.assert_close(out.aux_loss,
                               out.aux_losses["load_balancing"] + out.aux_losses["router_z"])
    # each value is the layer mean of the blocks' statistics times its coefficient
    _, stats = both._hidden(x, None, None)
    for name, coef in (("load_balancing", 0.02), ("router_z", 0.001)):
        want = torch.stack([s[name] for s in stats]).mean() * coef
        torch.testing.assert_close(out.aux_losses[name], want)
    for m in both.modules():
        assert not hasattr(m, "aux_loss") and not hasattr(m, "aux")


def test_causal_future_tokens_do_not_change_past_logits() -> None:
    torch.manual_seed(0)
    model = build(tiny(init_std=0.2), V).eval()
    x = torch.randint(0, V, (2, 16))
    y = x.clone()
    y[:, 9:] = (y[:, 9:] + 1) % V
    with torch.no_grad():
        a, b = model(x).logits, model(y).logits
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert (a[:, 9:] - b[:, 9:]).abs().max() > 1e-3


def test_left_padding_gives_the_unpadded_logits() -> None:
    torch.manual_seed(0)
    check_left_padding(build(tiny(init_std=0.2), V).eval())


def test_explicit_default_positions_give_identical_logits() -> None:
    torch.manual_seed(0)
    check_explicit_positions(build(tiny(init_std=0.2), V).eval())


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("n_kv", [None, 1])
def test_parameter_count_formula_matches_module(tie: bool, n_kv: int | None) -> None:
    cfg = tiny(tie_embeddings=tie, n_kv_heads=n_kv, ffn_hidden=None if n_kv else 40,
               multiple_of=16)
    model = build(cfg, V)
    assert cfg.num_parameters(V) == model.num_parameters() == \
        sum(p.numel() for p in model.parameters())
    assert cfg.num_parameters(V, non_embedding=True) == model.num_parameters(non_embedding=True)
    inactive = cfg.n_layers * (cfg.n_experts - cfg.top_k) * 3 * cfg.dim * cfg.hidden_dim
    assert cfg.num_parameters(V) - cfg.active_parameters(V) == inactive
    n = cfg.active_parameters(V, non_embedding=True) + (V * 32 if tie else 0)
    assert cfg.flops_per_token(16, V) == 6 * n + 6 * 2 * 16 * 32 == model.flops_per_token(16)


@pytest.mark.parametrize("path,hidden", [("grouped_mm", 8), ("expert-loop", 8),
                                         ("unaligned", 6)])
def test_moe_layer_matches_a_naive_per_token_reference(path: str, hidden: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The grouped matmul, the loop over experts, and sizes whose rows are not 16-byte
    multiples (hidden 6 in fp32: ``torch._grouped_mm`` refuses those strides) all agree."""
    calls = []
    if path == "grouped_mm":
        if not hasattr(torch, "_grouped_mm"):
            pytest.skip("this torch has no _grouped_mm")
        assert moe._grouped_ok(torch.zeros(1))  # CPU takes the grouped path
        real = torch._grouped_mm
        monkeypatch.setattr(torch, "_grouped_mm", lambda *a, **k: calls.append(1) or real(*a, **k))
    elif path == "expert-loop":
        monkeypatch.setattr(moe, "_grouped_ok", lambda x: False)
    torch.manual_seed(0)
    layer = SparseMoE(dim=8, hidden=hidden, n_experts=5, top_k=3)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 7, 8)
    out, stats = layer(x)
    assert len(calls) == (2 if path == "grouped_mm" else 0)
    assert set(stats) == {"load_balancing", "router_z"}
    ref = torch.zeros_like(x)
    for b in range(2):
        for t in range(7):
            probs = F.softmax(layer.router.weight @ x[b, t], dim=-1)
            w, idx = probs.topk(3)
            w = w / w.sum()
            for wj, j in zip(w, idx):
                gate, up = (layer.w_gate_up[j] @ x[b, t]).chunk(2)
                ref[b, t] += wj * (layer.w_down[j] @ (F.silu(gate) * up))
    torch.testing.assert_close(out, ref)
    # gradients equal those of the naive reference too
    params = [layer.w_gate_up, layer.w_down, layer.router.weight]
    g = torch.autograd.grad((out * torch.cos(ref.detach())).sum(), params)
    g_ref = torch.autograd.grad((ref * torch.cos(ref.detach())).sum(), params)
    for a, b in zip(g, g_ref):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b)


def test_moe_layer_with_an_expert_that_gets_no_tokens() -> None:
    """Empty groups in the grouped matmul (offsets repeat) are handled."""
    layer = SparseMoE(dim=4, hidden=3, n_experts=3, top_k=1)
    torch.nn.init.normal_(layer.w_gate_up)
    torch.nn.init.normal_(layer.w_down)
    with torch.no_grad():
        layer.router.weight.copy_(torch.tensor([[5.0, 0, 0, 0], [0, 0, 0, 0], [0, 5.0, 0, 0]]))
    x = torch.tensor([[[1.0, 0, 0, 0], [0, 1.0, 0, 0], [2.0, 0, 0, 0]]])  # experts 0, 2, 0
    out, _ = layer(x)
    for t, j in enumerate([0, 2, 0]):
        gate, up = (layer.w_gate_up[j] @ x[0, t]).chunk(2)
        torch.testing.assert_close(out[0, t], layer.w_down[j] @ (F.silu(gate) * up))


def test_aux_loss_value_by_hand() -> None:
    layer = SparseMoE(dim=2, hidden=3, n_experts=2, top_k=1)
    torch.nn.init.normal_(layer.w_gate_up)
    torch.nn.init.normal_(layer.w_down)
    with torch.no_grad():
        layer.router.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])  # 2 tokens to expert 0, 1 to 1
    _, stats = layer(x)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    p = F.softmax(logits, dim=-1).mean(0)
    want = 2 * (2 / 3 * p[0] + 1 / 3 * p[1])
    torch.testing.assert_close(stats["load_balancing"], want)
    torch.testing.assert_close(stats["router_z"], torch.logsumexp(logits, -1).pow(2).mean())
    assert not hasattr(layer, "aux")


@pytest.mark.parametrize("top_k", [1, 2])
def test_aux_loss_equals_coef_under_uniform_routing(top_k: int) -> None:
    model = build(tiny(top_k=top_k, router_aux_loss_coef=0.05), V)
    with torch.no_grad():
        for block in model.blocks:
            block.moe.router.weight.zero_()
    out = model(torch.randint(0, V, (2, 12)))
    torch.testing.assert_close(out.aux_losses["load_balancing"], torch.tensor(0.05))
    torch.testing.assert_close(out.aux_loss, torch.tensor(0.05))


# -- Hugging Face export parity ----------------------------------------------------------------
class _CopyConfig(Config):
    path: str = Field(description="artifact folder to publish")


class _Copy(Stage):
    def run(self) -> dict[str, float]:
        for name in self.ctx.output_kinds:
            src = Path(self.config.path) / name if len(self.ctx.output_kinds) > 1 \
                else Path(self.config.path)
            shutil.copytree(src, self.ctx.output_dir(name), dirs_exist_ok=True)
        return {}


class FixturePlugin:
    @hookimpl
    def lmforge_components(self) -> list:
        return [
            stage("train", "fixture", config=_CopyConfig, factory=_Copy, description="test",
                  inputs={}, outputs={"model": "model", "tokenizer": "tokenizer"}),
            stage("data", "fixture", config=_CopyConfig, factory=_Copy, description="test",
                  outputs={"dataset": "dataset/text"}),
            stage("tokenizer", "fixture", config=_CopyConfig, factory=_Copy, description="test",
                  outputs={"tokenizer": "tokenizer"}),
        ]


@pytest.mark.parametrize("tie,n_kv", [(False, 2), (True, 4), (True, 1)])
def test_transformers_mixtral_loads_export_and_agrees(tmp_path: Path, tokenizer_dir: Path,
                                                      tie: bool, n_kv: int) -> None:
    transformers = pytest.importorskip("transformers")
    pm = plugin_manager(lmforge_models.plugin, lmforge_export.plugin, FixturePlugin())
    vocab = load_tokenizer(tokenizer_dir).vocab_size
    arch = pm.component_config_model("architecture", "moe")(
        type="moe", dim=64, n_layers=2, n_heads=4, n_kv_heads=n_kv, max_seq_len=64,
        ffn_hidden=48, n_experts=4, top_k=2, tie_embeddings=tie, rope_theta=5000.0,
        init_std=0.1)
    torch.manual_seed(0)
    model = build(arch, vocab).eval()
    src = tmp_path / "src"
    save_model(src / "model", model.state_dict(), arch, vocab)
    shutil.copytree(tokenizer_dir, src / "tokenizer")
    spec = {"name": "moe-export", "seed": 0, "stages": [
        {"id": "src", "kind": "train", "plugin": "fixture", "config": {"path": str(src)}},
        {"id": "hf", "kind": "export", "plugin": "hf",
         "inputs": {"model": "src.model", "tokenizer": "src.tokenizer"}, "config": {}}]}
    assert run_spec(spec, pm, tmp_path / "run").status == "complete"
    out = tmp_path / "run" / "hf" / "outputs" / "hf_model"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "mixtral" and cfg["num_local_experts"] == 4
    assert cfg["num_experts_per_tok"] == 2 and cfg["tie_word_embeddings"] is tie

    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == "MixtralForCausalLM"
    assert sum(p.numel() for p in hf.parameters()) == model.num_parameters()
    x = torch.randint(0, vocab, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(x).logits, hf(x).logits
    assert ours.shape == theirs.shape == (2, 40, vocab)
    assert (ours - theirs).abs().max().item() < 1e-4


# -- training ----------------------------------------------------------------------------------
def test_pretrain_with_moe_learns_and_uses_aux_loss(tmp_path: Path) -> None:
    import lmforge_torch.plugin
    import lmforge_train.plugin
    from lmforge.training.losses import causal_lm_loss, lm_loss

    text = [f"The {w} fox number {i} jumps over the lazy dog near the {w} river."
            for i in range(120) for w in ("quick", "brown", "sly")]
    tok = write_tokenizer_artifact(tmp_path / "tok", text, 300)
    data = write_dataset_artifact(tmp_path / "data", "text",
                                  {"train": [{"text": t} for t in text]})
    pm = plugin_manager(lmforge_models.plugin, lmforge_torch.plugin, lmforge_train.plugin,
                        FixturePlugin())
    model = {"type": "moe", "dim": 32, "n_layers": 1, "n_heads": 2, "ffn_hidden": 32,
             "n_experts": 4, "top_k": 2, "max_seq_len": 64}
    loop = {"steps": 16, "batch_size": 4, "seq_len": 32, "log_every": 4, "checkpoint_every": 16,
            "optim": {"lr": 3e-3, "warmup_steps": 2},
            "backend": {"type": "local", "device": "cpu", "precision": "fp32"}}
    spec = {"name": "moe-pretrain", "seed": 0, "stages": [
        {"id": "data", "kind": "data", "plugin": "fixture", "config": {"path": str(data)}},
        {"id": "bpe", "kind": "tokenizer", "plugin": "fixture", "config": {"path": str(tok)}},
        {"id": "pretrain", "kind": "train", "plugin": "pretrain",
         "inputs": {"dataset": "data", "tokenizer": "bpe"},
         "config": {"model": model, "loop": loop}}]}
    assert run_spec(spec, pm, tmp_path / "run").status == "complete"
    rows = [json.loads(line) for line in
            (tmp_path / "run" / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    curve = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(curve) == 4 and curve[-1] < curve[0] - 0.3, curve

    # the per-token load-balancing loss is logged: coef 0.01 times a value in [~1, n_experts]
    aux = [r["train/aux/load_balancing"] for r in rows if "train/aux/load_balancing" in r]
    assert len(aux) == 4 and all(0.005 < a <= 0.04 + 1e-6 for a in aux), aux

    # lm_loss adds aux_loss * count in training mode only, and reports each aux loss
    net = build(MoEConfig(**model), 300)
    batch = {"input_ids": torch.randint(0, 300, (2, 8)), "labels": torch.randint(0, 300, (2, 8))}
    out = lm_loss(net, batch)
    plain, n = causal_lm_loss(net, batch["input_ids"], batch["labels"])
    aux_loss = net(batch["input_ids"]).aux_loss
    assert aux_loss.item() > 0 and n.item() == 16
    torch.testing.assert_close(out.loss_sum, plain + aux_loss * n)
    torch.testing.assert_close(out.metrics["aux/load_balancing"], aux_loss.detach() * n)
    out.loss_sum.backward()
    assert net.blocks[0].moe.router.weight.grad.abs().sum() > 0
    net.eval()
    torch.testing.assert_close(lm_loss(net, batch).loss_sum, plain)
