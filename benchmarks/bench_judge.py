"""Judge labelling throughput: the ``model-prompted`` judge vs the same model through
transformers, in pairs labelled per second.

One seeded model (lmforge ``dense``; transformers gets ``LlamaForCausalLM`` with the same
weights, as the ``hf`` export writes them) and ``--pairs`` comparisons of responses of mixed
lengths. A pair costs two questions (both orders). Three ways to read the answer tokens'
probabilities from exactly the same token ids:

* **ours** — ``ModelPromptedJudge.compare``: rendering, batched left-padded forward through the
  model-call contract (``logits_to_keep=1``), option probabilities, swap averaging;
* **HF forward** — ``LlamaForCausalLM(input_ids, attention_mask, position_ids)`` on the same
  left-padded batches, log-softmax of the last position (the whole-vocabulary logits of every
  position are computed, as transformers does unless told ``logits_to_keep``);
* **HF generate** — ``generate(max_new_tokens=1, output_scores=True)``: how a judge written
  with transformers' generation API reads one answer token.

Timed alternately (ours, forward, generate, ...) so load hits all alike; a warm-up of each is
excluded. The script fails if the peers' probabilities differ from ours by more than 1e-4.

    python benchmarks/bench_judge.py [--pairs 64] [--batch 16] [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins"), str(HERE)]

from benchlib import Row, add_json_arg, emit, interleaved, machine_info, median  # noqa: E402

BENCH_FORMAT = "lmforge-bench/1"

WORDS = ("def return value list the of to a in is for if else while import from class self "
         "None True False data result index item key error file path name string number "
         "parse read write open close").split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16, help="questions per forward")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    add_json_arg(ap)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers
    from bench_generate import make_hf

    from lmforge.chat import load_tokenizer
    from lmforge.judging import Comparison
    from lmforge.testing import write_tokenizer_artifact
    from lmforge_feedback.config import ModelPromptedJudgeConfig
    from lmforge_feedback.judge_lm import ArtifactLM
    from lmforge_feedback.judges import ModelPromptedJudge
    from lmforge_models.config import DenseConfig
    from lmforge_models.dense import build

    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) for _ in range(400)]
    tmp = Path(tempfile.mkdtemp())
    tok = load_tokenizer(write_tokenizer_artifact(tmp / "tok", texts, vocab_size=1024))
    cfg = DenseConfig(dim=args.dim, n_layers=args.layers, n_heads=8, n_kv_heads=4,
                      max_seq_len=512, init_std=0.05)
    torch.manual_seed(0)
    ours_model = build(cfg, tok.vocab_size).eval()
    hf = make_hf(ours_model)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    items = [Comparison(prompt=[{"role": "user", "content": text(5, 20)}], a=text(10, 60),
                        b=text(10, 60)) for _ in range(args.pairs)]
    judge = ModelPromptedJudge(ModelPromptedJudgeConfig(batch_size=args.batch))
    judge.lm = ArtifactLM(ours_model, tok, "bench", "cpu", args.batch)
    judge._ready()
    prompts = []
    for it in items:
        prompts += [judge._comparison_ids(it, False), judge._comparison_ids(it, True)]
    options = judge.option_ids

    def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for s in range(0, len(prompts), args.batch):
            chunk = prompts[s:s + args.batch]
            w = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), w), tok.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), w), dtype=torch.long)
            for r, p in enumerate(chunk):
                ids[r, w - len(p):] = torch.tensor(p)
                mask[r, w - len(p):] = 1
            out.append((ids, mask))
        return out

    padded = batches()
    results: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def run_ours() -> None:
        v = judge.compare(items)
        results["ours"] = torch.tensor([[x.raw["ab"]["A"], x.raw["ba"]["A"]] for x in v])

    def option_pa(logp: torch.Tensor) -> torch.Tensor:
        two = logp[:, options].double()
        return torch.softmax(two, -1)[:, 0]

    @torch.no_grad()
    def run_forward() -> None:
        pa = []
        for ids, mask in padded:
            pos = (mask.cumsum(-1) - 1).clamp_min(0)
            logits = hf(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
            pa.append(option_pa(torch.log_softmax(logits.float(), -1)))
        results["forward"] = torch.cat(pa).view(-1, 2)

    @torch.no_grad()
    def run_generate() -> None:
        pa = []
        for ids, mask in padded:
            out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=1,
                              do_sample=False, output_scores=True, return_dict_in_generate=True,
                              pad_token_id=tok.pad_id)
            pa.append(option_pa(torch.log_softmax(out.scores[0].float(), -1)))
        results["generate"] = torch.cat(pa).view(-1, 2)

    times = interleaved({"ours": run_ours, "forward": run_forward, "generate": run_generate},
                        repeats=args.runs, warmup=1)
    for peer in ("forward", "generate"):
        diff = float((results[peer] - results["ours"]).abs().max())
        if diff > 1e-4:
            raise SystemExit(f"HF {peer} disagrees with the judge: max |dP| = {diff:.2e}")
    rate = {k: args.pairs / median(v) for k, v in times.items()}
    tokens = sum(len(p) for p in prompts)
    rows = [Row(name=f"judge pairs/s ({args.pairs} pairs, both orders, batch {args.batch})",
                unit="pairs/s", ours=rate["ours"], peer=rate[peer],
                peer_name=f"transformers {transformers.__version__} {label}",
                samples=args.runs, dtype="fp32",
                notes=f"dense dim {args.dim} x {args.layers} layers, {tokens} prompt tokens "
                      f"per run; max |dP| vs ours "
                      f"{float((results[peer] - results['ours']).abs().max()):.1e}")
            for peer, label in (("forward", "LlamaForCausalLM forward"),
                                ("generate", "generate(max_new_tokens=1)"))]
    for r in rows:
        print(f"{r.name}: lmforge {r.ours:.1f} vs {r.peer_name} {r.peer:.1f} "
              f"-> x{r.ratio:.2f}")
    emit(args.json, "judge", rows, {"machine": machine_info(), "args": vars(args) | {
        "json": str(args.json) if args.json else None}})


if __name__ == "__main__":
    main()
