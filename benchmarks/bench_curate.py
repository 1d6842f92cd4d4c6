"""Data curation speed against its peers, same documents, same cores, one run.

    python benchmarks/bench_curate.py                   # every benchmark
    python benchmarks/bench_curate.py --only minhash    # one of them (see --help)
    python benchmarks/bench_curate.py --json out.json   # also write the rows run.py collects

Each benchmark is one function registered in ``BENCHMARKS``; each prints docs/s for lmforge
and for the peer and their ratio, and checks that both decide the same before timing counts.

* ``minhash``: the MinHash near-dedup pipeline end to end — read JSON Lines, shingle and
  sign, LSH buckets, clusters, keep one per cluster, write the kept documents — lmforge's
  ``curate`` stage (``dedup: {type: minhash}``, local executor) against datatrove 0.10's four
  MinHash steps on ``LocalPipelineExecutor``; both with 5-word shingles, 14 bands of 8 rows,
  on the planted corpus of :mod:`tests.curation.planted_corpus` (recall per similarity bin is
  printed for both: equal recall is the condition of the comparison).
* ``ray-overhead``: the same curate stage on the ``ray`` executor (local mode, same CPUs)
  against the ``local`` executor: the cost of Ray on one machine.
* ``gopher``: lmforge's ``gopher`` filter (quality + repetition in one pass) against
  datatrove 0.10's ``GopherRepetitionFilter`` then ``GopherQualityFilter`` (its order in
  FineWeb), on documents made of this machine's text files (``/usr/share/doc``,
  ``/usr/share/common-licenses``), both on ``--workers`` processes; prints docs/s, the ratio,
  the fraction of documents on which keep/drop agree and the (lmforge reason, datatrove
  reason) pairs of those that do not.
* ``tokenize``: encoding a corpus for pre-training with a byte-level BPE trained by lmforge's
  ``bpe`` stage code: Hugging Face ``tokenizers`` ``encode_batch`` against
  :mod:`lmforge.fastbpe` (what the pretrain stage uses), identical ids asserted, MB/s.

Goals (the data issue): MinHash and Gopher >= 2x datatrove, tokenize >= 3x ``encode_batch``;
``ray-overhead`` has none. With ``--json`` every benchmark run adds rows in the
``lmforge-bench/1`` format (``benchmarks/README.md``) — what ``benchmarks/run.py`` collects.

Needs the ``bench`` extra (``pip install -e '.[bench]'``: datatrove) and ``ray``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(REPO), str(HERE)]  # tests.curation.planted_corpus, benchlib

from benchlib import Row, add_json_arg, emit, machine_info  # noqa: E402

BENCH_FORMAT = "lmforge-bench/1"
# what benchmarks/run.py adds to the command line: the defaults (sized for the figures in
# docs/plugins/data.md) take over ten minutes on 2 cores, mostly datatrove's side
BENCH_ARGS = ["--docs", "5000", "--copies", "100", "--gopher-docs", "1000",
              "--tokenize-docs", "3000"]


# --- shared ------------------------------------------------------------------------------------
def planted_files(root: Path, n_base: int, copies: int, files: int) -> tuple[Any, Path]:
    """The planted corpus written as ``files`` JSON Lines files (documents dealt round-robin
    would split base and copy across files: contiguous slices keep read order)."""
    from tests.curation.planted_corpus import planted_corpus

    t = time.perf_counter()
    planted = planted_corpus(n_base=n_base, copies_per_level=copies)
    print(f"corpus: {len(planted.docs)} documents ({len(planted.pairs)} planted copies), "
          f"made in {time.perf_counter() - t:.1f} s")
    folder = root / "input"
    folder.mkdir(parents=True)
    per = -(-len(planted.docs) // files)
    for i in range(files):
        with open(folder / f"part-{i:03d}.jsonl", "w", encoding="utf-8") as fh:
            for k, text in enumerate(planted.docs[i * per:(i + 1) * per]):
                fh.write(json.dumps({"text": text, "id": str(i * per + k)}) + "\n")
    return planted, folder


def recall_table(planted: Any, kept: set[str]) -> dict[str, tuple[int, float]]:
    """Per similarity bin: planted copies, and the fraction removed (its base kept)."""
    bins = ((0.25, 0.4), (0.45, 0.55), (0.55, 0.65), (0.65, 0.75), (0.75, 0.85), (0.85, 1.01))
    out = {}
    for lo, hi in bins:
        pairs = [(b, c) for b, c, j in planted.pairs if lo <= j < hi]
        removed = [planted.docs[c] not in kept and planted.docs[b] in kept for b, c in pairs]
        out[f"{lo:.2f}-{min(hi, 1.0):.2f}"] = (len(pairs), sum(removed) / max(1, len(pairs)))
    return out


def run_curate(folder: Path, run_dir: Path, executor: dict[str, Any] | None, workers: int
               ) -> tuple[float, set[str], dict[str, Any]]:
    """lmforge's curate stage with MinHash dedup; (seconds, kept texts, metrics)."""
    import pyarrow.parquet as pq

    import lmforge_data.plugin
    from lmforge.testing import plugin_manager, run_spec

    config: dict[str, Any] = {
        "sources": [{"type": "jsonl", "path": str(folder / "*.jsonl")}],
        "dedup": {"type": "minhash", "ngram": 5, "bands": 14, "rows": 8},
        "heldout_fraction": 0.0, "num_proc": workers, "partition_bytes": 1}
    if executor is not None:
        config["executor"] = executor
    spec = {"name": "bench", "stages": [{"id": "corpus", "kind": "data", "plugin": "curate",
                                         "config": config}]}
    pm = plugin_manager(lmforge_data.plugin)
    t = time.perf_counter()
    result = run_spec(spec, pm, run_dir)
    seconds = time.perf_counter() - t
    out = run_dir / "corpus" / "outputs" / "dataset" / "train"
    kept = {t for f in sorted(out.glob("*.parquet")) for t in pq.read_table(f)["text"].to_pylist()}
    return seconds, kept, result.stages[0].metrics


