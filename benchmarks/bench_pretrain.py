"""Pre-training step throughput: lmforge's ``dense`` model vs transformers ``LlamaForCausalLM``.

Both models have the same shape (the HF one is built from ``config.hf_config()``) and start from
the same weights (``config.to_hf(state_dict)``). One timed step is forward + loss + backward +
gradient clipping (max norm 1) + AdamW step on the same batch, in fp32, with the same thread
count, each as its own trainer sets it up:

* lmforge: ``model(x, labels=...)`` through the ``local`` backend's module (chunked, fused
  cross-entropy) on labels shifted by the caller; the backend's optimizer and clipping (what
  the training loop runs);
* HF: ``model(input_ids, labels=input_ids).loss`` (its own shift and mean cross-entropy),
  ``clip_grad_norm_`` and ``torch.optim.AdamW(fused=True)`` (the ``Trainer``'s default optimizer,
  ``adamw_torch_fused``).

Steps are timed alternately (one lmforge step, one HF step, ...; ``--rounds`` to group them),
so load from other processes on the machine hits both alike; warmup steps are excluded.
Reports each model's median (and best) step time as tokens/s, the ratio lmforge/HF, and the
model FLOPs per token (``DenseConfig.flops_per_token``) and CPU MFU against plain ``torch.mm``
at the model's shapes timed between the steps. Where the CPU has AMX, the
same is measured in bf16 (autocast on both; ``--precision``).
``--compile`` compiles lmforge (through the ``local`` backend) and adds a compiled HF model,
reporting lmforge+compile against both HF eager and HF compiled.

``--ddp N`` instead measures the ``ddp`` backend on N ranks (gloo, launched through
``torch.distributed.run`` with one thread per rank) on the same machine against one process
with the same global batch and all the threads, and prints the ratio.

    python benchmarks/bench_pretrain.py [--compile] [--steps 10] [--threads 2] [--ddp 2]
        [--precision fp32,bf16] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins"), str(ROOT / "benchmarks")]

from benchlib import MatmulProbe, Row, add_json_arg, cpu_info, dense_shapes, emit  # noqa: E402

from lmforge.modelio import ModelRecipe  # noqa: E402
from lmforge.training.config import OptimConfig  # noqa: E402
from lmforge.training.losses import causal_lm_loss  # noqa: E402
from lmforge_models.config import DenseConfig  # noqa: E402
from lmforge_models.dense import build  # noqa: E402
from lmforge_torch.config import LocalBackendConfig  # noqa: E402
from lmforge_torch.local import LocalBackend  # noqa: E402


def make_hf(model: torch.nn.Module, compile_: bool) -> torch.nn.Module:
    import transformers

    cfg = dict(model.config.hf_config(model.vocab_size))
    for key in ("architectures", "model_type", "torch_dtype"):
        cfg.pop(key)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
    result = hf.load_state_dict(model.config.to_hf(model.state_dict()), strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= {"lm_head.weight"}
    hf.tie_weights()
    hf.train()
    if compile_:
        hf.compile()
    return hf


BENCH_FORMAT = "lmforge-bench/1"


def step_fn(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor],
            opt: torch.optim.Optimizer, clip: Callable[[], object],
            autocast: Callable[[], object]) -> Callable[[], float]:
    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn()
        loss.backward()
        clip()
        opt.step()
        return loss.item()
    return step


def timed(step: Callable[[], float], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    ap.add_argument("--precision", default=None,
                    help="comma-separated fp32,bf16 (default: fp32, and bf16 where the CPU has "
                    "AMX)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="alternations between the models (default: every step)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=None)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--tie", action="store_true", help="tie input and output embeddings")
    ap.add_argument("--ddp", type=int, default=None, metavar="N",
                    help="measure the ddp backend on N ranks against one process instead")
    ap.add_argument("--worker", choices=["ddp", "single"], help=argparse.SUPPRESS)
    add_json_arg(ap)
    args = ap.parse_args()
    if args.worker:
        return ddp_worker(args)
    if args.ddp:
        return ddp_compare(args)
    amx = cpu_info()["amx"]
    precisions = (args.precision.split(",") if args.precision
                  else ["fp32", "bf16"] if amx else ["fp32"])
    rows = [measure(args, p) for p in precisions]
    if "bf16" not in precisions:
        print("bf16: not measured (this CPU has no AMX: bf16 matmuls are not accelerated)")
    emit(args.json, "pretrain", rows, {"amx": amx, "threads": torch.get_num_threads()})


def measure(args: argparse.Namespace, precision: str) -> Row:
    """Interleaved steps of lmforge and HF (and compiled variants) in ``precision``; the Row of
    lmforge (eager or compiled) against HF eager."""

    cfg = DenseConfig(dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                      n_kv_heads=args.kv_heads, max_seq_len=args.seq, tie_embeddings=args.tie)
    torch.manual_seed(0)
    ours = build(cfg, args.vocab)
    variants: dict[str, torch.nn.Module] = {}
    hf = make_hf(ours, compile_=False)  # copies ours' initial weights
    if args.compile:
        variants["hf+compile"] = make_hf(ours, compile_=True)
    backend = LocalBackend(LocalBackendConfig(device="cpu", precision=precision,
                                              compile=args.compile, threads=args.threads))
    first = ours  # the backend places (and compiles) this very module: same initial weights
    ours = backend.build_model(ModelRecipe(cfg, args.vocab, construct=lambda: first))
    variants = {"lmforge+compile" if args.compile else "lmforge": ours, "hf": hf, **variants}
    n_ours = ours.num_parameters()
    n_hf = sum(p.numel() for p in hf.parameters())
    assert n_ours == n_hf == cfg.num_parameters(args.vocab), (n_ours, n_hf)

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
    labels = torch.full_like(x, -100)
    labels[:, :-1] = x[:, 1:]  # same targets as HF's internal shift

    def loss_of(model: torch.nn.Module) -> Callable[[], torch.Tensor]:
        if model is ours:
            def ours_loss() -> torch.Tensor:
                loss_sum, n = causal_lm_loss(ours, x, labels)
                return loss_sum / n
            return ours_loss
        return lambda: model(input_ids=x, labels=x).loss

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpu {torch.backends.cpu.get_cpu_capability()}, compile {args.compile}")
    print(f"shape: dim {args.dim}, layers {args.layers}, heads {args.heads}/"
          f"{cfg.kv_heads} kv, ffn {cfg.hidden_dim}, vocab {args.vocab}, tied {args.tie}; "
          f"parameters {n_ours:,} (non-embedding {ours.num_parameters(True):,}); "
          f"batch {args.batch} x seq {args.seq}, {precision}, AdamW")
    hf_autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) \
        if precision == "bf16" else contextlib.nullcontext
    with torch.no_grad():
        first = {}
        for name, m in variants.items():
            with backend.autocast() if m is ours else hf_autocast():
                first[name] = loss_of(m)().item()
    tol = 1e-3 if precision == "fp32" else 5e-2
    assert max(first.values()) - min(first.values()) < tol, f"initial losses differ: {first}"

    optim = OptimConfig(lr=1e-4, weight_decay=0.1, grad_clip=1.0)
    steps = {}
    for name, m in variants.items():
        if m is ours:  # what lmforge's training loop runs
            steps[name] = step_fn(m, loss_of(m), backend.build_optimizer(m, optim),
                                  lambda: backend.clip_grad_norm_(ours, 1.0), backend.autocast)
        else:  # the HF Trainer's defaults: fused AdamW, max_grad_norm 1.0
            opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
            steps[name] = step_fn(m, loss_of(m), opt,
                                  lambda m=m: torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0),
                                  hf_autocast)
    for name, step in steps.items():
        t0 = time.perf_counter()
        timed(step, args.warmup)
        print(f"warmup {name}: {args.warmup} steps in {time.perf_counter() - t0:.1f}s")
    times: dict[str, list[float]] = {name: [] for name in steps}
    rounds = args.rounds or args.steps
    per_round = max(1, args.steps // rounds)
    probe = MatmulProbe(dense_shapes(cfg, args.vocab, args.batch * args.seq))
    for _ in range(rounds):
        for name, step in steps.items():
            times[name] += timed(step, per_round)
        if precision == "fp32":
            probe()  # the matmul peak at this moment: the MFU denominator
    tokens = args.batch * args.seq
    tps = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        tps[name] = tokens / med
        print(f"{name:16s} median step {med * 1000:7.1f} ms  (min {min(ts) * 1000:.1f}, max "
              f"{max(ts) * 1000:.1f}, n={len(ts)})  {tps[name]:8,.0f} tokens/s  "
              f"(best step {tokens / min(ts):,.0f})")
    mine = next(iter(tps))
    for name in list(tps)[1:]:
        print(f"ratio {mine}/{name}: {tps[mine] / tps[name]:.2f} (median)  "
              f"{min(times[name]) / min(times[mine]):.2f} (best steps)")
    flops = cfg.flops_per_token(args.seq, args.vocab)
    mfu = {}
    if probe.samples:
        peak = probe.flops_per_s
        mfu = {name: flops * t / peak for name, t in tps.items()}
        print(f"torch.mm at the model's shapes between the steps: {peak / 1e9:.1f} GFLOP/s "
              f"(median of {len(probe.samples)}); CPU MFU " + ", ".join(
                  f"{k} {v:.0%}" for k, v in mfu.items()))
    return Row(name=f"pre-training step, 7.6M dense, {precision}" + (" +compile" if args.compile
                                                                    else " eager"),
               unit="tokens/s", ours=tps[mine], peer=tps["hf"],
               peer_name="HF LlamaForCausalLM", goal=1.2, flops=flops, dtype=precision,
               mfu=mfu.get(mine), peer_mfu=mfu.get("hf"),
               samples=len(times[mine]),
               notes=f"batch {args.batch}x{args.seq}, AdamW + clipping, steps interleaved, "
                     f"median")


def _config(args: argparse.Namespace) -> DenseConfig:
    return DenseConfig(dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                       n_kv_heads=args.kv_heads, max_seq_len=args.seq, tie_embeddings=args.tie)


def ddp_worker(args: argparse.Namespace) -> None:
    """One rank of the ``--ddp`` comparison: train through the ddp (or local) backend with a
    global batch of ``args.batch`` sequences; rank 0 prints the median step time."""
    import os

    from lmforge.training.config import OptimConfig
    from lmforge_torch.config import DDPBackendConfig
    from lmforge_torch.ddp import DDPBackend

    cfg = _config(args)
    if args.worker == "ddp":
        backend = DDPBackend(DDPBackendConfig(device="cpu", precision="fp32", threads=1))
    else:
        backend = LocalBackend(LocalBackendConfig(device="cpu", precision="fp32",
                                                  threads=args.threads))
    world, rank = backend.world_size, backend.rank
    module = backend.build_model(ModelRecipe(cfg, args.vocab, lambda: build(cfg, args.vocab)))
    opt = backend.build_optimizer(module, OptimConfig(lr=1e-4))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
    x = x[rank * args.batch // world:(rank + 1) * args.batch // world]
    labels = torch.full_like(x, -100)
    labels[:, :-1] = x[:, 1:]

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss_sum, n = causal_lm_loss(module, x, labels)
        (loss_sum / n).backward()
        backend.clip_grad_norm_(module, 1.0)
        opt.step()
        return 0.0

    timed(step, args.warmup)
    backend.barrier()
    ts = timed(step, args.steps)
    if rank == 0:
        med = statistics.median(ts)
        print(f"RESULT {args.worker} {world} {args.batch * args.seq / med:.1f} "
              f"{os.environ.get('OMP_NUM_THREADS', '')}", flush=True)


def ddp_compare(args: argparse.Namespace) -> None:
    import os
    import re
    import subprocess

    base = [a for a in sys.argv[1:] if not a.startswith("--ddp")]
    if "--ddp" in sys.argv:
        i = sys.argv.index("--ddp")
        base = sys.argv[1:i] + sys.argv[i + 2:]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = {}
    for worker, cmd in (
            ("single", [sys.executable, __file__, *base, "--worker", "single"]),
            ("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                     f"--nproc-per-node={args.ddp}", __file__, *base, "--worker", "ddp"])):
        proc = subprocess.run(cmd, env=env if worker == "ddp" else os.environ,
                              capture_output=True, text=True, check=True)
        m = re.search(r"RESULT \S+ (\d+) ([\d.]+)", proc.stdout)
        assert m, proc.stdout + proc.stderr
        out[worker] = float(m.group(2))
    print(f"torch {torch.__version__}, cpu {torch.backends.cpu.get_cpu_capability()}, "
          f"{os.cpu_count()} cores; global batch {args.batch} x seq {args.seq}, fp32")
    print(f"one process ({torch.get_num_threads()} threads): {out['single']:,.0f} tokens/s")
    print(f"ddp on {args.ddp} ranks (1 thread each, gloo): {out['ddp']:,.0f} tokens/s")
    print(f"ratio ddp/one process: {out['ddp'] / out['single']:.2f}")


if __name__ == "__main__":
    main()
