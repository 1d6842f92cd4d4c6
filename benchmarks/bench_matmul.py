"""The hardware limit: what plain ``torch.mm`` achieves on this machine, fp32 and bf16.

Times every matrix product of one training step of the pre-training benchmark's model (dim 256,
SwiGLU 768, vocab 8192, 4 layers, batch 8 x 256 tokens: q/k/v, output, gate/up, down and head
projections, forward and both backward products) and reports the FLOP-weighted throughput
(total FLOPs / total time) per dtype: the denominator of every CPU MFU figure in ``run.py``'s
table. A 1024^3 product is reported too, as the best case. bf16 is fast only where the CPU has
AMX (or AVX-512 BF16); elsewhere torch converts and it is slower than fp32.

    python benchmarks/bench_matmul.py [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import Row, add_json_arg, cpu_info, emit, matmul_peak, model_matmul_shapes  # noqa: E402

BENCH_FORMAT = "lmforge-bench/1"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--tokens", type=int, default=8 * 256)
    ap.add_argument("--repeats", type=int, default=5)
    add_json_arg(ap)
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = model_matmul_shapes(args.tokens, dim=256, hidden=768, vocab=8192, q_dim=256,
                                 kv_dim=256)
    cpu = cpu_info()
    rows, meta = [], {"threads": torch.get_num_threads(), "shapes": {}}
    for dtype in ("fp32", "bf16"):
        note, tokens, side = "", args.tokens, 1024
        if dtype == "bf16" and not (cpu["amx"] or cpu["avx512_bf16"]):
            # Unaccelerated bf16 is 10-50x slower than fp32: a shorter batch keeps this to
            # seconds (the throughput hardly depends on the row count at these sizes).
            tokens, side = max(64, args.tokens // 8), 512
            note = (f"no AMX nor AVX-512 BF16 on this CPU: bf16 matmuls are not accelerated "
                    f"(measured on {tokens} rows, {side}^3)")
        bf_shapes = shapes if tokens == args.tokens else model_matmul_shapes(
            tokens, dim=256, hidden=768, vocab=8192, q_dim=256, kv_dim=256)
        peak = matmul_peak(bf_shapes, dtype, repeats=args.repeats, min_time=0.02)
        square = matmul_peak([(side, side, side, 1)], dtype, repeats=args.repeats, min_time=0.02)
        meta["shapes"][dtype] = peak.shapes
        rows.append(Row(name=f"torch.mm at the model's shapes, {dtype}", unit="FLOP/s",
                        ours=peak.flops_per_s, dtype=dtype, samples=args.repeats,
                        notes=note or "FLOP-weighted over one step's products"))
        rows.append(Row(name=f"torch.mm {side}^3, {dtype}", unit="FLOP/s",
                        ours=square.flops_per_s, dtype=dtype, samples=args.repeats))
        print(f"{dtype}: model shapes {peak.flops_per_s / 1e9:7.1f} GFLOP/s (best shape "
              f"{peak.best_flops_per_s / 1e9:.1f}); {side}^3 {square.flops_per_s / 1e9:.1f} "
              f"GFLOP/s {note}")
    print(f"threads {torch.get_num_threads()}, cpu {cpu['model']}, AVX2 {cpu['avx2']}, "
          f"AVX-512 {cpu['avx512']}, AMX {cpu['amx']}")
    emit(args.json, "matmul", rows, meta)


if __name__ == "__main__":
    main()