def _xxhash64_of_str(data: str | bytes) -> int:
    import xxhash

    return xxhash.xxh64_intdigest(data.encode("utf-8") if isinstance(data, str) else data)


def run_datatrove(folder: Path, work: Path, workers: int, tasks: int) -> tuple[float, set[str]]:
    """datatrove's MinHash pipeline (its documented four steps); (seconds, kept texts)."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    cfg = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1)
    logs = str(work / "logs")
    signature = MinhashDedupSignature(str(work / "sigs"), config=cfg)
    # datatrove 0.10 hands str to xxhash, which the installed xxhash (4.1) refuses: encode
    # to UTF-8 first, so datatrove runs its default (xxhash64) shingle hashing
    signature._hash_func = _xxhash64_of_str
    stage1 = LocalPipelineExecutor(
        pipeline=[JsonlReader(str(folder)), signature],
        tasks=tasks, workers=workers, logging_dir=f"{logs}/1")
    stage2 = LocalPipelineExecutor(
        pipeline=[MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=cfg)],
        tasks=cfg.num_buckets, workers=workers, logging_dir=f"{logs}/2", depends=stage1)
    stage3 = LocalPipelineExecutor(
        pipeline=[MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=cfg)],
        tasks=1, workers=1, logging_dir=f"{logs}/3", depends=stage2)
    stage4 = LocalPipelineExecutor(
        pipeline=[JsonlReader(str(folder)), MinhashDedupFilter(str(work / "remove")),
                  JsonlWriter(str(work / "out"), compression=None)],
        tasks=tasks, workers=workers, logging_dir=f"{logs}/4", depends=stage3)
    t = time.perf_counter()
    stage4.run()
    seconds = time.perf_counter() - t
    kept = set()
    for f in sorted((work / "out").glob("*.jsonl")):
        kept |= {json.loads(line)["text"] for line in f.read_text().splitlines() if line}
    return seconds, kept


def signature_cpu(docs: list[str]) -> tuple[float, float]:
    """CPU seconds per document of the signature step alone (shingles, permutations, band
    keys), in this process: lmforge's vs datatrove's (which includes its word tokenizer).
    Independent of other load on the machine, unlike the wall-clock figures."""
    sys.path.insert(0, str(REPO / "plugins"))
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    from lmforge_data.dedup.minhash import MinHashDedup
    from lmforge_data.records import normalize

    ours = MinHashDedup(ngram=5, bands=14, rows=8)
    peer = MinhashDedupSignature(tempfile.mkdtemp(prefix="bench-sig-"),
                                 config=MinhashConfig(n_grams=5, num_buckets=14,
                                                      hashes_per_bucket=8))
    peer._hash_func = _xxhash64_of_str
    ours.keys([normalize(d) for d in docs[:8]], [])
    peer.get_signature(peer.get_shingles(docs[0]))
    t = time.process_time()
    ours.keys([normalize(d) for d in docs], [])
    mine = (time.process_time() - t) / len(docs)
    t = time.process_time()
    for d in docs:
        peer.get_signature(peer.get_shingles(d))
    return mine, (time.process_time() - t) / len(docs)


# --- benchmarks ----------------------------------------------------------------------------------
def bench_minhash(args: argparse.Namespace) -> list[Row]:
    root = Path(tempfile.mkdtemp(prefix="bench-minhash-"))
    try:
        planted, folder = planted_files(root, args.docs, args.copies, args.files)
        n = len(planted.docs)
        ours_s, ours_kept, metrics = run_curate(folder, root / "lmforge", None, args.workers)
        peer_s, peer_kept = run_datatrove(folder, root / "datatrove", args.workers, args.files)
        ours_r, peer_r = recall_table(planted, ours_kept), recall_table(planted, peer_kept)
        print(f"\nMinHash dedup, {n} documents, {args.workers} workers, 5-grams, 14 bands x 8 "
              f"rows")
        print(f"{'similarity':>11}  {'copies':>6}  {'lmforge':>8}  {'datatrove':>9}  "
              f"(fraction of planted copies removed)")
        for k in ours_r:
            print(f"{k:>11}  {ours_r[k][0]:>6}  {ours_r[k][1]:>8.3f}  {peer_r[k][1]:>9.3f}")
        unrelated = set(planted.docs) - {planted.docs[c] for _, c, _ in planted.pairs}
        print(f"unrelated documents removed: lmforge {len(unrelated - ours_kept)}, "
              f"datatrove {len(unrelated - peer_kept)}; documents kept: lmforge "
              f"{len(ours_kept)}, datatrove {len(peer_kept)}")
        print(f"lmforge   {ours_s:7.2f} s  {n / ours_s:9.0f} docs/s  "
              f"(clusters {metrics.get('dedup_clusters')}, {metrics.get('executor')})")
        print(f"datatrove {peer_s:7.2f} s  {n / peer_s:9.0f} docs/s")
        print(f"ratio (lmforge / datatrove docs/s): {peer_s / ours_s:.2f}x")
        mine, theirs = signature_cpu(planted.docs[:500])
        print(f"signature step alone, CPU time per document: lmforge {mine * 1e3:.3f} ms, "
              f"datatrove {theirs * 1e3:.3f} ms ({theirs / mine:.1f}x)")
        worst = max(abs(ours_r[k][1] - peer_r[k][1]) for k in ours_r if ours_r[k][0])
        return [Row(name=f"MinHash dedup end to end, {n} docs, {args.workers} workers",
                    unit="docs/s", ours=n / ours_s, peer=n / peer_s,
                    peer_name=f"datatrove {_version('datatrove')}", goal=2.0, samples=1,
                    notes=f"recall per similarity bin within {worst:.3f} of datatrove's; "
                          f"signature CPU/doc {theirs / mine:.1f}x")]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_ray_overhead(args: argparse.Namespace) -> list[Row]:
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        planted, folder = planted_files(root, args.docs, args.copies, args.files)
        n = len(planted.docs)
        local_s, local_kept, _ = run_curate(folder, root / "local", None, args.workers)
        ray_s, ray_kept, m = run_curate(folder, root / "ray",
                                        {"type": "ray", "num_cpus": args.workers}, args.workers)
        assert ray_kept == local_kept, "the ray executor kept other documents"
        print(f"\ncurate with MinHash dedup, {n} documents, {args.workers} CPUs, one machine")
        print(f"local executor  {local_s:7.2f} s  {n / local_s:9.0f} docs/s")
        print(f"ray executor    {ray_s:7.2f} s  {n / ray_s:9.0f} docs/s  ({m.get('executor')}, "
              f"Ray start-up included)")
        print(f"Ray overhead on one machine: {ray_s - local_s:+.2f} s "
              f"({ray_s / local_s:.2f}x the local time)")
        return [Row(name=f"curate (MinHash) on the ray executor, {n} docs, {args.workers} CPUs",
                    unit="docs/s", ours=n / ray_s, peer=n / local_s,
                    peer_name="lmforge local executor", samples=1,
                    notes="the cost of Ray on one machine, start-up included; same documents kept")]
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- gopher and tokenize ---------------------------------------------------------------------
def machine_documents(limit: int, max_chars: int = 6000) -> list[str]:
    """Documents from this machine's text files (plain or gzip), each cut into pieces of
    about ``max_chars`` characters at paragraph boundaries; at most ``limit``."""
    import glob
    import gzip

    docs: list[str] = []
    paths = sorted(glob.glob("/usr/share/doc/**/*", recursive=True)) + sorted(
        glob.glob("/usr/share/common-licenses/*"))
    for path in paths:
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError, EOFError):
            continue
        piece: list[str] = []
        size = 0
        for para in text.split("\n\n"):
            piece.append(para)
            size += len(para)
            if size >= max_chars:
                docs.append("\n\n".join(piece))
                piece, size = [], 0
        if size > 200:
            docs.append("\n\n".join(piece))
        if len(docs) >= limit:
            break
    return docs[:limit]


_PEER: Any = None


def _datatrove_verdict(text: str) -> str | None:
    """datatrove's drop reason, ``None`` when both filters keep the document."""
    global _PEER
    if _PEER is None:
        from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

        _PEER = (GopherRepetitionFilter(), GopherQualityFilter())
    from datatrove.data import Document

    doc = Document(text=text, id="0")
    for f in _PEER:
        verdict = f.filter(doc)
        if verdict is not True and not verdict[0]:
            return verdict[1] if isinstance(verdict, tuple) else "dropped"
    return None


