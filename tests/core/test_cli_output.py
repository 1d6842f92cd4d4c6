"""What a user sees from the CLI (issue 8): `plugins info` takes the names `plugins list`
prints and lists nested keys readably; tables fit the terminal; the run summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmforge.cli import main, plugins_report

TOY = ["--no-autoload", "-p", "tests.core.toy_plugin"]


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # keep long rows on one line for the assertions


def test_plugins_info_accepts_every_name_plugins_list_prints(capsys, wide) -> None:
    from lmforge.plugins import PluginManager

    report = plugins_report(PluginManager.load_first_party())
    names = [c for p in report["plugins"] for c in p["components"]]
    assert "filter/gopher" in names and "stage:train/pretrain" in names
    for name in names:
        assert main(["plugins", "info", name]) == 0, name
        out = capsys.readouterr().out
        kind, _, cname = name.rpartition("/")
        assert f"{kind} {cname}" in out, (name, out)


def test_plugins_info_shows_nested_keys_and_readable_types(capsys, wide) -> None:
    assert main(["plugins", "info", "filter/gopher"]) == 0
    out = capsys.readouterr().out
    assert "min_words" in out and "int | null" in out
    assert main(["plugins", "info", "stage:train/pretrain"]) == 0
    out = capsys.readouterr().out
    assert "loop.optim.lr" in out and "loop.backend" in out
    assert main(["plugins", "info", "data/curate"]) == 0  # stage kind without 'stage:'
    out = capsys.readouterr().out
    assert re.search(r"sources\s+list\[\{type: ", out), out
    for ugly in ("Annotated", "Union[", "NoneType", "typing."):
        assert ugly not in out, ugly


def test_plugins_info_unknown_kind_name_suggests(capsys) -> None:
    assert main(["plugins", "info", "filter/gophr"]) == 2
    assert "did you mean 'filter/gopher'" in capsys.readouterr().err
    assert main(["plugins", "info", "sauce/gopher"]) == 2
    assert "no plugin or component named 'sauce/gopher'" in capsys.readouterr().err


# -- the run summary -------------------------------------------------------------------------
@pytest.fixture
def toy_spec(tmp_path: Path) -> Path:
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
    config: {{steps: 6, checkpoint_every: 2}}
""")
    return path


def _rows(text: str) -> dict[str, list[str]]:
    """stage id -> the cells of its summary row (rich box-drawing table)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) >= 4 and cells[0] in ("words", "acc"):
            rows[cells[0]] = cells
    return rows


def test_run_prints_a_summary_on_stdout(toy_spec, capsys, monkeypatch, wide) -> None:
    assert main([*TOY, "run", str(toy_spec), "-q"]) == 0
    cap = capsys.readouterr()
    rows = _rows(cap.out)
    assert rows["words"][1:3] == ["count", "run"] and rows["acc"][1:3] == ["accumulate", "run"]
    assert re.fullmatch(r"\d+\.\ds", rows["acc"][3])
    assert rows["acc"][4].startswith("total=")  # the first measurement the stage returned
    assert rows["words"][4].startswith("words=")  # no float: its first metric
    assert "headline metric" in cap.out and "headline metric" not in cap.err

    assert main([*TOY, "run", str(toy_spec), "-q"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["words"][2] == "reused" and rows["acc"][2] == "reused"
    assert re.fullmatch(r"\(\d+\.\ds\)", rows["acc"][3])

    monkeypatch.setenv("TOY_CRASH_AT", "5")
    assert main([*TOY, "run", str(toy_spec), "-q", "acc.steps=8"]) == 1
    monkeypatch.delenv("TOY_CRASH_AT")
    capsys.readouterr()
    assert main([*TOY, "run", str(toy_spec), "-q", "acc.steps=8"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["words"][2] == "reused" and rows["acc"][2] == "resumed"


def test_summary_lists_reports_and_exported_models(tmp_path: Path) -> None:
    from pydantic import Field
    from rich.console import Console

    from lmforge import Config, Stage, hookimpl, stage
    from lmforge.summary import print_summary
    from lmforge.testing import plugin_manager, run_spec

    class Empty(Config):
        note: str = Field(default="", description="unused")

    class Report(Stage):
        def run(self) -> dict[str, float]:
            (self.ctx.output_dir("report") / "report.md").write_text("# report\n")
            return {"accuracy": 0.75, "n": 3}

    class Export(Stage):
        def run(self) -> dict[str, int]:
            (self.ctx.output_dir("hf_model") / "config.json").write_text("{}")
            return {"parameters": 1234}

    class Plugin:
        @hookimpl
        def lmforge_components(self):
            return [stage("evaluate", "rep", config=Empty, factory=Report,
                          outputs={"report": "report"}, description="a report"),
                    stage("export", "exp", config=Empty, factory=Export,
                          outputs={"hf_model": "hf-model"}, description="an export")]

    spec = {"name": "s", "stages": [{"id": "ev", "kind": "evaluate", "plugin": "rep"},
                                    {"id": "ex", "kind": "export", "plugin": "exp"}]}
    result = run_spec(spec, plugin_manager(Plugin()), tmp_path / "run")
    console = Console(record=True, width=200)
    rows = print_summary(result, console)
    assert [(r.stage_id, r.status, r.headline) for r in rows] == [
        ("ev", "run", "accuracy=0.75"), ("ex", "run", "parameters=1.23k")]
    text = console.export_text()
    report = tmp_path / "run" / "ev" / "outputs" / "report" / "report.md"
    model = tmp_path / "run" / "ex" / "outputs" / "hf_model"
    assert f"reports:\n  ev  {report}\n" in text
    assert f"exported models:\n  ex  {model}\n" in text


# -- table width -------------------------------------------------------------------------------
def _run_on_a_terminal(args: list[str], columns: int) -> str:
    """Run ``python -m lmforge ARGS`` with stdout and stderr on a pseudo-terminal of ``columns``
    columns; return what it printed."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "LINES") and not k.startswith("LMFORGE_")}
    env["TERM"] = "xterm"
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", *args], stdin=slave,
                            stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "")


def test_tables_fit_an_80_column_terminal() -> None:
    text = _run_on_a_terminal(["plugins", "list"], columns=80)
    assert "installed plugins" in text, text
    widest = max(len(line) for line in text.splitlines())
    assert widest <= 80, f"a line is {widest} columns wide on an 80-column terminal"


def test_tables_in_a_pipe_are_wide(monkeypatch) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k != "COLUMNS"}
    out = subprocess.run([sys.executable, "-m", "lmforge", "plugins", "list"], env=env,
                         capture_output=True, text=True, timeout=120).stdout
    assert max(len(line) for line in out.splitlines()) > 100  # logs are not squeezed to 80
