"""The HTTP server of ``lmforge rate`` (standard library ``http.server``, one thread per
request).

Routes: ``GET /`` the page (``?rater=ID``), ``/rate.css``, ``/rate.js``;
``GET /api/next?rater=ID`` -> ``{"item": {...} | null, "progress": {...}}``;
``POST /api/vote`` with ``{"rater", "item", "side": "left"|"right"|"tie"|"skip", "note"}`` ->
the next item, sent only after the answer is on disk. Errors are ``{"error": "..."}`` with
status 400. It listens on 127.0.0.1 by default: expose it to other machines deliberately
(``--host 0.0.0.0``), there is no authentication.
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lmforge_rating.page import CSS, HTML, JS
from lmforge_rating.session import RatingSession

MAX_BODY = 64 * 1024
STATIC = {"/": ("text/html; charset=utf-8", HTML), "/rate.css": ("text/css", CSS),
          "/rate.js": ("text/javascript", JS)}


class _Handler(BaseHTTPRequestHandler):
    session: RatingSession  # set on the subclass made by make_server
    server_version = "lmforge-rate"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        return  # quiet: the terminal shows what `lmforge rate` prints

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", "default-src 'self'")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, doc: Any, status: int = 200) -> None:
        self._send(status, "application/json", json.dumps(doc).encode("utf-8"))

    def _next(self, rater: str) -> dict[str, Any]:
        item = self.session.next_item(rater)
        return {"item": item, "progress": self.session.progress(rater)}

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        url = urlsplit(self.path)
        if url.path in STATIC:
            ctype, text = STATIC[url.path]
            self._send(200, ctype, text.encode("utf-8"))
            return
        if url.path == "/api/next":
            rater = parse_qs(url.query).get("rater", [""])[0]
            try:
                self._json(self._next(rater))
            except ValueError as exc:
                self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
            return
        self._json({"error": f"no page {url.path}"}, HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:  # noqa: N802 - stdlib's name
        if urlsplit(self.path).path != "/api/vote":
            self._json({"error": "POST /api/vote only"}, HTTPStatus.NOT_FOUND)
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if not 0 < length <= MAX_BODY:
                raise ValueError(f"a vote is a JSON body of at most {MAX_BODY} bytes")
            doc = json.loads(self.rfile.read(length))
            if not isinstance(doc, dict):
                raise ValueError("a vote is a JSON object")
            self.session.answer(str(doc.get("rater", "")), str(doc.get("item", "")),
                                str(doc.get("side", "")), doc.get("note", "") or "")
            self._json(self._next(str(doc["rater"])))
        except (ValueError, KeyError) as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except OSError as exc:  # the log could not be written: say so, nothing is claimed
            self._json({"error": f"could not save the answer: {exc}"},
                       HTTPStatus.INTERNAL_SERVER_ERROR)


def make_server(session: RatingSession, host: str = "127.0.0.1", port: int = 8765
                ) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (port 0: any free port; ``server.server_address``
    tells which). Call ``serve_forever()``; ``shutdown()`` from another thread stops it."""
    handler = type("RateHandler", (_Handler,), {"session": session})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread
