"""The openai-compatible judge against a local HTTP server: answers from logprobs and from
text, retries with backoff on 429/5xx/timeouts, no retry on 4xx, the disk cache, the API key
from an environment variable."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lmforge.judging import Classification, Comparison
from lmforge_feedback.config import OpenAICompatibleJudgeConfig
from lmforge_feedback.http_judge import HTTPError, OpenAICompatibleJudge, make_retry

FAVOURED, OTHER = -0.2, -1.9


class Server:
    """A chat-completions endpoint. For each distinct body it first fails as ``script`` says
    (a list of status codes, or "sleep" to exceed the client's timeout), then answers: the
    letter of the response that contains "good" (A when neither), with top_logprobs unless
    ``logprobs`` is False."""

    def __init__(self, script: list[Any] = (), logprobs: bool = True) -> None:
        self.script, self.logprobs = list(script), logprobs
        self.seen: dict[str, int] = {}
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(json.loads(body))
                outer.headers.append(dict(self.headers))
                attempt = outer.seen.get(body.decode(), 0)
                outer.seen[body.decode()] = attempt + 1
                if attempt < len(outer.script):
                    step = outer.script[attempt]
                    if step == "sleep":
                        time.sleep(0.6)
                        step = 200
                    else:
                        self.send_response(step)
                        if step == 429:
                            self.send_header("Retry-After", "0")
                        self.send_header("Content-Length", "5")
                        self.end_headers()
                        self.wfile.write(b"nope!")
                        return
                answer = outer.answer(json.loads(body))
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        text = body["messages"][-1]["content"]
        a_part = text.split("Response A:")[-1].split("Response B:")[0]
        b_part = text.split("Response B:")[-1]
        letter = "B" if "good" in b_part and "good" not in a_part else "A"
        other = "B" if letter == "A" else "A"
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": f"{letter}."}}
        if self.logprobs and body.get("logprobs"):
            choice["logprobs"] = {"content": [{"token": letter, "logprob": FAVOURED,
                                               "top_logprobs": [
                                                   {"token": letter, "logprob": FAVOURED},
                                                   {"token": f" {other}", "logprob": OTHER},
                                                   {"token": "The", "logprob": -3.0}]}]}
        return {"id": "x", "object": "chat.completion", "choices": [choice]}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Stage:
    def __init__(self, work: Path) -> None:
        self.work = work

    def work_dir(self, name: str = "work") -> Path:
        (self.work / name).mkdir(parents=True, exist_ok=True)
        return self.work / name


def judge_for(server: Server, tmp_path: Path, **kw: Any) -> OpenAICompatibleJudge:
    settings = {"backoff_s": 0.01, "jitter_s": 0.01, "timeout_s": 0.3, "concurrency": 2, **kw}
    cfg = OpenAICompatibleJudgeConfig(base_url=server.url, model="m", **settings)
    judge = OpenAICompatibleJudge(cfg)
    judge.setup(_Stage(tmp_path), "cpu")
    return judge


ITEM = Comparison(prompt=[{"role": "user", "content": "q"}], a="good answer", b="meh",
                  principle="Which is better?")
P_FAV = math.exp(FAVOURED) / (math.exp(FAVOURED) + math.exp(OTHER))


@pytest.fixture
def server():
    made: list[Server] = []

    def make(*args: Any, **kw: Any) -> Server:
        made.append(Server(*args, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_answers_from_logprobs_in_both_orders(server, tmp_path):
    srv = server()
    v = judge_for(srv, tmp_path).compare([ITEM])[0]
    # a first: the server says A (a has "good"); a second: it says B, still a
    assert v.raw["ab"]["A"] == pytest.approx(P_FAV)
    assert v.raw["ba"]["B"] == pytest.approx(P_FAV)
    assert v.p_a == pytest.approx(P_FAV) and v.consistent is True
    assert v.raw["source"] == {"ab": "logprobs", "ba": "logprobs"}
    assert v.judge == "openai-compatible:m" and v.principle == "Which is better?"
    body = srv.requests[0]
    assert body["model"] == "m" and body["temperature"] == 0 and body["logprobs"] is True
    assert "Which is better?" in body["messages"][-1]["content"]


def test_answers_from_text_without_logprobs(server, tmp_path):
    srv = server(logprobs=False)
    v = judge_for(srv, tmp_path).compare([ITEM])[0]
    assert v.p_a == 1.0 and v.raw["source"] == {"ab": "text", "ba": "text"}


def test_retries_5xx_and_429_then_succeeds(server, tmp_path):
    srv = server(script=[500, 429, 503])
    v = judge_for(srv, tmp_path, cache=False).compare([ITEM])[0]
    assert v.p_a == pytest.approx(P_FAV)
    assert sorted(srv.seen.values()) == [4, 4]  # 3 failures + 1 success per question


def test_timeout_is_retried(server, tmp_path):
    srv = server(script=["sleep"])
    v = judge_for(srv, tmp_path, cache=False).compare([ITEM])[0]
    assert v.p_a == pytest.approx(P_FAV) and sorted(srv.seen.values()) == [2, 2]


def test_gives_up_after_retries_and_never_retries_4xx(server, tmp_path):
    srv = server(script=[500] * 10)
    with pytest.raises(HTTPError, match="500"):
        judge_for(srv, tmp_path, retries=2, cache=False, concurrency=1).compare([ITEM])
    assert max(srv.seen.values()) == 3  # first try + 2 retries
    srv = server(script=[400])
    with pytest.raises(HTTPError, match=r"HTTP 400 \(not retried\): nope!"):
        judge_for(srv, tmp_path, cache=False).compare([ITEM])
    assert max(srv.seen.values()) == 1


def test_backoff_doubles_with_jitter():
    from urllib3.util.retry import RequestHistory

    cfg = OpenAICompatibleJudgeConfig(base_url="http://x", model="m", backoff_s=0.5,
                                      backoff_max_s=3.0, jitter_s=0.25)
    retry = make_retry(cfg)
    for n, base in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (6, 3.0)):
        retry.history = tuple(RequestHistory("POST", "/", None, 500, None) for _ in range(n))
        waits = [retry.get_backoff_time() for _ in range(50)]
        assert all(base <= w <= base + 0.25 for w in waits), (n, waits[:3])
        assert len(set(waits)) > 1  # jittered


def test_cache_on_disk_answers_repeats_without_requests(server, tmp_path):
    srv = server()
    first = judge_for(srv, tmp_path).compare([ITEM])[0]
    assert len(srv.requests) == 2
    cached = tmp_path / "judge-cache"
    files = sorted(cached.rglob("*.json"))
    assert len(files) == 2 and not list(cached.rglob("*.tmp*"))
    again = judge_for(srv, tmp_path)
    assert again.compare([ITEM])[0].p_a == first.p_a
    assert len(srv.requests) == 2 and again.client.cache_hits == 2
    files[0].write_text("{not json")  # a damaged entry is asked again and rewritten
    third = judge_for(srv, tmp_path)
    third.compare([ITEM])
    assert len(srv.requests) == 3 and json.loads(files[0].read_text())["choices"]


def test_api_key_comes_from_the_environment(server, tmp_path, monkeypatch):
    from lmforge import StageInputError

    srv = server()
    monkeypatch.setenv("JUDGE_TEST_KEY", "sekrit")
    judge_for(srv, tmp_path, api_key_env="JUDGE_TEST_KEY", cache=False).compare([ITEM])
    assert srv.headers[0]["Authorization"] == "Bearer sekrit"
    monkeypatch.delenv("JUDGE_TEST_KEY")
    with pytest.raises(StageInputError, match="JUDGE_TEST_KEY"):
        judge_for(srv, tmp_path, api_key_env="JUDGE_TEST_KEY")
    with pytest.raises(ValueError, match="environment variable"):
        OpenAICompatibleJudgeConfig(base_url="http://x", model="m", api_key_env="sk-123 abc")


def test_classify_and_score_parse_letters_and_digits(server, tmp_path):
    srv = server()
    judge = judge_for(srv, tmp_path)
    got = judge.classify([Classification([{"role": "user", "content": "q"}], "good",
                                         "Refuses?", ("yes", "no"))])[0]
    # no "Response A:" in a classify prompt: the server answers "A" (the first answer)
    assert got["yes"] == pytest.approx(P_FAV)
    # score: the server's "A" is no digit: no score option found in logprobs or text
    assert judge.score([([{"role": "user", "content": "q"}], "x")]) == [pytest.approx(5.0)]
