"""Where one training step's time goes, by op class, for lmforge's ``dense`` model and HF's
``LlamaForCausalLM`` on the pre-training benchmark's batch (``torch.profiler``, CPU).

Each op's *self* time (its own time, not its children's) is put in one class:

* ``matmul``: ``mm``/``addmm``/``bmm`` and friends, the output projection's included;
* ``attention``: scaled-dot-product attention kernels, forward and backward;
* ``loss``: the rest of the cross-entropy (softmax, log, gather, the fused kernel's own work);
* ``optimizer``: everything under ``Optimizer.step`` / ``zero_grad`` and gradient clipping;
* ``norm/elementwise``: all else (RMSNorm, rotary, SwiGLU's activation, residual adds, copies,
  embedding, autograd bookkeeping).

Everything that is not ``matmul`` is the headroom over a step made only of matrix products.
Prints a Markdown table (ms per step and share, per model), the median over ``--steps``
profiled steps after ``--warmup``.

    python benchmarks/profile_step.py [--steps 3] [--threads N] [--rows 15]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "core"), str(HERE.parent / "plugins")]

from bench_pretrain import make_hf  # noqa: E402

from lmforge.modelio import ModelRecipe  # noqa: E402
from lmforge.training import losses  # noqa: E402
from lmforge.training.config import OptimConfig  # noqa: E402
from lmforge.training.losses import causal_lm_loss  # noqa: E402
from lmforge_models.config import DenseConfig  # noqa: E402
from lmforge_models.dense import build  # noqa: E402
from lmforge_torch.config import LocalBackendConfig  # noqa: E402
from lmforge_torch.local import LocalBackend  # noqa: E402

CLASSES = ("matmul", "attention", "norm/elementwise", "loss", "optimizer")
MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_mkl_mm",
          "aten::addmv", "aten::mv", "aten::dot"}
LOSS_REGION = "## loss ##"
OPT_REGION = "## optimizer ##"


def classify(event: object) -> str:
    name = event.name  # type: ignore[attr-defined]
    chain = []
    parent = getattr(event, "cpu_parent", None)
    while parent is not None:
        chain.append(parent.name)
        parent = parent.cpu_parent
    if any(n == OPT_REGION or n.startswith("Optimizer.") for n in chain) or \
            name.startswith("Optimizer."):
        return "optimizer"
    if name in MATMUL:
        return "matmul"
    if "scaled_dot_product" in name or any("ScaledDotProduct" in n for n in chain):
        return "attention"
    loss_words = ("CrossEntropy", "cross_entropy", "LogSoftmax", "log_softmax", "NllLoss",
                  "nll_loss", "_FusedLinear")
    if LOSS_REGION in chain or any(w in n for n in chain + [name] for w in loss_words):
        return "loss"
    return "norm/elementwise"


def profile(step: Callable[[], None], steps: int) -> dict[str, float]:
    """Mean milliseconds per step of each class over ``steps`` profiled steps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals: dict[str, float] = defaultdict(float)
    for ev in prof.events():
        if ev.name in (LOSS_REGION, OPT_REGION) or ev.name.startswith("ProfilerStep"):
            continue
        totals[classify(ev)] += ev.self_cpu_time_total / 1000.0
    return {k: totals.get(k, 0.0) / steps for k in CLASSES}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8192)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = DenseConfig(dim=256, n_layers=4, n_heads=8, max_seq_len=args.seq)
    torch.manual_seed(0)
    first = build(cfg, args.vocab)
    hf = make_hf(first, compile_=False)
    backend = LocalBackend(LocalBackendConfig(device="cpu", precision="fp32"))
    ours = backend.build_model(ModelRecipe(cfg, args.vocab, construct=lambda: first))
    optim = OptimConfig(lr=1e-4, weight_decay=0.1, grad_clip=1.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
    labels = torch.full_like(x, -100)
    labels[:, :-1] = x[:, 1:]

    ours_opt = backend.build_optimizer(ours, optim)
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, weight_decay=0.1, fused=True)

    # The fused cross-entropy's forward (which also forms its gradients) as one region.
    kernel = losses._FusedLinearCrossEntropy
    plain_forward = kernel.forward

    def marked_forward(ctx: object, *a: object) -> torch.Tensor:
        with torch.profiler.record_function(LOSS_REGION):
            return plain_forward(ctx, *a)
    kernel.forward = staticmethod(marked_forward)  # type: ignore[method-assign]

    def ours_step() -> None:
        loss_sum, n = causal_lm_loss(ours, x, labels)
        (loss_sum / n).backward()
        with torch.profiler.record_function(OPT_REGION):
            backend.clip_grad_norm_(ours, 1.0)
            ours_opt.step()
            ours_opt.zero_grad(set_to_none=True)

    def hf_step() -> None:
        loss = hf(input_ids=x, labels=x).loss
        loss.backward()
        with torch.profiler.record_function(OPT_REGION):
            torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
            hf_opt.step()
            hf_opt.zero_grad(set_to_none=True)

    results = {}
    for name, step in (("lmforge", ours_step), ("HF", hf_step)):
        for _ in range(args.warmup):
            step()
    for name, step in (("lmforge", ours_step), ("HF", hf_step)):
        results[name] = profile(step, args.steps)
    print(f"one pre-training step, dense dim 256 x 4 layers, vocab {args.vocab}, batch "
          f"{args.batch} x {args.seq}, fp32, {torch.get_num_threads()} threads; ms per step "
          f"(self time of ops, mean of {args.steps} profiled steps)\n")
    print("| op class | " + " | ".join(f"{n} ms | {n} share" for n in results) + " |")
    print("|---|" + "---|---|" * len(results))
    totals = {n: sum(r.values()) for n, r in results.items()}
    for cls in CLASSES:
        cells = " | ".join(f"{r[cls]:.0f} | {r[cls] / totals[n]:.0%}" for n, r in results.items())
        print(f"| {cls} | {cells} |")
    print("| total | " + " | ".join(f"{t:.0f} | 100%" for t in totals.values()) + " |")
    print("| not matmul (headroom) | " + " | ".join(
        f"{totals[n] - r['matmul']:.0f} | {(totals[n] - r['matmul']) / totals[n]:.0%}"
        for n, r in results.items()) + " |")


if __name__ == "__main__":
    main()
