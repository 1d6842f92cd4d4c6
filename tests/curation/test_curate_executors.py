"""The curate plan on the executors: same bytes on ``local`` (1 or 2 workers) and ``ray``,
exact dedup across partitions, and statistics merged across workers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lmforge.fsutil import file_hashes
from lmforge.testing import run_spec
from tests.data.helpers import curate_spec, read_split, write_jsonl

pytestmark = pytest.mark.slow


def _dataset(run: Path) -> Path:
    return run / "corpus" / "outputs" / "dataset"


def _corpus(root: Path, planted: Any, n: int = 600) -> dict[str, Any]:
    """The first ``n`` planted documents in 4 files (each file a partition), a copy of file 0's
    first 5 documents in file 3 (exact duplicates across partitions), upper-cased and
    re-spaced, and 3 documents too short for the length filter."""
    docs = planted.docs[:n]
    files = [docs[i::4] for i in range(4)]
    files[3] = files[3] + ["  " + d.upper().replace(" ", "   ") for d in files[0][:5]]
    files[1] = files[1] + ["too short", "also short", "x"]
    for i, f in enumerate(files):
        write_jsonl(root / "in" / f"part-{i}.jsonl", [{"text": t} for t in f])
    return {"sources": [{"type": "jsonl", "path": str(root / "in" / "*.jsonl")}],
            "filters": [{"type": "length", "min_words": 5}],
            "heldout_fraction": 0.1, "heldout_min": 3, "shard_rows": 64, "chunk_size": 50,
            "partition_bytes": 1}


def test_exact_dedup_across_partitions_and_stats_merge(data_pm, planted, tmp_path):
    config = _corpus(tmp_path, planted)
    one = run_spec(curate_spec(config), data_pm, tmp_path / "one").stages[0].metrics
    two = run_spec(curate_spec({**config, "executor": {"type": "local", "workers": 2}}),
                   data_pm, tmp_path / "two").stages[0].metrics
    # 600 + 5 copies + 3 short read; 3 dropped by length; the 5 copies by exact dedup
    assert (one["docs_in"], one["docs_out"], one["dedup_dropped"]) == (608, 600, 5)
    assert {k: v for k, v in one.items() if k != "executor"} == \
        {k: v for k, v in two.items() if k != "executor"}
    assert two["executor"] == "local (2 workers)"
    a, b = _dataset(tmp_path / "one"), _dataset(tmp_path / "two")
    assert file_hashes(a) == file_hashes(b)
    stats = json.loads((a / "stats.json").read_text())
    assert stats["partitions"] == 4
    assert [(s["read"], s["empty"]) for s in stats["sources"]] == [(608, 0)]
    (length,) = stats["filters"]
    assert (length["seen"], length["kept"], length["dropped"]) == (608, 605, 3)
    assert stats["dedup"]["clusters"] == 5
    # each copy (file 3, lines 151..155) lost to its original, the first in read order
    assert [(d["dropped"].split("part-")[1], d["kept"].split("part-")[1])
            for d in stats["dedup"]["dropped_sample"]] == [
        (f"3.jsonl line {151 + i} (record {150 + i})", f"0.jsonl line {1 + i} (record {i})")
        for i in range(5)]
    rows = read_split(a, "train") + read_split(a, "heldout")
    assert len({r["text"] for r in rows}) == 600
    # rows keep read order within a split: file 0's documents come first in train
    train = [r["text"] for r in read_split(a, "train")]
    kept = set(train)
    assert train[:10] == [d for d in planted.docs[:600:4] if d in kept][:10]


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_executor_output_equals_local_byte_for_byte(data_pm, planted, tmp_path,
                                                        ray_session):
    config = {**_corpus(tmp_path, planted, n=800),
              "dedup": {"type": "minhash"}, "dedup_buckets": 3}
    local = run_spec(curate_spec(config), data_pm, tmp_path / "local").stages[0].metrics
    ray = run_spec(curate_spec({**config, "executor": {"type": "ray"}}), data_pm,
                   tmp_path / "ray").stages[0].metrics
    assert ray["executor"].startswith("ray (local mode")
    assert local["dedup_dropped"] == ray["dedup_dropped"] > 5  # the planted copies too
    assert file_hashes(_dataset(tmp_path / "local")) == file_hashes(_dataset(tmp_path / "ray"))
    manifest = json.loads((tmp_path / "ray" / "corpus" / "manifest.json").read_text())
    # the shards' hashes were taken while writing them, and they are right
    assert manifest["outputs"]["dataset"]["files"] == {
        rel: list(v) for rel, v in file_hashes(_dataset(tmp_path / "ray")).items()}


def test_ray_executor_reports_bad_input_as_a_stage_input_error(data_pm, tmp_path,
                                                               ray_session):
    from lmforge import StageFailed, StageInputError

    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": "fine document number one"}])
    (tmp_path / "in" / "b.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n')
    spec = curate_spec({"sources": [{"type": "jsonl", "path": str(tmp_path / "in" / "*.jsonl")}],
                        "partition_bytes": 1, "executor": {"type": "ray"}})
    with pytest.raises(StageFailed) as info:
        run_spec(spec, data_pm, tmp_path / "run")
    assert isinstance(info.value.__cause__, StageInputError)
    assert "b.jsonl line 2 (record 1): not valid JSON" in str(info.value)
