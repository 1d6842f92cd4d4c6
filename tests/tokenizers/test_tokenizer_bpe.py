"""The ``tokenizer/bpe`` stage: training, exact round trip, special tokens, transformers
compatibility of the artifact (chat template ids and assistant masks), and input errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from pydantic import ValidationError
from tok_helpers import FixturePlugin, write_dataset

import lmforge_tokenizers.plugin as tok_plugin
from lmforge import StageFailed, StageInputError
from lmforge.chat import END, EOS, PAD, SPECIAL_TOKENS, encode_chat, load_tokenizer
from lmforge.testing import check_plugin, plugin_manager, run_spec
from lmforge_tokenizers.config import BPEConfig

WORDS = ("the model learns to predict the next token from context while training on data "
         "tokens merge frequent pairs into larger units and compression improves with vocabulary "
         "size über café naïve 東京 данные λόγος emoji 🙂 numbers 12345 67890").split()

VOCAB = 400


def corpus(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [{"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30)))
             + rng.choice([".", "!", "?\n", ""])} for _ in range(n)]


def spec(data: Path, **config: object) -> dict:
    return {"name": "t", "stages": [
        {"id": "corpus", "kind": "data", "plugin": "fixture",
         "config": {"path": str(data), "kind": "dataset/text"}},
        {"id": "bpe", "kind": "tokenizer", "plugin": "bpe", "inputs": {"dataset": "corpus"},
         "config": {"vocab_size": VOCAB, **config}},
    ]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("bpe")
    data = write_dataset(root / "data", "text", {"train": corpus(400, 0),
                                                 "heldout": corpus(40, 1)}, rows_per_shard=150)
    pm = plugin_manager(tok_plugin, FixturePlugin())
    result = run_spec(spec(data, max_documents=300), pm, root / "run")
    assert result.status == "complete"
    return root / "run" / "bpe" / "outputs" / "tokenizer", result.stages[-1].metrics


def test_plugin_conforms() -> None:
    assert check_plugin(tok_plugin) == []


def test_artifact_files_and_metrics(trained: tuple[Path, dict]) -> None:
    out, metrics = trained
    assert {p.name for p in out.iterdir()} >= {"tokenizer.json", "tokenizer_config.json",
                                               "special_tokens_map.json", "artifact.json"}
    meta = json.loads((out / "artifact.json").read_text())
    assert meta["vocab_size"] == VOCAB == metrics["vocab_size"]
    assert meta["special_tokens"] == {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    assert meta["corpus"]["documents"] == 300  # max_documents honoured
    assert meta["compression"]["split"] == "heldout" == metrics["compression_split"]
    # A 400-token vocab on this repetitive corpus compresses well beyond one byte per token.
    assert metrics["bytes_per_token"] > 2.0
    assert metrics["chars_per_token"] <= metrics["bytes_per_token"]
    heldout = corpus(40, 1)
    tok = load_tokenizer(out)
    n_tokens = sum(len(tok.encode(r["text"])) for r in heldout)
    assert metrics["chars_per_token"] == pytest.approx(sum(len(r["text"]) for r in heldout)
                                                       / n_tokens)
    assert metrics["bytes_per_token"] == pytest.approx(
        sum(len(r["text"].encode()) for r in heldout) / n_tokens)
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert cfg["eos_token"] == EOS and cfg["pad_token"] == PAD
    assert cfg["add_bos_token"] is False and cfg["clean_up_tokenization_spaces"] is False


ROUND_TRIP = ["Hello, world!", "  leading and trailing spaces  ", "tabs\tand\nnewlines\r\n",
              "über naïve café 東京 данные 🙂 ∑∫ — “quotes”", "never seen: Ǆ ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "",
              f"inline {END} special {EOS} tokens"]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip_exact(trained: tuple[Path, dict], text: str) -> None:
    tok = load_tokenizer(trained[0])
    assert tok.decode(tok.encode(text)) == text


def test_special_tokens_are_single(trained: tuple[Path, dict]) -> None:
    tok = load_tokenizer(trained[0])
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.encode(t) == [i]
    assert tok.eos_id == 0 and tok.pad_id == 1
    ids = tok.encode(f"a{END}b")
    assert ids.count(SPECIAL_TOKENS.index(END)) == 1 and len(ids) == 3


CONVERSATIONS = [
    [{"role": "user", "content": "What is the next token?"},
     {"role": "assistant", "content": "The model learns to predict it."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "über café 🙂"},
     {"role": "assistant", "content": " numbers 12345"}, {"role": "user", "content": "more"},
     {"role": "assistant", "content": "data\nand tokens!"}],
]


def test_transformers_loads_offline_and_matches_chat_format(trained: tuple[Path, dict]) -> None:
    transformers = pytest.importorskip("transformers")
    out = trained[0]
    hf = transformers.AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    tok = load_tokenizer(out)
    assert hf.eos_token == EOS and hf.pad_token == PAD
    assert hf.convert_tokens_to_ids(END) == SPECIAL_TOKENS.index(END)
    for messages in CONVERSATIONS:
        ids, mask = encode_chat(tok.tokenizer, messages)
        got = hf.apply_chat_template(messages, tokenize=True, return_dict=True,
                                     return_assistant_tokens_mask=True)
        assert list(got["input_ids"]) == ids
        assert [bool(m) for m in got["assistant_masks"]] == mask
        assert any(mask) and not all(mask)
        gen_ids, _ = encode_chat(tok.tokenizer, messages[:-1], add_generation_prompt=True)
        hf_gen = hf.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True,
                                        return_dict=True)
        assert list(hf_gen["input_ids"]) == gen_ids
    text = ROUND_TRIP[3]
    assert hf.decode(hf.encode(text, add_special_tokens=False)) == text
    assert hf.encode(text, add_special_tokens=False) == tok.encode(text)


def test_vocab_larger_than_corpus_supports(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", "text", {"train": [{"text": "tiny tiny corpus"}] * 5})
    pm = plugin_manager(tok_plugin, FixturePlugin())
    with pytest.raises(StageFailed) as err:
        run_spec(spec(data, min_frequency=1), pm, tmp_path / "run")
    cause = err.value.cause
    assert isinstance(cause, StageInputError)
    msg = str(cause)
    assert "80 chars" in msg and "supports only" in msg and "lower vocab_size" in msg
    assert "5 documents" in msg and "11 distinct characters" in msg
    # nothing that looks like a finished artifact was written
    assert not (tmp_path / "run" / "bpe" / "outputs" / "tokenizer" / "tokenizer.json").exists()


def test_vocab_smaller_than_bytes_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match=r"256 byte tokens \+ 6 special tokens = 262"):
        BPEConfig(vocab_size=300 - 40)
    with pytest.raises(ValidationError, match="= 263"):
        BPEConfig(vocab_size=262, special_tokens=["<|tool|>"])
    cfg = BPEConfig(vocab_size=263, special_tokens=["<|tool|>", EOS])
    assert cfg.special_tokens == [*SPECIAL_TOKENS, "<|tool|>"]


def test_chat_and_preference_datasets(tmp_path: Path) -> None:
    rng = random.Random(3)

    def sent() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(12))

    chat = [{"messages": [{"role": "user", "content": sent()},
                          {"role": "assistant", "content": sent()}]} for _ in range(150)]
    pref = [{"prompt": [{"role": "user", "content": sent()}], "chosen": sent(),
             "rejected": sent()} for _ in range(100)]
    pm = plugin_manager(tok_plugin, FixturePlugin())
    for fmt, rows in (("chat", chat), ("preference", pref)):
        data = write_dataset(tmp_path / fmt, fmt, {"train": rows})
        s = spec(data)
        s["stages"][0]["config"]["kind"] = f"dataset/{fmt}"
        result = run_spec(s, pm, tmp_path / f"run-{fmt}")
        m = result.stages[-1].metrics
        assert m["vocab_size"] == VOCAB and m["compression_split"] == "train"
        tok = load_tokenizer(tmp_path / f"run-{fmt}" / "bpe" / "outputs" / "tokenizer")
        text = rows[0]["prompt"][0]["content"] if fmt == "preference" \
            else rows[0]["messages"][1]["content"]
        assert tok.decode(tok.encode(text)) == text
        assert len(tok.encode(text)) < len(text.encode()) / 2  # merges were learned from contents


def test_missing_split_is_reported_at_check(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", "text", {"heldout": corpus(5, 0)})
    pm = plugin_manager(tok_plugin, FixturePlugin())
    with pytest.raises(StageFailed, match="no split 'train'"):
        run_spec(spec(data), pm, tmp_path / "run")
