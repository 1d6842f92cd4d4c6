"""wandb with an API key but no reachable server: the wait is bounded by the tracker's
``init_timeout`` and one line says what happened (issue 8: it stalled ~90 s)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmforge.testing import plugin_manager, run_spec

wandb = pytest.importorskip("wandb")

import lmforge_wandb.plugin as wandb_plugin  # noqa: E402
from lmforge_wandb.config import WandbConfig  # noqa: E402
from tests.ecosystem.test_wandb import SPEC, TinyPlugin  # noqa: E402


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers (a stalled network)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    srv.close()
    for c in held:
        c.close()


def test_default_wait_is_short() -> None:
    assert WandbConfig().init_timeout <= 30


def test_unreachable_server_falls_back_to_offline_quickly(
        tmp_path: Path, silent_server: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for var in ("WANDB_MODE", "WANDB_DISABLED", "RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)
    spec = {**SPEC, "trackers": [{"type": "wandb", "project": "test", "system_metrics": False,
                                  "init_timeout": 3}]}
    start = time.monotonic()
    result = run_spec(spec, plugin_manager(TinyPlugin(), wandb_plugin), tmp_path / "run")
    elapsed = time.monotonic() - start
    assert result.status == "complete"
    assert elapsed < 30, f"took {elapsed:.0f} s"
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1, err
    assert "3 s" in warnings[0] and "init_timeout" in warnings[0] and "offline" in warnings[0]
    assert silent_server in warnings[0]
    assert sorted((tmp_path / "run" / "wandb").glob("offline-run-*")), "logged offline"
