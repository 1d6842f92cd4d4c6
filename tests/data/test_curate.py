"""The data/curate stage end to end through lmforge.testing.run_spec."""

from __future__ import annotations

import json
from pathlib import Path

from lmforge import datasetio
from lmforge.testing import run_spec, validate_spec
from tests.data.helpers import PARAGRAPH, curate_spec, read_split, write_jsonl

WORDS = ("apple river stone cloud market bridge lantern garden window candle meadow harbor "
         "forest violin copper silver ribbon mirror planet thunder").split()


def _doc(i: int) -> str:
    picked = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(6))
    return f"Document {i} talks about {picked} and more."


def make_corpus(root: Path) -> dict:
    """40 distinct docs + 5 near-copies + 3 too short + 2 with e-mails (jsonl), 10 lines (txt)."""
    rows = [{"body": _doc(i)} for i in range(40)]
    rows += [{"body": "  " + _doc(i).upper().replace(" ", "   ") + " "} for i in range(5)]
    rows += [{"body": "tiny"}, {"body": "two words"}, {"body": ""}]
    rows += [{"body": f"Write to person{i}@example.org about harbor plan {i}."} for i in range(2)]
    write_jsonl(root / "docs" / "part-0.jsonl", rows[:25])
    write_jsonl(root / "docs" / "part-1.jsonl", rows[25:])
    (root / "lines.txt").write_text("\n".join(f"Line {i} of the plain text source file."
                                              for i in range(10)) + "\n\n")
    return {"sources": [{"type": "jsonl", "path": str(root / "docs" / "*.jsonl"),
                         "text_field": "body"},
                        {"type": "text", "path": str(root / "lines.txt"), "mode": "line"}],
            "filters": [{"type": "length", "min_words": 3}, {"type": "pii"}],
            "heldout_fraction": 0.2, "shard_rows": 7, "chunk_size": 8}


def _out(run: Path) -> Path:
    return run / "corpus" / "outputs" / "dataset"


def _dataset_hash(run: Path) -> str:
    return json.loads((run / "corpus" / "manifest.json").read_text())["outputs"]["dataset"]["hash"]


