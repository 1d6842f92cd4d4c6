"""The ``human-preferences`` source: votes from ``lmforge rate`` as ``dataset/preference``
records.

Per pair, each rater's last answer counts; skips are no label. The majority label (``a`` or
``b``) decides ``chosen`` and ``rejected``. Pairs are dropped, and counted by reason in the
source's ``skipped`` (shown in the curate stage's ``stats.json``), when: nobody labelled them
(``unrated``), every answer was a skip (``only skips``), fewer than ``min_votes`` labels
(``too few votes``), the leading label is ahead by less than ``min_margin`` (``split vote``),
or the majority says ``tie`` (``tie``: a tie is no preference). Votes about items that are not
in the pairs file are counted as ``votes for unknown items``. Agreement between raters:
``lmforge rate PAIRS --report``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from lmforge_rating.votes import final_votes, load_pairs, read_votes


class HumanPreferencesSource:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.skipped: Counter[str] = Counter()

    def describe(self) -> str:
        return f"human-preferences:{self.config.votes}"

    def check(self) -> None:
        load_pairs(self.config.pairs)
        read_votes(self.config.votes)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        cfg = self.config
        self.skipped.clear()
        pairs = load_pairs(cfg.pairs)
        ids = {p.id for p in pairs}
        allowed = set(cfg.raters) if cfg.raters is not None else None
        labels: dict[str, list[str]] = {}
        answered: set[str] = set()
        for (rater, item), vote in final_votes(read_votes(cfg.votes)).items():
            if allowed is not None and rater not in allowed:
                continue
            if item not in ids:
                self.skipped["votes for unknown items"] += 1
                continue
            answered.add(item)
            if vote.choice != "skip":
                labels.setdefault(item, []).append(vote.choice)
        for pair in pairs:
            got = labels.get(pair.id, [])
            if not got:
                self.skipped["only skips" if pair.id in answered else "unrated"] += 1
                continue
            if len(got) < cfg.min_votes:
                self.skipped["too few votes"] += 1
                continue
            ranked = Counter(got).most_common()
            lead = ranked[0][1] - (ranked[1][1] if len(ranked) > 1 else 0)
            if lead < cfg.min_margin:
                self.skipped["split vote"] += 1
                continue
            winner = ranked[0][0]
            if winner == "tie":
                self.skipped["tie"] += 1
                continue
            chosen, rejected = ((pair.response_a, pair.response_b) if winner == "a"
                                else (pair.response_b, pair.response_a))
            yield {"prompt": pair.prompt, "chosen": chosen, "rejected": rejected,
                   "_where": f"{cfg.pairs} pair {pair.id!r}"}
