"""What verification costs: re-checking a run directory's outputs before reuse and its
checkpoints before resume, and hashing throughput to extrapolate to large models.

For every complete stage of RUN_DIR: the size of its outputs and the time of
``changed_outputs`` at ``--verify hash`` (every file re-hashed) and ``--verify size``; for every
checkpoint: the time of ``CheckpointStore.verify`` (always a full hash). Then sha256 throughput
on a scratch file of --mib MiB, and what a full re-hash would take for bf16 weights of 1B, 7B
and 70B parameters at that speed. Times are the median of --runs (the file cache is warm after
the first: on a cold cache the disk's read speed bounds it instead).

    python benchmarks/bench_verify.py RUN_DIR [--runs 3] [--mib 512]

Make RUN_DIR with e.g. ``lmforge run examples/quickstart/pipeline.yaml`` (the artifacts do not
depend on the number of steps: ``pretrain.loop.steps=1 ...`` gives the same sizes quickly).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from lmforge.checkpoint import CheckpointStore
from lmforge.fsutil import hash_file
from lmforge.runner import changed_outputs, read_manifest


def timed(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=512, help="scratch file for throughput")
    args = parser.parse_args()

    print(f"{'stage outputs':<22} {'MiB':>8} {'files':>6} {'hash s':>8} {'size s':>8}")
    total = [0, 0, 0.0, 0.0]
    for stage_dir in sorted(p for p in args.run_dir.iterdir() if p.is_dir()):
        manifest = read_manifest(stage_dir)
        if not manifest or manifest.get("status") != "complete":
            continue
        outputs = stage_dir / "outputs"
        mib = size_of(outputs) / 2**20
        files = sum(len(o.get("files", {})) for o in manifest["outputs"].values())
        h = timed(lambda: changed_outputs(stage_dir, manifest, "hash"), args.runs)
        s = timed(lambda: changed_outputs(stage_dir, manifest, "size"), args.runs)
        assert changed_outputs(stage_dir, manifest, "hash") is None, stage_dir
        print(f"{stage_dir.name:<22} {mib:>8.2f} {files:>6} {h:>8.4f} {s:>8.4f}")
        total = [total[0] + mib, total[1] + files, total[2] + h, total[3] + s]
    print(f"{'all (before reuse)':<22} {total[0]:>8.2f} {total[1]:>6} {total[2]:>8.4f} "
          f"{total[3]:>8.4f}")

    print(f"\n{'checkpoint':<34} {'MiB':>8} {'verify s':>9}")
    for stage_dir in sorted(p for p in args.run_dir.iterdir() if p.is_dir()):
        store = CheckpointStore(stage_dir / "checkpoints")
        for ckpt in store.all():
            t = timed(lambda: store.verify(ckpt), args.runs)
            print(f"{stage_dir.name + '/' + ckpt.path.name:<34} {size_of(ckpt.path) / 2**20:>8.2f} "
                  f"{t:>9.4f}")

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "scratch.bin"
        with open(scratch, "wb") as fh:
            for _ in range(args.mib):
                fh.write(os.urandom(2**20))
        t = timed(lambda: hash_file(scratch), args.runs)
    speed = args.mib / t
    print(f"\nsha256: {speed:.0f} MiB/s (warm cache, one core)")
    for name, params in (("1B", 1e9), ("7B", 7e9), ("70B", 70e9)):
        gib = params * 2 / 2**30
        print(f"  {name} bf16 weights ({gib:.0f} GiB): {gib * 1024 / speed:.0f} s per copy "
              f"re-hashed (a pipeline holds one per training stage and one per export)")


if __name__ == "__main__":
    main()