def test_curate_text_counts_splits_and_stats(pm, tmp_path):
    config = make_corpus(tmp_path)
    run = tmp_path / "run1"
    result = run_spec(curate_spec(config), pm, run)
    m = result.stages[0].metrics
    # 50 + 10 read; empty "" is dropped on input; "tiny" and "two words" by length; 5 dups
    assert (m["docs_in"], m["docs_out"], m["dedup_dropped"]) == (60, 52, 5)
    assert m["train_rows"] + m["heldout_rows"] == 52 and m["heldout_rows"] >= 1
    assert m["dropped"] == 8
    assert "dedup:duplicate=5" in m["dropped_by"] and "length:too_few_words=2" in m["dropped_by"]

    out = _out(run)
    meta = datasetio.read_meta(out)
    assert meta["format"] == "text" and meta["columns"] == ["text"]
    train, heldout = read_split(out, "train"), read_split(out, "heldout")
    assert meta["splits"]["train"] == {"rows": len(train), "shards": -(-len(train) // 7)}
    assert meta["splits"]["heldout"]["rows"] == len(heldout) == m["heldout_rows"]
    assert len(datasetio.split_files(out, "train")) == meta["splits"]["train"]["shards"]
    assert not list(out.rglob(".*"))  # no temp files left
    texts = [r["text"] for r in train + heldout]
    assert len(set(texts)) == 52
    assert "Write to <EMAIL> about harbor plan 1." in texts
    assert not any("@example.org" in t for t in texts)

    stats = json.loads((out / "stats.json").read_text())
    assert stats["docs_in"] == 60 and stats["docs_out"] == 52
    assert [(s["type"], s["read"], s["empty"]) for s in stats["sources"]] == [
        ("jsonl", 50, 1), ("text", 10, 0)]
    length, pii = stats["filters"]
    assert (length["seen"], length["kept"], length["dropped"]) == (59, 57, 2)
    assert length["dropped_by_reason"] == {"too_few_words": 2}
    assert (pii["seen"], pii["modified"], pii["counts"]) == (57, 2, {"email": 2})
    assert pii["modified_by_reason"] == {"redacted": 2}
    dedup = stats["dedup"]
    assert (dedup["enabled"], dedup["type"], dedup["dropped"], dedup["clusters"]) == \
        (True, "exact", 5, 5)
    # the upper-cased copies (rows 25..29 of part-1) lost to the originals (rows 0..4, part-0)
    assert [(d["dropped"].rsplit("line ", 1)[1], d["kept"].rsplit("line ", 1)[1])
            for d in dedup["dropped_sample"]] == [(f"{16 + i} (record {15 + i})",
                                                   f"{1 + i} (record {i})") for i in range(5)]
    assert stats["dropped_by_reason"] == {"dedup:duplicate": 5, "length:too_few_words": 2,
                                          "input:empty": 1}
    assert stats["splits"] == {"train": len(train), "heldout": len(heldout)}


def test_curate_is_deterministic_and_num_proc_invariant(pm, tmp_path):
    config = make_corpus(tmp_path)
    run_spec(curate_spec(config), pm, tmp_path / "a")
    run_spec(curate_spec({**config, "num_proc": 2}), pm, tmp_path / "b")
    assert _dataset_hash(tmp_path / "a") == _dataset_hash(tmp_path / "b")
    a = json.loads((_out(tmp_path / "a") / "stats.json").read_text())
    b = json.loads((_out(tmp_path / "b") / "stats.json").read_text())
    assert a == b
    # the split depends on content only: other shard sizes, same held-out documents
    run_spec(curate_spec({**config, "shard_rows": 100}), pm, tmp_path / "c")
    assert sorted(r["text"] for r in read_split(_out(tmp_path / "c"), "heldout")) == \
        sorted(r["text"] for r in read_split(_out(tmp_path / "a"), "heldout"))


def test_dedup_off_heldout_min_and_max_documents(pm, tmp_path):
    config = make_corpus(tmp_path)
    m = run_spec(curate_spec({**config, "dedup": False, "heldout_fraction": 0.01,
                              "heldout_min": 6}), pm, tmp_path / "r1").stages[0].metrics
    assert (m["docs_out"], m["heldout_rows"], m["train_rows"]) == (57, 6, 51)
    m = run_spec(curate_spec({**config, "max_documents": 12, "heldout_fraction": 0.0}), pm,
                 tmp_path / "r2").stages[0].metrics
    assert (m["docs_in"], m["train_rows"], m["heldout_rows"]) == (12, 12, 0)
    meta = datasetio.read_meta(_out(tmp_path / "r2"))
    assert set(meta["splits"]) == {"train"}
    # a one-document corpus keeps its single row in train
    write_jsonl(tmp_path / "one.jsonl", [{"text": PARAGRAPH}])
    m = run_spec(curate_spec({"sources": [{"type": "jsonl", "path": str(tmp_path / "one.jsonl")}],
                              "heldout_min": 3}), pm, tmp_path / "r3").stages[0].metrics
    assert (m["train_rows"], m["heldout_rows"]) == (1, 0)


def test_output_kind_follows_format(pm, tmp_path):
    write_jsonl(tmp_path / "c.jsonl", [{"text": "x"}])
    pipeline = validate_spec(curate_spec({"sources": [{"type": "jsonl", "path": "c.jsonl"}],
                                          "format": "chat"}), pm)
    assert pipeline.stages[0].outputs == {"dataset": "dataset/chat"}


def test_chat_preference_and_multiple_choice_formats(pm, tmp_path):
    chat = [{"messages": [{"role": "user", "content": f"Question {i}? mail me a{i}@x.io"},
                          {"role": "assistant", "content": f"Answer number {i}."}]}
            for i in range(6)]
    chat.append({"messages": [{"role": "user", "content": "QUESTION 0?  mail me a0@x.io"},
                              {"role": "assistant", "content": "answer number 0."}]})  # dup
    write_jsonl(tmp_path / "chat.jsonl", chat)
    spec = curate_spec({"sources": [{"type": "jsonl", "path": str(tmp_path / "chat.jsonl")}],
                        "format": "chat", "filters": [{"type": "pii"}, {"type": "length",
                                                                        "min_words": 6}],
                        "heldout_min": 2})
    m = run_spec(spec, pm, tmp_path / "chat").stages[0].metrics
    assert (m["docs_in"], m["docs_out"], m["dedup_dropped"], m["heldout_rows"]) == (7, 6, 1, 2)
    rows = read_split(_out(tmp_path / "chat"), "train")
    assert rows[0]["messages"][0]["content"].endswith("mail me <EMAIL>")
    assert rows[0]["messages"][1] == {"role": "assistant",
                                      "content": rows[0]["messages"][1]["content"]}

    pref = [{"prompt": f"Say {i}", "chosen": f"Reply {i}", "rejected": f"Nope {i}"}
            for i in range(4)]
    pref.append({"prompt": [{"role": "user", "content": "Say 9"}],
                 "chosen": [{"role": "assistant", "content": "Reply 9"}], "rejected": "No"})
    write_jsonl(tmp_path / "pref.jsonl", pref)
    spec = curate_spec({"sources": [{"type": "jsonl", "path": str(tmp_path / "pref.jsonl")}],
                        "format": "preference", "heldout_fraction": 0.0})
    run_spec(spec, pm, tmp_path / "pref")
    rows = read_split(_out(tmp_path / "pref"), "train")
    assert rows[0] == {"prompt": [{"role": "user", "content": "Say 0"}], "chosen": "Reply 0",
                       "rejected": "Nope 0"}
    assert rows[4]["chosen"] == "Reply 9"
    assert datasetio.read_meta(_out(tmp_path / "pref"))["columns"] == ["prompt", "chosen",
                                                                       "rejected"]

    mc = [{"question": f"What is {i}+1?", "choices": [str(i), str(i + 1)], "answer": 1}
          for i in range(3)] + [{"question": "Pick B", "choices": ["a", "b", "c"], "answer": "B"}]
    write_jsonl(tmp_path / "mc.jsonl", mc)
    spec = curate_spec({"sources": [{"type": "jsonl", "path": str(tmp_path / "mc.jsonl")}],
                        "format": "multiple-choice", "heldout_fraction": 0.0})
    run_spec(spec, pm, tmp_path / "mc")
    rows = read_split(_out(tmp_path / "mc"), "train")
    assert rows[-1] == {"question": "Pick B", "choices": ["a", "b", "c"], "answer": 1}


def test_python_functions_preference_through_the_stage(pm, tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text("".join(
        f'def scale_{i}(values, factor):\n    """Multiply each of the values by factor {i}."""\n'
        f'    out = []\n    for v in values:\n        out.append(v * factor + {i})\n'
        f'    return out\n\n\n' for i in range(5)))
    spec = curate_spec({"sources": [{"type": "python-functions", "mode": "preference",
                                     "path": str(pkg / "*.py")}],
                        "format": "preference", "heldout_min": 1})
    m = run_spec(spec, pm, tmp_path / "run").stages[0].metrics
    assert (m["docs_in"], m["docs_out"]) == (5, 5)
    rows = read_split(_out(tmp_path / "run"), "train") + read_split(_out(tmp_path / "run"),
                                                                     "heldout")
    assert all(r["chosen"] != r["rejected"] for r in rows)


class PidFilter:
    """Replaces each text by the id of the process that ran the filter."""

    name = "pid"

    def __call__(self, text: str):
        import os

        from lmforge import FilterResult

        return FilterResult(keep=True, reason="pid", text=str(os.getpid()))


def test_filters_really_run_in_worker_processes():
    import os

    from lmforge_data.chain import FilterChain, run_chunks

    chunks = [[{"text": f"doc {i}"} for i in range(j * 4, j * 4 + 4)] for j in range(6)]
    got = list(run_chunks(FilterChain([PidFilter()], "text"), iter(chunks), num_proc=2))
    assert [c for c, _ in got] == chunks  # in order
    pids = {rec["text"] for _, results in got for rec, _ in results}
    assert str(os.getpid()) not in pids and 1 <= len(pids) <= 2
    inline = list(run_chunks(FilterChain([PidFilter()], "text"), iter(chunks), num_proc=1))
    assert {rec["text"] for _, results in inline for rec, _ in results} == {str(os.getpid())}
