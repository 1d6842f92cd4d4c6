"""The durable vote log of ``lmforge rate``, and the pairs raters are shown.

**Pairs file** (what is rated): JSON Lines, one pair per line::

    {"id": "p3", "prompt": "..." or [{"role", "content"}, ...],
     "response_a": "...", "response_b": "...", "gold": "a" | "b" (optional), ...}

``id`` is optional (default: a hash of prompt and responses, so it is stable); other keys
(``model_a``, ``model_b`` from an arena) are kept and shown nowhere. A ``dataset/preference``
artifact folder works too: ``chosen`` becomes ``response_a``, ``rejected`` ``response_b`` and
``gold`` is ``"a"``.

**Vote log** (what raters answered): JSON Lines, one answer per line, appended::

    {"rater": "ana", "item": "p3", "choice": "a" | "b" | "tie" | "skip",
     "shown": "ab" | "ba", "note": "", "time": 1700000000.0}

``choice`` is about the pair as stored (``a`` means ``response_a``), whatever side it was
shown on; ``shown`` records the order on screen (``ba``: ``response_b`` was on the left).
Each answer is written with one ``write`` of a whole line, flushed and ``fsync``ed before the
rater is told it was saved, so a killed server loses nothing that was acknowledged. A last
line cut short by a kill (never acknowledged) is dropped with a warning when the log is read
again, and cut off before the next append.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge import StageInputError

CHOICES = ("a", "b", "tie", "skip")
RATER_MAX = 64


class TornLineWarning(UserWarning):
    """The vote log's last line was cut short (the server was killed while writing it)."""


@dataclass(frozen=True)
class Pair:
    """One item to rate: ``prompt`` as messages, two responses, optional gold label."""

    id: str
    prompt: list[dict[str, str]]
    response_a: str
    response_b: str
    gold: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def check_rater(rater: Any) -> str:
    """A rater id: 1 to 64 characters, letters, digits and ``. _ - @``."""
    if not isinstance(rater, str) or not 1 <= len(rater) <= RATER_MAX or not all(
            c.isalnum() or c in "._-@" for c in rater):
        raise ValueError(f"a rater id is 1 to {RATER_MAX} letters, digits, '.', '_', '-' or "
                         f"'@', got {str(rater)[:80]!r}")
    return rater


def _messages(prompt: Any, where: str) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt and all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in prompt):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise StageInputError(f"{where}: 'prompt' must be a string or a non-empty list of "
                          f"{{role, content}} messages")


