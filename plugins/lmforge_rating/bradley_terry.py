"""Bradley–Terry ratings by maximum likelihood, on the Elo scale, with bootstrap intervals.

Model: candidate ``i`` beats ``j`` with probability ``σ(θ_i - θ_j)``. A comparison is
``(i, j, s)`` with ``s`` the share of the win that goes to ``i``: 1 (``i`` won), 0 (``j`` won),
0.5 (a tie), or a judge's probability that ``i``'s answer is better. :func:`fit` maximises

    Σ_c [s_c log σ(θ_i - θ_j) + (1 - s_c) log σ(θ_j - θ_i)]  -  ridge/2 · Σ_i θ_i²

by Newton's method (the objective is strictly concave: one maximum, quadratic convergence;
a step that does not raise it is halved). The ridge keeps θ finite when a candidate wins or
loses everything and fixes the additive freedom of θ; with a few dozen comparisons per pair
it moves ratings by far less than their intervals.

Elo scale: ``R_i = anchor + 400/ln(10) · (θ_i - θ_ref)`` — a 400-point lead means 10:1 odds —
with ``θ_ref`` the first candidate's (``anchor="first"``) or the mean (``"mean"``).
Intervals: the comparisons are resampled with replacement ``rounds`` times (seeded), each
sample refitted, and the ``(1±confidence)/2`` percentiles of each rating reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ELO_SCALE = 400.0 / math.log(10.0)


@dataclass
class Comparisons:
    """Parallel arrays: ``i``, ``j`` (candidate indices) and ``s`` (``i``'s share of the win)."""

    i: np.ndarray
    j: np.ndarray
    s: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[tuple[int, int, float]]) -> Comparisons:
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
        return cls(arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2])

    def __len__(self) -> int:
        return len(self.s)

    def take(self, index: np.ndarray) -> Comparisons:
        return Comparisons(self.i[index], self.j[index], self.s[index])


def _aggregate(n: int, c: Comparisons) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pairs, inverse, codes)``: the distinct ordered pairs ``(i, j)`` met, as rows of
    ``pairs``; ``inverse`` maps each comparison to its row. The likelihood depends on the data
    only through each row's count and summed share, so the solver works on at most ``n²``
    rows whatever the number of comparisons."""
    codes = c.i * n + c.j
    uniq, inverse = np.unique(codes, return_inverse=True)
    return np.stack([uniq // n, uniq % n], axis=1), inverse, uniq


def _objective(theta: np.ndarray, pi: np.ndarray, pj: np.ndarray, w: np.ndarray,
               won: np.ndarray, ridge: float) -> float:
    d = theta[pi] - theta[pj]
    # log σ(d) = -log(1 + e^{-d}), computed stably
    return float(np.sum(-won * np.logaddexp(0.0, -d) - (w - won) * np.logaddexp(0.0, d))
                 - 0.5 * ridge * np.dot(theta, theta))


def _newton(n: int, pi: np.ndarray, pj: np.ndarray, w: np.ndarray, won: np.ndarray,
            ridge: float, max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Maximise the penalised log-likelihood of rows ``(pi, pj)`` met ``w`` times, ``pi``
    taking ``won`` of the wins."""
    theta = np.zeros(n)
    value = _objective(theta, pi, pj, w, won, ridge)
    diag_i, diag_j, off_ij, off_ji = pi * n + pi, pj * n + pj, pi * n + pj, pj * n + pi
    for _ in range(max_iter):
        d = theta[pi] - theta[pj]
        p = 0.5 * (1.0 + np.tanh(0.5 * d))  # σ(d) without overflow
        r = won - w * p
        grad = np.bincount(pi, r, n) - np.bincount(pj, r, n) - ridge * theta
        h = w * p * (1.0 - p)
        hess = (np.bincount(off_ij, h, n * n) + np.bincount(off_ji, h, n * n)
                - np.bincount(diag_i, h, n * n) - np.bincount(diag_j, h, n * n)
                ).reshape(n, n) - ridge * np.eye(n)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:
            new = theta - t * step
            new_value = _objective(new, pi, pj, w, won, ridge)
            if new_value >= value - 1e-12 or t < 1e-8:
                break
            t *= 0.5
        theta, value = new, new_value
        if np.max(np.abs(t * step)) < tol:
            break
    return theta


def fit(n: int, c: Comparisons, ridge: float = 0.01, max_iter: int = 100,
        tol: float = 1e-10) -> np.ndarray:
    """The maximum-penalised-likelihood log-strengths ``θ`` (shape ``[n]``)."""
    if ridge <= 0:
        raise ValueError("ridge must be positive")
    pairs, inverse, _ = _aggregate(n, c)
    w = np.bincount(inverse, minlength=len(pairs)).astype(np.float64)
    won = np.bincount(inverse, c.s, len(pairs))
    return _newton(n, pairs[:, 0], pairs[:, 1], w, won, ridge, max_iter, tol)


def to_elo(theta: np.ndarray, anchor: str = "first", anchor_rating: float = 1000.0
           ) -> np.ndarray:
    ref = theta[0] if anchor == "first" else float(np.mean(theta))
    return anchor_rating + ELO_SCALE * (theta - ref)


@dataclass
class Ratings:
    rating: np.ndarray  # [n]
    low: np.ndarray | None  # [n] interval bounds, None without bootstrap
    high: np.ndarray | None
    rounds: int
    confidence: float


def ratings(n: int, c: Comparisons, *, ridge: float = 0.01, anchor: str = "first",
            anchor_rating: float = 1000.0, rounds: int = 1000, confidence: float = 0.95,
            seed: int = 0) -> Ratings:
    """Elo-scale ratings of ``n`` candidates with bootstrap intervals (see the module doc)."""
    if len(c) == 0:
        raise ValueError("no comparison to fit ratings on")
    point = to_elo(fit(n, c, ridge), anchor, anchor_rating)
    if rounds <= 0:
        return Ratings(point, None, None, 0, confidence)
    rng = np.random.default_rng(seed)
    samples = np.empty((rounds, n))
    pairs, inverse, _ = _aggregate(n, c)
    k = len(pairs)
    for b in range(rounds):
        idx = rng.integers(0, len(c), len(c))
        rows = inverse[idx]
        w = np.bincount(rows, minlength=k).astype(np.float64)
        won = np.bincount(rows, c.s[idx], k)
        met = w > 0
        theta = _newton(n, pairs[met, 0], pairs[met, 1], w[met], won[met], ridge)
        samples[b] = to_elo(theta, anchor, anchor_rating)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha], axis=0)
    return Ratings(point, low, high, rounds, confidence)


def win_matrix(n: int, c: Comparisons) -> tuple[np.ndarray, np.ndarray]:
    """``(rate, count)``: ``rate[i, j]`` is ``i``'s mean share of the win against ``j`` (NaN
    where they never met), ``count[i, j]`` how many comparisons they had."""
    wins = np.zeros((n, n))
    count = np.zeros((n, n))
    np.add.at(wins, (c.i, c.j), c.s)
    np.add.at(wins, (c.j, c.i), 1.0 - c.s)
    np.add.at(count, (c.i, c.j), 1.0)
    np.add.at(count, (c.j, c.i), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(count > 0, wins / np.maximum(count, 1), np.nan)
    return rate, count


def expected_win(r_i: float, r_j: float) -> float:
    """Probability that a candidate rated ``r_i`` beats one rated ``r_j`` on the Elo scale."""
    return 1.0 / (1.0 + 10.0 ** ((r_j - r_i) / 400.0))
