"""examples/feedback/pipeline.yaml validates (files it names included); it is run by hand, not
in CI (its header gives the time and the results of a measured run)."""

from __future__ import annotations

from pathlib import Path

from lmforge.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_feedback_pipeline_validates(capsys):
    assert main(["validate", str(REPO / "examples" / "feedback" / "pipeline.yaml")]) == 0
    assert "is valid" in capsys.readouterr().err
