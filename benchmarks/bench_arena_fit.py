"""The arena's Bradley–Terry fit against SciPy on the same objective.

Simulated comparisons between ``--models`` candidates with known log-strengths; the same
penalised log-likelihood (ridge 0.01) maximised by ``lmforge_rating.bradley_terry.fit``
(Newton's method, the arena's solver) and by ``scipy.optimize.minimize`` (L-BFGS-B with the
analytic gradient: the usual general-purpose peer), both on the comparisons aggregated per
ordered pair (count and summed share: the likelihood depends on nothing else). Prints the largest difference between the
two solutions (they must agree), the median time of each over --runs and the ratio, and the
time of a full 1000-round bootstrap with the arena's solver.

    python benchmarks/bench_arena_fit.py [--models 8] [--comparisons 20000] [--runs 5] [--json out.json]

No goal. With ``--json`` it writes two rows in the ``lmforge-bench/1`` format: the fit (vs
SciPy) and the bootstrap (no peer).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import Row, add_json_arg, emit, machine_info  # noqa: E402

from lmforge_rating.bradley_terry import Comparisons, fit, ratings  # noqa: E402

BENCH_FORMAT = "lmforge-bench/1"


def simulate(n: int, m: int, seed: int = 0) -> tuple[np.ndarray, Comparisons]:
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 1.0, n)
    i = rng.integers(0, n, m)
    j = (i + rng.integers(1, n, m)) % n
    p = 1.0 / (1.0 + np.exp(-(theta[i] - theta[j])))
    s = (rng.random(m) < p).astype(float)
    return theta, Comparisons(i, j, s)


def scipy_fit(n: int, c: Comparisons, ridge: float) -> np.ndarray:
    # the same aggregation as ours (count and summed share per ordered pair), so the two
    # solvers get the same data
    codes, inverse = np.unique(c.i * n + c.j, return_inverse=True)
    pi, pj = codes // n, codes % n
    w = np.bincount(inverse).astype(float)
    won = np.bincount(inverse, c.s)

    def neg(theta: np.ndarray) -> tuple[float, np.ndarray]:
        d = theta[pi] - theta[pj]
        value = np.sum(won * np.logaddexp(0, -d) + (w - won) * np.logaddexp(0, d)) \
            + 0.5 * ridge * theta @ theta
        r = won - w * 0.5 * (1 + np.tanh(0.5 * d))
        grad = -(np.bincount(pi, r, n) - np.bincount(pj, r, n)) + ridge * theta
        return float(value), grad

    res = minimize(neg, np.zeros(n), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 10_000})
    return res.x


def timed(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--comparisons", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds (default 1000)")
    add_json_arg(ap)
    args = ap.parse_args(argv)
    truth, c = simulate(args.models, args.comparisons)
    t_ours, ours = timed(lambda: fit(args.models, c, 0.01), args.runs)
    t_scipy, theirs = timed(lambda: scipy_fit(args.models, c, 0.01), args.runs)
    diff = float(np.max(np.abs(np.asarray(ours) - np.asarray(theirs))))
    err = float(np.max(np.abs((ours - ours.mean()) - (truth - truth.mean()))))
    print(f"{args.models} candidates, {args.comparisons} comparisons")
    print(f"max |theta_ours - theta_scipy| = {diff:.2e}   max error vs truth = {err:.3f}")
    print(f"Newton (lmforge_rating) {t_ours * 1e3:8.2f} ms")
    print(f"SciPy L-BFGS-B          {t_scipy * 1e3:8.2f} ms   ratio scipy/ours = "
          f"{t_scipy / t_ours:.2f}x")
    if diff > 1e-4:
        raise SystemExit(f"the solutions differ by {diff:.2e}: the comparison is void")
    t_boot, _ = timed(lambda: ratings(args.models, c, rounds=args.rounds, seed=0), 1)
    print(f"{args.rounds}-round bootstrap    {t_boot:8.2f} s")
    scipy_version = sys.modules["scipy"].__version__
    rows = [Row(name=f"Bradley-Terry fit, {args.models} candidates, {args.comparisons} "
                     f"comparisons", unit="ms", ours=t_ours * 1e3, peer=t_scipy * 1e3,
                peer_name=f"SciPy {scipy_version} L-BFGS-B, analytic gradient",
                higher_is_better=False, samples=args.runs,
                notes=f"same objective (ridge 0.01); max |dtheta| {diff:.1e}"),
            Row(name=f"arena ratings with a {args.rounds}-round bootstrap, {args.models} "
                     f"candidates", unit="s", ours=t_boot, higher_is_better=False, samples=1,
                notes="the arena's solver only: no peer")]
    emit(args.json, "arena_fit", rows, {"machine": machine_info(), "args": vars(args) | {
        "json": str(args.json) if args.json else None}})


if __name__ == "__main__":
    main()
