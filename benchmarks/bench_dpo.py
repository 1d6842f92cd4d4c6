"""DPO steps/s: lmforge's ``dpo`` stage vs TRL's ``DPOTrainer``, same model, data and settings.

The pre-training benchmark's 7.6M-parameter model, 8 preference pairs per step, every row at most
256 tokens (prompt: a question about a stdlib code snippet; chosen and rejected: other snippets),
fp32 on CPU, the same thread count (see :mod:`trainbench` for the shared set-up). Both sides:
sigmoid loss with beta 0.1, AdamW at lr 1e-5 (TRL: the ``Trainer``'s default fused AdamW;
lmforge: its own optimizer), gradient clipping at 1.0, cosine schedule, no dropout, no gradient
checkpointing, reference log-probs precomputed before training
(``precompute_ref_log_probs=True``; lmforge always does) and not timed. Runs alternate
(lmforge, TRL, lmforge, TRL); the median step time after warm-up steps is reported as steps/s.
Goal: lmforge >= 2x TRL.

    python benchmarks/bench_dpo.py [--steps 6] [--warmup 1] [--rounds 2] [--batch 8] [--json PATH]

No network: model, tokenizer and data are built locally.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "core"), str(HERE.parent / "plugins")]

import trainbench as tb  # noqa: E402
from benchlib import Row, add_json_arg, emit  # noqa: E402

from lmforge.chat import END, render  # noqa: E402

BENCH_FORMAT = "lmforge-bench/1"


def make_pairs(tok: Any, n: int, seq: int) -> list[dict[str, Any]]:
    """``n`` pairs whose prompt plus either response fits ``seq`` tokens (prompt about 40%)."""
    rng = random.Random(0)
    snippets = tb.stdlib_snippets(600)
    pairs = []
    for i in range(n):
        question = "What does this code do?\n" + tb.fit(tok, rng.choice(snippets), seq * 2 // 5)
        prompt = [{"role": "user", "content": question}]
        room = seq - len(tok.encode(render(prompt, True)[0], add_special_tokens=False).ids) - 2
        chosen, rejected = (tb.fit(tok, rng.choice(snippets), room) for _ in range(2))
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


def lmforge_spec(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    return {"name": "bench", "seed": 0, "stages": [
        {"id": "pairs", "kind": "data", "plugin": "folder",
         "config": {"path": str(root / "pairs"), "format": "preference"}},
        {"id": "bpe", "kind": "tokenizer", "plugin": "folder",
         "config": {"path": str(root / "tokenizer")}},
        {"id": "sft", "kind": "train", "plugin": "folder",
         "config": {"path": str(root / "model")}},
        {"id": "dpo", "kind": "align", "plugin": "dpo",
         "inputs": {"dataset": "pairs", "tokenizer": "bpe", "init": "sft"},
         "config": {"beta": 0.1, "eval_batches": 0, "loop": {
             "steps": args.steps, "batch_size": args.batch, "seq_len": args.seq - 1,
             "log_every": args.steps, "checkpoint_every": args.steps + 1,
             "optim": {"lr": 1e-5, "warmup_steps": 0, "weight_decay": 0.0, "grad_clip": 1.0},
             "backend": {"type": "local", "device": "cpu", "precision": "fp32"}}}}]}


def run_trl(root: Path, args: argparse.Namespace, hf_sd: dict, hf_cfg: dict,
            pairs: list[dict[str, Any]], tok: Any, run: int) -> list[float]:
    import datasets
    from trl import DPOConfig, DPOTrainer

    model = tb.hf_model(hf_sd, hf_cfg)
    rows = [{"prompt": render(p["prompt"], add_generation_prompt=True)[0],
             "chosen": p["chosen"] + END, "rejected": p["rejected"] + END} for p in pairs]
    times: list[float] = []
    config = DPOConfig(
        output_dir=str(root / f"trl{run}"), per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1, max_steps=args.steps, learning_rate=1e-5,
        lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        beta=0.1, loss_type=["sigmoid"], max_length=args.seq,
        precompute_ref_log_probs=True, precompute_ref_batch_size=args.batch,
        use_cpu=True, bf16=False, fp16=False, save_strategy="no", report_to=[],
        gradient_checkpointing=False, activation_checkpointing=False,  # TRL defaults to True
        logging_steps=args.steps, dataloader_num_workers=0, disable_dropout=True, seed=0)
    trainer = DPOTrainer(model=model, ref_model=None, args=config,
                         train_dataset=datasets.Dataset.from_list(rows),
                         processing_class=tb.hf_tokenizer(tok), callbacks=[tb.step_timer(times)])
    trainer.train()
    shutil.rmtree(root / f"trl{run}", ignore_errors=True)
    return times


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="steps of each run left out")
    ap.add_argument("--rounds", type=int, default=2, help="lmforge/TRL run pairs")
    ap.add_argument("--batch", type=int, default=8, help="pairs per step")
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--seq", type=int, default=256, help="tokens per row (prompt + response)")
    ap.add_argument("--vocab", type=int, default=8192)
    add_json_arg(ap)
    args = ap.parse_args(argv)

    import torch
    import trl

    root = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    try:
        tok = tb.make_tokenizer(root / "tokenizer", tb.stdlib_snippets(2000), args.vocab)
        pairs = make_pairs(tok, args.pairs, args.seq)
        tb.write_rows(root / "pairs", pairs, "preference")
        hf_sd, hf_cfg, n_params, fpt = tb.make_model(root, tok.get_vocab_size(), args.seq)
        spec = lmforge_spec(root, args)
        probe = tb.matmul_probe(tok.get_vocab_size(), 2 * args.batch * args.seq)  # MFU denominator
        times = tb.alternate({
            "lmforge": lambda r: tb.run_lmforge(root, spec, r),
            "TRL": lambda r: run_trl(root, args, hf_sd, hf_cfg, pairs, tok, r),
        }, args.rounds, args.warmup, between=probe)
        ours, theirs = (statistics.median(times[k]) for k in ("lmforge", "TRL"))
        print(f"torch.mm at the model's shapes before each run: {probe.flops_per_s / 1e9:.1f} "
              f"GFLOP/s (median of {len(probe.samples)})")
        lengths = [len(tok.encode(render(p["prompt"], True)[0] + p[k] + END,
                                  add_special_tokens=False).ids)
                   for p in pairs for k in ("chosen", "rejected")]
        tokens = 2 * args.batch * statistics.mean(lengths)  # per step, both responses
        print(f"model: dense {n_params:,} params, vocab {tok.get_vocab_size()}, {args.batch} "
              f"pairs/step, rows of {min(lengths)}-{max(lengths)} tokens (mean "
              f"{statistics.mean(lengths):.0f}), fp32 CPU, {torch.get_num_threads()} threads")
        print(f"lmforge dpo    : {ours * 1000:8.1f} ms/step (median of {len(times['lmforge'])})")
        print(f"TRL {trl.__version__:10s} : {theirs * 1000:8.1f} ms/step (median of "
              f"{len(times['TRL'])})")
        print(f"ratio TRL / lmforge = {theirs / ours:.2f}x (goal >= 2)")
        emit(args.json, "dpo", [Row(
            name="DPO step, 7.6M dense, 8 pairs x <=256 tokens, fp32", unit="steps/s",
            ours=1 / ours, peer=1 / theirs, peer_name=f"TRL {trl.__version__} DPOTrainer",
            mfu=fpt * tokens / ours / probe.flops_per_s,
            peer_mfu=fpt * tokens / theirs / probe.flops_per_s,
            goal=2.0, flops=fpt * tokens, dtype="fp32", samples=len(times["lmforge"]),
            notes="reference log-probs precomputed on both; runs alternated, median step")],
            {"lmforge_ms": [t * 1000 for t in times["lmforge"]],
             "trl_ms": [t * 1000 for t in times["TRL"]], "mean_row_tokens":
             statistics.mean(lengths), "threads": torch.get_num_threads()})
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
