"""Wall time of `lmforge validate` and `lmforge plugins list` against `python -c pass`.

Both commands must stay light (no torch/datasets/wandb imports); goal: under 0.3 s. The
commands run in turn (``pass``, ``plugins list``, ``validate``, repeated ``--runs`` times) so that
load from other processes hits them alike; prints the median wall time of each, its CPU time
(user + system: steadier on a busy machine) and the difference to bare interpreter start-up.
Output goes to a pipe, as in scripts and CI.

    python benchmarks/bench_startup.py [--runs 9] [--json PATH]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from benchlib import Row, add_json_arg, emit  # noqa: E402

BENCH_FORMAT = "lmforge-bench/1"
GOAL_S = 0.3


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--spec", default=str(REPO / "examples/quickstart/pipeline.yaml"))
    add_json_arg(parser)
    args = parser.parse_args(argv)
    py = sys.executable
    cmds = {"python -c pass": [py, "-c", "pass"],
            "lmforge plugins list": [py, "-m", "lmforge", "plugins", "list"],
            "lmforge validate quickstart": [py, "-m", "lmforge", "validate", args.spec]}
    for cmd in cmds.values():  # warm the file cache and __pycache__
        timed(cmd)
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
    for _ in range(args.runs):
        for name, cmd in cmds.items():
            samples[name].append(timed(cmd))
    wall = {k: statistics.median(w for w, _ in v) for k, v in samples.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in samples.items()}
    base = wall["python -c pass"]
    print(f"{'command':32s} {'median s':>9s} {'cpu s':>7s} {'over python':>12s}")
    for name in cmds:
        print(f"{name:32s} {wall[name]:9.3f} {cpu[name]:7.3f} {wall[name] - base:12.3f}")
    rows = [Row(name=f"start-up: {name}", unit="s", ours=wall[name], higher_is_better=False,
                peer_name=f"python -c pass: {base:.3f} s", goal=f"< {GOAL_S} s",
                goal_met=wall[name] < GOAL_S, samples=args.runs,
                notes=f"median wall; CPU {cpu[name]:.3f} s (python -c pass "
                      f"{cpu['python -c pass']:.3f} s)")
            for name in cmds if name != "python -c pass"]
    emit(args.json, "startup", rows, {"wall_s": wall, "cpu_s": cpu, "runs": args.runs})


if __name__ == "__main__":
    main()
