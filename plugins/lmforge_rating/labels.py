"""Turning a vote log into labels per item, and reading a judge's labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmforge import StageInputError
from lmforge_rating.votes import Vote, final_votes


def human_labels(votes: list[Vote]) -> dict[str, dict[str, str]]:
    """item -> rater -> label (``a``/``b``/``tie``), each rater's last answer; skips left out."""
    out: dict[str, dict[str, str]] = {}
    for (rater, item), v in final_votes(votes).items():
        if v.choice != "skip":
            out.setdefault(item, {})[rater] = v.choice
    return out


def read_judge_labels(path: Path) -> dict[str, str]:
    """A judge's labels, JSONL: ``{"id": ..., "p_a": 0.8}`` (``a`` above 0.5, ``b`` below,
    ``tie`` at 0.5 — what ``evaluate/arena`` writes to ``verdicts.jsonl``) or ``{"id": ...,
    "label": "a" | "b" | "tie"}``."""
    path = Path(path)
    if not path.is_file():
        raise StageInputError(f"judge labels file {path} does not exist")
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                doc: Any = json.loads(line)
            except json.JSONDecodeError:
                raise StageInputError(f"{where}: not JSON") from None
            if not isinstance(doc, dict) or "id" not in doc:
                raise StageInputError(f"{where}: a label is an object with 'id' and 'p_a' or "
                                      f"'label'")
            if "label" in doc:
                label = doc["label"]
                if label not in ("a", "b", "tie"):
                    raise StageInputError(f"{where}: 'label' must be a, b or tie")
            elif isinstance(doc.get("p_a"), (int, float)) and 0 <= doc["p_a"] <= 1:
                p = float(doc["p_a"])
                label = "a" if p > 0.5 else "b" if p < 0.5 else "tie"
            else:
                raise StageInputError(f"{where}: needs 'label' (a, b, tie) or 'p_a' in [0, 1]")
            out[str(doc["id"])] = label
    return out
