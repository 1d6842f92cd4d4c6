"""Pre-training throughput and MFU on one GPU: lmforge (local, local+compile, FSDP2) vs HF.

A Llama-style model of about 1B parameters (Llama-3.2-1B's shape: dim 2048, 16 layers, 32 heads,
8 kv heads, SwiGLU 8192, vocab 128256, tied embeddings) trains in bf16 (fp32 master weights and
AdamW state) on random tokens. Measured in the same run, alternating variants, after warmup:

* ``hf``            transformers ``LlamaForCausalLM`` (SDPA), bf16 autocast, ``labels=`` loss;
* ``hf+compile``    the same, ``model.compile()``;
* ``local``         lmforge's ``local`` backend (bf16 autocast), chunked fused cross-entropy;
* ``local+compile`` the same with ``compile: true``;
* ``fsdp2``         lmforge's ``fsdp2`` backend on one GPU (one-rank process group; bf16
                    ``MixedPrecisionPolicy``), compile as ``--fsdp2-compile`` says.

Reported per variant: tokens/s, model FLOPs per token (``6 N + 6 L T d``, see
``DenseConfig.flops_per_token``) and MFU against the GPU's dense bf16 peak (H100 SXM 989 TFLOP/s,
H100 PCIe 756, H200 989, A100 312; ``--peak-tflops`` overrides), and each lmforge variant's
ratio to ``hf``. Needs a CUDA GPU; prints why not otherwise.

    python benchmarks/bench_gpu.py [--batch 4] [--seq 2048] [--steps 10] [--variants local,hf]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins")]  # run from a checkout, installed or not

from gpu_peak import peak_tflops  # noqa: E402  (benchmarks/gpu_peak.py)

from lmforge.modelio import ModelRecipe, save_model  # noqa: E402
from lmforge.training.config import OptimConfig  # noqa: E402
from lmforge.training.losses import lm_loss  # noqa: E402
from lmforge_models.config import DenseConfig  # noqa: E402
from lmforge_models.dense import build  # noqa: E402

#: benchmarks/run.py skips this script where torch sees no CUDA device.
BENCH_REQUIRES = "cuda"


def hf_model(cfg: DenseConfig, vocab: int, state: dict, compile_: bool) -> torch.nn.Module:
    import transformers

    hf_cfg = {k: v for k, v in cfg.hf_config(vocab).items()
              if k not in ("architectures", "model_type", "torch_dtype")}
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **hf_cfg, attn_implementation="sdpa"))
    model.load_state_dict(cfg.to_hf(state), strict=False)
    model.tie_weights()
    model = model.cuda().train()
    if compile_:
        model.compile()
    return model


def make_step(name: str, cfg: DenseConfig, vocab: int, state: dict, artifact: Path,
              x: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """One optimizer step (forward, loss, backward, clip, AdamW) of variant ``name``."""
    optim = OptimConfig(lr=1e-5, warmup_steps=0)
    if name.startswith("hf"):
        model = hf_model(cfg, vocab, state, name.endswith("compile"))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

        def hf_step() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return hf_step

    if name.startswith("fsdp2"):
        from lmforge_torch.config import FSDP2BackendConfig
        from lmforge_torch.fsdp2 import FSDP2Backend

        backend = FSDP2Backend(FSDP2BackendConfig(device="cuda", precision="bf16",
                                                  compile=name.endswith("compile")))
    else:
        from lmforge_torch.config import LocalBackendConfig
        from lmforge_torch.local import LocalBackend

        backend = LocalBackend(LocalBackendConfig(device="cuda", precision="bf16",
                                                  compile=name.endswith("compile")))
    import lmforge_models.plugin
    from lmforge.testing import plugin_manager

    # The real path of a stage with an `init` model: the artifact's HF-named weights.
    recipe = ModelRecipe.from_artifact(artifact, plugin_manager(lmforge_models.plugin))
    module = backend.build_model(recipe)
    opt = backend.build_optimizer(module, optim)
    batch = {"input_ids": x, "labels": labels}

    def ours_step() -> None:
        with backend.autocast():
            out = lm_loss(module, batch)
        (out.loss_sum / out.count).backward()
        backend.clip_grad_norm_(module, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return ours_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--variants", default="hf,hf+compile,local,local+compile,fsdp2+compile")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--ffn", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=128256)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu needs a CUDA GPU (torch.cuda.is_available() is False)")
    torch.backends.cuda.matmul.allow_tf32 = True
    peak = peak_tflops(args.peak_tflops) * 1e12
    cfg = DenseConfig(dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                      n_kv_heads=args.kv_heads, ffn_hidden=args.ffn, max_seq_len=args.seq,
                      tie_embeddings=True, rope_theta=500000.0)
    torch.manual_seed(0)
    state = build(cfg, args.vocab).state_dict()
    artifact = Path(tempfile.mkdtemp(prefix="bench-gpu-")) / "model"
    save_model(artifact, state, cfg, args.vocab)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g).cuda()
    labels = torch.full_like(x, -100)
    labels[:, :-1] = x[:, 1:]
    flops_tok = cfg.flops_per_token(args.seq, args.vocab)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, peak bf16 "
          f"{peak / 1e12:.0f} TFLOP/s; {cfg.num_parameters(args.vocab) / 1e9:.2f}B parameters, "
          f"batch {args.batch} x seq {args.seq}, {flops_tok / 1e9:.2f} GFLOP/token")

    results = {}
    for name in args.variants.split(","):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        step = make_step(name, cfg, args.vocab, state, artifact, x, labels)
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
        mem = torch.cuda.max_memory_allocated() / 2**30
        print(f"{name:16s} {tok_s:10,.0f} tok/s  MFU {tok_s * flops_tok / peak:6.1%}  "
              f"peak memory {mem:5.1f} GiB", flush=True)
        del step
    if "hf" in results:
        for name, v in results.items():
            if not name.startswith("hf"):
                print(f"ratio {name}/hf: {v / results['hf']:.2f}")


if __name__ == "__main__":
    main()