def pair_id(prompt: list[dict[str, str]], a: str, b: str) -> str:
    doc = json.dumps([prompt, a, b], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def load_pairs(path: Path) -> list[Pair]:
    """Read the pairs to rate from a JSONL file or a ``dataset/preference`` artifact folder;
    a clear error (file, line, key) for anything malformed, and for duplicate ids."""
    path = Path(path)
    if path.is_dir():
        rows = _preference_rows(path)
    elif path.is_file():
        rows = _jsonl_rows(path)
    else:
        raise StageInputError(f"pairs file {path} does not exist")
    pairs: list[Pair] = []
    seen: dict[str, str] = {}
    for where, row in rows:
        if not isinstance(row, dict):
            raise StageInputError(f"{where}: a pair must be a JSON object")
        for key in ("prompt", "response_a", "response_b"):
            if key not in row:
                raise StageInputError(f"{where}: missing {key!r} (a pair has prompt, "
                                      f"response_a, response_b, and optionally id and gold)")
        prompt = _messages(row["prompt"], where)
        a, b = row["response_a"], row["response_b"]
        if not isinstance(a, str) or not isinstance(b, str):
            raise StageInputError(f"{where}: response_a and response_b must be strings")
        gold = row.get("gold")
        if gold is not None and gold not in ("a", "b", "tie"):
            raise StageInputError(f"{where}: 'gold' must be 'a', 'b' or 'tie', got {gold!r}")
        pid = row.get("id", pair_id(prompt, a, b))
        if not isinstance(pid, (str, int)) or isinstance(pid, bool) or not str(pid):
            raise StageInputError(f"{where}: 'id' must be a non-empty string or integer")
        pid = str(pid)
        if pid in seen:
            raise StageInputError(f"{where}: id {pid!r} is used twice (also {seen[pid]}); "
                                  f"ids must be unique")
        seen[pid] = where
        extra = {k: v for k, v in row.items()
                 if k not in ("id", "prompt", "response_a", "response_b", "gold")}
        pairs.append(Pair(pid, prompt, a, b, gold, extra))
    if not pairs:
        raise StageInputError(f"{path} holds no pair to rate")
    return pairs


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield f"{path} line {lineno}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise StageInputError(f"{path} line {lineno}: not JSON ({exc.msg})") from None


def _preference_rows(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    from lmforge.datasetio import read_meta

    meta = read_meta(path)
    if meta.get("format") != "preference":
        raise StageInputError(f"{path} is a {meta.get('format')!r} dataset; a folder of pairs "
                              f"must be a dataset/preference artifact")
    for split in sorted(meta.get("splits", {})):
        for file in sorted((path / split).glob("*.parquet")):
            for i, row in enumerate(pq.read_table(file).to_pylist()):
                yield f"{file} row {i}", {"id": f"{split}/{file.stem}/{i}",
                                          "prompt": row["prompt"], "response_a": row["chosen"],
                                          "response_b": row["rejected"], "gold": "a"}


@dataclass(frozen=True)
class Vote:
    rater: str
    item: str
    choice: str
    shown: str = "ab"
    note: str = ""
    time: float = 0.0

    def to_json(self) -> str:
        return json.dumps({"rater": self.rater, "item": self.item, "choice": self.choice,
                           "shown": self.shown, "note": self.note, "time": self.time},
                          ensure_ascii=False)


def _parse_vote(doc: Any, where: str) -> Vote:
    if not isinstance(doc, dict):
        raise StageInputError(f"{where}: a vote must be a JSON object")
    try:
        vote = Vote(rater=check_rater(doc.get("rater")), item=str(doc["item"]),
                    choice=doc["choice"], shown=doc.get("shown", "ab"),
                    note=str(doc.get("note", "")), time=float(doc.get("time", 0.0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise StageInputError(f"{where}: not a vote ({exc})") from None
    if vote.choice not in CHOICES or vote.shown not in ("ab", "ba"):
        raise StageInputError(f"{where}: choice must be one of {', '.join(CHOICES)} and shown "
                              f"'ab' or 'ba'")
    return vote


def read_votes(path: Path) -> list[Vote]:
    """Every vote in the log, in the order written. A torn last line (no newline at the end
    and not JSON) is dropped with a :class:`TornLineWarning`; a bad line elsewhere is an
    error naming it (the log was edited or damaged)."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    votes = []
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        last = lineno == len(lines)  # no newline after it
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if last:
                warnings.warn(f"{path}: the last line ({len(raw)} bytes) was cut short, "
                              f"probably by a killed server; that answer was never confirmed "
                              f"and is ignored", TornLineWarning, stacklevel=2)
                break
            raise StageInputError(f"{path} line {lineno}: not a JSON vote; the log is damaged "
                                  f"(fix or delete that line)") from None
        votes.append(_parse_vote(doc, f"{path} line {lineno}"))
    return votes


class VoteLog:
    """Appends votes durably and safely from several threads (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.votes = read_votes(self.path)
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._cut_torn_tail()

    def _cut_torn_tail(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        data = self.path.read_bytes()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        os.ftruncate(self._fd, keep)
        os.fsync(self._fd)

    def append(self, vote: Vote) -> None:
        line = (vote.to_json() + "\n").encode("utf-8")
        with self._lock:
            written = os.write(self._fd, line)
            if written != len(line):  # a short write (disk full): never leave a torn line
                os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
                raise OSError(f"could not append to {self.path} (disk full?)")
            os.fsync(self._fd)
            self.votes.append(vote)

    def close(self) -> None:
        os.close(self._fd)


def now() -> float:
    return round(time.time(), 3)


def final_votes(votes: Iterable[Vote]) -> dict[tuple[str, str], Vote]:
    """The answer that counts per (rater, item): the last one written."""
    out: dict[tuple[str, str], Vote] = {}
    for v in votes:
        out[(v.rater, v.item)] = v
    return out
