"""The ``openai-compatible`` judge: questions to a chat-completions endpoint over HTTP.

Each question is one ``POST <base_url>/chat/completions`` with ``temperature: 0``,
``max_tokens`` and, when ``logprobs`` is on, ``logprobs: true`` and ``top_logprobs``.

* **Answers.** With log-probabilities in the response (``choices[0].logprobs.content[0]
  .top_logprobs``) the probability of each option is read from the first generated token's
  alternatives (leading/trailing spaces ignored; an option missing from the list gets the
  smallest listed log-probability — an upper bound — and the row says so) and normalised
  over the options. Without them, the first option letter (or digit, for scores) found as a
  word in the text gets probability 1; no option found is 0.5 each (``parsed: false``).
* **Retries.** requests with urllib3's ``Retry``: 429, 500, 502, 503, 504, connection errors
  and read timeouts are retried up to ``retries`` times; retry n waits
  ``min(backoff_max_s, backoff_s * 2**(n-1)) + uniform(0, jitter_s)`` seconds, or what a
  ``Retry-After`` header says. Other statuses fail at once, naming status and body.
* **Cache.** The answer to a request is stored under ``sha256(url + canonical JSON body)`` as
  ``<cache_dir>/<h[:2]>/<h>.json``, written atomically (temp file + rename); the API key is not
  part of the body, so it never reaches the disk. A damaged cache file is ignored and
  rewritten.
* **Concurrency.** ``concurrency`` requests in flight (a thread pool; one requests session per
  thread).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lmforge import StageInputError
from lmforge.judging import Classification, Comparison, Judge, Verdict, swap_average
from lmforge_feedback.judges import LETTERS, normalised, prompt_text

RETRY_STATUSES = (429, 500, 502, 503, 504)


def make_retry(config: Any) -> Any:
    """urllib3 ``Retry`` for POST with exponential backoff and jitter from the first retry."""
    from urllib3.util.retry import Retry

    class _Backoff(Retry):
        def get_backoff_time(self) -> float:  # urllib3 waits 0 before its first retry
            n = 0
            for h in reversed(self.history):
                if h.redirect_location is not None:
                    break
                n += 1
            if n == 0:
                return 0.0
            wait = min(self.backoff_max, self.backoff_factor * 2 ** (n - 1))
            return wait + random.random() * self.backoff_jitter

    return _Backoff(total=config.retries, connect=config.retries, read=config.retries,
                    status=config.retries, other=0, allowed_methods=frozenset({"POST"}),
                    status_forcelist=RETRY_STATUSES, backoff_factor=config.backoff_s,
                    backoff_max=config.backoff_max_s, backoff_jitter=config.jitter_s,
                    raise_on_status=False, respect_retry_after_header=True)


class HTTPError(StageInputError):
    """A request that failed for good (after retries, or a status that is not retried)."""


class ChatClient:
    """POSTs chat-completion bodies, with retries, a disk cache and a thread pool."""

    def __init__(self, config: Any, cache_dir: Path | None) -> None:
        self.config = config
        self.url = f"{config.base_url}/chat/completions"
        self.cache_dir = cache_dir if config.cache else None
        self._local = threading.local()
        self.requests_sent = 0
        self.cache_hits = 0
        self._lock = threading.Lock()
        key = None
        if config.api_key_env is not None:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise StageInputError(f"judge openai-compatible: environment variable "
                                      f"{config.api_key_env!r} (api_key_env) is not set")
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests
            from requests.adapters import HTTPAdapter

            session = requests.Session()
            adapter = HTTPAdapter(max_retries=make_retry(self.config))
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def cache_path(self, body: Mapping[str, Any]) -> Path | None:
        if self.cache_dir is None:
            return None
        blob = self.url + "\n" + json.dumps(body, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(blob.encode("utf-8")).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.json"

    def post(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON answer to ``body`` (from the cache when there)."""
        import requests

        from lmforge.fsutil import atomic_write_text

        path = self.cache_path(body)
        if path is not None and path.is_file():
            try:
                answer = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(answer, dict):
                    with self._lock:
                        self.cache_hits += 1
                    return answer
            except (OSError, ValueError):
                pass  # damaged: ask again and rewrite
        with self._lock:
            self.requests_sent += 1
        timeout = self.config.timeout_s
        try:
            resp = self._session().post(self.url, data=json.dumps(body), headers=self.headers,
                                        timeout=(timeout, timeout))
        except requests.exceptions.RetryError as exc:
            raise HTTPError(f"judge openai-compatible: {self.url} kept failing after "
                            f"{self.config.retries} retries: {exc}") from None
        except requests.exceptions.RequestException as exc:
            raise HTTPError(f"judge openai-compatible: request to {self.url} failed after "
                            f"{self.config.retries} retries: {exc}") from None
        if resp.status_code != 200:
            what = "after retries" if resp.status_code in RETRY_STATUSES else "(not retried)"
            raise HTTPError(f"judge openai-compatible: {self.url} answered HTTP "
                            f"{resp.status_code} {what}: {resp.text[:300]}")
        try:
            answer = resp.json()
        except ValueError:
            raise HTTPError(f"judge openai-compatible: {self.url} answered with something that "
                            f"is not JSON: {resp.text[:200]!r}") from None
        if not isinstance(answer, dict) or not answer.get("choices"):
            raise HTTPError(f"judge openai-compatible: {self.url} answered without 'choices': "
                            f"{str(answer)[:200]}")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(answer))
        return answer

    def post_all(self, bodies: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if len(bodies) <= 1 or self.config.concurrency == 1:
            return [self.post(b) for b in bodies]
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(self.post, bodies))

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()


