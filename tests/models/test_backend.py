"""The ``local`` backend: device/precision resolution, prepare (incl. compile), plugin."""

from __future__ import annotations

import pytest
import torch

import lmforge_torch.plugin
from lmforge import LmforgeError
from lmforge.testing import check_plugin, plugin_manager
from lmforge.training.losses import causal_lm_loss
from lmforge_models.config import DenseConfig
from lmforge_models.dense import build
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


@pytest.mark.slow  # torch.compile of a tiny model takes ~30-50 s on 2 shared cores
def test_prepare_compiles_in_place_keeping_names() -> None:
    pytest.importorskip("torch._inductor")
    torch.manual_seed(0)
    model = build(DenseConfig(dim=32, n_layers=1, n_heads=2, max_seq_len=16), 50)
    names = sorted(model.state_dict())
    be = local.LocalBackend(LocalBackendConfig(device="cpu", precision="fp32", compile=True))
    prepared = be.prepare(model)
    assert prepared is model and sorted(prepared.state_dict()) == names
    x = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        eager = model.head(type(model).hidden(model, x))
    loss, n = causal_lm_loss(prepared, x, x)
    loss.backward()
    torch.testing.assert_close(prepared(x).detach(), eager, rtol=1e-4, atol=1e-4)
    assert n.item() == 32 and model.embed.weight.grad is not None
