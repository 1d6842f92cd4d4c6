"""Aggregating raters' labels and measuring agreement (pure Python, no heavy import).

Labels are ``"a"``, ``"b"`` or ``"tie"``; a skip is no label.

* **Raw agreement**: over every item rated by at least two raters, the share of pairs of its
  raters who gave the same label, averaged over items (Fleiss' ``P̄``).
* **Fleiss' kappa**: ``(P̄ - P_e) / (1 - P_e)`` with ``P_e = Σ_k p_k²`` and ``p_k`` the share
  of all labels that are ``k``. With a different number of raters per item, each item's
  agreement uses its own count (the usual generalisation; equal to Fleiss' with a constant
  count).
* **Cohen's kappa** of two label sequences: ``(p_o - p_e) / (1 - p_e)``, ``p_o`` the share of
  items labelled the same, ``p_e = Σ_k p1_k p2_k``. ``None`` when undefined (no item, or both
  raters used one and the same label throughout: ``p_e = 1``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

LABELS = ("a", "b", "tie")


def cohen_kappa(x: Sequence[str], y: Sequence[str]) -> float | None:
    if len(x) != len(y):
        raise ValueError("both raters must label the same items")
    n = len(x)
    if n == 0:
        return None
    po = sum(a == b for a, b in zip(x, y)) / n
    cx, cy = Counter(x), Counter(y)
    pe = sum(cx[k] * cy[k] for k in set(cx) | set(cy)) / (n * n)
    if pe >= 1.0:
        return None
    return (po - pe) / (1.0 - pe)


def fleiss_kappa(items: Sequence[Sequence[str]]) -> tuple[float | None, float | None, int]:
    """``(kappa, raw agreement, items used)`` over items with at least two labels."""
    used = [list(labels) for labels in items if len(labels) >= 2]
    if not used:
        return None, None, 0
    per_item = []
    totals: Counter[str] = Counter()
    for labels in used:
        counts = Counter(labels)
        n = len(labels)
        per_item.append(sum(c * (c - 1) for c in counts.values()) / (n * (n - 1)))
        totals.update(counts)
    p_bar = sum(per_item) / len(per_item)
    total = sum(totals.values())
    pe = sum((c / total) ** 2 for c in totals.values())
    kappa = None if pe >= 1.0 else (p_bar - pe) / (1.0 - pe)
    return kappa, p_bar, len(used)


def majority(labels: Sequence[str]) -> str | None:
    """The label most raters gave, or None when two labels share the top count (or none)."""
    if not labels:
        return None
    ranked = Counter(labels).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def agreement_report(labels: Mapping[str, Mapping[str, str]],
                     judge: Mapping[str, str] | None = None,
                     gold: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Agreement among raters, and of their majority with a judge's and with gold labels.

    ``labels``: item -> rater -> label (skips left out). ``judge``/``gold``: item -> label.
    """
    raters = sorted({r for by in labels.values() for r in by})
    kappa, raw, used = fleiss_kappa([list(by.values()) for by in labels.values()])
    pairs = []
    for r1, r2 in combinations(raters, 2):
        common = [i for i, by in labels.items() if r1 in by and r2 in by]
        if not common:
            continue
        x = [labels[i][r1] for i in common]
        y = [labels[i][r2] for i in common]
        pairs.append({"raters": [r1, r2], "items": len(common),
                      "agreement": sum(a == b for a, b in zip(x, y)) / len(common),
                      "cohen_kappa": cohen_kappa(x, y)})
    out: dict[str, Any] = {
        "raters": raters, "items_labelled": len(labels),
        "labels": sum(len(by) for by in labels.values()),
        "items_with_two_or_more": used, "raw_agreement": raw, "fleiss_kappa": kappa,
        "pairs": pairs,
    }
    maj = {i: m for i, by in labels.items() if (m := majority(list(by.values()))) is not None}
    for name, ref in (("judge", judge), ("gold", gold)):
        if ref is None:
            continue
        common = [i for i in maj if i in ref]
        x = [maj[i] for i in common]
        y = [ref[i] for i in common]
        out[f"vs_{name}"] = {
            "items": len(common),
            "agreement": (sum(a == b for a, b in zip(x, y)) / len(common)) if common else None,
            "cohen_kappa": cohen_kappa(x, y),
            # each rater alone against the reference
            "per_rater": {r: _agree([(labels[i][r], ref[i]) for i in labels
                                     if r in labels[i] and i in ref]) for r in raters},
        }
    return out


def _agree(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    if not pairs:
        return {"items": 0, "agreement": None, "cohen_kappa": None}
    x, y = [p[0] for p in pairs], [p[1] for p in pairs]
    return {"items": len(pairs), "agreement": sum(a == b for a, b in pairs) / len(pairs),
            "cohen_kappa": cohen_kappa(x, y)}
