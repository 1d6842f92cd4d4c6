"""Unit checks of the evaluators' building blocks, against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from lmforge_eval.config import MultipleChoiceConfig, SuiteConfig
from lmforge_eval.perplexity import unigram_counts, unigram_perplexity, windows
from lmforge_eval.preference import last_span


def test_unigram_perplexity_by_hand() -> None:
    # train tokens [1, 1, 2] over a vocabulary of 4: p(t) = (c(t) + 1) / (3 + 4)
    counts = unigram_counts([[1, 1], [2]], vocab_size=4)
    assert counts.tolist() == [0, 2, 1, 0]
    # held-out [1, 3]: p = 3/7 and 1/7 -> ppl = (3/7 * 1/7) ** -1/2 = sqrt(49 / 3)
    assert unigram_perplexity(counts, [1, 3]) == pytest.approx(math.sqrt(49 / 3), rel=1e-12)
    # an unseen-token-only held-out set under an empty count table is uniform: ppl = V
    assert unigram_perplexity(np.zeros(5, dtype=np.int64), [0, 4, 2]) == pytest.approx(5.0)


def test_windows_score_every_token_but_the_first_once() -> None:
    stream = list(range(100, 111))  # 11 tokens -> 10 predictions
    wins = windows(stream, 4)
    assert [len(x) for x, _ in wins] == [4, 4, 2]
    assert [t for _, y in wins for t in y] == stream[1:]
    for x, y in wins:
        assert y == [t + 1 for t in x]  # position t predicts the next token
    assert windows([7], 4) == []


def test_last_span_keeps_only_the_final_assistant_turn() -> None:
    assert last_span([False, True, True, False, True, False]) == \
        [False, False, False, False, True, False]
    assert last_span([False, False]) == [False, False]


def test_config_validation() -> None:
    with pytest.raises(ValidationError, match=r"must contain \{question\}"):
        MultipleChoiceConfig(prompt_template="Answer:")
    with pytest.raises(ValidationError, match="may only use"):
        MultipleChoiceConfig(choice_template="{choice} {letter}")
    with pytest.raises(ValidationError):
        SuiteConfig(evaluators=[])


def test_report_note_is_quoted_under_the_title() -> None:
    from lmforge_eval.report import render_markdown

    report = {"stage": "ev", "model": {"path": "m", "parameters": 10, "max_seq_len": 4},
              "tokenizer": {"path": "t", "vocab_size": 3}, "device": "cpu",
              "evaluators": {"ppl": {"type": "perplexity", "loss": 1.5}},
              "note": "Toy size: expect little.\n\nSecond paragraph."}
    md = render_markdown(report, {})
    assert md.startswith("# Evaluation report: stage `ev`\n\n> Toy size: expect little.\n>\n"
                         "> Second paragraph.\n\n- model:")
    assert "| ppl | loss | 1.5000 |" in md
    del report["note"]
    assert ">" not in render_markdown(report, {})
