"""``lmforge serve``: an OpenAI-compatible HTTP server on the generation service (public API).

``start_server(model_dir, tokenizer_dir=None, port=0) -> ServerHandle`` starts one on a
background thread (``handle.url``, ``handle.close()``); ``lmforge serve`` runs the same in the
foreground. Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``,
``GET /health``. See docs/plugins/generation.md.

Importing this package imports no torch (the generator does, when it is built).
"""

from lmforge.serving.server import ServerHandle, resolve_model, start_server

__all__ = ["ServerHandle", "resolve_model", "start_server"]
