"""Encode throughput: lmforge's tokenizer path vs raw Hugging Face ``tokenizers``, same texts.

The corpus is the Python standard library's ``.py`` files. A byte-level BPE is trained with the
``bpe`` stage's own functions (or ``--tokenizer DIR`` reuses an artifact), then, interleaved and
repeated (best time kept):

* ``raw``: ``tokenizers.Tokenizer.from_file(tokenizer.json).encode_batch(batch)`` -> ids;
* ``lmforge``: the artifact loaded with :func:`lmforge.chat.load_tokenizer` and encoded the way the
  pre-training stage does (``lmforge_train.data._encode_text`` when installed: encode_batch on the
  artifact's tokenizer, then ids + EOS per document);
* ``lmforge per-doc``: ``TokenizerArtifact.encode`` one document at a time (evaluators' path),
  for information.

Prints docs/s, MB/s and the overhead of ``lmforge`` over ``raw`` (target: < 10%).

    python benchmarks/bench_tokenizer.py [--max-mb 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))  # uninstalled checkout


def stdlib_texts(max_bytes: int) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    texts, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        texts.append(text)
        total += len(text.encode("utf-8"))
        if total >= max_bytes:
            break
    return texts


def train_tokenizer(texts: list[str], out: Path, vocab_size: int) -> Path:
    from lmforge_tokenizers.bpe import save_tokenizer, train_bpe
    from lmforge_tokenizers.config import BPEConfig

    cfg = BPEConfig(vocab_size=vocab_size)
    tok = train_bpe((texts[i:i + 1000] for i in range(0, len(texts), 1000)), cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tok, out, cfg)
    (out / "artifact.json").write_text(json.dumps({"vocab_size": tok.get_vocab_size()}))
    return out


def best_time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-mb", type=float, default=16.0, help="corpus size (MB of .py files)")
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--batch-size", type=int, default=1024, help="documents per encode_batch")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokenizer", type=Path, default=None, help="existing tokenizer artifact")
    args = ap.parse_args()

    import tokenizers

    from lmforge.chat import load_tokenizer

    texts = stdlib_texts(int(args.max_mb * 1e6))
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    print(f"corpus: {len(texts)} stdlib .py files, {n_bytes / 1e6:.1f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = args.tokenizer
        if tok_dir is None:
            start = time.perf_counter()
            tok_dir = train_tokenizer(texts, Path(tmp) / "tok", args.vocab_size)
            print(f"trained a {args.vocab_size}-token byte-level BPE in "
                  f"{time.perf_counter() - start:.1f}s")
        raw = tokenizers.Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
        art = load_tokenizer(tok_dir)
        try:
            from lmforge_train.data import _encode_text as train_encode  # the pre-training path
            lm_label = "lmforge (pretrain _encode_text)"
        except ImportError:
            def train_encode(batch: dict, indices: list, tokenizer: Any, eos_id: int,
                             where: str) -> dict:
                encs = tokenizer.encode_batch(batch["text"], add_special_tokens=False)
                return {"ids": [e.ids + [eos_id] for e in encs]}
            lm_label = "lmforge (artifact encode_batch)"
        batches = [texts[i:i + args.batch_size] for i in range(0, len(texts), args.batch_size)]

        def run_raw() -> int:
            return sum(len(e.ids) for b in batches
                       for e in raw.encode_batch(b, add_special_tokens=False))

        def run_lmforge() -> int:
            n = 0
            for b in batches:
                out = train_encode({"text": b}, list(range(len(b))), art.tokenizer, art.eos_id,
                                   "bench")
                n += sum(len(ids) - 1 for ids in out["ids"])
            return n

        def run_per_doc() -> int:
            return sum(len(art.encode(t)) for t in texts)

        assert run_raw() == run_lmforge() == run_per_doc(), "paths disagree on token counts"
        n_tokens = run_raw()
        times: dict[str, list[float]] = {"raw": [], "lmforge": [], "per-doc": []}
        for _ in range(args.repeats):  # interleaved so machine load hits all paths alike
            times["raw"].append(best_time(run_raw))
            times["lmforge"].append(best_time(run_lmforge))
            times["per-doc"].append(best_time(run_per_doc))
    print(f"tokens: {n_tokens} ({n_bytes / n_tokens:.2f} bytes/token); best of {args.repeats}")
    labels = {"raw": "raw tokenizers encode_batch", "lmforge": lm_label,
              "per-doc": "lmforge TokenizerArtifact.encode per doc"}
    for key, label in labels.items():
        t = min(times[key])
        print(f"  {label:<42} {len(texts) / t:10.0f} docs/s {n_bytes / 1e6 / t:8.2f} MB/s "
              f"({t:.3f}s)")
    overhead = (min(times["lmforge"]) / min(times["raw"]) - 1) * 100
    print(f"overhead of lmforge's path over raw tokenizers: {overhead:+.1f}% "
          f"({'OK' if overhead < 10 else 'ABOVE'} target < 10%)")


if __name__ == "__main__":
    main()
