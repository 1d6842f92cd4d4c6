"""The run report (``lmforge report RUN_DIR``, also written at the end of ``lmforge run``).

A small real pipeline (curate → BPE → pretrain → SFT → evaluate with a baseline) is run once
through the CLI; its report must hold the numbers the stages recorded, a loss plot for each
training stage and the whole lineage — and render in headless Chromium with the plots drawn.
Hand-written run folders cover the edge cases (killed writes, failed and not-run stages).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.report import REPORT_DIR, collect_run, write_report
from lmforge.report.plots import HELDOUT_COLOUR, LR_COLOUR, TRAIN_COLOUR
from lmforge.report.render import format_change, format_number

REPO = Path(__file__).resolve().parents[2]

SPEC = """\
name: report-test
seed: 0
stages:
  - id: corpus
    kind: data
    plugin: curate
    config:
      sources: [{type: python-functions, mode: text, path: "{stdlib}/json/*.py"}]
      filters: [{type: length, min_chars: 200}, {type: pii}]
      split_by: source
      heldout_fraction: 0.2
  - id: chats
    kind: data
    plugin: curate
    config:
      format: chat
      sources: [{type: python-functions, mode: chat, path: "{stdlib}/email/*.py"}]
      split_by: source
      heldout_fraction: 0.15
  - id: bpe
    kind: tokenizer
    plugin: bpe
    inputs: {dataset: corpus}
    config: {vocab_size: 320}
  - id: pretrain
    kind: train
    plugin: pretrain
    inputs: {dataset: corpus, tokenizer: bpe}
    config:
      model: {type: dense, dim: 32, n_layers: 1, n_heads: 2, max_seq_len: 128}
      loop: {steps: 8, batch_size: 4, seq_len: 128, log_every: 2, checkpoint_every: 8,
             optim: {lr: 3.0e-3, warmup_steps: 2}}
  - id: sft
    kind: train
    plugin: sft
    inputs: {dataset: chats, tokenizer: bpe, init: pretrain}
    config:
      loop: {steps: 6, batch_size: 4, seq_len: 128, log_every: 1, checkpoint_every: 6,
             optim: {lr: 1.0e-3, warmup_steps: 1}}
  - id: eval-sft
    kind: evaluate
    plugin: suite
    inputs: {model: sft, baseline: pretrain, tokenizer: bpe, text: corpus, chat: chats}
    config:
      max_examples: 8
      evaluators: [{type: perplexity}, {type: chat-loss}]
"""
STAGES = ["corpus", "chats", "bpe", "pretrain", "sft", "eval-sft"]
TRAINING = ["pretrain", "sft"]


# -- reading the HTML back -----------------------------------------------------------------------
class Page(HTMLParser):
    """Tables (by class: a list of rows of cell texts each), images, and SVG elements with their
    ``data-*`` attributes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[list[str]]]] = {}
        self.images: list[dict[str, str]] = []
        self.svg: list[tuple[str, dict[str, str]]] = []
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self._in_svg = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = []
            self.tables.setdefault(a.get("class", ""), []).append(self._table)
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(a)
        elif tag == "svg":
            self._in_svg = True
        if self._in_svg:
            self.svg.append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "svg":
            self._in_svg = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, css: str) -> list[list[str]]:
        """Rows (header included) of every table of class ``css``."""
        return [row for table in self.tables.get(css, []) for row in table]


def colour_pixels(png: bytes, colour: str, tolerance: int = 40) -> int:
    """Pixels of a PNG within ``tolerance`` (per channel) of ``colour`` (#rrggbb)."""
    import numpy as np
    from PIL import Image

    target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(pixels - target) <= tolerance).all(axis=-1).sum())


def non_white_fraction(png: bytes) -> float:
    import numpy as np
    from PIL import Image

    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    return float((grey < 235).mean())


def manifest(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "manifest.json").read_text())


# -- a small real run ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The pipeline above run through the CLI: (run folder, what ``run`` printed on stdout)."""
    root = tmp_path_factory.mktemp("report-run")
    spec = root / "pipeline.yaml"
    spec.write_text(SPEC)
    run = root / "run"
    proc = subprocess.run([sys.executable, "-m", "lmforge", "run", str(spec), "--run-dir",
                           str(run), "-q"], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "COLUMNS": "200"}, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run, proc.stdout


