"""data/constitutional: SL-CAI and RL-CAI rows have the documented structure; a run killed
with SIGKILL mid-way resumes from its checkpointed chunks and writes the same output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lmforge.testing import run_spec

REPO = Path(__file__).resolve().parents[2]
CONSTITUTION = REPO / "examples" / "feedback" / "constitution.yaml"


def spec(env: Any, mode: str, **config: Any) -> dict:
    inputs = {"model": "m", "tokenizer": "tok", "prompts": "prompts"}
    if mode == "rl":
        inputs["judge"] = "m"
    cfg = {"mode": mode, "constitution": str(CONSTITUTION), "chunk_size": 4,
           "heldout_fraction": 0.3,
           "backend": {"type": "local", "device": "cpu", "precision": "fp32"},
           "generation": {"max_new_tokens": 12, "temperature": 1.0, "batch_size": 4}, **config}
    stages = env.fixtures(m=(env.model_dir, "model"), tok=(env.tok_dir, "tokenizer"),
                          prompts=(env.prompts_dir, "dataset/prompt"))
    stages.append({"id": "cai", "kind": "data", "plugin": "constitutional", "inputs": inputs,
                   "config": cfg})
    return {"name": "cai", "stages": stages}


def rows(folder: Path) -> dict[str, list[dict]]:
    import pyarrow.parquet as pq

    meta = json.loads((folder / "artifact.json").read_text())
    return {s: pq.read_table(folder / s / "shard-00000.parquet").to_pylist()
            for s in meta["splits"]}


def test_sl_cai_rows(env, tmp_path):
    from lmforge_feedback.constitution import load_constitution

    run_spec(spec(env, "sl", rounds=2, preferences=True), env.pm, tmp_path / "run")
    out = tmp_path / "run" / "cai" / "outputs"
    chat = rows(out / "chat")
    assert set(chat) <= {"train", "heldout"} and chat.get("train")
    ids = {p.id for p in load_constitution(CONSTITUTION).principles}
    prompts = [json.dumps(p) for p in env.prompts]
    n = 0
    for row in chat["train"] + chat.get("heldout", []):
        n += 1
        msgs = row["messages"]
        assert json.dumps(msgs[:-1]) in prompts  # the prompt, then the final revision
        assert msgs[-1]["role"] == "assistant" and msgs[-1]["content"].strip()
        assert len(row["principles"]) == 2 and set(row["principles"]) <= ids
        assert len(row["critiques"]) == 2
        assert row["constitution"] == "lmforge-example@2026.1"
    manifest = json.loads((tmp_path / "run" / "cai" / "manifest.json").read_text())
    assert manifest["metrics"]["revisions"] == n
    assert n + manifest["metrics"]["empty_revisions"] == len(env.prompts)
    prefs = rows(out / "preferences")
    for row in prefs["train"] + prefs.get("heldout", []):
        assert row["chosen"] != row["rejected"] and row["chosen"].strip()
    # the chosen of each pair is the final revision of its chat row
    finals = {json.dumps(r["messages"][:-1]): r["messages"][-1]["content"]
              for r in chat["train"] + chat.get("heldout", [])}
    for row in prefs["train"] + prefs.get("heldout", []):
        assert finals[json.dumps(row["prompt"])] == row["chosen"]
        assert row["rejected"] == next(r["original"] for r in chat["train"] + chat.get(
            "heldout", []) if json.dumps(r["messages"][:-1]) == json.dumps(row["prompt"]))


def test_rl_cai_rows(env, tmp_path):
    from lmforge_feedback.constitution import load_constitution

    run_spec(spec(env, "rl", judge={"type": "model-prompted"}), env.pm, tmp_path / "run")
    prefs = rows(tmp_path / "run" / "cai" / "outputs" / "preferences")
    con = load_constitution(CONSTITUTION)
    questions = {p.id: p.comparison for p in con.principles}
    all_rows = prefs["train"] + prefs.get("heldout", [])
    assert all_rows
    for row in all_rows:
        assert row["p_chosen"] > 0.5 and row["chosen"] != row["rejected"]
        assert row["question"] == questions[row["principle"]]
        raw = json.loads(row["raw"])
        # p_chosen is the swap average of the two orders for whichever response won
        p_a = (raw["ab"]["A"] + raw["ba"]["B"]) / 2
        assert row["p_chosen"] == pytest.approx(max(p_a, 1 - p_a))
        assert row["consistent"] == ((raw["ab"]["A"] > 0.5) == (raw["ba"]["B"] > 0.5))
        assert row["judge"].startswith("model-prompted:m@")
    manifest = json.loads((tmp_path / "run" / "cai" / "manifest.json").read_text())
    m = manifest["metrics"]
    assert m["pairs"] == len(env.prompts) and m["kept"] == len(all_rows)
    assert m["position_consistency"] == pytest.approx(
        sum(r["consistent"] for r in all_rows) / len(all_rows)) or m["kept"] < m["pairs"]


def test_bad_constitution_is_a_located_spec_error(env, tmp_path):
    from lmforge.errors import SpecError
    from lmforge.testing import validate_spec

    bad = tmp_path / "c.yaml"
    bad.write_text("format: 1\nname: x\nversion: 1\nprinciples:\n  - id: a\n    critique: c\n"
                   "    revison: typo\n")
    with pytest.raises(SpecError) as err:
        validate_spec(spec(env, "sl", constitution=str(bad)), env.pm, check_files=True)
    text = str(err.value)
    assert f"{bad}:7" in text and "revison" in text and "principles[0]" in text


@pytest.mark.slow
def test_sl_cai_resumes_after_sigkill_with_equal_output(env, tmp_path):
    """Kill `lmforge run` once two chunks are on disk; the rerun reuses them and its output
    equals an uninterrupted run's, byte for byte in content."""
    spec_file = tmp_path / "cai.yaml"
    spec_file.write_text(yaml.safe_dump(spec(env, "sl", chunk_size=2, preferences=True,
                                             generation={"max_new_tokens": 24,
                                                         "batch_size": 2})))
    cmd = [sys.executable, "-m", "lmforge", "run", str(spec_file), "-q", "-p", "feedback_env"]
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_")}
    run_env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent),
                                             run_env.get("PYTHONPATH", "")])

    def lmforge(run_dir: Path) -> subprocess.Popen:
        return subprocess.Popen([*cmd, "--run-dir", str(run_dir)], env=run_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    full = lmforge(tmp_path / "full")
    killed = lmforge(tmp_path / "killed")
    chunks = tmp_path / "killed" / "cai" / "work" / "chunks"
    deadline = time.monotonic() + 120
    while not (chunks / "chunk-000001.jsonl").exists():
        assert killed.poll() is None, killed.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert json.loads((tmp_path / "killed" / "cai" / "manifest.json").read_text())[
        "status"] == "running"
    done_before = len(list(chunks.glob("chunk-*.jsonl")))
    assert 2 <= done_before < 5
    resumed = lmforge(tmp_path / "killed")
    assert resumed.wait(timeout=300) == 0, resumed.communicate()
    assert full.wait(timeout=300) == 0, full.communicate()
    manifest = json.loads((tmp_path / "killed" / "cai" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed"]
    assert manifest["metrics"]["chunks_reused"] == done_before
    for out in ("chat", "preferences"):
        assert rows(tmp_path / "killed" / "cai" / "outputs" / out) == rows(
            tmp_path / "full" / "cai" / "outputs" / out)
