"""What the feedback stages share: building and checking judges, labelling pairs, statistics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lmforge import StageInputError
from lmforge.judging import Comparison, Verdict


def build_judge(ctx: Any, config: Any, where: str) -> Any:
    """The judge of ``config``, with its required inputs checked against the stage's."""
    judge = ctx.build("judge", config)
    for slot, kind in judge.requires().items():
        art = ctx.inputs.get(slot)
        if art is None:
            raise StageInputError(f"stage {ctx.stage_id!r}: {where} (type {config.type}) needs "
                                  f"input {slot!r} ({kind}), which is not wired; add "
                                  f"'{slot}: <stage id>' under the stage's inputs")
        if art.kind != kind:
            raise StageInputError(f"stage {ctx.stage_id!r}: {where} needs a {kind} in input "
                                  f"{slot!r}, got a {art.kind}")
    try:
        judge.check(ctx.inputs)
    except StageInputError as exc:
        raise StageInputError(f"stage {ctx.stage_id!r}: {where}: {exc}") from None
    return judge


def label_row(prompt: Any, a: str, b: str, verdict: Verdict, min_confidence: float
              ) -> dict[str, Any]:
    """A preference row from a verdict on ``(a, b)``: ``chosen``/``rejected`` by the judge,
    ``p_chosen`` (>= 0.5), the judge, principle, raw numbers (JSON text) and consistency;
    ``kept`` is False (with ``dropped``: why) for ties, identical responses, empty responses
    and labels within ``min_confidence`` of 0.5."""
    a_wins = verdict.p_a >= 0.5
    row = {"prompt": list(prompt), "chosen": a if a_wins else b, "rejected": b if a_wins else a,
           "p_chosen": verdict.p_a if a_wins else verdict.p_b, "p_a": verdict.p_a,
           "judge": verdict.judge, "principle": verdict.principle or "",
           "raw": json.dumps(verdict.raw, sort_keys=True), "consistent": verdict.consistent,
           "kept": True, "dropped": ""}
    if not a.strip() or not b.strip():
        row.update(kept=False, dropped="empty response")
    elif a == b:
        row.update(kept=False, dropped="identical responses")
    elif verdict.p_a == 0.5:
        row.update(kept=False, dropped="tie")
    elif abs(verdict.p_a - 0.5) < min_confidence:
        row.update(kept=False, dropped="below min_confidence")
    return row


def judge_pairs(judge: Any, prompts: Sequence[Any], a: Sequence[str], b: Sequence[str],
                principles: Sequence[str | None]) -> list[Verdict]:
    return judge.compare([Comparison(prompt=p, a=x, b=y, principle=pr)
                          for p, x, y, pr in zip(prompts, a, b, principles, strict=True)])


def label_stats(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Headline numbers of labelled rows: counts, mean confidence, position consistency and
    the judge's first-position preference (mean P(first shown) over both orders)."""
    out: dict[str, float] = {"pairs": len(rows), "kept": sum(r["kept"] for r in rows)}
    if rows:
        out["mean_p_chosen"] = sum(r["p_chosen"] for r in rows) / len(rows)
    ordered = [r for r in rows if r["consistent"] is not None]
    if ordered:
        out["position_consistency"] = sum(bool(r["consistent"]) for r in ordered) / len(ordered)
        firsts = []
        for r in ordered:
            raw = json.loads(r["raw"])
            if "ab" in raw and "ba" in raw:
                firsts.append((raw["ab"]["A"] + raw["ba"]["A"]) / 2)
        if firsts:
            out["first_position_preference"] = sum(firsts) / len(firsts)
    return out
