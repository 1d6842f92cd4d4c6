"""The vote log (durable, torn last line), who gets which item, and the human-preferences
source."""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import pytest

from lmforge import StageInputError
from lmforge_rating.session import RatingSession
from lmforge_rating.source import HumanPreferencesSource
from lmforge_rating.votes import TornLineWarning, Vote, VoteLog, load_pairs, read_votes


def write_pairs(path: Path, n: int = 4) -> Path:
    rows = [{"id": f"p{k}", "prompt": f"question {k}?", "response_a": f"answer A{k}",
             "response_b": f"answer B{k}", **({"gold": "a"} if k % 2 == 0 else {})}
            for k in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_append_is_a_whole_line_on_disk(tmp_path: Path) -> None:
    log = VoteLog(tmp_path / "v.jsonl")
    log.append(Vote("ana", "p0", "a", "ab", "clear", 1.0))
    log.append(Vote("bo", "p0", "tie", "ba", "", 2.0))
    log.close()
    lines = (tmp_path / "v.jsonl").read_text().splitlines()
    assert [json.loads(x)["rater"] for x in lines] == ["ana", "bo"]
    assert read_votes(tmp_path / "v.jsonl")[0] == Vote("ana", "p0", "a", "ab", "clear", 1.0)


def test_torn_last_line_is_dropped_with_a_warning_and_cut_before_appending(tmp_path: Path
                                                                             ) -> None:
    path = tmp_path / "v.jsonl"
    good = Vote("ana", "p0", "b", "ab", "", 1.0).to_json() + "\n"
    path.write_text(good + '{"rater": "ana", "item": "p1", "cho')
    with pytest.warns(TornLineWarning, match="cut short"):
        assert [v.item for v in read_votes(path)] == ["p0"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornLineWarning)
        log = VoteLog(path)
    log.append(Vote("ana", "p1", "a", "ab", "", 2.0))
    log.close()
    assert path.read_text() == good + Vote("ana", "p1", "a", "ab", "", 2.0).to_json() + "\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [v.item for v in read_votes(path)] == ["p0", "p1"]


def test_a_bad_line_in_the_middle_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "v.jsonl"
    path.write_text("not json\n" + Vote("ana", "p0", "b").to_json() + "\n")
    with pytest.raises(StageInputError, match=r"v.jsonl line 1: not a JSON vote"):
        read_votes(path)
    path.write_text(json.dumps({"rater": "ana", "item": "p0", "choice": "maybe"}) + "\n")
    with pytest.raises(StageInputError, match="line 1: choice must be one of"):
        read_votes(path)


def test_pairs_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "pairs.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "response_a": "x"}) + "\n")
    with pytest.raises(StageInputError, match=r"pairs.jsonl line 1: missing 'response_b'"):
        load_pairs(bad)
    bad.write_text("".join(json.dumps({"id": "x", "prompt": "q", "response_a": "1",
                                       "response_b": "2"}) + "\n" for _ in range(2)))
    with pytest.raises(StageInputError, match="line 2: id 'x' is used twice"):
        load_pairs(bad)


def test_order_is_recorded_and_undone(tmp_path: Path) -> None:
    pairs = load_pairs(write_pairs(tmp_path / "pairs.jsonl", 16))
    s = RatingSession(pairs, tmp_path / "v.jsonl")
    shown = {p.id: s.shown("ana", p.id) for p in pairs}
    assert set(shown.values()) == {"ab", "ba"}  # both layouts occur
    for p in pairs:
        item = s.next_item("ana")
        assert item is not None and item["id"] == p.id
        left_is_a = item["left"] == p.response_a
        assert left_is_a == (shown[p.id] == "ab")
        vote = s.answer("ana", p.id, "left")
        assert vote is not None
        assert vote.choice == ("a" if left_is_a else "b") and vote.shown == shown[p.id]
    assert s.next_item("ana") is None
    s.close()


def test_quota_two_raters_and_resume(tmp_path: Path) -> None:
    pairs = load_pairs(write_pairs(tmp_path / "pairs.jsonl", 4))
    s = RatingSession(pairs, tmp_path / "v.jsonl", ratings_per_item=1)
    a, b = s.next_item("ana"), s.next_item("bo")
    assert a["id"] == "p0" and b["id"] == "p1"  # the lease keeps p0 from bo
    s.answer("ana", "p0", "skip")  # a skip does not count towards the quota
    assert s.answer("ana", "p0", "left") is None  # a second answer is ignored
    s.answer("bo", "p1", "tie", "same")
    assert s.next_item("bo")["id"] == "p0"  # ana skipped it: bo may rate it
    s.close()
    s2 = RatingSession(pairs, tmp_path / "v.jsonl", ratings_per_item=1)  # restart
    assert s2.next_item("ana")["id"] == "p2"
    assert s2.progress("bo")["answered_by_you"] == 1
    s2.close()


def test_concurrent_answers_are_all_written(tmp_path: Path) -> None:
    pairs = load_pairs(write_pairs(tmp_path / "pairs.jsonl", 50))
    s = RatingSession(pairs, tmp_path / "v.jsonl", ratings_per_item=8)

    def rate(rater: str) -> None:
        while (item := s.next_item(rater)) is not None:
            s.answer(rater, item["id"], "right")

    threads = [threading.Thread(target=rate, args=(f"r{k}",)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s.close()
    votes = read_votes(tmp_path / "v.jsonl")
    assert len(votes) == 400
    assert len({(v.rater, v.item) for v in votes}) == 400


def test_source_majority_and_counts(tmp_path: Path) -> None:
    pairs_path = write_pairs(tmp_path / "pairs.jsonl", 6)
    votes = tmp_path / "v.jsonl"
    rows = [("ana", "p0", "a"), ("bo", "p0", "a"), ("cy", "p0", "b"),  # a wins 2:1
            ("ana", "p1", "b"), ("bo", "p1", "b"),  # b wins
            ("ana", "p2", "a"), ("bo", "p2", "b"),  # split
            ("ana", "p3", "tie"), ("bo", "p3", "tie"),  # tie
            ("ana", "p4", "skip"),  # only skips; p5 unrated
            ("ana", "zz", "a"),  # unknown item
            ("cy", "p0", "a")]  # cy changes their mind: the last answer counts -> 3:0
    votes.write_text("".join(Vote(r, i, c).to_json() + "\n" for r, i, c in rows))

    class Cfg:
        pairs, min_votes, min_margin, raters = str(pairs_path), 1, 1, None

    Cfg.votes = str(votes)
    src = HumanPreferencesSource(Cfg)
    src.check()
    out = list(src)
    assert [(r["chosen"], r["rejected"]) for r in out] == [("answer A0", "answer B0"),
                                                           ("answer B1", "answer A1")]
    assert out[0]["prompt"] == [{"role": "user", "content": "question 0?"}]
    assert dict(src.skipped) == {"split vote": 1, "tie": 1, "only skips": 1, "unrated": 1,
                                 "votes for unknown items": 1}
    Cfg.min_votes, Cfg.min_margin = 3, 1
    assert len(list(HumanPreferencesSource(Cfg))) == 1  # only p0 has three labels
    Cfg.min_votes, Cfg.raters = 1, ["bo"]
    assert len(list(HumanPreferencesSource(Cfg))) == 3  # bo alone: p0 a, p1 b, p2 b


def test_source_in_a_curate_stage(tmp_path: Path) -> None:
    import lmforge_data.plugin
    import lmforge_rating.plugin
    from lmforge.testing import plugin_manager, run_spec

    write_pairs(tmp_path / "pairs.jsonl", 3)
    votes = tmp_path / "v.jsonl"
    votes.write_text("".join(Vote(r, i, c).to_json() + "\n" for r, i, c in
                             [("ana", "p0", "b"), ("ana", "p1", "a"), ("ana", "p2", "tie")]))
    pm = plugin_manager(lmforge_data.plugin, lmforge_rating.plugin)
    spec = {"name": "hp", "stages": [{"id": "prefs", "kind": "data", "plugin": "curate",
                                      "config": {"format": "preference", "heldout_fraction": 0,
                                                 "sources": [{"type": "human-preferences",
                                                              "pairs": "pairs.jsonl",
                                                              "votes": "v.jsonl"}]}}]}
    run_spec(spec, pm, tmp_path / "run", base_dir=tmp_path)
    out = tmp_path / "run" / "prefs" / "outputs"
    (dataset,) = [p for p in out.iterdir() if p.is_dir()]
    import pyarrow.parquet as pq

    rows = [r for f in sorted(dataset.glob("*/*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert sorted((r["chosen"], r["rejected"]) for r in rows) == [("answer A1", "answer B1"),
                                                                  ("answer B0", "answer A0")]
    stats = json.loads((dataset / "stats.json").read_text())
    assert stats["sources"][0]["skipped"] == {"tie": 1}  # the drop is counted in stats.json


def test_pairs_from_a_preference_dataset_artifact(tmp_path: Path) -> None:
    from lmforge.testing import write_dataset_artifact

    rows = [{"prompt": [{"role": "user", "content": f"q{k}"}], "chosen": f"good {k}",
             "rejected": f"bad {k}"} for k in range(3)]
    path = write_dataset_artifact(tmp_path / "prefs", "preference",
                                  {"train": rows[:2], "heldout": rows[2:]})
    pairs = load_pairs(path)
    assert [(p.response_a, p.response_b, p.gold) for p in pairs] == [
        ("good 2", "bad 2", "a"), ("good 0", "bad 0", "a"), ("good 1", "bad 1", "a")]
    assert len({p.id for p in pairs}) == 3 and pairs[0].id.startswith("heldout/")
    text = write_dataset_artifact(tmp_path / "text", "text", {"train": [{"text": "x"}]})
    with pytest.raises(StageInputError, match="must be a dataset/preference artifact"):
        load_pairs(text)
