"""Agreement between raters on hand-computed cases."""

from __future__ import annotations

import pytest

from lmforge_rating.agreement import agreement_report, cohen_kappa, fleiss_kappa, majority


def test_cohen_kappa_by_hand() -> None:
    # p_o = 3/4; rater 1: a .5 b .5; rater 2: a .25 b .75; p_e = .125 + .375 = .5
    assert cohen_kappa(["a", "a", "b", "b"], ["a", "b", "b", "b"]) == pytest.approx(0.5)
    assert cohen_kappa(["a", "b"], ["a", "b"]) == pytest.approx(1.0)
    # complete disagreement with balanced labels: p_o 0, p_e .5 -> -1
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # one label only: undefined
    assert cohen_kappa([], []) is None


def test_fleiss_kappa_by_hand() -> None:
    # items: (a,a,a) (a,a,b) (b,b,tie): P_i = 1, 1/3, 1/3 -> P̄ = 5/9
    # p_a = 5/9, p_b = 3/9, p_tie = 1/9 -> P_e = 35/81; kappa = (45-35)/(81-35) = 10/46
    kappa, raw, used = fleiss_kappa([["a", "a", "a"], ["a", "a", "b"], ["b", "b", "tie"],
                                     ["a"]])
    assert used == 3
    assert raw == pytest.approx(5 / 9)
    assert kappa == pytest.approx(10 / 46)


def test_fleiss_equals_cohen_like_agreement_for_perfect_raters() -> None:
    kappa, raw, _ = fleiss_kappa([["a", "a"], ["b", "b"], ["tie", "tie"]])
    assert raw == 1.0 and kappa == pytest.approx(1.0)


def test_majority() -> None:
    assert majority(["a", "a", "b"]) == "a"
    assert majority(["a", "b"]) is None
    assert majority([]) is None


def test_report_with_judge_and_gold() -> None:
    labels = {"1": {"ana": "a", "bo": "a"}, "2": {"ana": "b", "bo": "a"},
              "3": {"ana": "b", "bo": "b"}, "4": {"ana": "a"}}
    judge = {"1": "a", "2": "b", "3": "a", "4": "a"}
    r = agreement_report(labels, judge=judge, gold={"1": "a", "3": "b"})
    assert r["raters"] == ["ana", "bo"]
    assert r["raw_agreement"] == pytest.approx(2 / 3)
    (pair,) = r["pairs"]
    assert pair["items"] == 3 and pair["agreement"] == pytest.approx(2 / 3)
    # ana: a b b ; bo: a a b -> p_o 2/3, p_e = (1/3*2/3 + 2/3*1/3) = 4/9 -> (2/3-4/9)/(5/9) = .4
    assert pair["cohen_kappa"] == pytest.approx(0.4)
    # majority: 1 a, 2 none (split), 3 b, 4 a; vs judge on 1, 3, 4: a=a, b!=a, a=a
    assert r["vs_judge"]["items"] == 3
    assert r["vs_judge"]["agreement"] == pytest.approx(2 / 3)
    assert r["vs_judge"]["per_rater"]["ana"]["agreement"] == pytest.approx(3 / 4)
    assert r["vs_gold"]["agreement"] == 1.0
