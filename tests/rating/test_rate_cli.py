"""``lmforge rate --report`` and the command's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge_rating.votes import Vote


def _files(tmp_path: Path) -> tuple[Path, Path]:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"p{k}", "prompt": "q", "response_a": f"a{k}",
                                         "response_b": f"b{k}", "gold": "a"}) + "\n"
                             for k in range(4)))
    votes = tmp_path / "votes.jsonl"
    rows = [("ana", "p0", "a"), ("bo", "p0", "a"), ("ana", "p1", "a"), ("bo", "p1", "b"),
            ("ana", "p2", "b"), ("bo", "p2", "b"), ("ana", "p3", "skip")]
    votes.write_text("".join(Vote(r, i, c).to_json() + "\n" for r, i, c in rows))
    return pairs, votes


def test_report_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs, votes = _files(tmp_path)
    judge = tmp_path / "judge.jsonl"
    judge.write_text('{"id": "p0", "p_a": 0.9}\n{"id": "p2", "label": "a"}\n')
    assert main(["rate", str(pairs), "--votes", str(votes), "--report", "--json",
                 "--judge", str(judge)]) == 0
    r = json.loads(capsys.readouterr().out)
    # ana a a b, bo a b b: p_o 2/3; ana a 2/3 b 1/3, bo a 1/3 b 2/3: p_e 4/9 -> kappa 0.4
    assert r["pairs"][0]["cohen_kappa"] == pytest.approx(0.4)
    assert r["raw_agreement"] == pytest.approx(2 / 3)
    # majority: p0 a, p1 split, p2 b; gold a everywhere -> 1 of 2; judge p0 a, p2 a -> 1 of 2
    assert r["vs_gold"]["items"] == 2 and r["vs_gold"]["agreement"] == 0.5
    assert r["vs_judge"]["items"] == 2 and r["vs_judge"]["agreement"] == 0.5
    assert main(["rate", str(pairs), "--votes", str(votes), "--report"]) == 0
    text = capsys.readouterr().out
    assert "Fleiss' kappa" in text and "ana vs bo: 3 items, agreement 0.667" in text


def test_refuses_a_vote_log_inside_an_artifact(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    pairs, _ = _files(tmp_path)
    (tmp_path / "artifact.json").write_text("{}")
    assert main(["rate", str(pairs)]) == 2
    assert "inside a stage's output folder" in capsys.readouterr().err


def test_bad_pairs_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "q"}\n')
    assert main(["rate", str(bad), "--report"]) == 1
    assert "pairs.jsonl line 1: missing 'response_a'" in capsys.readouterr().err
