"""Plugin discovery: entry points via stevedore, failures, conflicts, controls, trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lmforge.errors import PluginError
from lmforge.plugins import PluginManager
from lmforge.testing import check_plugin, plugin_manager
from tests.core import toy_plugin

REPO = Path(__file__).resolve().parents[2]


def fake_dist(site: Path, dist: str, version: str, entry_points: dict[str, str],
              modules: dict[str, str]) -> None:
    """Install a minimal distribution (dist-info + modules) into the folder ``site``."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[lmforge.plugins]\n{eps}")
    for name, code in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(code))


COMPONENT = """
from lmforge import Component, Config, hookimpl
class C(Config):
    pass
@hookimpl
def lmforge_components():
    return [Component("scaler", "{name}", C, factory=dict, description="d")]
"""


def lmforge(site: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_")}
    environ.update({"PYTHONPATH": f"{site}{os.pathsep}{REPO}", **(env or {})})
    return subprocess.run([sys.executable, "-m", "lmforge", *args], capture_output=True,
                          text=True, env=environ, timeout=120)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    fake_dist(site, "acme-broken", "1.2.3", {"acme_broken": "acme_broken_mod"},
              {"acme_broken_mod": "raise ImportError('libacme.so: cannot open shared object')"})
    fake_dist(site, "acme-good", "0.4", {"acme_good": "acme_good_mod"},
              {"acme_good_mod": COMPONENT.format(name="cubic")})
    return site


def test_broken_plugin_is_reported_and_others_keep_working(site):
    proc = lmforge(site, "plugins", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    failure = next(f for f in report["failures"] if f["name"] == "acme_broken")
    assert failure["distribution"] == "acme-broken" and failure["version"] == "1.2.3"
    assert failure["entry_point"] == "acme_broken = acme_broken_mod"
    assert "libacme.so" in failure["error"]
    good = next(p for p in report["plugins"] if p["name"] == "acme_good")
    assert good["distribution"] == "acme-good" and good["components"] == ["scaler/cubic"]


def test_spec_needing_a_component_of_a_broken_plugin_names_it(site, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("stages:\n  - {id: a, kind: train, plugin: accumulate, inputs: {counts: a},"
                    " config: {scale: {type: quartic}}}\n")
    proc = lmforge(site, "validate", str(spec), "-p", "tests.core.toy_plugin")
    assert proc.returncode == 2
    assert "unknown type 'quartic'" in proc.stderr or "quartic" in proc.stderr
    spec.write_text("stages:\n  - {id: a, kind: data, plugin: acme-reader}\n")
    proc = lmforge(site, "validate", str(spec))
    assert proc.returncode == 2
    assert "acme_broken" in proc.stderr and "acme-broken 1.2.3" in proc.stderr
    assert "libacme.so" in proc.stderr


def test_same_component_from_two_distributions_is_an_error(site, tmp_path):
    fake_dist(site, "acme-twin", "2.0", {"acme_twin": "acme_twin_mod"},
              {"acme_twin_mod": COMPONENT.format(name="cubic")})
    proc = lmforge(site, "plugins", "list", "--json")
    conflicts = json.loads(proc.stdout)["conflicts"]
    assert len(conflicts) == 1
    assert "acme-good 0.4" in conflicts[0] and "acme-twin 2.0" in conflicts[0]
    spec = tmp_path / "s.yaml"
    spec.write_text("stages:\n  - {id: a, kind: data, plugin: curate}\n")
    proc = lmforge(site, "validate", str(spec))
    assert proc.returncode == 2 and "provided by both" in proc.stderr


def test_allow_list_disable_autoload_and_p_option(site):
    report = json.loads(lmforge(site, "plugins", "list", "--json",
                                env={"LMFORGE_PLUGINS": "acme_good"}).stdout)
    assert [p["name"] for p in report["plugins"]] == ["acme_good"] and report["failures"] == []
    report = json.loads(lmforge(site, "--no-autoload", "plugins", "list", "--json",
                                "-p", "tests.core.toy_plugin").stdout)
    assert [p["name"] for p in report["plugins"]] == ["tests.core.toy_plugin"]
    report = json.loads(lmforge(site, "plugins", "list", "--json",
                                env={"LMFORGE_DISABLE_PLUGIN_AUTOLOAD": "1"}).stdout)
    assert report["plugins"] == []
    proc = lmforge(site, "plugins", "list", "-p", "no.such.module")
    assert proc.returncode == 2 and "cannot import plugin module" in proc.stderr


def test_trace_prints_hook_calls(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"stages:\n  - {{id: w, kind: data, plugin: count, config: {{path: {corpus}}}}}\n")
    proc = lmforge(tmp_path, "--no-autoload", "--trace-hooks", "-p", "tests.core.toy_plugin",
                   "run", str(spec), "--run-dir", str(tmp_path / "run"), "-q")
    assert proc.returncode == 0, proc.stderr
    assert "lmforge_stage_start" in proc.stderr and "lmforge_pipeline_end" in proc.stderr


def test_hook_failure_in_a_tracker_does_not_fail_the_run(tmp_path, capsys):
    from lmforge import hookimpl
    from lmforge.testing import run_spec

    class Flaky:
        @hookimpl
        def lmforge_stage_end(self, stage_id):
            raise RuntimeError("tracker backend down")

    corpus = tmp_path / "c.txt"
    corpus.write_text("a b\n")
    pm = plugin_manager(toy_plugin, Flaky())
    result = run_spec(f"stages:\n  - {{id: w, kind: data, plugin: count, config: {{path: {corpus}}}}}\n",
                      pm, tmp_path / "run")
    assert result.status == "complete"
    assert "tracker backend down" in capsys.readouterr().err


def test_register_rejects_bad_contributions():
    class Bad:
        @staticmethod
        @__import__("lmforge").hookimpl
        def lmforge_components():
            return ["not a component"]

    pm = plugin_manager()
    pm.register(Bad(), name="bad", distribution="bad-dist", version="1")
    assert pm.failures and "expected lmforge.Component" in pm.failures[0].error
    with pytest.raises(PluginError, match="no scaler 'linear'; none is installed"):
        pm.get_component("scaler", "linear")


def test_conformance_check_finds_problems():
    assert check_plugin(toy_plugin) == []

    from lmforge import Component, Config, hookimpl

    class Loose(Config):
        model_config = {"extra": "allow"}
        x: int = 1

    class Plugin:
        @staticmethod
        @hookimpl
        def lmforge_components():
            return [Component("scaler", "a b", Loose, factory="nope.module:x")]

        @staticmethod
        def lmforge_stage_end(stage_id, bogus):  # not marked, unknown argument
            pass

    problems = "\n".join(check_plugin(Plugin))
    for expected in ("names must be non-empty without spaces", "must forbid unknown keys",
                     "has no description", "cannot be loaded", "unknown argument(s) ['bogus']",
                     "not marked with @lmforge.hookimpl"):
        assert expected in problems


def test_installed_first_party_plugins_conform():
    pm = PluginManager.load_first_party()
    assert pm.failures == [], [f.format() for f in pm.failures]
    for info in pm.plugins.values():
        if info.distribution == "lmforge":
            module = sys.modules[info.module]
            assert check_plugin(module) == [], info.name
