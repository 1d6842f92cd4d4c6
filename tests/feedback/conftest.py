"""Fixtures of the feedback tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from feedback_env import Env

    # artifacts only: no test writes into them
    return Env(tmp_path_factory.mktemp("feedback"))
