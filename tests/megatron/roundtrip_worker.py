"""Worker of ``test_conversion_round_trip_is_exact_for_every_layout`` (2 processes, launched
with ``torch.distributed.run``): for each layout, the Megatron backend builds the model from
canonical weights and gathers them back; rank 0 writes ``{layout: "exact" | what differs}`` to
``<out>/roundtrip.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import megatron_cpu  # noqa: F401 - patches Megatron-Core for CPU (test only)
import torch

import lmforge_models.plugin
from lmforge.modelio import ModelRecipe, save_model
from lmforge.testing import plugin_manager
from lmforge_megatron.backend import MegatronBackend
from lmforge_megatron.config import MegatronBackendConfig
from lmforge_models.config import DenseConfig, MoEConfig
from lmforge_models.dense import build as build_dense
from lmforge_models.moe import build as build_moe

VOCAB = 301  # padded to 512 (a multiple of 128 x 2): padding rows must vanish on the way back
DENSE = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=48, max_seq_len=16)
MOE = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=32, n_experts=4, top_k=2,
           max_seq_len=16)


def recipe(arch: Any, seed: int = 7) -> ModelRecipe:
    factory = build_moe if isinstance(arch, MoEConfig) else build_dense
    return ModelRecipe(arch, VOCAB, lambda: factory(arch, VOCAB), None, seed)


def check(name: str, layout: dict[str, Any], rec: ModelRecipe, results: dict[str, str]) -> None:
    be = MegatronBackend(MegatronBackendConfig(precision="fp32", **layout))
    module = be.build_model(rec)
    got = be.full_state_dict(module)
    if be.is_main:
        want = rec.build_full().state_dict()
        if got is None or got.keys() != want.keys():
            results[name] = f"names differ: {sorted(set(got or {}) ^ set(want))[:5]}"
        else:
            bad = [k for k in want if not torch.equal(got[k], want[k])]
            results[name] = "exact" if not bad else f"values differ: {bad[:5]}"
    be.close()


def main() -> None:
    out = Path(sys.argv[1])
    results: dict[str, str] = {}
    check("tp2", {"tensor_parallel": 2}, recipe(DenseConfig(**DENSE)), results)
    check("pp2-tied", {"pipeline_parallel": 2},
          recipe(DenseConfig(**{**DENSE, "tie_embeddings": True})), results)
    check("pp2-vpp2", {"pipeline_parallel": 2, "virtual_pipeline_stages": 2},
          recipe(DenseConfig(**{**DENSE, "n_layers": 4})), results)
    check("ep2-moe", {"expert_parallel": 2}, recipe(MoEConfig(**MOE)), results)
    check("tp2-etp1-moe", {"tensor_parallel": 2, "expert_tensor_parallel": 1},
          recipe(MoEConfig(**MOE)), results)
    # From a model artifact (canonical HF names on disk), as an `init` input is read.
    arch = MoEConfig(**MOE)
    folder = out / "artifact"
    if torch.distributed.get_rank() == 0:
        save_model(folder, recipe(arch, seed=11).build_full().state_dict(), arch, VOCAB)
    torch.distributed.barrier()
    pm = plugin_manager(lmforge_models.plugin)
    check("pp2-moe-artifact", {"pipeline_parallel": 2},
          ModelRecipe.from_artifact(folder, pm, seed=0), results)
    if torch.distributed.get_rank() == 0:
        (out / "roundtrip.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
