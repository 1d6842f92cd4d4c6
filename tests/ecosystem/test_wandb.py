"""The wandb tracker: offline run under run_dir/wandb with namespaced metrics; never fails a run."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

import lmforge
from lmforge import Config, Stage, hookimpl, stage
from lmforge.testing import check_plugin, plugin_manager, run_spec

wandb = pytest.importorskip("wandb")

import lmforge_wandb.plugin as wandb_plugin  # noqa: E402
from lmforge_wandb.tracker import resolve_mode  # noqa: E402


# -- a tiny stage plugin that logs metrics -------------------------------------------------------
class TinyConfig(Config):
    steps: int = Field(default=3, description="How many metric records to log.")


class TinyStage(Stage):
    def run(self) -> dict[str, Any]:
        for step in range(self.config.steps):
            self.ctx.log(step, {"train/loss": 1.0 / (step + 1), "note": "not a number"})
        (self.ctx.output_dir("report") / "report.json").write_text('{"ok": true}')
        return {"final_loss": 1.0 / self.config.steps}


class TinyPlugin:
    @hookimpl
    def lmforge_components(self) -> list[lmforge.Component]:
        return [stage("evaluate", "tiny", config=TinyConfig, factory=TinyStage,
                      outputs={"report": "report"}, description="logs a few metrics")]


SPEC = {
    "name": "wandb-test",
    "trackers": [{"type": "wandb", "project": "test", "system_metrics": False}],
    "stages": [{"id": "first", "kind": "evaluate", "plugin": "tiny", "config": {"steps": 3}},
               {"id": "second", "kind": "evaluate", "plugin": "tiny", "config": {"steps": 2}}],
}


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_DISABLED",
                "WANDB_PROJECT", "RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    monkeypatch.setenv("WANDB_SILENT", "true")


# -- reading an offline run back ------------------------------------------------------------------
def read_wandb_records(path: Path) -> list[Any]:
    """Parse a ``.wandb`` file: a 7-byte header, then LevelDB-log chunks (crc32, length, type)
    in 32 KiB blocks, each full record a ``wandb_internal_pb2.Record`` (crc not verified)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):
            break  # a chunk still being written
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(pending)
            records.append(rec)
            pending = b""
    return records


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def _value(item: Any) -> Any:
    if item.value_json:
        return json.loads(item.value_json)
    which = item.WhichOneof("value") if "value" in {o.name for o in
                                                    item.DESCRIPTOR.oneofs} else None
    return getattr(item, which) if which else None


def complete_records(run_folder: Path, timeout: float = 30.0) -> list[Any]:
    """The run's records once its ``exit`` record is on disk.

    W&B's service writes the transaction log asynchronously: ``run.finish()`` can return before
    the file is flushed (it always is by the time the process exits), so poll for it.
    """
    (log,) = run_folder.glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        records = read_wandb_records(log)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{log} has no exit record after {timeout} s "
                                 f"({log.stat().st_size} bytes)")
        time.sleep(0.1)


def history_and_summary(run_folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    history, summary = [], {}
    for rec in complete_records(run_folder):
        which = rec.WhichOneof("record_type")
        if which == "history":
            history.append({_key(i): _value(i) for i in rec.history.item})
        elif which == "summary":
            summary.update({_key(i): _value(i) for i in rec.summary.update})
    return history, summary


# -- tests ----------------------------------------------------------------------------------------
def test_conforms() -> None:
    assert check_plugin(wandb_plugin) == []


def test_plugin_module_does_not_import_wandb() -> None:
    code = ("import sys, lmforge_wandb.plugin, lmforge_wandb.tracker; "
            "assert 'wandb' not in sys.modules, 'wandb imported at discovery'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(("mode", "env", "expected"), [
    ("auto", {}, "offline"),
    ("auto", {"WANDB_API_KEY": "k" * 40}, "online"),
    ("auto", {"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}, "disabled"),
    ("auto", {"WANDB_MODE": "dryrun"}, "offline"),
    ("online", {}, "offline"),  # no key: would prompt, so offline with a note
    ("online", {"WANDB_API_KEY": "k"}, "online"),
    ("offline", {"WANDB_API_KEY": "k"}, "offline"),
])
def test_resolve_mode(tmp_path: Path, mode: str, env: dict[str, str], expected: str) -> None:
    env = {"NETRC": str(tmp_path / "none"), **env}
    got, note = resolve_mode(mode, env)
    assert got == expected
    assert bool(note) == (mode == "online" and "WANDB_API_KEY" not in env)


def test_netrc_login_counts_as_credentials(tmp_path: Path) -> None:
    rc = tmp_path / "netrc"
    rc.write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    rc.chmod(0o600)
    assert resolve_mode("auto", {"NETRC": str(rc)})[0] == "online"


def test_offline_run_records_namespaced_metrics(tmp_path: Path, no_credentials: None,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    pm = plugin_manager(TinyPlugin(), wandb_plugin)
    result = run_spec(SPEC, pm, tmp_path / "run")
    assert result.status == "complete"
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "exactly one W&B run per pipeline run"
    err = capsys.readouterr().err
    assert "warning" not in err
    assert f"wandb sync {runs[0]}" in err

    history, summary = history_and_summary(runs[0])
    first = [h for h in history if "first/train/loss" in h]
    second = [h for h in history if "second/train/loss" in h]
    assert [h["first/step"] for h in first] == [0, 1, 2]
    assert [round(h["first/train/loss"], 4) for h in first] == [1.0, 0.5, 0.3333]
    assert [h["second/step"] for h in second] == [0, 1]
    assert not any("first/note" in h for h in history), "non-numeric values are not logged"
    assert summary["first/status"] == "complete"
    assert summary["second/status"] == "complete"
    assert summary["second/final_loss"] == pytest.approx(0.5)
    assert summary["lmforge/status"] == "complete"


def test_wandb_init_failure_does_not_fail_the_run(tmp_path: Path, no_credentials: None,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def broken_init(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("wandb is broken")

    monkeypatch.setattr(wandb, "init", broken_init)
    result = run_spec(SPEC, plugin_manager(TinyPlugin(), wandb_plugin), tmp_path / "run")
    assert result.status == "complete"
    assert [s.status for s in result.stages] == ["complete", "complete"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "wandb is broken" in warnings[0]
    # metrics still reach the stage's own log
    lines = (tmp_path / "run" / "first" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_failure_during_logging_disables_tracker_once(tmp_path: Path, no_credentials: None,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from wandb.sdk.wandb_run import Run

    def broken_log(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Run, "log", broken_log)
    result = run_spec(SPEC, plugin_manager(TinyPlugin(), wandb_plugin), tmp_path / "run")
    assert result.status == "complete"
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "disk full" in warnings[0]