def _lmforge_verdict(text: str) -> str | None:
    """lmforge's drop reason (its first failing check), ``None`` when kept."""
    from lmforge_data.filters.gopher import GopherFilter

    global _PEER
    if _PEER is None:
        _PEER = GopherFilter()
    return _PEER.failed_check(text)


def _timed_map(fn: Callable[[str], Any], docs: list[str], workers: int) -> tuple[float, list]:
    import multiprocessing as mp

    t = time.perf_counter()
    with mp.get_context("spawn").Pool(workers) as pool:
        out = pool.map(fn, docs, chunksize=64)
    return time.perf_counter() - t, out


def bench_gopher(args: argparse.Namespace) -> list[Row]:
    docs = machine_documents(args.gopher_docs)
    mb = sum(len(d.encode()) for d in docs) / 1e6
    print(f"corpus: {len(docs)} documents, {mb:.1f} MB from /usr/share/doc and licenses")
    t_ours, ours = _timed_map(_lmforge_verdict, docs, args.workers)
    t_peer, peer = _timed_map(_datatrove_verdict, docs, args.workers)
    differ = Counter((a, b) for a, b in zip(ours, peer) if (a is None) != (b is None))
    same = 1 - sum(differ.values()) / len(docs)
    print(f"lmforge gopher:   {len(docs) / t_ours:9.1f} docs/s  (kept {ours.count(None)})")
    print(f"datatrove 0.10:   {len(docs) / t_peer:9.1f} docs/s  (kept {peer.count(None)})")
    print(f"ratio: {t_peer / t_ours:.2f}x  (goal >= 2x); same decision on {same:.2%} of "
          f"documents (goal >= 99%)")
    for (a, b), n in differ.most_common(8):
        print(f"  {n:5d} documents: lmforge {a or 'keeps'}, datatrove {b or 'keeps'}")
    return [Row(name=f"Gopher quality + repetition filter, {len(docs)} docs ({mb:.1f} MB), "
                     f"{args.workers} workers",
                unit="docs/s", ours=len(docs) / t_ours, peer=len(docs) / t_peer,
                peer_name=f"datatrove {_version('datatrove')} Gopher filters", goal=2.0,
                samples=1, notes=f"same decision on {same:.2%} of documents")]


