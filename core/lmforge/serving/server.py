"""The HTTP server behind ``lmforge serve`` (standard library ``ThreadingHTTPServer``).

Each connection runs on its own thread, parses and validates its request
(:mod:`lmforge.serving.protocol`) and waits on the :class:`~lmforge.serving.batcher.Batcher`,
whose single worker owns the generator. Every request is logged as one line: client, method,
path, status, prompt and completion tokens, and seconds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lmforge.errors import StageInputError
from lmforge.serving.batcher import Batcher
from lmforge.serving.protocol import (
    RequestError,
    check_context,
    models_response,
    parse_chat,
    parse_completion,
    response,
)

log = logging.getLogger("lmforge.serve")

MAX_BODY = 16 * 2**20


def resolve_model(path: Path, tokenizer: Path | None) -> tuple[Path, Path]:
    """``(model artifact dir, tokenizer artifact dir)`` from what a user points at: a model
    artifact (``model.json``), or a stage folder of a run (``runs/<name>/<stage>``, whose
    ``outputs/model`` is used and whose manifest names the tokenizer it was trained with).
    ``tokenizer`` (given) wins over the manifest's."""
    from lmforge.runner import read_manifest

    path = Path(path)
    if not path.exists():
        raise StageInputError(f"{path} does not exist; give a model artifact folder (it holds "
                              f"model.json) or a run's stage folder (runs/<name>/<stage>)")
    model_dir = path
    if not (path / "model.json").is_file():
        candidates = [path / "outputs" / "model", path / "model"]
        found = next((c for c in candidates if (c / "model.json").is_file()), None)
        if found is None:
            raise StageInputError(f"{path} is not a model artifact: it has no model.json (nor "
                                  f"outputs/model/model.json, as a training stage's folder "
                                  f"has)")
        model_dir = found
    if tokenizer is None:
        stage_dir = model_dir.parent.parent if model_dir.parent.name == "outputs" else None
        manifest = read_manifest(stage_dir) if stage_dir else None
        rec = ((manifest or {}).get("inputs") or {}).get("tokenizer")
        if rec and Path(rec.get("path", "")).is_dir():
            tokenizer = Path(rec["path"])
        elif (model_dir / "tokenizer.json").is_file():
            tokenizer = model_dir
        else:
            raise StageInputError(f"which tokenizer goes with {model_dir}? Pass --tokenizer "
                                  f"(the tokenizer artifact the model was trained with, e.g. "
                                  f"runs/<name>/<tokenizer stage>/outputs/tokenizer)")
    return model_dir, Path(tokenizer)


