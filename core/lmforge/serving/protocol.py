"""The OpenAI wire format: request bodies in, response bodies out (pure functions, no I/O).

Supported request fields (others that change the result are refused with a 400 naming them;
fields that do not, such as ``user``, are ignored):

* both endpoints: ``model`` (optional; must be the served name when given), ``max_tokens``,
  ``temperature`` (0: greedy; default 1), ``top_p``, ``top_k`` (an extension, as in vLLM),
  ``n``, ``stop`` (a string or up to 4), ``seed``;
* ``/v1/chat/completions``: ``messages`` (roles system / user / assistant, contents strings or
  lists of text parts), ``max_completion_tokens``, ``logprobs`` (bool) and ``top_logprobs``
  (0-20);
* ``/v1/completions``: ``prompt`` (a string, a list of strings, token ids, or lists of token
  ids), ``logprobs`` (0-20: the top alternatives per token).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import StageInputError

MAX_TOP_LOGPROBS = 20
MAX_N = 64
MAX_STOPS = 4
#: Fields that would change the result and are not implemented: refused, not ignored.
UNSUPPORTED = {
    "stream": False, "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": None,
    "tools": None, "tool_choice": None, "functions": None, "function_call": None,
    "response_format": None, "echo": False, "suffix": None, "best_of": None,
    "repetition_penalty": 1,
}


class RequestError(Exception):
    """A bad request: ``status`` (400, 404 ...) and a message saying what to change."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.param, self.kind = status, param, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param,
                          "code": None}}


@dataclass
class Request:
    """A parsed generation request: ``prompts`` (token ids), ``n`` samples of each, the
    sampling fields, ``stop`` strings and how log-probs are reported (``logprobs`` None: not
    at all; else the number of top alternatives per token)."""

    endpoint: str  # "chat" or "completions"
    prompts: list[list[int]]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    n: int
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: int | None = None


