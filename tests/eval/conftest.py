"""Fixtures for the evaluation plugin's tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Artifacts for one test module (see ``eval_env.Env``)."""
    from eval_env import Env

    return Env(tmp_path_factory.mktemp("eval"))