@dataclass
class ServerHandle:
    """A running server: ``url`` (``http://host:port``, no trailing slash), ``model_name``
    (what ``/v1/models`` lists and requests may name), the ``batcher`` (its ``calls`` show how
    requests were batched). :meth:`close` stops it (also on leaving a ``with`` block)."""

    url: str
    host: str
    port: int
    model_name: str
    generator: Any
    batcher: Batcher
    httpd: ThreadingHTTPServer
    thread: threading.Thread | None = None
    started: bool = False  # serve_forever has run (shutdown() would wait forever otherwise)

    def serve_forever(self) -> None:
        """Serve on the calling thread until interrupted (the CLI's way)."""
        self.started = True
        self.httpd.serve_forever()

    def close(self) -> None:
        if self.started:
            self.httpd.shutdown()
        self.httpd.server_close()
        self.batcher.close()
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.generator.close()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    server_version = "lmforge-serve"
    protocol_version = "HTTP/1.1"
    app: _App  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # one line per request is written by _finish instead

    def _send(self, status: int, body: dict[str, Any], started: float,
              tokens: tuple[int, int] = (0, 0)) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        log.info('%s "%s %s" %d prompt_tokens=%d completion_tokens=%d %.3fs',
                 self.client_address[0], self.command, self.path, status, tokens[0], tokens[1],
                 time.monotonic() - started)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        started = time.monotonic()
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            self._send(200, models_response(self.app.name, self.app.generator.max_seq_len),
                       started)
        elif path in ("/health", ""):
            self._send(200, {"status": "ok", "model": self.app.name}, started)
        else:
            self._send(404, RequestError(f"no route GET {self.path}; try GET /v1/models",
                                         404).body(), started)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        started = time.monotonic()
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if path not in ("/v1/chat/completions", "/v1/completions"):
                raise RequestError(f"no route POST {self.path}; use /v1/chat/completions or "
                                   f"/v1/completions", 404)
            body = self._body()
            status, out, tokens = 200, self.app.complete(path, body), (0, 0)
            usage = out["usage"]
            tokens = (usage["prompt_tokens"], usage["completion_tokens"])
        except RequestError as exc:
            status, out, tokens = exc.status, exc.body(), (0, 0)
        except Exception as exc:  # noqa: BLE001 - the client gets a 500 with the reason
            log.exception("request failed")
            status, tokens = 500, (0, 0)
            out = RequestError(f"internal error: {type(exc).__name__}: {exc}", 500,
                               kind="server_error").body()
        self._send(status, out, started, tokens)

    def _body(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError("the request has no Content-Length header", 411)
        try:
            n = int(length)
        except ValueError:
            raise RequestError(f"Content-Length {length!r} is not a number") from None
        if n > MAX_BODY:
            raise RequestError(f"the request body is {n} bytes; at most {MAX_BODY} are "
                               f"accepted", 413)
        raw = self.rfile.read(n)
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(f"the request body is not valid JSON: {exc}") from None


class _App:
    """What every handler thread shares: the generator's tokenizer, name and batcher."""

    def __init__(self, name: str, generator: Any, tokenizer: Any, batcher: Batcher,
                 default_max_tokens: int) -> None:
        from lmforge.chat import END

        self.name, self.generator, self.tokenizer = name, generator, tokenizer
        self.batcher, self.default_max_tokens = batcher, default_max_tokens
        end = tokenizer.tokenizer.token_to_id(END)
        self.stop_ids = tuple(t for t in (tokenizer.eos_id, end) if t is not None)

    def complete(self, path: str, body: Any) -> dict[str, Any]:
        if path == "/v1/chat/completions":
            req = parse_chat(body, self.tokenizer, self.name, self.default_max_tokens)
        else:
            req = parse_completion(body, self.tokenizer, self.name)
        check_context(req, self.generator.max_seq_len)
        choices = self.batcher.submit(req, self.stop_ids).result()
        return response(req, choices, self.tokenizer, self.name)


def start_server(model_dir: Path | None = None, tokenizer_dir: Path | None = None, *,
                 host: str = "127.0.0.1", port: int = 0, generator: Any = None,
                 plugins: Any = None, device: str = "auto", dtype: str = "float32",
                 batch_size: int = 16, batch_window_ms: float = 5.0, max_batch_rows: int = 64,
                 model_name: str | None = None, default_max_tokens: int = 256,
                 background: bool = True) -> ServerHandle:
    """Start an OpenAI-compatible server for a model artifact and return its handle.

    ``model_dir``: a model artifact or a run's stage folder (see :func:`resolve_model`; the
    tokenizer comes from ``tokenizer_dir`` or the stage's manifest). ``generator``: an already
    built :class:`lmforge.generators.Generator` (``model_dir`` then only names the model);
    default: the builtin one on ``device`` in ``dtype``, with ``batch_size`` rows per forward.
    ``port=0`` picks a free port (read it from the handle's ``url``). With ``background`` the
    server runs on a daemon thread (tests, notebooks); else call ``serve_forever()``.
    """
    from lmforge.chat import load_tokenizer
    from lmforge.generators import BuiltinGenerator

    if model_dir is None and generator is None:
        raise ValueError("give model_dir, or a generator and tokenizer_dir")
    if model_dir is not None:
        model_dir, tokenizer_dir = resolve_model(Path(model_dir), tokenizer_dir)
    if tokenizer_dir is None:
        raise ValueError("tokenizer_dir is needed with a prebuilt generator")
    tokenizer = load_tokenizer(Path(tokenizer_dir))
    if generator is None:
        if plugins is None:
            from lmforge.plugins import PluginManager

            plugins = PluginManager.load()
        generator = BuiltinGenerator.from_artifact(Path(model_dir), tokenizer, plugins,
                                                   device=device, dtype=dtype,
                                                   batch_size=batch_size)
    name = model_name or _default_name(Path(model_dir) if model_dir else None)
    batcher = Batcher(generator, tokenizer, window_s=batch_window_ms / 1000,
                      max_rows=max_batch_rows)
    handler = type("Handler", (_Handler,), {"app": _App(name, generator, tokenizer, batcher,
                                                        default_max_tokens)})
    try:
        httpd = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        batcher.close()
        raise StageInputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick "
                              f"another --port (0: any free one)") from None
    httpd.daemon_threads = True
    bound_host, bound_port = httpd.server_address[:2]
    url = f"http://{bound_host}:{bound_port}"
    handle = ServerHandle(url=url, host=str(bound_host), port=int(bound_port), model_name=name,
                          generator=generator, batcher=batcher, httpd=httpd)
    if background:
        handle.started = True
        handle.thread = threading.Thread(target=httpd.serve_forever, name="lmforge-serve",
                                         daemon=True)
        handle.thread.start()
    log.info("serving %s (%s) at %s", name, generator.describe(), url)
    return handle


def _default_name(model_dir: Path | None) -> str:
    """``<stage>`` of ``runs/<name>/<stage>/outputs/model``, else the folder's name."""
    if model_dir is None:
        return "model"
    model_dir = model_dir.resolve()
    if model_dir.parent.name == "outputs":
        return model_dir.parent.parent.name
    return model_dir.name
