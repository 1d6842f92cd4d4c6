"""Bad input: every message names the stage, the file (or glob) and, for records, the record."""

from __future__ import annotations

import json

import pytest

import lmforge_data.plugin
from lmforge import SpecError, StageFailed, StageInputError
from lmforge.testing import check_plugin, run_spec
from tests.data.helpers import PARAGRAPH, curate_spec, write_jsonl


def _fail(pm, tmp_path, config) -> str:
    with pytest.raises(StageFailed) as info:
        run_spec(curate_spec(config), pm, tmp_path / "run")
    assert isinstance(info.value.cause, StageInputError)
    manifest = json.loads((tmp_path / "run" / "corpus" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert not list((tmp_path / "run" / "corpus").rglob("*.parquet"))
    return str(info.value.cause)


def test_missing_file(pm, tmp_path):
    path = tmp_path / "nope.jsonl"
    msg = _fail(pm, tmp_path, {"sources": [{"type": "jsonl", "path": str(path)}]})
    assert msg.startswith("stage 'corpus', source 0 (jsonl): file ")
    assert str(path) in msg and "does not exist" in msg


def test_empty_glob(pm, tmp_path):
    write_jsonl(tmp_path / "ok.jsonl", [{"text": "fine"}])
    pattern = str(tmp_path / "data" / "*.parquet")
    msg = _fail(pm, tmp_path, {"sources": [{"type": "jsonl", "path": str(tmp_path / "ok.jsonl")},
                                           {"type": "parquet", "path": pattern}]})
    assert msg.startswith("stage 'corpus', source 1 (parquet): glob ")
    assert pattern in msg and "matches no file" in msg


def test_all_filtered_out(pm, tmp_path):
    write_jsonl(tmp_path / "short.jsonl", [{"text": f"short doc {i}"} for i in range(8)])
    source = {"type": "jsonl", "path": str(tmp_path / "short.jsonl")}
    msg = _fail(pm, tmp_path, {"sources": [source], "filters": [{"type": "gopher"}]})
    assert msg.startswith("stage 'corpus': all 8 documents read from jsonl:")
    assert "short.jsonl" in msg and "gopher:word_count (8)" in msg


def test_no_documents_at_all(pm, tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    source = {"type": "jsonl", "path": str(tmp_path / "empty.jsonl")}
    msg = _fail(pm, tmp_path, {"sources": [source]})
    assert "the sources yielded no documents" in msg and "empty.jsonl" in msg


def test_chat_record_without_assistant_turn(pm, tmp_path):
    good = {"messages": [{"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "yo"}]}
    bad = {"messages": [{"role": "system", "content": "be nice"},
                        {"role": "user", "content": "hi"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [good, good, bad])
    msg = _fail(pm, tmp_path, {"sources": [{"type": "jsonl", "path": str(path)}], "format": "chat"})
    assert msg.startswith(f"stage 'corpus', {path} line 3 (record 2): conversation has no "
                          f"assistant turn")


def test_preference_record_missing_rejected(pm, tmp_path):
    rows = [{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "p2", "chosen": "c2"}]
    path = write_jsonl(tmp_path / "pref.jsonl", rows)
    msg = _fail(pm, tmp_path, {"sources": [{"type": "jsonl", "path": str(path)}],
                               "format": "preference"})
    assert msg.startswith(f"stage 'corpus', {path} line 2 (record 1): preference record has no "
                          f"'rejected' field")


def test_text_record_without_text_and_bad_json(pm, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}, {"content": "b"}])
    msg = _fail(pm, tmp_path, {"sources": [{"type": "jsonl", "path": str(path)}]})
    assert f"{path} line 2 (record 1): text record has no 'text' field" in msg
    path.write_text('{"text": "a"}\n{broken\n')
    msg = _fail(pm, tmp_path, {"sources": [{"type": "jsonl", "path": str(path)}]})
    assert f"{path} line 2 (record 1): not valid JSON" in msg


def test_bad_multiple_choice_answer(pm, tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", [{"question": "q", "choices": ["a", "b"],
                                                "answer": 2}])
    msg = _fail(pm, tmp_path, {"sources": [{"type": "jsonl", "path": str(path)}],
                               "format": "multiple-choice"})
    assert f"{path} line 1 (record 0): 'answer' must be the index" in msg


def test_source_mode_must_match_format_at_validation(pm, tmp_path):
    """A source that cannot give records of the stage's format fails validation (before
    anything runs or is written), at the source's key."""
    (tmp_path / "m.py").write_text("x = 1\n")
    with pytest.raises(SpecError) as info:
        run_spec(curate_spec({"sources": [{"type": "python-functions", "mode": "chat",
                                           "path": str(tmp_path / "m.py")}]}), pm, tmp_path / "run")
    (issue,) = info.value.issues
    assert issue.path == "stages[0].config.sources[0].mode" and issue.line is not None
    assert "source 0 (python-functions) has mode 'chat' but the stage's format is 'text'" \
        in issue.message
    (tmp_path / "a.txt").write_text(PARAGRAPH)
    with pytest.raises(SpecError) as info:
        run_spec(curate_spec({"sources": [{"type": "text", "path": str(tmp_path / "a.txt")}],
                              "format": "chat"}), pm, tmp_path / "run")
    (issue,) = info.value.issues
    assert issue.path == "stages[0].config.sources[0].type"
    assert "source 0 (text) gives 'text' records but the stage's format is 'chat'" in issue.message
    # python-functions' default mode is 'text': a chat stage must say mode: chat.
    with pytest.raises(SpecError, match="has mode 'text' but the stage's format is 'chat'"):
        run_spec(curate_spec({"sources": [{"type": "python-functions",
                                           "path": str(tmp_path / "m.py")}], "format": "chat"}),
                 pm, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_exclude_everything(pm, tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "m.py").write_text("x = 1\n")
    msg = _fail(pm, tmp_path, {"sources": [{"type": "python-functions",
                                            "path": str(tmp_path / "**" / "*.py")}]})
    assert "is excluded by" in msg and "source 0 (python-functions)" in msg


def test_check_plugin_conforms():
    assert check_plugin(lmforge_data.plugin) == []


def test_plugin_import_is_light():
    import subprocess
    import sys

    code = ("import sys, lmforge_data.plugin as p; p.lmforge_components(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pyarrow', 'datasets', 'numpy', 'torch', 'transformers')))")
    env_path = [p for p in sys.path if p]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": ":".join(env_path), "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
