"""The ``local`` backend: device/precision resolution, build_model from a recipe (seeded,
from weights, compiled), optimizer, clipping, checkpoints, plugin."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import lmforge_models.plugin
import lmforge_torch.plugin
from lmforge import LmforgeError
from lmforge.modelio import ModelRecipe, save_model
from lmforge.testing import check_plugin, plugin_manager
from lmforge.training.config import OptimConfig
from lmforge.training.losses import causal_lm_loss
from lmforge_models.config import DenseConfig
from lmforge_models.dense import DenseLM, build
from lmforge_torch import local
from lmforge_torch.config import LocalBackendConfig


def test_plugin_conforms_and_is_light() -> None:
    assert check_plugin(lmforge_torch.plugin) == []
    pm = plugin_manager(lmforge_torch.plugin)
    cfg = pm.component_config_model("backend", "local").model_validate({"type": "local"})
    assert cfg.device == "auto" and cfg.precision == "auto" and cfg.compile is False


def test_cpu_backend_basics() -> None:
    be = local.LocalBackend(LocalBackendConfig(device="cpu", precision="fp32"))
    assert be.device == torch.device("cpu") and be.rank == 0 and be.world_size == 1
    assert be.is_main and be.all_reduce_mean(2.5) == 2.5
    with be.autocast():
        assert not torch.is_autocast_enabled("cpu")
    be.barrier()
    be.close()


def test_bf16_autocast_on_cpu() -> None:
    be = local.LocalBackend(LocalBackendConfig(device="cpu", precision="bf16"))
    with be.autocast():
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16


def test_auto_precision_on_cpu_follows_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert local.resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AMX BF16")
    assert local.resolve_precision("auto", torch.device("cpu")) == "bf16"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_missing_cuda_is_a_clear_error() -> None:
    with pytest.raises(LmforgeError, match="no CUDA GPU"):
        local.LocalBackend(LocalBackendConfig(device="cuda"))


def test_threads_are_applied() -> None:
    before = torch.get_num_threads()
    try:
        local.LocalBackend(LocalBackendConfig(device="cpu", threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _recipe(arch: DenseConfig, vocab: int = 50, seed: int = 0,
            weights: Path | None = None) -> ModelRecipe:
    return ModelRecipe(arch, vocab, lambda: build(arch, vocab), weights, seed)


ARCH = DenseConfig(dim=32, n_layers=1, n_heads=2, max_seq_len=16)


def test_build_model_is_seeded_and_keeps_names() -> None:
    be = local.LocalBackend(LocalBackendConfig(device="cpu", precision="fp32"))
    names = sorted(build(ARCH, 50).state_dict())
    a, b = be.build_model(_recipe(ARCH, seed=3)), be.build_model(_recipe(ARCH, seed=3))
    c = be.build_model(_recipe(ARCH, seed=4))
    assert isinstance(a, DenseLM) and sorted(a.state_dict()) == names
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in a.parameters())
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k  # the seed decides the initial weights
    assert not torch.equal(a.embed.weight, c.embed.weight)
    torch.manual_seed(3)
    assert torch.equal(build(ARCH, 50).embed.weight, a.embed.weight)


def test_build_model_of_a_recipe_with_weights_loads_them(tmp_path: Path) -> None:
    torch.manual_seed(11)
    trained = build(ARCH, 50)
    with torch.no_grad():
        trained.norm.weight.mul_(1.5)  # not what a fresh init gives
    save_model(tmp_path / "m", trained.state_dict(), ARCH, 50)
    be = local.LocalBackend(LocalBackendConfig(device="cpu", precision="fp32"))
    pm = plugin_manager(lmforge_models.plugin)
    for recipe in (_recipe(ARCH, seed=0, weights=tmp_path / "m"),
                   ModelRecipe.from_artifact(tmp_path / "m", pm)):
        module = be.build_model(recipe)
        assert recipe.vocab_size == 50 and recipe.architecture.model_dump() == ARCH.model_dump()
        for k, v in trained.state_dict().items():
            assert torch.equal(module.state_dict()[k], v), k
    fresh = be.build_model(_recipe(ARCH, seed=0))
    assert not torch.equal(fresh.norm.weight, trained.norm.weight)


def test_optimizer_clipping_and_state_dicts(tmp_path: Path) -> None:
    be = local.LocalBackend(LocalBackendConfig(device="cpu", precision="fp32"))
    module = be.build_model(_recipe(DenseConfig(dim=32, n_layers=1, n_heads=2, max_seq_len=16,
                                                tie_embeddings=True)))
    opt = be.build_optimizer(module, OptimConfig(lr=1e-2, weight_decay=0.1))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1
                                                             for p in no_decay["params"])
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(module.parameters()))
    x = torch.randint(0, 50, (2, 16))
    loss, n = causal_lm_loss(module, x, x)
    (loss / n).backward()
    want = torch.cat([p.grad.flatten() for p in module.parameters()]).norm().item()
    assert be.clip_grad_norm_(module, math.inf) == pytest.approx(want, rel=1e-5)
    assert be.clip_grad_norm_(module, want / 2) == pytest.approx(want, rel=1e-5)
    clipped = torch.cat([p.grad.flatten() for p in module.parameters()]).norm().item()
    assert clipped == pytest.approx(want / 2, rel=1e-4)
    opt.step()

    full = be.full_state_dict(module)
    assert set(full) == set(module.state_dict())
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in full.values())
    be.save_checkpoint(tmp_path / "ckpt", module, opt)
    other = be.build_model(_recipe(DenseConfig(dim=32, n_layers=1, n_heads=2, max_seq_len=16,
                                               tie_embeddings=True), seed=5))
    other_opt = be.build_optimizer(other, OptimConfig(lr=1e-2, weight_decay=0.1))
    be.load_checkpoint(tmp_path / "ckpt", other, other_opt)
    for k, v in full.items():
        assert torch.equal(other.state_dict()[k], v), k
    assert other.head_weight is other.embed.weight  # still tied after loading
    for p, q in zip(module.parameters(), other.parameters()):
        torch.testing.assert_close(other_opt.state[q]["exp_avg"], opt.state[p]["exp_avg"],
                                   rtol=0, atol=0)


@pytest.mark.slow  # torch.compile of a tiny model takes ~30-50 s on 2 shared cores
def test_build_model_compiles_in_place_keeping_names() -> None:
    pytest.importorskip("torch._inductor")
    names = sorted(build(ARCH, 50).state_dict())
    be = local.LocalBackend(LocalBackendConfig(device="cpu", precision="fp32", compile=True))
    prepared = be.build_model(_recipe(ARCH, seed=0))
    assert isinstance(prepared, DenseLM) and sorted(prepared.state_dict()) == names
    torch.manual_seed(0)
    eager_model = build(ARCH, 50)
    x = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        eager = eager_model(x).logits
    loss, n = causal_lm_loss(prepared, x, x)
    loss.backward()
    torch.testing.assert_close(prepared(x).logits.detach(), eager, rtol=1e-4, atol=1e-4)
    assert n.item() == 32 and prepared.embed.weight.grad is not None
    eager_loss, _ = causal_lm_loss(eager_model, x, x)
    torch.testing.assert_close(loss.detach(), eager_loss.detach(), rtol=1e-4, atol=1e-4)
