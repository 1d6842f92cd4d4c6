"""Inputs that take several artifacts (``InputSlot(many=True)``): wiring, validation errors,
stage keys and what a running stage sees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from lmforge import Config, InputSlot, Stage, hookimpl, stage
from lmforge.errors import SpecError
from lmforge.runner import read_manifest
from lmforge.testing import plugin_manager, run_spec, validate_spec


class WriteConfig(Config):
    value: int = Field(default=0, description="the number written")


class Write(Stage):
    def run(self) -> dict[str, Any]:
        (self.ctx.output_dir("model") / "value.json").write_text(json.dumps(self.config.value))
        return {"value": self.config.value}


class NoteConfig(Config):
    text: str = Field(default="", description="a note")


class Note(Stage):
    def run(self) -> dict[str, Any]:
        (self.ctx.output_dir("dataset") / "note.txt").write_text(self.config.text)
        return {}


class CompareConfig(Config):
    min_candidates: int = Field(default=2, description="fewest candidates accepted")

    def estimate(self, upstream: dict[str, Any]) -> dict[str, Any]:
        return {"values": [c.value for c in upstream["candidates"]]}

    def check_inputs(self, inputs: dict[str, Any]) -> None:
        seen.append(inputs)
        if len(inputs["candidates"]) < self.min_candidates:
            raise ValueError(f"needs at least {self.min_candidates} candidates")


seen: list[dict[str, Any]] = []


class Compare(Stage):
    def run(self) -> dict[str, Any]:
        cands = self.ctx.input_list("candidates")
        values = [json.loads((a.path / "value.json").read_text()) for a in cands]
        (self.ctx.output_dir("report") / "order.json").write_text(
            json.dumps([[a.stage_id, v] for a, v in zip(cands, values)]))
        return {"sum": sum(values)}


class ManyPlugin:
    @hookimpl
    def lmforge_components(self) -> list[Any]:
        return [
            stage("train", "write", config=WriteConfig, factory=Write,
                  outputs={"model": "model"}),
            stage("data", "note", config=NoteConfig, factory=Note,
                  outputs={"dataset": "dataset/text"}),
            stage("evaluate", "compare", config=CompareConfig, factory=Compare,
                  inputs={"candidates": InputSlot(("model",), many=True),
                          "notes": InputSlot(("dataset/text",), required=False, many=True)},
                  outputs={"report": "report"}),
        ]


@pytest.fixture()
def pm() -> Any:
    return plugin_manager(ManyPlugin())


def _spec(candidates: Any, **extra: Any) -> dict[str, Any]:
    inputs = {"candidates": candidates, **extra}
    return {"name": "many", "stages": [
        {"id": "a", "kind": "train", "plugin": "write", "config": {"value": 1}},
        {"id": "b", "kind": "train", "plugin": "write", "config": {"value": 2}},
        {"id": "c", "kind": "train", "plugin": "write", "config": {"value": 4}},
        {"id": "text", "kind": "data", "plugin": "note"},
        {"id": "cmp", "kind": "evaluate", "plugin": "compare", "inputs": inputs},
    ]}


def _messages(exc: pytest.ExceptionInfo[SpecError]) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in exc.value.issues]


def test_list_is_wired_in_order_and_check_inputs_gets_a_list(pm: Any) -> None:
    seen.clear()
    pipeline = validate_spec(_spec(["c", "a", "b"]), pm)
    plan = pipeline.stage("cmp")
    assert plan.inputs == {"candidates[0]": ("c", "model"), "candidates[1]": ("a", "model"),
                           "candidates[2]": ("b", "model")}
    assert [s.id for s in pipeline.stages][-1] == "cmp"
    assert pipeline.upstream("cmp") == {"a", "b", "c"}
    (got,) = seen
    assert [u.stage_id for u in got["candidates"]] == ["c", "a", "b"]
    assert all(u.kind == "model" for u in got["candidates"])
    assert "notes" not in got


def test_wrong_kind_in_the_list_is_named_with_its_position(pm: Any) -> None:
    with pytest.raises(SpecError) as exc:
        validate_spec(_spec(["a", "text", "b"]), pm)
    assert _messages(exc) == [("stages[4].inputs.candidates[1]",
                               "input 'candidates' accepts model, but stage 'text' produces "
                               "dataset (dataset/text)")]


def test_empty_list_of_a_required_input_is_an_error(pm: Any) -> None:
    with pytest.raises(SpecError) as exc:
        validate_spec(_spec([]), pm)
    (issue,) = exc.value.issues
    assert issue.path == "stages[4].inputs.candidates"
    assert issue.message.startswith("input 'candidates' lists no stage")
    assert issue.line is not None


def test_empty_list_of_an_optional_input_is_fine(pm: Any) -> None:
    pipeline = validate_spec(_spec(["a", "b"], notes=[]), pm)
    assert set(pipeline.stage("cmp").inputs) == {"candidates[0]", "candidates[1]"}


def test_duplicate_is_an_error(pm: Any) -> None:
    with pytest.raises(SpecError) as exc:
        validate_spec(_spec(["a", "b", "a.model"]), pm)
    assert _messages(exc) == [("stages[4].inputs.candidates[2]",
                               "input 'candidates' lists a.model twice (items 0 and 2)")]


def test_a_single_id_where_a_list_is_expected_and_the_reverse(pm: Any) -> None:
    with pytest.raises(SpecError) as exc:
        validate_spec(_spec("a", notes="text"), pm)
    msgs = dict(_messages(exc))
    assert "takes a list of stage ids" in msgs["stages[4].inputs.candidates"]
    assert "candidates: [a, ...]" in exc.value.issues[0].hint
    spec = _spec(["a", "b"])
    spec["stages"].append({"id": "cmp2", "kind": "evaluate", "plugin": "compare",
                           "inputs": {"candidates": ["a", "b"]}})
    validate_spec(spec, pm)  # fine; now a list where one id is expected:
    spec["stages"].append({"id": "w", "kind": "train", "plugin": "write",
                           "inputs": {"candidates": ["a"]}})
    with pytest.raises(SpecError) as exc:
        validate_spec(spec, pm)
    assert "has no input 'candidates'" in exc.value.issues[0].message


def test_unknown_stage_in_the_list_is_reported_with_a_hint(pm: Any) -> None:
    with pytest.raises(SpecError) as exc:
        validate_spec(_spec(["a", "bb"]), pm)
    (issue,) = exc.value.issues
    assert issue.path == "stages[4].inputs.candidates[1]"
    assert issue.message == "input 'candidates' refers to unknown stage 'bb'"
    assert issue.hint == "did you mean 'b'?"


def test_config_check_sees_the_list(pm: Any) -> None:
    with pytest.raises(SpecError) as exc:
        validate_spec(_spec(["a"]), pm)
    assert exc.value.issues[0].message == "needs at least 2 candidates"


def test_override_replaces_the_list(pm: Any) -> None:
    pipeline = validate_spec(_spec(["a", "b"]), pm, ["cmp.inputs.candidates=[b, c]"])
    assert list(pipeline.stage("cmp").inputs.values()) == [("b", "model"), ("c", "model")]


def test_run_hands_the_list_over_and_the_order_is_part_of_the_key(pm: Any,
                                                                  tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_spec(_spec(["c", "a"]), pm, run_dir)
    assert result.status == "complete"
    order = json.loads((run_dir / "cmp" / "outputs" / "report" / "order.json").read_text())
    assert order == [["c", 4], ["a", 1]]
    manifest = read_manifest(run_dir / "cmp")
    assert manifest is not None and manifest["metrics"]["sum"] == 5
    assert {k: v["stage"] for k, v in manifest["inputs"].items()} == {
        "candidates[0]": "c", "candidates[1]": "a"}
    key = manifest["key"]
    assert run_spec(_spec(["c", "a"]), pm, run_dir).ran == []  # reused: same key
    assert run_spec(_spec(["a", "c"]), pm, run_dir).ran == ["cmp"]
    again = read_manifest(run_dir / "cmp")
    assert again["key"] != key  # another order is another stage
    order = json.loads((run_dir / "cmp" / "outputs" / "report" / "order.json").read_text())
    assert order == [["a", 1], ["c", 4]]


def test_input_keys_round_trip() -> None:
    from lmforge.components import input_key, split_input_key

    assert split_input_key(input_key("candidates", 12)) == ("candidates", 12)
    assert split_input_key("candidates[12]") == ("candidates", 12)
    assert split_input_key("init") == ("init", None)
    assert split_input_key("odd[x]") == ("odd[x]", None)


def test_plan_estimates_see_the_list(pm: Any, tmp_path: Path) -> None:
    from lmforge.progress import Progress
    from lmforge.runner import Runner

    runner = Runner(validate_spec(_spec(["c", "a"]), pm), pm, run_dir=tmp_path / "run",
                    progress=Progress(enabled=False))
    (row,) = [r for r in runner.plan() if r[0].id == "cmp"]
    assert row[2] == {"values": [4, 1]}