def _clean(token: str) -> str:
    return token.strip().strip(".:)(").strip()


def option_probs(answer: Mapping[str, Any], options: Sequence[str]) -> dict[str, Any]:
    """Probabilities of ``options`` from one chat-completion answer (see the module doc):
    ``{"probs": [...], "source": "logprobs" | "text" | "none", ...}``."""
    choice = answer["choices"][0]
    content = ((choice.get("logprobs") or {}).get("content") or [])
    if content:
        first = content[0]
        alts = {}
        for alt in first.get("top_logprobs") or []:
            tok = _clean(str(alt.get("token", "")))
            lp = alt.get("logprob")
            if isinstance(lp, (int, float)) and math.isfinite(lp) and tok not in alts:
                alts[tok] = float(lp)
        tok = _clean(str(first.get("token", "")))
        if tok not in alts and isinstance(first.get("logprob"), (int, float)):
            alts[tok] = float(first["logprob"])
        found = [o for o in options if o in alts]
        if found:
            floor = min(alts.values())
            logps = [alts.get(o, floor) for o in options]
            probs, mass = normalised(logps)
            return {"probs": probs, "source": "logprobs", "option_mass": mass,
                    "missing": [o for o in options if o not in alts]}
    text = str((choice.get("message") or {}).get("content") or "")
    for word in re.findall(r"[A-Za-z0-9]+", text):
        if word in options:
            return {"probs": [1.0 if o == word else 0.0 for o in options], "source": "text",
                    "text": text[:200]}
    n = len(options)
    return {"probs": [1.0 / n] * n, "source": "none", "text": text[:200]}


class OpenAICompatibleJudge(Judge):
    """Config: :class:`lmforge_feedback.config.OpenAICompatibleJudgeConfig`."""

    name = "openai-compatible"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.client: ChatClient | None = None
        self.name = f"openai-compatible:{config.model}"

    def setup(self, stage: Any, device: Any) -> None:
        if self.client is None:
            cache = None
            if self.config.cache:
                cache = (Path(self.config.cache_dir) if self.config.cache_dir is not None
                         else stage.work_dir("judge-cache"))
            self.client = ChatClient(self.config, cache)

    def _body(self, user: str) -> dict[str, Any]:
        cfg = self.config
        messages = ([{"role": "system", "content": cfg.system}] if cfg.system else [])
        messages.append({"role": "user", "content": user})
        body: dict[str, Any] = {"model": cfg.model, "messages": messages, "temperature": 0,
                                "max_tokens": cfg.max_tokens}
        if cfg.logprobs:
            body.update(logprobs=True, top_logprobs=cfg.top_logprobs)
        return body

    def _ask(self, users: Sequence[str], options: Sequence[str]) -> list[dict[str, Any]]:
        if self.client is None:
            raise RuntimeError("judge openai-compatible: call setup(stage, device) first")
        answers = self.client.post_all([self._body(u) for u in users])
        return [option_probs(a, options) for a in answers]

    def compare(self, items: Sequence[Comparison]) -> list[Verdict]:
        cfg = self.config
        users = []
        for it in items:
            principle = it.principle or cfg.default_principle
            text = prompt_text(it.prompt)
            users += [cfg.template.format(principle=principle, prompt=text, a=it.a, b=it.b),
                      cfg.template.format(principle=principle, prompt=text, a=it.b, b=it.a)]
        got = self._ask(users, cfg.options)
        out = []
        for i, it in enumerate(items):
            ab, ba = got[2 * i], got[2 * i + 1]
            p_a, consistent = swap_average(ab["probs"][0], ba["probs"][1])
            raw = {"ab": {"A": ab["probs"][0], "B": ab["probs"][1]},
                   "ba": {"A": ba["probs"][0], "B": ba["probs"][1]},
                   "source": {"ab": ab["source"], "ba": ba["source"]}}
            out.append(Verdict(p_a=p_a, consistent=consistent, judge=self.name,
                               principle=it.principle, raw=raw))
        return out

    def score(self, items: Sequence[tuple[Any, str]]) -> list[float]:
        cfg = self.config
        users = [cfg.score_template.format(principle=cfg.default_principle,
                                           prompt=prompt_text(p), response=r) for p, r in items]
        return [sum((k + 1) * p for k, p in enumerate(g["probs"]))
                for g in self._ask(users, cfg.score_options)]

    def classify(self, items: Sequence[Classification]) -> list[dict[str, float]]:
        cfg = self.config
        out = []
        for it in items:
            letters = list(LETTERS[:len(it.answers)])
            listing = "\n".join(f"{ch}) {a}" for ch, a in zip(letters, it.answers))
            user = cfg.classify_template.format(prompt=prompt_text(it.prompt),
                                                response=it.response, question=it.question,
                                                answers=listing)
            got = self._ask([user], letters)[0]
            out.append(dict(zip(it.answers, got["probs"], strict=True)))
        return out

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
