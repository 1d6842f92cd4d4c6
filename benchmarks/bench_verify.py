"""What verification costs: re-checking a run directory's outputs before reuse and its
checkpoints before resume, and hashing throughput to extrapolate to large models.

For every complete stage of RUN_DIR: the size of its outputs and the time of
``changed_outputs`` at ``--verify hash`` (every file re-hashed) and ``--verify size``; for every
checkpoint: the time of ``CheckpointStore.verify`` (always a full hash). Then sha256 throughput
on a scratch file of --mib MiB, and what a full re-hash would take for bf16 weights of 1B, 7B
and 70B parameters at that speed, against coreutils ``sha256sum`` on the same file (the same
digest asserted): the peer. Times are the median of --runs (the file cache is warm after
the first: on a cold cache the disk's read speed bounds it instead).

    python benchmarks/bench_verify.py [RUN_DIR] [--runs 3] [--mib 512] [--json out.json]

Without RUN_DIR (as ``benchmarks/run.py`` runs it) only the hashing throughput is measured.
No goal. With ``--json`` the rows (sha256 MB/s vs ``sha256sum``; with RUN_DIR the re-check
times, no peer) are written in the ``lmforge-bench/1`` format.

Make RUN_DIR with e.g. ``lmforge run examples/quickstart/pipeline.yaml`` (the artifacts do not
depend on the number of steps: ``pretrain.loop.steps=1 ...`` gives the same sizes quickly).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import Row, add_json_arg, emit, machine_info  # noqa: E402

from lmforge.checkpoint import CheckpointStore
from lmforge.fsutil import hash_file
from lmforge.runner import changed_outputs, read_manifest

BENCH_FORMAT = "lmforge-bench/1"


def timed(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sha256sum(path: Path) -> str:
    """The peer: coreutils ``sha256sum``'s digest of ``path``."""
    out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def check_run_dir(run_dir: Path, runs: int) -> list[Row]:
    """Re-check times of ``run_dir``'s complete stages and checkpoints (printed; rows: totals)."""
    print(f"{'stage outputs':<22} {'MiB':>8} {'files':>6} {'hash s':>8} {'size s':>8}")
    total = [0, 0, 0.0, 0.0]
    for stage_dir in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        manifest = read_manifest(stage_dir)
        if not manifest or manifest.get("status") != "complete":
            continue
        outputs = stage_dir / "outputs"
        mib = size_of(outputs) / 2**20
        files = sum(len(o.get("files", {})) for o in manifest["outputs"].values())
        h = timed(lambda: changed_outputs(stage_dir, manifest, "hash"), runs)
        s = timed(lambda: changed_outputs(stage_dir, manifest, "size"), runs)
        assert changed_outputs(stage_dir, manifest, "hash") is None, stage_dir
        print(f"{stage_dir.name:<22} {mib:>8.2f} {files:>6} {h:>8.4f} {s:>8.4f}")
        total = [total[0] + mib, total[1] + files, total[2] + h, total[3] + s]
    print(f"{'all (before reuse)':<22} {total[0]:>8.2f} {total[1]:>6} {total[2]:>8.4f} "
          f"{total[3]:>8.4f}")

    print(f"\n{'checkpoint':<34} {'MiB':>8} {'verify s':>9}")
    ckpt_mib, ckpt_s, ckpts = 0.0, 0.0, 0
    for stage_dir in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        store = CheckpointStore(stage_dir / "checkpoints")
        for ckpt in store.all():
            t = timed(lambda: store.verify(ckpt), runs)
            mib = size_of(ckpt.path) / 2**20
            print(f"{stage_dir.name + '/' + ckpt.path.name:<34} {mib:>8.2f} {t:>9.4f}")
            ckpt_mib, ckpt_s, ckpts = ckpt_mib + mib, ckpt_s + t, ckpts + 1
    rows = [Row(name=f"re-check of every complete stage's outputs, --verify {mode} "
                     f"({total[0]:.1f} MiB, {total[1]} files)", unit="s", ours=sec,
                higher_is_better=False, samples=runs, notes=f"run folder {run_dir.name}")
            for mode, sec in (("hash", total[2]), ("size", total[3]))]
    if ckpts:
        rows.append(Row(name=f"verify of {ckpts} checkpoints ({ckpt_mib:.1f} MiB)", unit="s",
                        ours=ckpt_s, higher_is_better=False, samples=runs,
                        notes="CheckpointStore.verify: a full hash"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?", default=None,
                        help="a run folder to re-check (default: only measure hashing speed)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=512, help="scratch file for throughput")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    if args.run_dir is not None and not args.run_dir.is_dir():
        parser.error(f"{args.run_dir} is not a folder: give a run folder (lmforge run ...)")

    rows = check_run_dir(args.run_dir, args.runs) if args.run_dir is not None else []
    peer = shutil.which("sha256sum")

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "scratch.bin"
        with open(scratch, "wb") as fh:
            for _ in range(args.mib):
                fh.write(os.urandom(2**20))
        t = timed(lambda: hash_file(scratch), args.runs)
        t_peer = None
        if peer:
            assert sha256sum(scratch) == hash_file(scratch), "sha256sum disagrees"
            t_peer = timed(lambda: sha256sum(scratch), args.runs)
    speed = args.mib / t
    print(f"\nsha256: {speed:.0f} MiB/s (warm cache, one core)"
          + (f"; coreutils sha256sum {args.mib / t_peer:.0f} MiB/s" if t_peer else ""))
    for name, params in (("1B", 1e9), ("7B", 7e9), ("70B", 70e9)):
        gib = params * 2 / 2**30
        print(f"  {name} bf16 weights ({gib:.0f} GiB): {gib * 1024 / speed:.0f} s per copy "
              f"re-hashed (a pipeline holds one per training stage and one per export)")
    mb = args.mib * 2**20 / 1e6
    rows.append(Row(name=f"sha256 of a {args.mib} MiB file (warm cache)", unit="MB/s",
                    ours=mb / t, peer=mb / t_peer if t_peer else None,
                    peer_name="coreutils sha256sum" if t_peer else "sha256sum not installed",
                    samples=args.runs,
                    notes="lmforge.fsutil.hash_file (hashlib), what --verify hash and "
                          "checkpoint verify use; the peer's time includes its process start"))
    emit(args.json, "verify", rows, {"machine": machine_info(), "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}})


if __name__ == "__main__":
    main()