@pytest.mark.slow
def test_run_writes_the_report_and_its_summary_names_it(real_run):
    run, stdout = real_run
    html, md = run / REPORT_DIR / "report.html", run / REPORT_DIR / "report.md"
    assert html.is_file() and md.is_file()
    assert f"run report: {html}" in stdout
    # The report folder is not a stage: a rerun reuses everything and rewrites the report.
    assert {m["status"] for m in map(lambda s: manifest(run, s), STAGES)} == {"complete"}


@pytest.mark.slow
def test_a_rerun_that_reuses_every_stage_leaves_the_report_untouched(real_run, capsys):
    run, _ = real_run
    files = sorted((run / REPORT_DIR).rglob("*"))
    before = {p: p.stat().st_mtime_ns for p in files}
    assert main(["run", str(run.parent / "pipeline.yaml"), "--run-dir", str(run), "-q"]) == 0
    out = capsys.readouterr()
    assert "nothing to do: every stage was reused" in out.err
    assert f"run report: {run / REPORT_DIR / 'report.html'}" in out.out
    assert sorted((run / REPORT_DIR).rglob("*")) == files
    assert {p: p.stat().st_mtime_ns for p in files} == before


@pytest.mark.slow
def test_report_tables_hold_the_recorded_numbers(real_run):
    run, _ = real_run
    html = (run / REPORT_DIR / "report.html").read_text()
    md = (run / REPORT_DIR / "report.md").read_text()
    page = Page(html)

    stages = page.rows("stages")
    assert [r[0] for r in stages[1:]] == STAGES
    assert all(r[3] == "complete" for r in stages[1:])

    # Training: the final values are the metrics each stage returned.
    for sid in TRAINING:
        metrics = manifest(run, sid)["metrics"]
        assert metrics["train/loss"] and metrics["heldout/loss"]
        final = page.tables["final"][TRAINING.index(sid)]
        assert dict(final[1:]) == {k: format_number(v) for k, v in metrics.items()}
        assert f"| train/loss | {format_number(metrics['train/loss'])} |" in md

    # Evaluation: model, baseline and change for every metric of the evaluate stage.
    metrics = manifest(run, "eval-sft")["metrics"]
    across = page.rows("eval-across")
    assert across[0] == ["metric", "eval-sft (model: sft)"]
    model = {k: v for k, v in metrics.items() if not k.startswith("baseline/")}
    assert dict((r[0], r[1]) for r in across[1:]) == {k: format_number(v)
                                                      for k, v in model.items()}
    assert {"perplexity/loss", "chat-loss/loss"} <= set(model)
    versus = {r[0]: r[1:] for r in page.rows("eval-baseline")[1:]}
    for key, value in model.items():
        base = metrics[f"baseline/{key}"]
        assert versus[key] == [format_number(value), format_number(base),
                               format_change(value - base)]
        assert (f"| {key} | {format_number(value)} | {format_number(base)} | "
                f"{format_change(value - base)} |") in md
    assert "eval-sft: sft against baseline pretrain" in html

    # Data: splits from artifact.json, per-filter counts from stats.json.
    stats = json.loads((run / "corpus/outputs/dataset/stats.json").read_text())
    meta = json.loads((run / "corpus/outputs/dataset/artifact.json").read_text())
    splits = page.tables["splits"][0]
    assert {r[0]: r[1] for r in splits[1:]} == {k: format_number(v["rows"])
                                                for k, v in meta["splits"].items()}
    filters = page.tables["filters"][0]
    assert [r[:5] for r in filters[1:]] == [
        [f["name"], *(format_number(f[k]) for k in ("seen", "kept", "dropped", "modified"))]
        for f in stats["filters"]]
    assert len(page.tables["splits"]) == 2  # corpus and chats

    # Other stages: the tokenizer's metrics.
    bpe = manifest(run, "bpe")["metrics"]
    assert ["vocab_size", format_number(bpe["vocab_size"])] in page.rows("metrics")


