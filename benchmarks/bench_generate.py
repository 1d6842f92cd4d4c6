"""Generation throughput: ``lmforge.generation.generate`` vs transformers ``generate``.

Same model (lmforge ``dense``; transformers gets ``LlamaForCausalLM`` built from the dense
config's ``hf_config()`` with ``to_hf(state_dict)``, as the ``hf`` export writes it), same
prompts (``--batch`` prompts of different lengths, left padded with an attention mask in both),
greedy decoding of exactly ``--new`` tokens (no stop token), fp32, same torch thread count.
Runs are timed alternately (lmforge, HF, lmforge, ...) so other load on the machine hits both
alike; a warm-up run of each is excluded. The generated ids must agree (the script fails when
they do not), and it prints each side's median new tokens/s and the ratio lmforge/HF.

    python benchmarks/bench_generate.py [--batch 16] [--new 128] [--runs 5] [--moe] [--json out.json]

``--moe`` measures the ``moe`` architecture against ``MixtralForCausalLM`` instead.
No network: the model is built locally from a seed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# run from a checkout, installed or not
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins"), str(HERE)]

from benchlib import Row, add_json_arg, emit, machine_info  # noqa: E402

from lmforge.generation import SamplingParams, generate  # noqa: E402
from lmforge_models.config import DenseConfig, MoEConfig  # noqa: E402
from lmforge_models.dense import build  # noqa: E402
from lmforge_models.moe import build as build_moe  # noqa: E402

BENCH_FORMAT = "lmforge-bench/1"

PAD = 0
GOAL = 1.5  # the generation issue's goal: lmforge >= 1.5x transformers generate


def make_hf(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model with ``model``'s weights, loaded with ``from_pretrained`` from a
    folder holding ``config.json`` (``hf_config``) and ``to_hf(state_dict)``: what the ``hf``
    export writes (transformers converts Mixtral's per-expert names itself)."""
    import json
    import tempfile

    import safetensors.torch
    import transformers

    cfg = dict(model.config.hf_config(model.vocab_size), pad_token_id=PAD)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(cfg))
        state = {k: v.contiguous().clone()
                 for k, v in model.config.to_hf(model.state_dict()).items()}
        safetensors.torch.save_file(state, str(Path(tmp) / "model.safetensors"),
                                    metadata={"format": "pt"})
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
    return hf.eval()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16, help="prompts (one batch)")
    ap.add_argument("--new", type=int, default=128, help="new tokens per prompt")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per side")
    ap.add_argument("--min-prompt", type=int, default=8)
    ap.add_argument("--max-prompt", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--untied", action="store_true", help="a separate output matrix (the "
                    "default ties it to the embedding, as the quickstart model does)")
    ap.add_argument("--moe", action="store_true", help="the moe architecture (4 experts, top 2)")
    add_json_arg(ap)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    seq = args.max_prompt + args.new
    shape = dict(dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                 n_kv_heads=args.kv_heads, max_seq_len=seq, init_std=0.05,
                 tie_embeddings=not args.untied)
    torch.manual_seed(0)
    if args.moe:
        ours = build_moe(MoEConfig(**shape, n_experts=4, top_k=2), args.vocab).eval()
    else:
        ours = build(DenseConfig(**shape), args.vocab).eval()
    hf = make_hf(ours)

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(args.min_prompt, args.max_prompt + 1, (args.batch,), generator=g)
    prompts = [torch.randint(1, args.vocab, (int(n),), generator=g).tolist() for n in lengths]
    width = max(len(p) for p in prompts)
    ids = torch.full((args.batch, width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    params = SamplingParams(max_new_tokens=args.new, temperature=0.0)

    def run_ours() -> list[list[int]]:
        with torch.inference_mode():  # as for HF below (lmforge's evaluators run under it)
            out = generate(ours, prompts, params, pad_id=PAD, device="cpu",
                           batch_size=args.batch)
        return [c.token_ids for c in out]

    def run_hf() -> list[list[int]]:
        with torch.inference_mode():
            out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new,
                              min_new_tokens=args.new, do_sample=False, pad_token_id=PAD,
                              eos_token_id=None)
        return out[:, width:].tolist()

    sides: dict[str, Callable[[], list[list[int]]]] = {"lmforge": run_ours, "hf": run_hf}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu "
          f"{torch.backends.cpu.get_cpu_capability()}; {'moe' if args.moe else 'dense'} "
          f"dim {args.dim}, layers {args.layers}, heads {args.heads}/{args.kv_heads} kv, vocab "
          f"{args.vocab}, {sum(p.numel() for p in ours.parameters()):,} parameters; "
          f"{args.batch} prompts of {int(lengths.min())}-{int(lengths.max())} tokens (left "
          f"padded) x {args.new} new tokens, greedy, fp32")
    results = {name: fn() for name, fn in sides.items()}  # warm-up, and the ids to compare
    agree = sum(a == b for a, b in zip(results["lmforge"], results["hf"], strict=True))
    print(f"ids agree on {agree}/{args.batch} rows")
    if agree != args.batch:
        for r, (a, b) in enumerate(zip(results["lmforge"], results["hf"], strict=True)):
            if a != b:
                first = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
                print(f"  row {r}: first difference at new token {first}")
        sys.exit("the generated ids differ: the comparison is void")
    times: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.runs):
        for name, fn in sides.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    tokens = args.batch * args.new
    tps = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        tps[name] = tokens / med
        print(f"{name:8s} median {med:6.3f} s (min {min(ts):.3f}, max {max(ts):.3f}, n={len(ts)})"
              f"  {tps[name]:9,.0f} new tokens/s; CPU time median {statistics.median(cpu[name]):.3f}"
              f" s")
    print(f"ratio lmforge/hf: {tps['lmforge'] / tps['hf']:.2f} (median wall)  "
          f"{min(times['hf']) / min(times['lmforge']):.2f} (best runs)  "
          f"{statistics.median(cpu['hf']) / statistics.median(cpu['lmforge']):.2f} (median CPU "
          f"time: steadier on a shared machine)")
    import transformers

    arch = "moe" if args.moe else "dense"
    row = Row(name=f"greedy generation, {arch} dim {args.dim} x {args.layers} layers, "
                   f"{args.batch} prompts x {args.new} new tokens",
              unit="tokens/s", ours=tps["lmforge"], peer=tps["hf"],
              peer_name=f"transformers {transformers.__version__} generate", goal=GOAL,
              samples=args.runs, dtype="fp32",
              notes=f"ids identical; CPU-time ratio "
                    f"{statistics.median(cpu['hf']) / statistics.median(cpu['lmforge']):.2f}")
    emit(args.json, "generate", [row], {
        "machine": machine_info(), "args": vars(args) | {"json": str(args.json) if args.json
                                                         else None},
        "seconds": times, "cpu_seconds": cpu})


if __name__ == "__main__":
    main()
