"""Who rates what: items handed to raters, answers recorded (thread-safe, resumable).

A :class:`RatingSession` holds the pairs and the :class:`~lmforge_rating.votes.VoteLog`. Each
rater gets, in file order, the items they have not answered whose count of ratings (answers
other than skip) plus the items currently handed to other raters is below
``ratings_per_item`` — so two raters working at once with one rating per item get different
items. The side each response is shown on is a function of (seed, rater, item): the same
rater sees the same layout after a restart, and half of the items swapped on average.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from lmforge_rating.votes import Pair, Vote, VoteLog, check_rater, final_votes, now

#: An item handed to a rater who then goes quiet is offered to others after this long.
LEASE_SECONDS = 15 * 60
#: What the page sends -> the stored choice: a side is a position in ``shown`` ("ba"[0] is
#: "b": response_b was on the left), tie and skip are themselves.
SIDES = {"left": 0, "right": 1, "tie": "tie", "skip": "skip"}
NOTE_MAX = 2000


class RatingSession:
    def __init__(self, pairs: list[Pair], votes_path: Path, *, ratings_per_item: int = 1,
                 seed: int = 0) -> None:
        if ratings_per_item < 1:
            raise ValueError("ratings_per_item must be at least 1")
        self.pairs = pairs
        self.by_id = {p.id: p for p in pairs}
        self.log = VoteLog(votes_path)
        self.ratings_per_item = ratings_per_item
        self.seed = seed
        self._lock = threading.Lock()
        self._answered: dict[str, set[str]] = {}
        self._ratings: Counter[str] = Counter()
        self._leases: dict[str, tuple[str, float]] = {}  # rater -> (item, expiry)
        self.unknown_items = 0
        for v in final_votes(self.log.votes).values():
            if v.item not in self.by_id:
                self.unknown_items += 1
                continue
            self._record(v)

    def _record(self, v: Vote) -> None:
        self._answered.setdefault(v.rater, set()).add(v.item)
        if v.choice != "skip":
            self._ratings[v.item] += 1

    def shown(self, rater: str, item: str) -> str:
        digest = hashlib.sha256(f"{self.seed}\0{rater}\0{item}".encode()).digest()
        return "ba" if digest[0] & 1 else "ab"

    # -- handing out ---------------------------------------------------------------------------
    def next_item(self, rater: str) -> dict[str, Any] | None:
        check_rater(rater)
        with self._lock:
            self._leases.pop(rater, None)
            t = time.monotonic()
            leased = Counter(item for item, until in self._leases.values() if until > t)
            done = self._answered.get(rater, set())
            for pair in self.pairs:
                if pair.id in done:
                    continue
                if self._ratings[pair.id] + leased[pair.id] < self.ratings_per_item:
                    self._leases[rater] = (pair.id, t + LEASE_SECONDS)
                    return self._view(rater, pair)
            return None

    def _view(self, rater: str, pair: Pair) -> dict[str, Any]:
        shown = self.shown(rater, pair.id)
        left, right = ((pair.response_a, pair.response_b) if shown == "ab"
                       else (pair.response_b, pair.response_a))
        return {"id": pair.id, "prompt": pair.prompt, "left": left, "right": right}

    def progress(self, rater: str) -> dict[str, int]:
        with self._lock:
            mine = len(self._answered.get(rater, set()))
            open_items = sum(1 for p in self.pairs if self._ratings[p.id] < self.ratings_per_item)
            return {"answered_by_you": mine, "items": len(self.pairs),
                    "items_needing_ratings": open_items,
                    "answers": len(self.log.votes)}

    # -- answers -------------------------------------------------------------------------------
    def answer(self, rater: str, item: str, side: str, note: str = "") -> Vote | None:
        """Record ``rater``'s answer about ``item``: ``side`` is ``left``, ``right``, ``tie``
        or ``skip`` as seen on screen. Returns the vote written, or None when this rater had
        already answered this item (a double submit: the first answer stands)."""
        check_rater(rater)
        if item not in self.by_id:
            raise ValueError(f"unknown item {item!r}")
        if side not in SIDES:
            raise ValueError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
        if not isinstance(note, str) or len(note) > NOTE_MAX:
            raise ValueError(f"a note is text of at most {NOTE_MAX} characters")
        shown = self.shown(rater, item)
        target = SIDES[side]
        choice = target if isinstance(target, str) else shown[target]
        vote = Vote(rater=rater, item=item, choice=choice, shown=shown, note=note.strip(),
                    time=now())
        with self._lock:
            if item in self._answered.get(rater, set()):
                return None
            self.log.append(vote)  # durable before anything says it was saved
            self._record(vote)
            if self._leases.get(rater, ("",))[0] == item:
                del self._leases[rater]
        return vote

    def close(self) -> None:
        self.log.close()
