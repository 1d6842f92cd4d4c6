"""The jsonl, parquet, text and hf sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge import StageInputError
from lmforge_data.config import (
    HFSourceConfig,
    JsonlSourceConfig,
    ParquetSourceConfig,
    TextSourceConfig,
)
from lmforge_data.sources import files, hf
from tests.data.helpers import write_jsonl


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "_where"} for r in rows]


def test_jsonl_glob_sorted_and_remapped(tmp_path):
    write_jsonl(tmp_path / "b.jsonl", [{"body": "b0", "id": 1}])
    write_jsonl(tmp_path / "a.jsonl", [{"body": "a0"}, {"body": "a1", "conv": [1]}])
    (tmp_path / "a.jsonl").write_text((tmp_path / "a.jsonl").read_text() + "\n\n")  # blank lines
    src = files.jsonl(JsonlSourceConfig(path=str(tmp_path / "*.jsonl"), text_field="body",
                                        fields={"conv": "messages"}))
    rows = list(src)
    assert _strip(rows) == [{"text": "a0"}, {"text": "a1", "messages": [1]},
                            {"text": "b0", "id": 1}]
    assert rows[1]["_where"] == f"{tmp_path / 'a.jsonl'} line 2 (record 1)"
    assert src.describe() == f"jsonl:{tmp_path / '*.jsonl'}"


def test_jsonl_errors_name_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(StageInputError, match=r"bad\.jsonl line 2 \(record 1\): not valid JSON"):
        list(files.jsonl(JsonlSourceConfig(path=str(p))))
    p.write_text('{"body": "x"}\n')
    with pytest.raises(StageInputError, match=r"bad\.jsonl line 1.*no field 'content'"):
        list(files.jsonl(JsonlSourceConfig(path=str(p), text_field="content")))
    with pytest.raises(StageInputError, match="does not exist"):
        files.jsonl(JsonlSourceConfig(path=str(tmp_path / "missing.jsonl"))).check()
    with pytest.raises(StageInputError, match="matches no file"):
        files.jsonl(JsonlSourceConfig(path=str(tmp_path / "none" / "*.jsonl"))).check()


def _write_parquet(path: Path, texts: list[str], row_group_size: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"content": texts, "n": list(range(len(texts)))})
    pq.write_table(table, str(path), row_group_size=row_group_size)


def test_parquet_streams_batches(tmp_path):
    _write_parquet(tmp_path / "p0.parquet", [f"doc {i}" for i in range(25)], row_group_size=10)
    _write_parquet(tmp_path / "p1.parquet", ["last"], row_group_size=10)
    src = files.parquet(ParquetSourceConfig(path=str(tmp_path / "*.parquet"),
                                            text_field="content", columns=["content"],
                                            batch_rows=4))
    rows = list(src)
    assert [r["text"] for r in rows] == [f"doc {i}" for i in range(25)] + ["last"]
    assert set(rows[0]) == {"text", "_where"}  # only the selected column
    assert rows[24]["_where"].endswith("p0.parquet row 24")
    with pytest.raises(StageInputError, match="no column"):
        list(files.parquet(ParquetSourceConfig(path=str(tmp_path / "p1.parquet"),
                                               columns=["nope"])))


def test_text_file_and_line_modes_skip_undecodable(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\n  \nsecond line\r\n", encoding="utf-8")
    (tmp_path / "b.txt").write_bytes(b"caf\xe9 latin-1 \xff\xfe")  # not utf-8
    (tmp_path / "c.txt").write_text("whole file\nwith two lines", encoding="utf-8")
    pattern = str(tmp_path / "*.txt")
    by_file = files.text(TextSourceConfig(path=pattern, mode="file"))
    assert [r["text"] for r in by_file] == ["first line\n\n  \nsecond line\n",
                                           "whole file\nwith two lines"]
    assert by_file.skipped == {"undecodable": 1}
    by_line = files.text(TextSourceConfig(path=pattern, mode="line"))
    rows = list(by_line)
    assert [r["text"] for r in rows] == ["first line", "second line", "whole file",
                                         "with two lines"]
    assert rows[1]["_where"].endswith("a.txt line 4")
    assert by_line.skipped == {"undecodable": 1}
    latin = files.text(TextSourceConfig(path=str(tmp_path / "b.txt"), encoding="latin-1"))
    assert [r["text"] for r in latin] == ["café latin-1 ÿþ"]


def test_hf_local_parquet_folder_and_json_files(tmp_path):
    folder = tmp_path / "ds" / "data"
    folder.mkdir(parents=True)
    _write_parquet(folder / "train-00000.parquet", ["alpha", "beta", "gamma"], 2)
    for streaming in (True, False):
        src = hf.hf(HFSourceConfig(name=str(tmp_path / "ds"), split="train",
                                   streaming=streaming, text_field="content"))
        src.check()
        rows = list(src)
        assert [r["text"] for r in rows] == ["alpha", "beta", "gamma"]
        assert rows[2]["n"] == 2 and rows[2]["_where"].endswith("[train] row 2")
    jl = write_jsonl(tmp_path / "j" / "x.jsonl", [{"text": "one"}, {"text": "two"}])
    src = hf.hf(HFSourceConfig(name="json", data_files=str(jl)))
    src.check()
    assert [r["text"] for r in src] == ["one", "two"]
    assert src.describe() == "hf:json[train]"


def test_hf_bad_inputs(tmp_path):
    with pytest.raises(StageInputError, match="does not exist"):
        hf.hf(HFSourceConfig(name=str(tmp_path / "nope"))).check()
    with pytest.raises(StageInputError, match="matches no file"):
        hf.hf(HFSourceConfig(name="json", data_files=str(tmp_path / "*.jsonl"))).check()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StageInputError, match="cannot load the dataset"):
        list(hf.hf(HFSourceConfig(name=str(empty))))
