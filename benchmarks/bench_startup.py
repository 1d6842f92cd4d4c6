"""Wall time of `lmforge validate` and `lmforge plugins list` against `python -c pass`.

Both commands must stay light (no torch/datasets/wandb imports); target: under 0.5 s here.
Prints the median of N runs of each and the difference to bare interpreter start-up.

    python benchmarks/bench_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--spec", default=str(REPO / "examples/quickstart/pipeline.yaml"))
    args = parser.parse_args()
    py = sys.executable
    base = timed([py, "-c", "pass"], args.runs)
    rows = [("python -c pass", base)]
    rows.append(("lmforge plugins list", timed([py, "-m", "lmforge", "plugins", "list"], args.runs)))
    rows.append(("lmforge validate quickstart", timed([py, "-m", "lmforge", "validate", args.spec],
                                                      args.runs)))
    print(f"{'command':32s} {'median s':>9s} {'over python':>12s}")
    for name, t in rows:
        print(f"{name:32s} {t:9.3f} {t - base:12.3f}")


if __name__ == "__main__":
    main()