@pytest.mark.slow
def test_each_training_stage_has_a_loss_plot(real_run):
    run, _ = real_run
    page = Page((run / REPORT_DIR / "report.html").read_text())
    md = (run / REPORT_DIR / "report.md").read_text()
    plots = {img["data-stage"]: img for img in page.images if "plot" in img.get("class", "")}
    assert sorted(plots) == sorted(TRAINING)
    for sid in TRAINING:
        src = plots[sid]["src"]
        assert src.startswith("data:image/png;base64,")
        import base64

        png = base64.b64decode(src.partition(",")[2])
        assert png == (run / REPORT_DIR / "plots" / f"{sid}.png").read_bytes()
        assert f"(plots/{sid}.png)" in md
        # The curves are drawn: the train-loss, held-out-loss and learning-rate colours.
        assert colour_pixels(png, TRAIN_COLOUR) > 300, sid
        assert colour_pixels(png, HELDOUT_COLOUR) > 20, sid  # one point, at the end
        assert colour_pixels(png, LR_COLOUR) > 300, sid


@pytest.mark.slow
def test_lineage_lists_every_stage_and_edge(real_run):
    run, _ = real_run
    html = (run / REPORT_DIR / "report.html").read_text()
    md = (run / REPORT_DIR / "report.md").read_text()
    page = Page(html)
    expected = {(rec["stage"], sid, slot) for sid in STAGES
                for slot, rec in manifest(run, sid)["inputs"].items()}
    assert len(expected) == 11
    nodes = [a["data-stage"] for tag, a in page.svg if tag == "g" and "data-stage" in a]
    assert sorted(nodes) == sorted(STAGES)
    edges = {(a["data-source"], a["data-target"]) for tag, a in page.svg
             if tag == "path" and "data-source" in a}
    assert edges == {(src, dst) for src, dst, _ in expected}
    table = {(r[0], r[1], slot) for r in page.rows("edges")[1:] for slot in r[2].split(", ")}
    assert table == expected
    # Markdown: a Mermaid flowchart with one node per stage and one arrow per edge.
    mermaid = md.split("```mermaid\n", 1)[1].split("```", 1)[0]
    ids = dict(re.findall(r'^  (s\d+)\["([^<]+)<br/>', mermaid, flags=re.M))
    assert sorted(ids.values()) == sorted(STAGES)
    arrows = {(ids[a], ids[b], slot) for a, slots, b in
              re.findall(r'^  (s\d+) -- "([^"]+)" --> (s\d+)$', mermaid, flags=re.M)
              for slot in slots.split(", ")}
    assert arrows == expected


@pytest.mark.slow
def test_report_command_writes_the_same_report_elsewhere(real_run, tmp_path, capsys):
    run, _ = real_run
    out = tmp_path / "elsewhere"
    assert main(["report", str(run), "-o", str(out)]) == 0
    assert f"wrote {out / 'report.html'}" in capsys.readouterr().out
    ours, theirs = Page((out / "report.html").read_text()), Page(
        (run / REPORT_DIR / "report.html").read_text())
    assert ours.tables == theirs.tables
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["pretrain.png", "sft.png"]
    # Links to the evaluate stage's own report resolve from the new place too.
    md = (out / "report.md").read_text()
    link = re.search(r"\]\(<([^>]+report\.md)>\)", md).group(1)
    assert (out / link).resolve() == (run / "eval-sft/outputs/report/report.md").resolve()


# -- headless Chromium ---------------------------------------------------------------------------
def _chromium() -> str | None:
    """Debian's chromium (scripts/setup.sh installs it); LMFORGE_CHROMIUM names another."""
    for name in (os.environ.get("LMFORGE_CHROMIUM"), "/usr/lib/chromium/chromium", "chromium",
                 "chromium-browser"):
        if name and (path := shutil.which(name) or (Path(name).is_file() and name)):
            return str(path)
    return None


