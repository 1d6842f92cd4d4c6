"""Spec loading and validation: every error at once, with file:line and key path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.errors import SpecError
from lmforge.spec import load_and_validate
from lmforge.testing import plugin_manager, validate_spec
from tests.core import toy_plugin


@pytest.fixture
def pm():
    return plugin_manager(toy_plugin)


GOOD = """\
name: toy
stages:
  - id: words
    kind: data
    plugin: count
    config: {path: corpus.txt}
  - id: acc
    kind: train
    plugin: accumulate
    inputs: {counts: words}
    config: {steps: 4}
"""


def issues_of(text: str, pm, overrides=()) -> list:
    with pytest.raises(SpecError) as info:
        validate_spec(text, pm, overrides)
    return info.value.issues


def test_valid_spec_orders_stages_by_inputs(pm):
    text = GOOD.replace("stages:\n", "stages:\n  - id: late\n    kind: train\n    plugin: "
                        "accumulate\n    inputs: {counts: words}\n", 1)
    pipeline = validate_spec(text, pm)
    assert [s.id for s in pipeline.stages] == ["words", "late", "acc"]
    assert pipeline.stage("acc").inputs == {"counts": ("words", "counts")}
    assert pipeline.stage("acc").config.scale.type == "linear"  # slot default validated


def test_every_mistake_is_reported_with_line_and_path(pm, tmp_path: Path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("""\
name: toy
seeed: 3
stages:
  - id: words
    kind: dta
    plugin: count
  - id: acc
    kind: train
    plugin: acumulate
  - id: acc2
    kind: train
    plugin: accumulate
    inputs: {counts: wrds}
    config:
      steps: many
      chekpoint_every: 2
      scale: {type: tripple}
""")
    with pytest.raises(SpecError) as info:
        load_and_validate(str(spec), pm)
    got = [(i.line, i.path, i.message, i.hint) for i in info.value.issues]
    assert all(i.file == str(spec) for i in info.value.issues)
    lines = {path: (line, msg, hint) for line, path, msg, hint in got}
    assert lines["seeed"][0] == 2 and "did you mean 'seed'" in lines["seeed"][2]
    assert lines["stages[0].kind"][0] == 5 and "did you mean 'data'" in lines["stages[0].kind"][2]
    assert lines["stages[1].plugin"][0] == 9
    assert "did you mean 'accumulate'" in lines["stages[1].plugin"][1]
    assert lines["stages[2].inputs.counts"][0] == 13
    assert "unknown stage 'wrds'" in lines["stages[2].inputs.counts"][1]
    assert lines["stages[2].config.steps"][0] == 15
    assert "'many'" in lines["stages[2].config.steps"][1]
    assert lines["stages[2].config.chekpoint_every"][0] == 16
    assert "did you mean 'checkpoint_every'" in lines["stages[2].config.chekpoint_every"][2]
    assert lines["stages[2].config.scale.type"][0] == 17
    assert "expected one of double, linear" in lines["stages[2].config.scale.type"][1]
    assert len(got) == 7


def test_artifact_kind_mismatch_and_missing_input(pm):
    text = GOOD.replace("inputs: {counts: words}", "inputs: {counts: acc}")
    msgs = [i.message for i in issues_of(text, pm)]
    assert any("cannot consume its own output" in m for m in msgs)
    text = GOOD.replace("    inputs: {counts: words}\n", "")
    issues = issues_of(text, pm)
    assert issues[0].path == "stages[1].inputs"
    assert "needs input 'counts' (dataset/text)" in issues[0].message


def test_cycle_is_reported(pm):
    text = """\
stages:
  - {id: a, kind: train, plugin: accumulate, inputs: {counts: b}}
  - {id: b, kind: train, plugin: accumulate, inputs: {counts: a}}
"""
    msgs = [i.message for i in issues_of(text, pm)]
    assert any("accepts dataset/text, but stage 'b' produces result (model)" in m for m in msgs)


def test_true_cycle(pm):
    # A data-kind input accepting a model would be needed for a real cycle; emulate with a stage
    # plugin whose input accepts what the other produces.
    from lmforge import InputSlot, hookimpl, stage

    class Loop:
        @hookimpl
        def lmforge_components(self):
            return [stage("train", "loop", config=toy_plugin.ScaleConfig, factory=dict,
                          description="d", inputs={"x": InputSlot(("model",))},
                          outputs={"y": "model"})]

    pm = plugin_manager(toy_plugin, Loop())
    text = """\
stages:
  - {id: a, kind: train, plugin: loop, inputs: {x: b}}
  - {id: b, kind: train, plugin: loop, inputs: {x: a}}
"""
    msgs = [i.message for i in issues_of(text, pm)]
    assert msgs == ["stages depend on each other in a cycle: a -> b"]


def test_duplicate_ids_and_duplicate_yaml_keys(pm):
    text = GOOD.replace("id: acc", "id: words")
    assert any("duplicate stage id 'words'" in i.message for i in issues_of(text, pm))
    issues = issues_of("name: a\nname: b\nstages: []\n", pm)
    assert issues[0].line == 2 and "duplicate key 'name'" in issues[0].message


def test_yaml_syntax_error_has_line(pm):
    issues = issues_of("name: x\nstages:\n  - id: [unclosed\n", pm)
    assert issues[0].line is not None and "invalid YAML" in issues[0].message


def test_overrides_are_validated_and_located(pm):
    pipeline = validate_spec(GOOD, pm, ["acc.steps=7", "acc.scale.type=double", "seed=5"])
    assert pipeline.stage("acc").config.steps == 7
    assert pipeline.stage("acc").config.scale.type == "double"
    assert pipeline.spec.seed == 5
    issues = issues_of(GOOD, pm, ["acc.steps=zero"])
    assert issues[0].file == "override 'acc.steps=zero'" and issues[0].path == "stages[1].config.steps"
    issues = issues_of(GOOD, pm, ["acc.stpes=3"])
    assert "did you mean 'steps'" in issues[0].hint
    with pytest.raises(SpecError, match="not of the form"):
        validate_spec(GOOD, pm, ["acc.steps"])


def test_safe_loader_refuses_python_tags(pm):
    issues = issues_of("name: !!python/object/apply:os.system ['echo hi']\nstages: []\n", pm)
    assert "invalid YAML" in issues[0].message


def test_schema_covers_every_component(pm):
    schema = pm.assembler().pipeline_model().model_json_schema()
    text = json.dumps(schema)
    for name in ("count", "accumulate", "linear", "double", "checkpoint_every"):
        assert name in text
