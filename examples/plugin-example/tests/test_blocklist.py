"""Tests of lmforge-acme-filters: conformance, filter behaviour, config errors, entry point."""

from __future__ import annotations

import importlib.metadata
import json
import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError

import lmforge_acme_filters.plugin as plugin
from lmforge.testing import check_plugin, plugin_manager

DATA = Path(__file__).resolve().parents[1] / "data" / "documents.jsonl"


def build(**config):
    """Validate ``config`` as a spec would and build the filter through its factory."""
    pm = plugin_manager(plugin)
    model = pm.component_config_model("filter", plugin.COMPONENT)
    factory = pm.get_component("filter", plugin.COMPONENT).load_factory()
    return factory(model(type=plugin.COMPONENT, **config))


def test_conforms():
    assert check_plugin(plugin) == []


def test_whole_words_case_insensitive_and_reason_names_the_word():
    f = build(words=["casino", "lorem ipsum"])
    r = f("Win big at the CASINO tonight")
    assert (r.keep, r.reason, dict(r.counts)) == (False, "casino", {"casino": 1})
    assert f("Lorem  ipsum is not this").keep  # two spaces: not the phrase
    assert not f("lorem ipsum dolor").keep
    assert f("Casinos and casinoville are other words").keep


def test_patterns_and_min_hits():
    f = build(patterns=[r"buy\s+now"], words=["spam"], min_hits=3)
    assert f("buy now! spam").keep  # 2 hits < 3
    r = f("buy now, BUY  NOW, spam")
    assert not r.keep
    assert r.reason == r"buy\s+now" and dict(r.counts) == {"spam": 1, r"buy\s+now": 2}


def test_case_sensitive():
    f = build(words=["ACME"], case_sensitive=True)
    assert f("acme products").keep
    assert not f("ACME products").keep


def test_words_with_symbols():
    f = build(words=["c++", "$$$"])
    assert not f("we write C++ daily").keep
    assert not f("make $$$ fast").keep
    assert f("c+ grade").keep


def test_config_errors():
    with pytest.raises(ValidationError, match="at least one"):
        build()
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        build(patterns=["buy(now"])
    with pytest.raises(ValidationError, match="empty"):
        build(words=["ok", " "])
    with pytest.raises(ValidationError):
        build(words=["x"], min_hits=0)
    with pytest.raises(ValidationError):
        build(words=["x"], wrods=["typo"])


def test_picklable_for_worker_processes():
    f = pickle.loads(pickle.dumps(build(words=["spam"], patterns=["x+y"])))
    assert f("spam").reason == "spam"


def test_example_data_expected_drops():
    f = build(words=["casino", "lorem ipsum", "spam"], patterns=[r"buy\s+now"])
    docs = [json.loads(line) for line in DATA.read_text().splitlines()]
    dropped = {d["id"]: f(d["text"]).reason for d in docs if not f(d["text"]).keep}
    assert dropped == {2: "casino", 3: "lorem ipsum",
                       4: r"buy\s+now", 8: r"buy\s+now",
                       10: "spam"}


def test_entry_point_when_installed():
    try:
        importlib.metadata.distribution("lmforge-acme-filters")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("not installed (pip install -e .)")
    from lmforge.plugins import PluginManager

    pm = PluginManager.load(allow=["acme-filters"])
    assert not pm.failures, [f.format() for f in pm.failures]
    assert pm.get_component("filter", "acme-blocklist").distribution == "lmforge-acme-filters"