def bench_tokenize(args: argparse.Namespace) -> list[Row]:
    import tokenizers

    from lmforge.fastbpe import fast_encoder
    from lmforge_tokenizers.bpe import train_bpe
    from lmforge_tokenizers.config import BPEConfig

    docs = machine_documents(args.tokenize_docs)
    half = len(docs) // 2
    cfg = BPEConfig(vocab_size=args.vocab)
    tok = train_bpe(iter([docs[i:i + 256] for i in range(0, half, 256)]), cfg)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        tok.save(str(path))
        hf = tokenizers.Tokenizer.from_file(str(path))
        fast = fast_encoder(path, threads=args.workers)
        if fast is None:
            raise SystemExit("lmforge.fastbpe does not take this tokenizer")
        test = docs[half:]
        mb = sum(len(d.encode()) for d in test) / 1e6
        t = time.perf_counter()
        theirs = [e.ids for e in hf.encode_batch(test, add_special_tokens=False)]
        t_hf = time.perf_counter() - t
        t = time.perf_counter()
        ours = fast.encode_batch(test)
        t_fast = time.perf_counter() - t
    bad = sum(a != b for a, b in zip(ours, theirs))
    assert bad == 0, f"{bad} of {len(test)} documents encode differently"
    print(f"corpus: {len(test)} documents, {mb:.1f} MB; vocab {hf.get_vocab_size()}; "
          f"ids identical on every document ({sum(map(len, ours))} tokens)")
    print(f"HF tokenizers encode_batch: {mb / t_hf:7.2f} MB/s")
    print(f"lmforge.fastbpe:            {mb / t_fast:7.2f} MB/s")
    print(f"ratio: {t_hf / t_fast:.2f}x  (goal >= 3x)")
    return [Row(name=f"encode for pre-training, byte-level BPE {hf.get_vocab_size()}, "
                     f"{len(test)} docs ({mb:.1f} MB), {args.workers} threads",
                unit="MB/s", ours=mb / t_fast, peer=mb / t_hf,
                peer_name=f"tokenizers {tokenizers.__version__} encode_batch", goal=3.0,
                samples=1, notes="lmforge.fastbpe; ids identical on every document")]


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


BENCHMARKS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "minhash": bench_minhash,
    "ray-overhead": bench_ray_overhead,
    "gopher": bench_gopher,
    "tokenize": bench_tokenize,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append",
                        help="run only this benchmark (repeatable); default: all")
    parser.add_argument("--docs", type=int, default=20_000,
                        help="distinct base documents of the planted corpus (default 20000)")
    parser.add_argument("--copies", type=int, default=200,
                        help="planted copies per similarity level (8 levels; default 200)")
    parser.add_argument("--files", type=int, default=8, help="input files = tasks (default 8)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes for both sides (default 2)")
    parser.add_argument("--gopher-docs", type=int, default=4000,
                        help="gopher: documents (default 4000)")
    parser.add_argument("--tokenize-docs", type=int, default=6000,
                        help="tokenize: documents, half to train the BPE (default 6000)")
    parser.add_argument("--vocab", type=int, default=8192,
                        help="tokenize: BPE vocabulary size (default 8192)")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    rows: list[Row] = []
    for name in args.only or list(BENCHMARKS):
        print(f"=== {name} ===")
        rows += BENCHMARKS[name](args)
    emit(args.json, "curate", rows, {"machine": machine_info(), "args": vars(args) | {
        "json": str(args.json) if args.json else None}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
