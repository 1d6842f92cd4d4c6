"""GRPO step time: lmforge's ``grpo`` stage vs TRL's ``GRPOTrainer``, in one run, same everything.

Same tiny Llama-family model (lmforge ``dense``; TRL gets ``LlamaForCausalLM`` from the dense
config's ``hf_config()`` and ``to_hf(state_dict)``), same tokenizer, same prompts (rendered in
lmforge's chat format with the generation prompt), same reward function (share of the letter
"e" in the completion), same group size, prompts per step and completion length, fp32 on CPU,
same torch thread count. Both run TRL's default GRPO setting: one iteration per generation
(``num_iterations=1``: no old-policy log-prob pass), ``beta=0`` (no reference model), token-level
loss, group-std scaling, sampling at temperature 1, the whole step as one micro-batch, no
activation checkpointing. A step = generate ``prompts x group`` completions + score + one
optimizer step. The model is randomly initialised, so completions rarely stop early and both
sides generate nearly ``--new-tokens`` tokens per completion (the mean lengths are printed).
The two runs are whole trainers, so they run one after the other (not interleaved): compare
figures from a quiet machine (the load average is recorded in the result's meta).

    python benchmarks/bench_grpo.py [--steps 12] [--prompts 4] [--group 4] [--new-tokens 64]

No network: models, tokenizer and prompts are built locally.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))
sys.path.insert(0, str(REPO / "benchmarks"))

from benchlib import Row, add_json_arg, emit, machine_info  # noqa: E402
from pydantic import Field  # noqa: E402

from lmforge import Component, Config, Stage, hookimpl, stage  # noqa: E402
from lmforge.chat import END, PAD, SPECIAL_TOKENS, render  # noqa: E402
from lmforge.rewards import Reward, RewardOutput  # noqa: E402

BENCH_FORMAT = "lmforge-bench/1"
LETTER = "e"


def letter_share(text: str) -> float:
    return text.count(LETTER) / max(len(text), 1)


# -- an in-file plugin: prepared folders as artifacts, and the reward -----------------------------
class FolderConfig(Config):
    path: str = Field(description="Folder to publish.")
    format: Literal["prompt"] = Field(default="prompt", description="Dataset format.")


class CopyStage(Stage):
    def run(self) -> dict[str, Any]:
        (name,) = self.ctx.output_kinds
        shutil.copytree(self.config.path, self.ctx.output_dir(name), dirs_exist_ok=True)
        return {}


class NoConfig(Config):
    pass


class LetterShare(Reward):
    def score(self, samples: Sequence[Any]) -> RewardOutput:
        return RewardOutput([letter_share(s.completion) for s in samples],
                            [{} for _ in samples])


class BenchPlugin:
    @hookimpl
    def lmforge_components(self) -> Sequence[Component]:
        folders = [stage(kind, "folder", config=FolderConfig, factory=CopyStage,
                         description="bench", outputs={out: art})
                   for kind, out, art in (("data", "dataset", "dataset/prompt"),
                                          ("tokenizer", "tokenizer", "tokenizer"),
                                          ("train", "model", "model"))]
        return folders + [Component(kind="reward", name="letter-share", config=NoConfig,
                                    factory=LetterShare, description="bench reward")]


# -- shared inputs ------------------------------------------------------------------------------
WORDS = ("the model answers questions about rivers mountains cities numbers colours animals "
         "music history science with care and a short clear reply when asked politely").split()


def make_prompts(n: int) -> list[dict[str, Any]]:
    import random

    rng = random.Random(0)
    return [{"prompt": [{"role": "user", "content": f"Question {i}: " + " ".join(
        rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + "?"}]} for i in range(n)]


def make_tokenizer(folder: Path, texts: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "artifact.json").write_text(json.dumps({"vocab_size": tok.get_vocab_size()}))
    return tok


def write_prompts(folder: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "train").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "train" / "shard-00000.parquet")
    (folder / "artifact.json").write_text(json.dumps({
        "format": "prompt", "splits": {"train": {"rows": len(rows), "shards": 1}},
        "columns": ["prompt"]}))


# -- the two runs -------------------------------------------------------------------------------
def run_lmforge(root: Path, args: argparse.Namespace) -> tuple[list[float], float]:
    import torch

    import lmforge_align.plugin as align
    import lmforge_models.plugin as models
    import lmforge_torch.plugin as torch_plugin
    from lmforge.testing import plugin_manager, run_spec
    from lmforge_align import grpo, rollout

    times: list[float] = []
    lengths: list[float] = []
    start = [0.0]
    orig_iter, orig_opt = rollout.Roller.iteration, grpo.GroupRLStage.optimise

    def begin(self: Any, module: Any, iteration: int) -> Any:
        start[0] = time.perf_counter()
        batch = orig_iter(self, module, iteration)
        lengths.append(float(batch.mask.sum()) / len(batch))
        return batch

    def end(self: Any, batch: Any, iteration: int) -> Any:
        out = orig_opt(self, batch, iteration)
        times.append(time.perf_counter() - start[0])
        return out

    rollout.Roller.iteration = begin  # type: ignore[method-assign]
    grpo.GroupRLStage.optimise = end  # type: ignore[method-assign]
    try:
        spec = {"name": "bench", "seed": 0, "stages": [
            {"id": "prompts", "kind": "data", "plugin": "folder",
             "config": {"path": str(root / "prompts")}},
            {"id": "bpe", "kind": "tokenizer", "plugin": "folder",
             "config": {"path": str(root / "tokenizer")}},
            {"id": "sft", "kind": "train", "plugin": "folder",
             "config": {"path": str(root / "model")}},
            {"id": "grpo", "kind": "align", "plugin": "grpo",
             "inputs": {"dataset": "prompts", "tokenizer": "bpe", "init": "sft"},
             "config": {
                 "reward": {"type": "letter-share"}, "kl_coef": 0.0, "eval_prompts": 0,
                 "rollout": {"prompts": args.prompts, "samples_per_prompt": args.group,
                             "max_new_tokens": args.new_tokens, "max_prompt_tokens": 64,
                             "batch_size": args.prompts * args.group},
                 "loop": {"iterations": args.steps, "epochs": 1, "minibatches": 1,
                          "micro_batch_size": args.prompts * args.group,
                          "checkpoint_every": args.steps + 1,
                          "optim": {"lr": 1e-6, "warmup_steps": 0, "weight_decay": 0.0,
                                    "min_lr_ratio": 1.0, "grad_clip": 1.0},
                          "backend": {"type": "local", "device": "cpu",
                                      "precision": "fp32",
                                      "threads": torch.get_num_threads()}}}}]}
        pm = plugin_manager(BenchPlugin(), align, models, torch_plugin)
        run_spec(spec, pm, root / "run")
    finally:
        rollout.Roller.iteration = orig_iter  # type: ignore[method-assign]
        grpo.GroupRLStage.optimise = orig_opt  # type: ignore[method-assign]
    return times, statistics.mean(lengths)


def run_trl(root: Path, args: argparse.Namespace, model_sd: dict, hf_config: dict,
            prompts: list[dict[str, Any]], tok: Any) -> tuple[list[float], float]:
    import datasets
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        TrainerCallback,
    )
    from trl import GRPOConfig, GRPOTrainer

    cfg = {k: v for k, v in hf_config.items() if k not in ("architectures", "model_type",
                                                           "torch_dtype")}
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    missing, unexpected = model.load_state_dict(model_sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.generation_config.eos_token_id = [tok.token_to_id(END), tok.token_to_id("<|endoftext|>")]
    model.generation_config.pad_token_id = tok.token_to_id(PAD)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END, pad_token=PAD)
    rows = [{"prompt": render(p["prompt"], add_generation_prompt=True)[0]} for p in prompts]
    train = datasets.Dataset.from_list(rows)
    lengths: list[float] = []

    def reward(completions: list[str], completion_ids: list[list[int]] | None = None,
               **_: Any) -> list[float]:
        if completion_ids is not None:
            lengths.append(statistics.mean(len(c) for c in completion_ids))
        return [letter_share(c) for c in completions]

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.t = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            times.append(time.perf_counter() - self.t)

    batch = args.prompts * args.group
    config = GRPOConfig(
        output_dir=str(root / "trl"), per_device_train_batch_size=batch,
        num_generations=args.group, generation_batch_size=batch,
        gradient_accumulation_steps=1, max_steps=args.steps, learning_rate=1e-6,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        max_completion_length=args.new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        beta=0.0, num_iterations=1, loss_type="dapo", scale_rewards="group",
        use_cpu=True, bf16=False, fp16=False, save_strategy="no", report_to=[],
        gradient_checkpointing=False, logging_steps=args.steps, dataloader_num_workers=0,
        disable_dropout=True, seed=0, shuffle_dataset=True)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=train,
                          processing_class=hf_tok, callbacks=[Timer()])
    trainer.train()
    return times, statistics.mean(lengths) if lengths else float("nan")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3, help="steps left out of the median")
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step")
    ap.add_argument("--group", type=int, default=4, help="completions per prompt")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for both runs (default: torch's)")
    add_json_arg(ap)
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from lmforge.modelio import save_model
    from lmforge_models.config import DenseConfig
    from lmforge_models.dense import build

    root = Path(tempfile.mkdtemp(prefix="bench-grpo-"))
    try:
        prompts = make_prompts(max(64, args.prompts * args.steps))
        texts = [render(p["prompt"], True)[0] for p in prompts] + [" ".join(WORDS)] * 8
        tok = make_tokenizer(root / "tokenizer", texts, args.vocab)
        write_prompts(root / "prompts", prompts)
        arch = DenseConfig(dim=args.dim, n_layers=args.layers, n_heads=4, multiple_of=32,
                           max_seq_len=64 + args.new_tokens + 1)
        torch.manual_seed(0)
        model = build(arch, tok.get_vocab_size())
        save_model(root / "model", model.state_dict(), arch, tok.get_vocab_size())
        hf_sd, hf_cfg = arch.to_hf(model.state_dict()), arch.hf_config(tok.get_vocab_size())
        n_params = sum(p.numel() for p in model.parameters())
        del model

        ours, our_len = run_lmforge(root, args)
        theirs, their_len = run_trl(root, args, hf_sd, hf_cfg, prompts, tok)
        import trl

        a = statistics.median(ours[args.warmup:])
        b = statistics.median(theirs[args.warmup:])
        print(f"model: dense dim={args.dim} layers={args.layers} ({n_params:,} params), "
              f"vocab {tok.get_vocab_size()}, {args.prompts} prompts x {args.group} samples, "
              f"<= {args.new_tokens} new tokens, fp32 CPU, {torch.get_num_threads()} threads")
        print(f"lmforge grpo  : {a * 1000:8.1f} ms/step (median of {len(ours) - args.warmup}), "
              f"mean completion {our_len:.1f} tokens")
        print(f"TRL {trl.__version__:9s} : {b * 1000:8.1f} ms/step (median of "
              f"{len(theirs) - args.warmup}), mean completion {their_len:.1f} tokens")
        print(f"ratio TRL / lmforge = {b / a:.2f}x")
        emit(args.json, "grpo", [Row(
            name="GRPO step (generate + score + update)", unit="s/step", ours=a, peer=b,
            peer_name=f"TRL {trl.__version__} GRPOTrainer", higher_is_better=False, goal=2.0,
            dtype="fp32", samples=len(ours) - args.warmup,
            notes=f"dense {n_params:,} params, {args.prompts}x{args.group} completions of "
                  f"<= {args.new_tokens} tokens (mean {our_len:.1f} vs {their_len:.1f})")],
            {"machine": machine_info(), "args": {k: v for k, v in vars(args).items()
                                                if k != "json"}})
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
