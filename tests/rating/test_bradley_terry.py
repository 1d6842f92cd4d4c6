"""Bradley–Terry fitting: known strengths recovered from simulated votes, intervals that cover
the truth about as often as they claim, hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmforge_rating.bradley_terry import (
    ELO_SCALE,
    Comparisons,
    expected_win,
    fit,
    ratings,
    to_elo,
    win_matrix,
)

TRUE = np.array([0.0, 0.5, 1.0, -0.7])  # log-strengths; Elo differences = ELO_SCALE * these


def simulate(rng: np.random.Generator, per_pair: int, ties: float = 0.0) -> Comparisons:
    rows = []
    n = len(TRUE)
    for i in range(n):
        for j in range(i + 1, n):
            p = 1.0 / (1.0 + math.exp(-(TRUE[i] - TRUE[j])))
            for _ in range(per_pair):
                if rng.random() < ties:
                    rows.append((i, j, 0.5))
                else:
                    rows.append((i, j, 1.0 if rng.random() < p else 0.0))
    return Comparisons.of(rows)


def test_two_candidates_by_hand() -> None:
    # 3 wins of 4: the MLE of θ_0 - θ_1 is log(3/1) (the ridge moves it by about 1e-3)
    c = Comparisons.of([(0, 1, 1.0)] * 3 + [(0, 1, 0.0)])
    theta = fit(2, c, ridge=1e-6)
    assert theta[0] - theta[1] == pytest.approx(math.log(3), rel=1e-4)
    elo = to_elo(theta)
    assert elo[0] == 1000.0
    assert elo[1] == pytest.approx(1000 - 400 * math.log10(3), rel=1e-4)
    assert expected_win(elo[0], elo[1]) == pytest.approx(0.75, rel=1e-4)
    # a tie is half a win: 2 wins, 2 ties, 0 losses -> share 3/4 again
    c2 = Comparisons.of([(0, 1, 1.0)] * 2 + [(0, 1, 0.5)] * 2)
    assert fit(2, c2, ridge=1e-6)[0] - fit(2, c2, ridge=1e-6)[1] == pytest.approx(math.log(3),
                                                                                   rel=1e-4)


def test_all_wins_stay_finite_with_the_ridge() -> None:
    c = Comparisons.of([(0, 1, 1.0)] * 10)
    theta = fit(2, c, ridge=0.01)
    assert np.all(np.isfinite(theta)) and theta[0] - theta[1] > 5
    # the penalised optimum: gradient zero -> 10 * (1 - σ(2t)) = 0.01 t with θ = ±t
    t = theta[0]
    assert 10 * (1 - 1 / (1 + math.exp(-2 * t))) == pytest.approx(0.01 * t, rel=1e-6)


def test_known_strengths_are_recovered() -> None:
    c = simulate(np.random.default_rng(1), per_pair=600, ties=0.1)
    theta = fit(4, c, ridge=0.01)
    # standard error of a difference here is about 0.06: allow 3 of them
    assert np.max(np.abs((theta - theta[0]) - (TRUE - TRUE[0]))) < 0.18
    r = ratings(4, c, rounds=200, seed=3)
    want = 1000 + ELO_SCALE * (TRUE - TRUE[0])
    assert np.max(np.abs(r.rating - want)) < 0.18 * ELO_SCALE
    assert list(np.argsort(r.rating)) == list(np.argsort(TRUE))
    assert np.all(r.low <= r.rating) and np.all(r.rating <= r.high)
    assert r.low[0] == r.high[0] == 1000.0  # the anchor has no spread


def test_bootstrap_intervals_cover_the_truth_about_as_often_as_claimed() -> None:
    rng = np.random.default_rng(7)
    want = 1000 + ELO_SCALE * (TRUE - TRUE[0])
    hits = total = 0
    for k in range(30):
        c = simulate(rng, per_pair=60)
        r = ratings(4, c, rounds=200, seed=k, confidence=0.9)
        for m in range(1, 4):
            total += 1
            hits += bool(r.low[m] <= want[m] <= r.high[m])
    coverage = hits / total
    assert 0.78 <= coverage <= 0.99, coverage  # 90% intervals, 90 chances


def test_win_matrix_by_hand() -> None:
    c = Comparisons.of([(0, 1, 1.0), (0, 1, 0.5), (1, 0, 1.0), (2, 0, 0.25)])
    rate, count = win_matrix(3, c)
    # 0 vs 1: shares for 0 are 1, 0.5, 0 (the third row is 1 beating 0)
    assert rate[0, 1] == pytest.approx(0.5) and rate[1, 0] == pytest.approx(0.5)
    assert count[0, 1] == 3 and count[0, 2] == 1
    assert rate[2, 0] == pytest.approx(0.25) and rate[0, 2] == pytest.approx(0.75)
    assert math.isnan(rate[1, 2]) and count[1, 2] == 0


def test_mean_anchor() -> None:
    theta = np.array([0.0, 1.0, 2.0])
    assert to_elo(theta, "mean", 1500).mean() == pytest.approx(1500)
    with pytest.raises(ValueError, match="no comparison"):
        ratings(2, Comparisons.of([]))
