"""Pre-training throughput and MFU on one GPU: lmforge's ``megatron`` backend vs ``fsdp2`` vs HF.

Two models, each trained in bf16 (fp32 master weights and AdamW state) on random tokens, every
variant in the same run after warmup, starting from the same weights (a model artifact):

* ``dense``: about 1.2B parameters (Llama-3.2-1B's shape: dim 2048, 16 layers, 32 heads, 8 kv
  heads, SwiGLU 8192, vocab 128256, tied embeddings);
* ``moe``: a small Mixtral-style MoE, 8 experts, top-2 (dim 1024, 16 layers, 16 heads, 8 kv
  heads, expert SwiGLU 2816, vocab 32000): about 1.2B parameters, 0.4B active per token.

Variants (``--variants``):

* ``megatron``       lmforge's ``megatron`` backend on one GPU (TP=PP=EP=1): Megatron-Core's
                     ``GPTModel`` with Transformer Engine layers when it is installed (fused
                     attention, grouped GEMM for experts) and Megatron's optimizer, stepped by
                     ``backend.train_step`` exactly as a stage steps it;
* ``fsdp2``          lmforge's ``fsdp2`` backend on one GPU (bf16 ``MixedPrecisionPolicy``),
                     ``torch.compile``;
* ``hf``             transformers ``LlamaForCausalLM`` / ``MixtralForCausalLM`` (SDPA), bf16
                     autocast, ``labels=`` loss, fused AdamW.

Reported per model and variant: tokens/s, model FLOPs per token (``6 N_active + 6 L T d``, the
architecture's ``flops_per_token``), MFU against the GPU's dense bf16 peak (H100 SXM 989
TFLOP/s, H100 PCIe 756, H200 989, A100 312; ``--peak-tflops`` overrides), peak memory, and each
variant's ratio to ``hf``. The goal the issue sets: dense >= 45 % MFU, MoE within 15 % of the
dense MFU.

Needs a CUDA GPU and ``pip install -c constraints/dev.txt -e '.[megatron]'`` (Transformer Engine
optional, recommended); prints why not otherwise. It has not been run yet (no GPU was lent to
the session that wrote it): docs/plugins/megatron.md records the figures once it is.

    python benchmarks/bench_megatron.py [--models dense,moe] [--batch 4] [--seq 2048]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins")]  # run from a checkout, installed or not

from gpu_peak import peak_tflops  # noqa: E402  (benchmarks/gpu_peak.py)

from lmforge.modelio import ModelRecipe, save_model  # noqa: E402
from lmforge.training.config import OptimConfig  # noqa: E402
from lmforge.training.losses import lm_loss  # noqa: E402
from lmforge_models.config import DenseConfig, MoEConfig  # noqa: E402

#: benchmarks/run.py skips this script where torch sees no CUDA device.
BENCH_REQUIRES = "cuda"


def models(seq: int) -> dict[str, tuple[Any, int]]:
    return {
        "dense": (DenseConfig(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_hidden=8192,
                              max_seq_len=seq, tie_embeddings=True, rope_theta=500000.0),
                  128256),
        "moe": (MoEConfig(dim=1024, n_layers=16, n_heads=16, n_kv_heads=8, ffn_hidden=2816,
                          n_experts=8, top_k=2, max_seq_len=seq, rope_theta=1e6,
                          router_aux_loss_coef=0.01), 32000),
    }


def hf_step(cfg: Any, vocab: int, artifact: Path, batch: dict[str, torch.Tensor]
            ) -> Callable[[], None]:
    import transformers

    from lmforge.modelio import read_weights

    hf_cfg = {k: v for k, v in cfg.hf_config(vocab).items()
              if k not in ("architectures", "model_type", "torch_dtype")}
    if isinstance(cfg, MoEConfig):
        model = transformers.MixtralForCausalLM(transformers.MixtralConfig(
            **hf_cfg, attn_implementation="sdpa"))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            **hf_cfg, attn_implementation="sdpa"))
    model.load_state_dict(read_weights(artifact), strict=False)
    model.tie_weights()
    model = model.cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    x = batch["input_ids"]

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def lmforge_step(name: str, recipe: ModelRecipe, batch: dict[str, torch.Tensor]
                 ) -> tuple[Callable[[], None], Any]:
    optim = OptimConfig(lr=1e-5, warmup_steps=0)
    if name == "megatron":
        from lmforge_megatron.backend import MegatronBackend
        from lmforge_megatron.config import MegatronBackendConfig

        backend: Any = MegatronBackend(MegatronBackendConfig(precision="bf16"))
        module = backend.build_model(recipe)
        opt = backend.build_optimizer(module, optim)

        def step() -> None:
            backend.train_step(module, opt, lm_loss, [batch], 1.0)
        return step, backend
    from lmforge_torch.config import FSDP2BackendConfig
    from lmforge_torch.fsdp2 import FSDP2Backend

    backend = FSDP2Backend(FSDP2BackendConfig(device="cuda", precision="bf16", compile=True))
    module = backend.build_model(recipe)
    opt = backend.build_optimizer(module, optim)

    def fsdp_step() -> None:
        out = lm_loss(module, batch)
        (out.loss_sum / out.count).backward()
        backend.clip_grad_norm_(module, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return fsdp_step, backend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="dense,moe")
    ap.add_argument("--variants", default="megatron,fsdp2,hf")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_megatron needs a CUDA GPU (torch.cuda.is_available() is False)")
    try:
        import megatron.core  # noqa: F401
    except ImportError:
        raise SystemExit("bench_megatron needs megatron-core: pip install -c constraints/dev.txt "
                         "-e '.[megatron]'") from None
    torch.backends.cuda.matmul.allow_tf32 = True
    peak = peak_tflops(args.peak_tflops) * 1e12
    try:
        import transformer_engine  # noqa: F401
        te = "Transformer Engine installed"
    except Exception:  # noqa: BLE001
        te = "no Transformer Engine (Megatron-Core's local layers)"
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, peak bf16 "
          f"{peak / 1e12:.0f} TFLOP/s, {te}; batch {args.batch} x seq {args.seq}")
    import lmforge_models.plugin
    from lmforge.testing import plugin_manager

    pm = plugin_manager(lmforge_models.plugin)
    mfu: dict[tuple[str, str], float] = {}
    for model_name in args.models.split(","):
        cfg, vocab = models(args.seq)[model_name]
        torch.manual_seed(0)
        from lmforge.modelio import build_module

        state = build_module(cfg, vocab, pm).state_dict()
        artifact = Path(tempfile.mkdtemp(prefix="bench-megatron-")) / "model"
        save_model(artifact, state, cfg, vocab)
        del state
        recipe = ModelRecipe.from_artifact(artifact, pm)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, vocab, (args.batch, args.seq + 1), generator=g).cuda()
        batch = {"input_ids": x[:, :-1].contiguous(), "labels": x[:, 1:].contiguous()}
        flops_tok = cfg.flops_per_token(args.seq, vocab)
        active = getattr(cfg, "active_parameters", cfg.num_parameters)(vocab)
        print(f"\n{model_name}: {cfg.num_parameters(vocab) / 1e9:.2f}B parameters "
              f"({active / 1e9:.2f}B active), {flops_tok / 1e9:.2f} GFLOP/token")
        results = {}
        for name in args.variants.split(","):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            backend = None
            if name == "hf":
                step = hf_step(cfg, vocab, artifact, batch)
            else:
                step, backend = lmforge_step(name, recipe, batch)
            for _ in range(args.warmup):
                step()
            torch.cuda.synchronize()
            times = []
            for _ in range(args.steps):
                t0 = time.perf_counter()
                step()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            tok_s = args.batch * args.seq / statistics.median(times)
            results[name] = tok_s
            mfu[(model_name, name)] = tok_s * flops_tok / peak
            mem = torch.cuda.max_memory_allocated() / 2**30
            print(f"  {name:10s} {tok_s:10,.0f} tok/s  MFU {mfu[(model_name, name)]:6.1%}  "
                  f"peak memory {mem:5.1f} GiB", flush=True)
            if backend is not None:
                backend.close()
            del step, backend
        if "hf" in results:
            for name, v in results.items():
                if name != "hf":
                    print(f"  ratio {name}/hf: {v / results['hf']:.2f}")
    if ("dense", "megatron") in mfu and ("moe", "megatron") in mfu:
        d, m = mfu[("dense", "megatron")], mfu[("moe", "megatron")]
        print(f"\nmegatron: dense MFU {d:.1%} (goal >= 45 %), MoE MFU {m:.1%} "
              f"({(d - m) / d:+.0%} below dense; goal within 15 %)")


if __name__ == "__main__":
    main()
