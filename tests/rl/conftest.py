"""Fixtures of the RL tests: prepared tokenizer, datasets and a tiny model (once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def rl_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from rl_helpers import make_assets

    return make_assets(tmp_path_factory.mktemp("rl-assets"))