def _browser_or_skip() -> str:
    """The browser to use. In CI (CI=true) a missing browser or playwright fails the test:
    scripts/setup.sh must have installed them. Elsewhere the test is skipped."""
    ci = os.environ.get("CI", "").lower() == "true"
    chromium = _chromium()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if ci:
            pytest.fail("playwright is not installed (the test extra of pyproject.toml)")
        pytest.skip("playwright is not installed: pip install -e '.[test]'")
    if chromium is None:
        if ci:
            pytest.fail("chromium is not installed: scripts/setup.sh installs it with apt-get")
        pytest.skip("chromium is not installed (scripts/setup.sh installs it as root, or: "
                    "sudo apt-get install chromium)")
    return chromium


@pytest.mark.slow
def test_report_renders_in_headless_chromium_with_the_plots_drawn(request, tmp_path):
    chromium = _browser_or_skip()  # before the run: a skip costs nothing
    from playwright.sync_api import sync_playwright

    run, _ = request.getfixturevalue("real_run")
    html = run / REPORT_DIR / "report.html"
    with sync_playwright() as p:
        # Generous timeouts: CI and dev machines are small and shared.
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"],
                                    timeout=120_000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900},
                                    device_scale_factor=1)
            page.set_default_timeout(120_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(html.as_uri(), wait_until="load")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            assert errors == []
            assert page.title() == "lmforge run report: report-test"
            # Nothing wider than the window (tables scroll inside their box, the graph scales).
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280

            plots = page.locator("img.plot")
            assert plots.count() == len(TRAINING)
            for i in range(plots.count()):
                img = plots.nth(i)
                sid = img.get_attribute("data-stage")
                assert img.evaluate("e => e.complete && e.naturalWidth > 0"), sid
                box = img.bounding_box()
                assert box and box["width"] > 400 and box["height"] > 150, (sid, box)
                shot = img.screenshot()  # the plot's box on the rendered page
                assert non_white_fraction(shot) > 0.03, sid
                assert colour_pixels(shot, TRAIN_COLOUR) > 300, sid
                assert colour_pixels(shot, LR_COLOUR) > 300, sid

            graph = page.locator("#lineage-graph")
            box = graph.bounding_box()
            assert box and box["width"] > 300 and box["height"] > 80
            shot = graph.screenshot()
            assert non_white_fraction(shot) > 0.05
            drawn = page.locator("#lineage-graph g.node").evaluate_all(
                "nodes => nodes.map(n => [n.dataset.stage, n.getBBox().width])")
            assert sorted(s for s, _ in drawn) == sorted(STAGES)
            assert all(w > 50 for _, w in drawn)
            assert page.locator("#lineage-graph path.edge").count() == 11  # (from, to) pairs
        finally:
            browser.close()


# -- hand-written run folders --------------------------------------------------------------------
def _stage(run: Path, sid: str, *, kind: str = "train", status: str = "complete",
           metrics: dict | None = None, inputs: dict | None = None, lines: list | None = None,
           error: str = "") -> None:
    folder = run / sid
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({
        "stage_id": sid, "kind": kind, "plugin": "fake", "status": status,
        "metrics": metrics or {}, "seconds": 1.5, "started": 1.0, "error": error,
        "inputs": {slot: {"stage": src} for slot, src in (inputs or {}).items()},
        "outputs": {}}))
    if lines is not None:
        (folder / "metrics.jsonl").write_text("".join(lines))


