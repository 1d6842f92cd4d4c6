"""The ``megatron`` backend without launching processes: layouts refused when the spec is
validated, the world-size check, the CUDA requirement, conformance, and the weight conversion
canonical -> every rank's Megatron shards -> canonical, exact, for many layouts."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import train_helpers as H
from megatron_helpers import needs_megatron

import lmforge_megatron.plugin
from lmforge import ConfigValueError, LmforgeError, SpecError
from lmforge.testing import validate_spec
from lmforge_megatron.config import CPU_ENV, MegatronBackendConfig
from lmforge_models.config import DenseConfig, MoEConfig

DENSE = {"type": "dense", "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
         "multiple_of": 16, "max_seq_len": 64}
MOE = {"type": "moe", "dim": 32, "n_layers": 2, "n_heads": 4, "ffn_hidden": 32,
       "n_experts": 4, "top_k": 2, "max_seq_len": 64}


def _pm() -> Any:
    """Training stages, test fixtures, the real architectures and torch backends, megatron."""
    pm = H.make_pm(real=True)
    pm.register(lmforge_megatron.plugin, name="megatron", distribution="<test>", version="0")
    return pm


def _issue(assets: dict[str, Path], model: dict[str, Any], backend: dict[str, Any],
           **loop: Any) -> Any:
    spec = H.pretrain_spec(assets, real=True, model=model,
                           loop=H.loop_cfg(True, backend={"type": "megatron", **backend}, **loop))
    with pytest.raises(SpecError) as err:
        validate_spec(spec, _pm())
    (issue,) = err.value.issues
    return issue


@pytest.mark.parametrize("model, backend, loop, key, words", [
    (DENSE, {"tensor_parallel": 8}, {}, "tensor_parallel",
     ["4 attention heads", "not divisible by tensor_parallel 8"]),
    ({**DENSE, "n_heads": 4, "n_kv_heads": 1}, {"tensor_parallel": 2}, {}, "tensor_parallel",
     ["1 key/value heads"]),
    ({**DENSE, "n_layers": 3}, {"pipeline_parallel": 2}, {}, "pipeline_parallel",
     ["3 layers are not divisible by pipeline_parallel 2"]),
    (DENSE, {"pipeline_parallel": 2, "virtual_pipeline_stages": 2}, {},
     "virtual_pipeline_stages", ["2 layers are not divisible by pipeline_parallel 2 x "
                                 "virtual_pipeline_stages 2 = 4"]),
    (MOE, {"expert_parallel": 3}, {}, "expert_parallel", ["4 experts", "expert_parallel 3"]),
    (DENSE, {"expert_parallel": 2}, {}, "expert_parallel", ["mixture-of-experts"]),
    (MOE, {"expert_parallel": 2, "tensor_parallel": 2}, {}, "sequence_parallel",
     ["sequence_parallel: true"]),
    (DENSE, {"micro_batch_size": 3}, {"batch_size": 4}, "micro_batch_size",
     ["batch_size 4 is not divisible by micro_batch_size 3"]),
])
def test_impossible_layouts_fail_validation_at_the_backend_key(
        assets: dict[str, Path], model: dict[str, Any], backend: dict[str, Any],
        loop: dict[str, Any], key: str, words: list[str]) -> None:
    issue = _issue(assets, model, backend, **loop)
    assert issue.path.endswith(f"config.loop.backend.{key}"), issue.path
    assert issue.line is not None
    for w in words:
        assert w in issue.message, issue.message
    assert "config.model" in issue.message


def test_an_architecture_without_a_transformer_description_is_refused(
        assets: dict[str, Path]) -> None:
    issue = _issue(assets, H.model_cfg(False), {})  # train_fakes' "tiny" has none
    assert "neutral transformer description" in issue.message and "'tiny'" in issue.message
    assert "local, ddp or fsdp2" in issue.message


def test_sft_checks_the_layout_against_the_init_model(assets: dict[str, Path]) -> None:
    spec = H.pretrain_spec(assets, real=True, model=DENSE)
    spec["stages"] += [
        {"id": "chats", "kind": "data", "plugin": "fixture",
         "config": {"path": str(assets["chat"]), "format": "chat"}},
        {"id": "sft", "kind": "train", "plugin": "sft",
         "inputs": {"dataset": "chats", "tokenizer": "bpe", "init": "pretrain"},
         "config": {"loop": H.loop_cfg(True, backend={"type": "megatron",
                                                       "tensor_parallel": 3})}}]
    with pytest.raises(SpecError) as err:
        validate_spec(spec, _pm())
    (issue,) = err.value.issues
    assert issue.path.endswith("config.loop.backend.tensor_parallel")
    assert "the init model (stage 'pretrain')" in issue.message


def test_a_good_layout_validates(assets: dict[str, Path]) -> None:
    spec = H.pretrain_spec(assets, real=True, model=MOE, loop=H.loop_cfg(True, backend={
        "type": "megatron", "tensor_parallel": 2, "expert_parallel": 2,
        "sequence_parallel": True, "pipeline_parallel": 2, "distributed_optimizer": True}))
    validate_spec(spec, _pm())


def test_config_level_checks() -> None:
    with pytest.raises(ValueError, match="sequence_parallel needs tensor_parallel > 1"):
        MegatronBackendConfig(sequence_parallel=True)
    with pytest.raises(ValueError, match="virtual_pipeline_stages needs pipeline_parallel"):
        MegatronBackendConfig(virtual_pipeline_stages=2)
    with pytest.raises(ValueError, match="Transformer Engine"):
        MegatronBackendConfig(context_parallel=2, transformer_engine="off")
    cfg = MegatronBackendConfig(context_parallel=2)
    with pytest.raises(ConfigValueError, match="seq_len 30 is not divisible by 2 x "
                                               "context_parallel = 4"):
        cfg.check_architecture(DenseConfig(n_heads=4, dim=32),
                               SimpleNamespace(seq_len=30, batch_size=4, grad_accum=1))


def test_a_score_head_is_refused() -> None:
    cfg = MegatronBackendConfig()
    with pytest.raises(ConfigValueError, match="language models only.*'score' head") as err:
        cfg.check_architecture(DenseConfig(n_heads=4, dim=32, head="score"))
    assert err.value.path == ("head",)
    cfg.check_architecture(DenseConfig(n_heads=4, dim=32))  # the LM head is fine


def test_world_size_must_fit_the_layout() -> None:
    cfg = MegatronBackendConfig(tensor_parallel=2, pipeline_parallel=2)
    with pytest.raises(LmforgeError, match="world size 6 is not divisible by tensor_parallel x "
                                           "context_parallel x pipeline_parallel = 4"):
        cfg.check_world(6)
    assert cfg.check_world(8) == 2
    moe = MegatronBackendConfig(expert_parallel=4)
    with pytest.raises(LmforgeError, match="expert_parallel x expert tensor parallel = 4 "
                                           "does not divide the 2 ranks"):
        moe.check_world(2)
    assert moe.check_world(4) == 4


@needs_megatron
def test_the_backend_requires_cuda_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from lmforge_megatron.backend import MegatronBackend

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.delenv(CPU_ENV, raising=False)
    backend = MegatronBackend(MegatronBackendConfig())  # light: a stage builds it first
    assert backend.dp_size == 1
    recipe = SimpleNamespace(architecture=DenseConfig(**{**DENSE, "type": "dense"}),
                             vocab_size=100, seed=0)
    with pytest.raises(LmforgeError, match="needs NVIDIA GPUs.*torch sees no CUDA device.*"
                                           "backend local, ddp or fsdp2"):
        backend.build_model(recipe)


@needs_megatron
def test_layers_only_transformer_engine_has_are_refused_without_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from lmforge_megatron.backend import MegatronBackend, have_transformer_engine

    if have_transformer_engine():
        pytest.skip("Transformer Engine is installed")
    monkeypatch.setenv(CPU_ENV, "1")
    with pytest.raises(LmforgeError, match="sequence_parallel needs Transformer Engine"):
        MegatronBackend(MegatronBackendConfig(tensor_parallel=2, sequence_parallel=True))
    with pytest.raises(LmforgeError, match="context_parallel > 1 needs Transformer Engine"):
        MegatronBackend(MegatronBackendConfig(context_parallel=2))
    with pytest.raises(LmforgeError, match="transformer_engine: on"):
        MegatronBackend(MegatronBackendConfig(transformer_engine="on"))


@needs_megatron
def test_plugin_conformance() -> None:
    """Building the default config constructs the backend (light: no process group yet)."""
    from lmforge.testing import check_plugin

    assert check_plugin(lmforge_megatron.plugin) == []


# -- conversion, every rank simulated -------------------------------------------------------
def _local_keys(shape: Any, tp: int, ep: int, etp: int, layers: list[int], first: bool,
                last: bool, grouped: bool, te: bool) -> list[str]:
    """The parameter names one rank of ``GPTModel`` holds (local layer indices)."""
    keys = []
    if first:
        keys.append("embedding.word_embeddings.weight")
    for i, _ in enumerate(layers):
        p = f"decoder.layers.{i}."
        if te:
            keys += [p + "self_attention.linear_qkv.layer_norm_weight"]
        else:
            keys += [p + "input_layernorm.weight"]
        keys += [p + "self_attention.linear_qkv.weight", p + "self_attention.linear_proj.weight"]
        if shape.is_moe:
            keys += [p + "pre_mlp_layernorm.weight", p + "mlp.router.weight"]
            for j in range(shape.n_experts // ep):
                if grouped:
                    keys += [p + f"mlp.experts.linear_fc1.weight{j}",
                             p + f"mlp.experts.linear_fc2.weight{j}"]
                else:
                    keys += [p + f"mlp.experts.local_experts.{j}.linear_fc1.weight",
                             p + f"mlp.experts.local_experts.{j}.linear_fc2.weight"]
        else:
            keys += [p + ("mlp.linear_fc1.layer_norm_weight" if te else
                          "pre_mlp_layernorm.weight"),
                     p + "mlp.linear_fc1.weight", p + "mlp.linear_fc2.weight"]
    if last:
        keys.append("decoder.final_layernorm.weight")
        if not (shape.tie_embeddings and first):
            keys.append("output_layer.weight")
    return keys


def _local_shape(key: str, shape: Any, padded: int, tp: int, etp: int) -> tuple[int, ...]:
    d, hd, f = shape.dim, shape.head_dim, shape.ffn_hidden
    if key.startswith(("embedding", "output_layer")):
        return (padded // tp, d)
    if key.endswith(("layernorm.weight", "layer_norm_weight")):
        return (d,)
    if key.endswith("linear_qkv.weight"):
        return ((shape.n_heads + 2 * shape.n_kv_heads) * hd // tp, d)
    if key.endswith("linear_proj.weight"):
        return (d, shape.n_heads * hd // tp)
    if key.endswith("router.weight"):
        return (shape.n_experts, d)
    expert = "experts" in key
    split = etp if expert else tp
    if "linear_fc1" in key:
        return (2 * f // split, d)
    return (d, f // split)


LAYOUTS = [
    # (architecture, vocab, tp, pp, ep, etp, grouped expert names, TE names)
    (DenseConfig(**{**DENSE, "n_layers": 4}), 384, 1, 1, 1, 1, False, False),
    (DenseConfig(**{**DENSE, "n_layers": 4}), 301, 2, 2, 1, 2, False, False),
    (DenseConfig(**{**DENSE, "n_layers": 4, "n_kv_heads": 4}), 301, 4, 1, 1, 4, False, True),
    (DenseConfig(**{**DENSE, "tie_embeddings": True}), 300, 2, 2, 1, 2, False, False),
    (DenseConfig(**{**DENSE, "tie_embeddings": True}), 300, 1, 1, 1, 1, False, True),
    (MoEConfig(**MOE), 384, 1, 2, 2, 1, False, False),
    (MoEConfig(**MOE), 257, 2, 1, 4, 1, True, True),
    (MoEConfig(**MOE), 257, 2, 1, 2, 2, False, False),
]


@pytest.mark.parametrize("arch, vocab, tp, pp, ep, etp, grouped, te", LAYOUTS)
def test_conversion_round_trip_over_every_rank_is_exact(arch: Any, vocab: int, tp: int, pp: int,
                                                        ep: int, etp: int, grouped: bool,
                                                        te: bool) -> None:
    import torch

    from lmforge_megatron.convert import (
        Layout,
        assemble,
        canonical_shapes,
        is_replicated,
        local_pieces,
        local_tensor,
        padded_vocab_size,
        segments,
    )
    from lmforge_models.dense import build as build_dense
    from lmforge_models.moe import build as build_moe

    torch.manual_seed(0)
    model = (build_moe if isinstance(arch, MoEConfig) else build_dense)(arch, vocab)
    state = model.state_dict()
    canonical = arch.to_hf(state)
    shape = arch.transformer()
    padded = padded_vocab_size(vocab, 128, tp)
    shapes = canonical_shapes(shape, vocab)
    assert shapes == {k: tuple(v.shape) for k, v in canonical.items()}
    per_stage = shape.n_layers // pp
    pieces = []
    for tp_rank, pp_rank, ep_rank in itertools.product(range(tp), range(pp), range(ep)):
        etp_rank = tp_rank % etp
        lay = Layout(shape, vocab, padded, tp_rank, tp, ep_rank, ep, etp_rank, etp)
        layers = list(range(pp_rank * per_stage, (pp_rank + 1) * per_stage))
        for key in _local_keys(shape, tp, ep, etp, layers, pp_rank == 0, pp_rank == pp - 1,
                               grouped, te):
            like = torch.empty(_local_shape(key, shape, padded, tp, etp))
            value = local_tensor(key, like, canonical, lay, layers.__getitem__)
            assert value is not None and value.shape == like.shape, key
            if key.startswith("embedding"):  # padding rows are zero
                start = tp_rank * padded // tp
                assert not value[max(vocab - start, 0):].any()
            if shape.tie_embeddings and key == "output_layer.weight":
                continue  # the tied copy; the embedding is gathered
            dim, segs = segments(key, lay, layers.__getitem__)
            if is_replicated(segs, shapes, dim) and (etp_rank if "experts" in key
                                                     else tp_rank) != 0:
                continue
            pieces += local_pieces(key, value, lay, layers.__getitem__)
    back = arch.from_hf(assemble(pieces, shape, vocab))
    assert back.keys() == state.keys()
    for k in state:
        assert torch.equal(back[k], state[k]), k


def test_a_missing_shard_is_an_error() -> None:
    import torch

    from lmforge_megatron.convert import assemble

    arch = DenseConfig(**DENSE)
    shape = arch.transformer()
    with pytest.raises(ValueError, match="do not cover"):
        assemble([("model.norm.weight", 0, 0, torch.ones(32))], shape, 100)