def _number(body: Mapping[str, Any], key: str, default: Any, kind: type, lo: float | None = None,
            hi: float | None = None) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok:
        raise RequestError(f"'{key}' must be {'an integer' if kind is int else 'a number'}, got "
                           f"{value!r:.60}", param=key)
    value = kind(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise RequestError(f"'{key}' must be between {lo} and {hi}, got {value}", param=key)
    return value


def _stop(body: Mapping[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise RequestError("'stop' must be a non-empty string or a list of them", param="stop")
    if len(stops) > MAX_STOPS:
        raise RequestError(f"'stop' takes at most {MAX_STOPS} strings, got {len(stops)}",
                           param="stop")
    return stops


def _common(body: Mapping[str, Any], served: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got "
                           f"{type(body).__name__}")
    for key, neutral in UNSUPPORTED.items():
        if key in body and body[key] not in (neutral, None):
            raise RequestError(f"'{key}' is not supported by this server (lmforge serve); "
                               f"leave it out", param=key)
    model = body.get("model")
    if model is not None and model != served:
        raise RequestError(f"the model {model!r} does not exist; this server serves {served!r} "
                           f"(GET /v1/models)", status=404, param="model",
                           kind="model_not_found")
    seed = body.get("seed")
    if seed is not None:
        seed = _number(body, "seed", None, int, 0, 2**63 - 1)
    return {"temperature": _number(body, "temperature", 1.0, float, 0.0, 2.0),
            "top_p": _number(body, "top_p", 1.0, float, 0.0, 1.0),
            "top_k": _number(body, "top_k", 0, int, -1, 2**31),
            "n": _number(body, "n", 1, int, 1, MAX_N), "stop": _stop(body), "seed": seed}


def _fix_common(common: dict[str, Any]) -> dict[str, Any]:
    if common["top_p"] == 0:
        raise RequestError("'top_p' must be greater than 0", param="top_p")
    common["top_k"] = max(common["top_k"], 0)  # -1 (vLLM's "all") is 0 here
    return common


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        texts = []
        for part in content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(f"{where}: only text content parts are supported, got "
                                   f"{part.get('type')!r}", param="messages")
            texts.append(part["text"])
        return "".join(texts)
    raise RequestError(f"{where}: 'content' must be a string or a list of text parts",
                       param="messages")


def parse_chat(body: Any, tokenizer: Any, served: str, default_max_tokens: int) -> Request:
    """A ``/v1/chat/completions`` body -> :class:`Request` (prompt: the chat template with a
    generation prompt, :func:`lmforge.chat.encode_chat`)."""
    from lmforge.chat import encode_chat, validate_messages

    common = _fix_common(_common(body, served))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {role, content} objects",
                           param="messages")
    plain = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RequestError(f"messages[{i}] must be an object", param="messages")
        role = "system" if m.get("role") == "developer" else m.get("role")
        plain.append({"role": role, "content": _text(m.get("content"), f"messages[{i}]")})
    try:
        plain = validate_messages(plain, "messages", need_assistant=False)
    except StageInputError as exc:
        raise RequestError(str(exc), param="messages") from None
    ids, _ = encode_chat(tokenizer.tokenizer, plain, add_generation_prompt=True)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = _number({key: max_tokens}, key, default_max_tokens, int, 1, 2**31)
    logprobs = None
    if body.get("logprobs"):
        if not isinstance(body["logprobs"], bool):
            raise RequestError("'logprobs' must be true or false", param="logprobs")
        logprobs = _number(body, "top_logprobs", 0, int, 0, MAX_TOP_LOGPROBS)
    elif body.get("top_logprobs"):
        raise RequestError("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    return Request("chat", [ids], max_tokens, logprobs=logprobs, **common)


def parse_completion(body: Any, tokenizer: Any, served: str) -> Request:
    """A ``/v1/completions`` body -> :class:`Request` (text prompts are encoded as they are)."""
    common = _fix_common(_common(body, served))
    prompt = body.get("prompt")
    vocab = tokenizer.vocab_size
    if isinstance(prompt, str):
        prompts = [tokenizer.encode(prompt)]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = [tokenizer.encode(p) for p in prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        prompts = [list(prompt)]
    elif isinstance(prompt, list) and prompt and all(
            isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt):
        prompts = [list(p) for p in prompt]
    else:
        raise RequestError("'prompt' must be a string, a list of strings, a list of token ids "
                           "or a list of lists of token ids", param="prompt")
    for i, p in enumerate(prompts):
        if not p:
            raise RequestError(f"prompt {i} is empty (no tokens)", param="prompt")
        bad = [t for t in p if not 0 <= t < vocab]
        if bad:
            raise RequestError(f"prompt {i} holds token ids outside the vocabulary "
                               f"(0..{vocab - 1}): {bad[:5]}", param="prompt")
    max_tokens = _number(body, "max_tokens", 16, int, 1, 2**31)
    if body.get("top_logprobs") is not None:
        raise RequestError("'top_logprobs' belongs to /v1/chat/completions; here 'logprobs': N "
                           "asks for the N most probable tokens", param="top_logprobs")
    logprobs = body.get("logprobs")
    if logprobs is not None:
        logprobs = _number(body, "logprobs", 0, int, 0, MAX_TOP_LOGPROBS)
    return Request("completions", prompts, max_tokens, logprobs=logprobs, **common)


def check_context(req: Request, max_seq_len: int) -> None:
    """A 400 when a prompt leaves no room for one new token in the model's context."""
    for i, p in enumerate(req.prompts):
        if len(p) >= max_seq_len:
            raise RequestError(f"prompt {i} has {len(p)} tokens; this model's context is "
                               f"{max_seq_len} tokens (prompt + completion), so shorten it",
                               param="messages" if req.endpoint == "chat" else "prompt")


@dataclass
class Choice:
    """One finished completion, trimmed: ``token_ids``, their ``logprobs`` and
    ``top_logprobs``, the ``text`` and why it ended."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[list[tuple[int, float]]]
    finish_reason: str


def _token(tokenizer: Any, t: int) -> str:
    return tokenizer.decode([t])


def _chat_logprobs(choice: Choice, tokenizer: Any, top: int) -> dict[str, Any]:
    content = []
    for i, (t, lp) in enumerate(zip(choice.token_ids, choice.logprobs, strict=True)):
        s = _token(tokenizer, t)
        alts = choice.top_logprobs[i][:top] if top and i < len(choice.top_logprobs) else []
        content.append({"token": s, "logprob": lp, "bytes": list(s.encode("utf-8")),
                        "top_logprobs": [{"token": _token(tokenizer, a), "logprob": v,
                                          "bytes": list(_token(tokenizer, a).encode("utf-8"))}
                                         for a, v in alts]})
    return {"content": content}


def _completion_logprobs(choice: Choice, tokenizer: Any, top: int) -> dict[str, Any]:
    tokens = [_token(tokenizer, t) for t in choice.token_ids]
    offsets, pos = [], 0
    for s in tokens:
        offsets.append(pos)
        pos += len(s)
    tops = [{_token(tokenizer, a): v for a, v in (choice.top_logprobs[i][:top]
                                                  if i < len(choice.top_logprobs) else [])}
            for i in range(len(tokens))] if top else None
    return {"tokens": tokens, "token_logprobs": list(choice.logprobs), "top_logprobs": tops,
            "text_offset": offsets}


def response(req: Request, choices: Sequence[Choice], tokenizer: Any, served: str
             ) -> dict[str, Any]:
    """The response body for ``req`` (``choices`` ordered by prompt, then sample)."""
    created = int(time.time())
    completion_tokens = sum(len(c.token_ids) for c in choices)
    prompt_tokens = sum(len(p) for p in req.prompts)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    out: list[dict[str, Any]] = []
    for i, c in enumerate(choices):
        if req.endpoint == "chat":
            lp = None if req.logprobs is None else _chat_logprobs(c, tokenizer, req.logprobs)
            out.append({"index": i, "message": {"role": "assistant", "content": c.text},
                        "logprobs": lp, "finish_reason": c.finish_reason})
        else:
            lp = (None if req.logprobs is None
                  else _completion_logprobs(c, tokenizer, req.logprobs))
            out.append({"index": i, "text": c.text, "logprobs": lp,
                        "finish_reason": c.finish_reason})
    if req.endpoint == "chat":
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": created, "model": served, "choices": out, "usage": usage}
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": created,
            "model": served, "choices": out, "usage": usage}


def models_response(served: str, max_seq_len: int) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": served, "object": "model", "created": 0,
                                        "owned_by": "lmforge", "max_model_len": max_seq_len}]}
