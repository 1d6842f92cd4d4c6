"""The lmforge command: exit codes, help, output, and resume after a killed process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmforge.cli import main

REPO = Path(__file__).resolve().parents[2]
TOY = ["--no-autoload", "-p", "tests.core.toy_plugin"]


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one two two three three three\n")
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"""\
name: toy
run_dir: {tmp_path / 'run'}
stages:
  - id: words
    kind: data
    plugin: count
    config: {{path: {corpus}}}
  - id: acc
    kind: train
    plugin: accumulate
    inputs: {{counts: words}}
    config: {{steps: 8, checkpoint_every: 2}}
""")
    return path


@pytest.mark.parametrize("command", [[], ["run"], ["validate"], ["plan"], ["schema"],
                                     ["plugins"], ["plugins", "list"], ["plugins", "info"],
                                     ["new-plugin"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: lmforge" in capsys.readouterr().out


def test_validate_ok_and_errors_exit_2_writing_nothing(spec, tmp_path, capsys):
    assert main([*TOY, "validate", str(spec)]) == 0
    assert "is valid — 2 stages" in capsys.readouterr().err
    assert main([*TOY, "validate", str(spec), "acc.steps=0", "acc.chekpoint_every=1"]) == 2
    err = capsys.readouterr().err
    assert "2 errors in the spec" in err
    assert "override 'acc.steps=0': stages[1].config.steps: Input should be greater than or " \
           "equal to 1" in err
    assert "did you mean 'checkpoint_every'" in err
    assert main([*TOY, "run", str(spec), "acc.steps=0"]) == 2
    assert not (tmp_path / "run").exists()


def test_run_then_rerun_does_nothing_and_plan_says_reuse(spec, tmp_path, capsys):
    assert main([*TOY, "run", str(spec), "-q"]) == 0
    capsys.readouterr()
    assert main([*TOY, "run", str(spec), "-q"]) == 0
    assert "nothing to do: every stage was reused" in capsys.readouterr().err
    assert main([*TOY, "plan", str(spec)]) == 0
    out = capsys.readouterr().out
    assert out.count("reuse") == 2 and "steps=8" in out
    assert main([*TOY, "plan", str(spec), "acc.steps=9"]) == 0
    out = capsys.readouterr().out
    assert "changed" in out and out.count("reuse") == 1


def test_runtime_failure_exit_1_names_stage_and_plugin(spec, capsys):
    assert main([*TOY, "run", str(spec), "-q", "acc.crash_at=3"]) == 1
    err = capsys.readouterr().err
    assert "stage 'acc' (plugin 'accumulate') failed" in err and "crash requested" in err
    assert "error.log" in err


def test_schema_and_plugins_info(tmp_path, capsys):
    out = tmp_path / "schema.json"
    assert main([*TOY, "schema", "-o", str(out)]) == 0
    schema = json.loads(out.read_text())
    assert schema["title"] == "lmforge pipeline" and "stages" in schema["properties"]
    assert main([*TOY, "plugins", "info", "accumulate"]) == 0
    text = capsys.readouterr().out
    assert "checkpoint_every" in text and "inputs: counts (dataset/text)" in text
    assert main([*TOY, "plugins", "info", "acumulate"]) == 2
    assert "did you mean 'accumulate'" in capsys.readouterr().err


def _cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    environ = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "lmforge", *args], env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_run_resumes_to_the_same_result(spec, tmp_path):
    clean = tmp_path / "clean"
    proc = _cli(*TOY, "run", str(spec), "--run-dir", str(clean), "-q")
    assert proc.wait(timeout=120) == 0, proc.stderr.read()

    proc = _cli(*TOY, "run", str(spec), "-q", env={"TOY_STEP_SECONDS": "0.4"})
    ckpts = tmp_path / "run" / "acc" / "checkpoints"
    deadline = time.monotonic() + 60
    while not (ckpts.exists() and any(p.name.startswith("step-") for p in ckpts.iterdir())):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    manifest = json.loads((tmp_path / "run" / "acc" / "manifest.json").read_text())
    assert manifest["status"] == "running"  # killed: no chance to write anything else

    proc = _cli(*TOY, "run", str(spec), "-q")
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    manifest = json.loads((tmp_path / "run" / "acc" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed"] is True
    for rel in ("acc/outputs/result/total.txt", "words/outputs/counts/counts.json"):
        assert (tmp_path / "run" / rel).read_text() == (clean / rel).read_text()
    steps = [json.loads(x)["step"] for x in
             (tmp_path / "run" / "acc" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_python_dash_m_and_version():
    out = subprocess.run([sys.executable, "-m", "lmforge", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("lmforge ")
