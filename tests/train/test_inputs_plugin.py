"""Bad inputs fail early with clear messages; the plugins conform."""

from __future__ import annotations

import pytest
import train_helpers as H

import lmforge_align.plugin as align_plugin
import lmforge_train.plugin as train_plugin
from lmforge.errors import SpecError, StageFailed
from lmforge.testing import check_plugin, run_spec, validate_spec


def test_plugins_conform():
    assert check_plugin(train_plugin) == []
    assert check_plugin(align_plugin) == []


def test_seq_len_longer_than_model_fails_validation(assets, tmp_path):
    spec = H.pretrain_spec(assets, loop=H.loop_cfg(seq_len=128))
    with pytest.raises(SpecError) as err:
        run_spec(spec, H.make_pm(), tmp_path / "run")
    (issue,) = err.value.issues
    assert issue.path == f"stages[{len(spec['stages']) - 1}].config.loop.seq_len"
    assert issue.line is not None
    assert "loop.seq_len (128)" in issue.message and "max_seq_len of config.model (64)" \
        in issue.message
    assert not (tmp_path / "run").exists()


def test_sft_seq_len_longer_than_the_init_model_fails_validation(assets):
    spec = H.pretrain_spec(assets)
    spec["stages"].append({"id": "chats", "kind": "data", "plugin": "fixture",
                           "config": {"path": str(assets["chat"]), "format": "chat"}})
    spec["stages"].append({"id": "sft", "kind": "train", "plugin": "sft",
                           "inputs": {"dataset": "chats", "tokenizer": "bpe", "init": "pretrain"},
                           "config": {"loop": H.loop_cfg(seq_len=128)}})
    with pytest.raises(SpecError) as err:
        validate_spec(spec, H.make_pm())
    (issue,) = err.value.issues
    assert issue.path.endswith("config.loop.seq_len")
    assert "the init model (stage 'pretrain') (64)" in issue.message


def test_too_few_tokens_names_the_counts(assets, tmp_path):
    tiny = H.write_dataset(tmp_path / "tiny", "text", {"train": [{"text": "a b c"},
                                                                 {"text": "hello there"}]})
    spec = H.pretrain_spec({**assets, "text": tiny})
    with pytest.raises(StageFailed) as err:
        run_spec(spec, H.make_pm(), tmp_path / "run")
    msg = str(err.value)
    assert "tokens" in msg and "0 blocks" in msg and "needs 4 blocks" in msg, msg


def test_sft_without_init_is_a_spec_error(assets):
    spec = {"stages": H.base_stages(assets, "chat") + [
        {"id": "sft", "kind": "train", "plugin": "sft",
         "inputs": {"dataset": "data", "tokenizer": "bpe"}, "config": {"loop": H.loop_cfg()}}]}
    with pytest.raises(SpecError) as err:
        validate_spec(spec, H.make_pm())
    assert "init" in str(err.value)


def test_preference_data_into_pretrain_is_a_spec_error(assets):
    spec = H.pretrain_spec(assets)
    spec["stages"][0]["config"]["format"] = "preference"
    with pytest.raises(SpecError) as err:
        validate_spec(spec, H.make_pm())
    msg = str(err.value)
    assert "dataset/preference" in msg and "dataset/text" in msg, msg


def test_pretrain_init_must_match_architecture(assets, tmp_path):
    loop = H.loop_cfg(steps=2, optim={"lr": 1e-3, "warmup_steps": 0})
    spec = H.pretrain_spec(assets, loop=loop)
    second = {"id": "more", "kind": "train", "plugin": "pretrain",
              "inputs": {"dataset": "data", "tokenizer": "bpe", "init": "pretrain"},
              "config": {"model": H.model_cfg(dim=16), "loop": loop}}
    spec["stages"].append(second)
    with pytest.raises(SpecError) as err:  # found by validation: nothing runs
        run_spec(spec, H.make_pm(), tmp_path / "run")
    (issue,) = err.value.issues
    assert issue.path == f"stages[{len(spec['stages']) - 1}].config.model"
    assert "differs from the architecture of the init model (stage 'pretrain') in dim" \
        in issue.message
    assert not (tmp_path / "run").exists()
