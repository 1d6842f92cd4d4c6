"""SFT steps/s: lmforge's ``sft`` stage vs TRL's ``SFTTrainer``, same model, chats and settings.

The pre-training benchmark's 7.6M-parameter model, 8 conversations per step, each at most 256
tokens (user: a question about a stdlib code snippet; assistant: another snippet), loss on the
assistant tokens only on both sides (lmforge always; TRL with ``assistant_only_loss=True`` and
lmforge's chat template, whose ``{% generation %}`` marks the assistant spans), no packing, fp32
on CPU, the same thread count (see :mod:`trainbench`). Both: AdamW at lr 1e-5 (TRL: the
``Trainer``'s default fused AdamW; lmforge: its own optimizer), weight decay 0, gradient clipping
at 1.0, cosine schedule, no gradient checkpointing. TRL runs as configured otherwise (it also
computes its per-step token accuracy and entropy metrics, as it does for every user). Runs
alternate (lmforge, TRL, lmforge, TRL); the median step time after warm-up steps is reported as
steps/s. Goal: lmforge >= 1.5x TRL.

    python benchmarks/bench_sft.py [--steps 8] [--warmup 1] [--rounds 2] [--batch 8] [--json PATH]
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

from lmforge.chat import encode_chat  # noqa: E402

BENCH_FORMAT = "lmforge-bench/1"


def make_chats(tok: Any, n: int, seq: int) -> list[dict[str, Any]]:
    """``n`` one-turn conversations of at most ``seq`` tokens (user part about 40%)."""
    rng = random.Random(0)
    snippets = tb.stdlib_snippets(600)
    chats = []
    for _ in range(n):
        question = "What does this code do?\n" + tb.fit(tok, rng.choice(snippets), seq * 2 // 5)
        answer = tb.fit(tok, rng.choice(snippets), seq // 2)
        messages = [{"role": "user", "content": question},
                    {"role": "assistant", "content": answer}]
        while len(encode_chat(tok, messages)[0]) > seq:  # rare: merges across the joins
            answer = answer[:-20]
            messages[1]["content"] = answer
        chats.append({"messages": messages})
    return chats


def lmforge_spec(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    return {"name": "bench", "seed": 0, "stages": [
        {"id": "chats", "kind": "data", "plugin": "folder",
         "config": {"path": str(root / "chats"), "format": "chat"}},
        {"id": "bpe", "kind": "tokenizer", "plugin": "folder",
         "config": {"path": str(root / "tokenizer")}},
        {"id": "base", "kind": "train", "plugin": "folder",
         "config": {"path": str(root / "model")}},
        {"id": "sft", "kind": "train", "plugin": "sft",
         "inputs": {"dataset": "chats", "tokenizer": "bpe", "init": "base"},
         "config": {"eval_batches": 0, "loop": {
             "steps": args.steps, "batch_size": args.batch, "seq_len": args.seq - 1,
             "log_every": args.steps, "checkpoint_every": args.steps + 1,
             "optim": {"lr": 1e-5, "warmup_steps": 0, "weight_decay": 0.0, "grad_clip": 1.0},
             "backend": {"type": "local", "device": "cpu", "precision": "fp32"}}}}]}


def run_trl(root: Path, args: argparse.Namespace, hf_sd: dict, hf_cfg: dict,
            chats: list[dict[str, Any]], tok: Any, run: int) -> list[float]:
    import datasets
    from trl import SFTConfig, SFTTrainer

    model = tb.hf_model(hf_sd, hf_cfg)
    times: list[float] = []
    config = SFTConfig(
        output_dir=str(root / f"trl{run}"), per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1, max_steps=args.steps, learning_rate=1e-5,
        lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        max_length=args.seq, packing=False, assistant_only_loss=True,
        use_cpu=True, bf16=False, fp16=False, save_strategy="no", report_to=[],
        gradient_checkpointing=False, logging_steps=args.steps, dataloader_num_workers=0,
        seed=0)
    trainer = SFTTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_list(chats),
                         processing_class=tb.hf_tokenizer(tok), callbacks=[tb.step_timer(times)])
    trainer.train()
    shutil.rmtree(root / f"trl{run}", ignore_errors=True)
    return times


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="steps of each run left out")
    ap.add_argument("--rounds", type=int, default=2, help="lmforge/TRL run pairs")
    ap.add_argument("--batch", type=int, default=8, help="conversations per step")
    ap.add_argument("--chats", type=int, default=128)
    ap.add_argument("--seq", type=int, default=256, help="tokens per conversation at most")
    ap.add_argument("--vocab", type=int, default=8192)
    add_json_arg(ap)
    args = ap.parse_args(argv)

    import torch
    import trl

    root = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    try:
        tok = tb.make_tokenizer(root / "tokenizer", tb.stdlib_snippets(2000), args.vocab)
        chats = make_chats(tok, args.chats, args.seq)
        tb.write_rows(root / "chats", chats, "chat")
        hf_sd, hf_cfg, n_params, fpt = tb.make_model(root, tok.get_vocab_size(), args.seq)
        spec = lmforge_spec(root, args)
        probe = tb.matmul_probe(tok.get_vocab_size(), args.batch * args.seq)  # MFU denominator
        times = tb.alternate({
            "lmforge": lambda r: tb.run_lmforge(root, spec, r),
            "TRL": lambda r: run_trl(root, args, hf_sd, hf_cfg, chats, tok, r),
        }, args.rounds, args.warmup, between=probe)
        ours, theirs = (statistics.median(times[k]) for k in ("lmforge", "TRL"))
        print(f"torch.mm at the model's shapes before each run: {probe.flops_per_s / 1e9:.1f} "
              f"GFLOP/s (median of {len(probe.samples)})")
        lengths = [len(encode_chat(tok, c["messages"])[0]) for c in chats]
        tokens = args.batch * statistics.mean(lengths)
        print(f"model: dense {n_params:,} params, vocab {tok.get_vocab_size()}, {args.batch} "
              f"chats/step of {min(lengths)}-{max(lengths)} tokens (mean "
              f"{statistics.mean(lengths):.0f}), fp32 CPU, {torch.get_num_threads()} threads")
        print(f"lmforge sft    : {ours * 1000:8.1f} ms/step (median of {len(times['lmforge'])})")
        print(f"TRL {trl.__version__:10s} : {theirs * 1000:8.1f} ms/step (median of "
              f"{len(times['TRL'])})")
        print(f"ratio TRL / lmforge = {theirs / ours:.2f}x (goal >= 1.5)")
        emit(args.json, "sft", [Row(
            name="SFT step, 7.6M dense, 8 chats x <=256 tokens, fp32", unit="steps/s",
            ours=1 / ours, peer=1 / theirs, peer_name=f"TRL {trl.__version__} SFTTrainer",
            mfu=fpt * tokens / ours / probe.flops_per_s,
            peer_mfu=fpt * tokens / theirs / probe.flops_per_s,
            goal=1.5, flops=fpt * tokens, dtype="fp32", samples=len(times["lmforge"]),
            notes="assistant-only loss on both; runs alternated, median step")],
            {"lmforge_ms": [t * 1000 for t in times["lmforge"]],
             "trl_ms": [t * 1000 for t in times["TRL"]],
             "mean_chat_tokens": statistics.mean(lengths), "threads": torch.get_num_threads()})
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
