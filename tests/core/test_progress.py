"""Progress output without a terminal: one line per update interval, no repeated line, no
repeated label segments (issue 8)."""

from __future__ import annotations

import pytest

from lmforge.progress import Progress


@pytest.fixture
def lines(capsys):
    def read() -> list[str]:
        return capsys.readouterr().err.splitlines()
    return read


def test_a_quick_task_prints_one_line(lines) -> None:
    p = Progress(enabled=True, line_interval=10.0)
    assert not p.interactive  # stderr is captured, not a terminal
    with p.task(total=25, description="corpus: curating", unit="docs") as bar:
        for _ in range(25):
            bar.advance(1, kept=1)
    out = lines()
    assert len(out) == 1, out
    assert out[0].startswith("corpus: curating: 25/25 docs kept=1 [")


def test_lines_every_interval_and_a_final_one(lines, monkeypatch) -> None:
    import lmforge.progress as progress

    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    p = Progress(enabled=True, line_interval=10.0, first_line_after=2.0)
    with p.task(total=5, description="train", unit="step") as bar:
        for _ in range(5):
            now[0] += 6.0
            bar.advance(1, loss=1.0)
    out = lines()
    # 6 s: the first line (after 2 s); 12 s: too early; 18 s: a line (10 s later); 24 s: too
    # early; 30 s: a line (step 5); the end: the same text, not repeated
    assert [o.split(" [")[0] for o in out] == ["train: 1/5 step loss=1", "train: 3/5 step loss=1",
                                                "train: 5/5 step loss=1"]
    assert out[0].endswith("[6s eta 24s]")


def test_repeated_label_segments_are_collapsed(lines) -> None:
    p = Progress(enabled=True)
    with p.task(total=2, description="eval: perplexity: perplexity", unit="window") as bar:
        bar.advance(2)
    (line,) = lines()
    assert line.startswith("eval: perplexity: 2/2 window [")
    assert "  " not in line  # no empty fields gap


def test_quiet_prints_nothing(lines) -> None:
    with Progress(enabled=False).task(total=3, description="x") as bar:
        bar.advance(3)
    assert lines() == []
