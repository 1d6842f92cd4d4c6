"""Registering plugins: the same module twice is harmless; 'not loaded' is told apart from
'not installed'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lmforge_data.plugin as data_plugin
from lmforge.errors import PluginError
from lmforge.plugins import PluginManager
from lmforge.testing import plugin_manager
from tests.core import toy_plugin

REPO = Path(__file__).resolve().parents[2]


def _lmforge(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_")}
    return subprocess.run([sys.executable, "-m", "lmforge", *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=REPO)


def test_installed_plugin_passed_again_with_autoload_is_registered_once() -> None:
    pm = plugin_manager(data_plugin, autoload=True)
    assert pm.conflicts == [] and pm.failures == []
    owners = [name for name, info in pm.plugins.items() if info.module == "lmforge_data.plugin"]
    assert owners == ["data"], "kept under its entry-point name"
    assert pm.get_component("filter", "gopher").plugin == "data"


def test_same_module_registered_twice_is_a_no_op() -> None:
    pm = plugin_manager(toy_plugin)
    before = pm.components()
    assert pm.register(toy_plugin, name="again") == "tests.core.toy_plugin"
    assert pm.components() == before and list(pm.plugins) == ["tests.core.toy_plugin"]
    pm.register_module("tests.core.toy_plugin")  # the -p path
    assert list(pm.plugins) == ["tests.core.toy_plugin"] and pm.conflicts == []


def test_a_different_plugin_under_a_taken_name_is_still_an_error() -> None:
    pm = plugin_manager(toy_plugin)
    with pytest.raises(PluginError, match="already registered"):
        pm.register(data_plugin, name="tests.core.toy_plugin")


def test_p_option_naming_an_installed_plugin_module() -> None:
    proc = _lmforge("-p", "lmforge_data.plugin", "plugins", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    names = [p["name"] for p in report["plugins"]]
    assert names.count("data") == 1 and "lmforge_data.plugin" not in names
    assert report["conflicts"] == []


def test_installed_but_not_loaded_says_so() -> None:
    pm = plugin_manager(toy_plugin)  # autoload off
    with pytest.raises(PluginError) as err:
        pm.get_component("stage:train", "pretrain")
    msg = str(err.value)
    assert "not installed" not in msg and "pip install" not in msg
    assert "installed but not loaded" in msg and "'train'" in msg
    assert "autoload" in msg


def test_excluded_by_the_allow_list_says_so() -> None:
    pm = PluginManager.load(autoload=True, allow=["data"], trace=False)
    with pytest.raises(PluginError) as err:
        pm.get_component("stage:train", "pretrain")
    msg = str(err.value)
    assert "installed but not loaded" in msg and "allow-list" in msg and "'train'" in msg


def test_not_installed_still_says_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import lmforge.plugins as plugins_mod

    monkeypatch.setattr(plugins_mod, "_installed_version", lambda dist: None)
    pm = plugin_manager(toy_plugin)
    with pytest.raises(PluginError, match=r"which is not installed: pip install"):
        pm.get_component("filter", "acme-blocklist")


# -- what else is installed does not change what the project's own checks see ----------------
def test_first_party_view_ignores_other_installed_plugins(tmp_path: Path) -> None:
    from lmforge.reference import markdown_reference
    from tests.core.test_plugins import COMPONENT, fake_dist

    site = tmp_path / "site"
    site.mkdir()
    # one plugin with its own name, one whose entry point reuses a first-party name
    # names no first-party text contains ("extra" did: "extraction")
    fake_dist(site, "lmforge-xtraplug", "1.0", {"xtraplug": "xtraplug_mod"},
              {"xtraplug_mod": COMPONENT.replace('"scaler"', '"filter"').format(
                  name="xtraplug")})
    fake_dist(site, "lmforge-squatter", "1.0", {"data": "squat_mod"},
              {"squat_mod": COMPONENT.replace('"scaler"', '"filter"').format(name="squat")})
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_")}
    env["PYTHONPATH"] = f"{site}{os.pathsep}{REPO}"

    def lmforge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lmforge", *args], env=env,
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)

    everything = json.loads(lmforge("plugins", "list", "--json").stdout)
    assert "xtraplug" in [p["name"] for p in everything["plugins"]]  # they are installed
    assert everything["conflicts"]
    ours = lmforge("schema", "--first-party", "--format", "markdown")
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == markdown_reference(PluginManager.load_first_party())
    assert "xtraplug" not in ours.stdout and "squat" not in ours.stdout


def test_two_distributions_with_one_entry_point_name_is_a_conflict_not_a_crash(
        tmp_path: Path) -> None:
    from tests.core.test_plugins import COMPONENT, fake_dist

    site = tmp_path / "site"
    site.mkdir()
    fake_dist(site, "lmforge-squatter", "1.0", {"data": "squat_mod"},
              {"squat_mod": COMPONENT.format(name="squat")})
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_")}
    env["PYTHONPATH"] = f"{site}{os.pathsep}{REPO}"
    proc = subprocess.run([sys.executable, "-m", "lmforge", "plugins", "list", "--json"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    conflicts = json.loads(proc.stdout)["conflicts"]
    assert len(conflicts) == 1 and "'data'" in conflicts[0]
    assert "lmforge-squatter" in conflicts[0] and "lmforge " in conflicts[0]
