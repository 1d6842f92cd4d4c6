"""Bad inputs fail early with clear messages; the plugins conform."""

from __future__ import annotations

import pytest
import train_helpers as H

import lmforge_align.plugin as align_plugin
import lmforge_train.plugin as train_plugin
from lmforge.errors import SpecError, StageFailed, StageInputError
from lmforge.testing import check_plugin, run_spec, validate_spec


def test_plugins_conform():
    assert check_plugin(train_plugin) == []
    assert check_plugin(align_plugin) == []


def test_seq_len_longer_than_model_fails_before_tokenising(assets, tmp_path):
    spec = H.pretrain_spec(assets, loop=H.loop_cfg(seq_len=128))
    with pytest.raises(StageFailed) as err:
        run_spec(spec, H.make_pm(), tmp_path)
    msg = str(err.value)
    assert "loop.seq_len (128)" in msg and "max_seq_len (64" in msg and "'pretrain'" in msg
    assert isinstance(err.value.cause, StageInputError)
    assert not (tmp_path / "pretrain" / "work").exists()


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
    with pytest.raises(StageFailed) as err:
        run_spec(spec, H.make_pm(), tmp_path)
    assert "differs from the architecture of the init model" in str(err.value)
    assert "['dim']" in str(err.value)