def test_killed_and_failed_stages(tmp_path):
    """A partial last line (a killed writer) is skipped, a step logged twice keeps its last
    value, held-out metrics logged at several steps get a table, a failed stage says why."""
    run = tmp_path / "run"
    rec = lambda step, **kw: json.dumps({"step": step, "time": 0, **kw}) + "\n"  # noqa: E731
    _stage(run, "a", kind="data", metrics={"docs": 3})
    _stage(run, "b", status="failed", inputs={"dataset": "a"}, error="RuntimeError: boom",
           lines=[rec(1, **{"train/loss": 4.0, "train/lr": 0.1}),
                  rec(2, **{"train/loss": 3.5, "train/lr": 0.2}),
                  rec(2, **{"train/loss": 3.25, "train/lr": 0.2}),
                  rec(2, **{"heldout/loss": 3.75}),
                  rec(4, **{"train/loss": 3.0, "train/lr": 0.1, "heldout/loss": 3.125}),
                  '{"step": 5, "train/lo'])
    data = collect_run(run)
    b = data.stage("b")
    assert b.series["train/loss"] == [(1, 4.0), (2, 3.25), (4, 3.0)]
    files = write_report(run)
    page = Page(files.html.read_text())
    assert dict((r[0], r[3]) for r in page.rows("stages")[1:]) == {"a": "complete",
                                                                 "b": "failed"}
    assert "b failed: RuntimeError: boom" in files.html.read_text()
    # Not complete: the final values are the last logged ones.
    assert dict(page.rows("final")[1:]) == {"train/loss": "3", "train/lr": "0.1",
                                            "heldout/loss": "3.125"}
    assert page.rows("heldout") == [["step", "heldout/loss"], ["2", "3.75"], ["4", "3.125"]]
    assert [p.name for p in files.plots] == ["b.png"]


def test_a_pipeline_subset_lists_stages_not_run_and_drops_stale_plots(tmp_path):
    run = tmp_path / "run"
    line = json.dumps({"step": 1, "train/loss": 1.0}) + "\n"
    _stage(run, "old", lines=[line])
    _stage(run, "new", lines=[line])
    out = tmp_path / "out"
    assert [p.name for p in write_report(run, out).plots] == ["new.png", "old.png"]
    files = write_report(run, out, stage_ids=["new", "later"], title="my pipeline")
    page = Page(files.html.read_text())
    assert [r[0::3] for r in page.rows("stages")[1:]] == [["new", "complete"],
                                                          ["later", "not run"]]
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["new.png"]
    assert "<title>lmforge run report: my pipeline</title>" in files.html.read_text()


def test_report_of_a_folder_without_stages_exits_2_writing_nothing(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no stage" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert list(tmp_path.iterdir()) == []


TOY = ["--no-autoload", "-p", "tests.core.toy_plugin"]


def _toy_spec(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one two two three three three\n")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(f"""\
name: toy
run_dir: {tmp_path / 'run'}
stages:
  - {{id: words, kind: data, plugin: count, config: {{path: {corpus}}}}}
  - {{id: acc, kind: train, plugin: accumulate, inputs: {{counts: words}},
      config: {{steps: 4, checkpoint_every: 2}}}}
""")
    return spec


def test_a_failed_run_still_writes_the_report_and_says_where(tmp_path, capsys):
    assert main([*TOY, "run", str(_toy_spec(tmp_path)), "-q", "acc.crash_at=3"]) == 1
    html = tmp_path / "run" / REPORT_DIR / "report.html"
    assert f"run report: {html}" in capsys.readouterr().err
    page = Page(html.read_text())
    assert [r[0::3] for r in page.rows("stages")[1:]] == [["words", "complete"],
                                                          ["acc", "failed"]]
    assert "crash requested at step 3" in html.read_text()


def test_a_report_that_cannot_be_written_does_not_fail_the_run(tmp_path, capsys, monkeypatch):
    import lmforge.report

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(lmforge.report, "write_report", boom)
    assert main([*TOY, "run", str(_toy_spec(tmp_path)), "-q"]) == 0
    out = capsys.readouterr()
    assert "warning: could not write the run report: OSError: disk full" in out.err
    assert "run report:" not in out.out
    assert not (tmp_path / "run" / REPORT_DIR).exists()


def test_report_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["report", "--help"])
    assert info.value.code == 0
    assert "usage: lmforge report" in capsys.readouterr().out


def test_report_without_training_stages_needs_no_matplotlib(tmp_path):
    """Plots are the only reason to import matplotlib; `lmforge report` itself is light."""
    run = tmp_path / "run"
    _stage(run, "a", kind="data", metrics={"docs": 3})
    probe = ("import sys; from lmforge.cli import main; code = main(['report', sys.argv[1]]);"
             "print(code, 'matplotlib' in sys.modules, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe, str(run)], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.stdout.split()[-3:] == ["0", "False", "False"], proc.stderr
