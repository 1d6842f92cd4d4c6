"""`lmforge serve` (lmforge.serving) on a real model artifact, called over HTTP with urllib:
greedy answers equal lmforge.generation.generate on the same prompt, concurrent requests are
batched into one generate call and all answered, bad requests get a 4xx with a message."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

import lmforge_models.plugin as models_plugin
from lmforge.chat import END, encode_chat, load_tokenizer
from lmforge.generation import SamplingParams, generate
from lmforge.modelio import load_model
from lmforge.serving import start_server
from lmforge.testing import plugin_manager


def post(url: str, body: Any, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def served(gen_artifacts: tuple[Path, Path]) -> Any:
    model_dir, tok_dir = gen_artifacts
    pm = plugin_manager(models_plugin)
    handle = start_server(model_dir, tok_dir, port=0, plugins=pm, device="cpu",
                          batch_window_ms=300, model_name="tiny")
    tok = load_tokenizer(tok_dir)
    model = load_model(model_dir, pm).eval()
    yield handle, tok, model
    handle.close()


def reference(model: Any, tok: Any, ids: list[int], max_new: int) -> Any:
    stop = (tok.eos_id, tok.tokenizer.token_to_id(END))
    with torch.no_grad():
        (c,) = generate(model, [ids], SamplingParams(max_new_tokens=max_new, temperature=0,
                                                     stop_ids=stop), pad_id=tok.pad_id,
                        device="cpu")
    return c


def test_chat_greedy_equals_the_generation_service(served: Any) -> None:
    handle, tok, model = served
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "what colour is the sky?"}]
    status, body = post(f"{handle.url}/v1/chat/completions", {
        "model": "tiny", "messages": messages, "max_tokens": 12, "temperature": 0,
        "logprobs": True, "top_logprobs": 3})
    assert status == 200, body
    ids, _ = encode_chat(tok.tokenizer, messages, add_generation_prompt=True)
    ref = reference(model, tok, ids, 12)
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": tok.decode(ref.token_ids)}
    assert choice["finish_reason"] == ("stop" if ref.stop_id is not None else "length")
    assert body["usage"] == {"prompt_tokens": len(ids), "completion_tokens": len(ref.token_ids),
                             "total_tokens": len(ids) + len(ref.token_ids)}
    content = choice["logprobs"]["content"]
    assert [c["logprob"] for c in content] == pytest.approx(ref.logprobs, abs=1e-5)
    for c in content:  # greedy: the chosen token is the most probable one
        assert len(c["top_logprobs"]) == 3
        assert c["top_logprobs"][0]["logprob"] == pytest.approx(c["logprob"], abs=1e-6)
        assert c["top_logprobs"][0]["logprob"] >= c["top_logprobs"][1]["logprob"]
    assert body["model"] == "tiny" and body["object"] == "chat.completion"


def test_completions_with_several_prompts_n_and_stop_strings(served: Any) -> None:
    handle, tok, model = served
    prompts = ["The quick brown", "def add(a, b):"]
    status, body = post(f"{handle.url}/v1/completions", {
        "prompt": prompts, "max_tokens": 10, "temperature": 0, "n": 2, "logprobs": 2})
    assert status == 200, body
    assert len(body["choices"]) == 4
    refs = [reference(model, tok, tok.encode(p), 10) for p in prompts]
    for k, choice in enumerate(body["choices"]):
        ref = refs[k // 2]
        assert choice["index"] == k
        assert choice["text"] == tok.decode(ref.token_ids)
        assert choice["logprobs"]["token_logprobs"] == pytest.approx(ref.logprobs, abs=1e-5)
    # a stop string cuts the text before it and ends with "stop"
    text = body["choices"][0]["text"]
    assert len(text) >= 4, text
    stop = text[2:4]
    status, cut = post(f"{handle.url}/v1/completions", {
        "prompt": prompts[0], "max_tokens": 10, "temperature": 0, "stop": [stop]})
    assert status == 200, cut
    (choice,) = cut["choices"]
    assert choice["text"] == text[:text.index(stop)]
    assert choice["finish_reason"] == "stop"
    assert cut["usage"]["completion_tokens"] <= 10


def test_concurrent_requests_are_batched_and_all_answered(served: Any) -> None:
    handle, tok, model = served
    prompts = ["cats sit on", "Hello world!", "Question: what", "The lazy", "def", "dogs run"]
    lengths = [3, 7, 5, 9, 4, 6]
    results: dict[int, Any] = {}
    barrier = threading.Barrier(len(prompts))
    before = len(handle.batcher.calls)

    def ask(i: int) -> None:
        barrier.wait()
        results[i] = post(f"{handle.url}/v1/completions", {
            "prompt": prompts[i], "max_tokens": lengths[i], "temperature": 0})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = list(handle.batcher.calls)[before:]
    assert sum(calls) == len(prompts)
    assert max(calls) > 1, f"no two requests shared a generate call: {calls}"
    for i, p in enumerate(prompts):
        status, body = results[i]
        assert status == 200, body
        ref = reference(model, tok, tok.encode(p), lengths[i])
        assert body["choices"][0]["text"] == tok.decode(ref.token_ids)
        assert body["usage"]["completion_tokens"] == len(ref.token_ids) <= lengths[i]


def test_seeded_sampling_is_reproducible(served: Any) -> None:
    handle, _, _ = served
    body = {"prompt": "cats", "max_tokens": 8, "temperature": 1.0, "n": 3, "seed": 7}
    a, b = post(f"{handle.url}/v1/completions", body), post(f"{handle.url}/v1/completions", body)
    assert a[0] == b[0] == 200
    assert [c["text"] for c in a[1]["choices"]] == [c["text"] for c in b[1]["choices"]]


@pytest.mark.parametrize(("path", "body", "status", "words"), [
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "temperature": "hot"}, 400, "temperature"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "stream": True}, 400, "stream"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "model": "gpt-9"}, 404, "tiny"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": [1, 2, 99999]}, 400, "vocabulary"),
    ("/v1/completions", {"prompt": "word " * 200}, 400, "context"),
    ("/v1/completions", {"prompt": "x", "top_logprobs": 2}, 400, "top_logprobs"),
    ("/v1/embeddings", {"input": "x"}, 404, "/v1/completions"),
])
def test_bad_requests_get_an_error_with_a_message(served: Any, path: str, body: Any,
                                                  status: int, words: str) -> None:
    handle, _, _ = served
    got, out = post(f"{handle.url}{path}", body)
    assert got == status, out
    assert words in out["error"]["message"], out


def test_invalid_json_and_models_route(served: Any) -> None:
    handle, _, _ = served
    status, out = post(f"{handle.url}/v1/completions", None, raw=b"{not json")
    assert status == 400 and "not valid JSON" in out["error"]["message"]
    with urllib.request.urlopen(f"{handle.url}/v1/models", timeout=30) as resp:
        models = json.loads(resp.read())
    assert [m["id"] for m in models["data"]] == ["tiny"]
    assert models["data"][0]["max_model_len"] == 96


def test_a_stage_folder_resolves_to_its_model_and_the_tokenizer_in_its_manifest(
        gen_artifacts: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from lmforge import StageInputError
    from lmforge.serving import resolve_model

    model_dir, tok_dir = gen_artifacts
    stage = tmp_path / "runs" / "demo" / "sft"
    shutil.copytree(model_dir, stage / "outputs" / "model")
    (stage / "manifest.json").write_text(json.dumps({
        "stage_id": "sft", "status": "complete",
        "inputs": {"tokenizer": {"stage": "bpe", "kind": "tokenizer", "path": str(tok_dir)}}}))
    assert resolve_model(stage, None) == (stage / "outputs" / "model", tok_dir)
    other = tmp_path / "tok2"
    other.mkdir()
    assert resolve_model(stage, other)[1] == other  # --tokenizer wins
    with pytest.raises(StageInputError, match="--tokenizer"):
        resolve_model(model_dir, None)  # a bare artifact: which tokenizer?
    with pytest.raises(StageInputError, match="model.json"):
        resolve_model(tmp_path, None)


def test_cli_serve_help_and_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                   gen_artifacts: tuple[Path, Path]) -> None:
    import importlib.util

    from lmforge.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "/v1/chat/completions" in out and "curl" in out and "--batch-window-ms" in out
    assert main(["serve", str(tmp_path / "missing")]) != 0
    assert "does not exist" in capsys.readouterr().err
    model_dir, tok_dir = gen_artifacts
    base = ["serve", str(model_dir), "--tokenizer", str(tok_dir), "--port", "0"]
    assert main([*base, "--generator", "builtin", "--generator-config", "{bad"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    if importlib.util.find_spec("vllm") is None:
        assert main([*base, "--generator", "vllm"]) == 2
        assert "pip install vllm" in capsys.readouterr().err
