"""Make ``plugins/`` importable even when the editable install predates the plugin packages."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

_PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
if importlib.util.find_spec("lmforge_eval") is None and str(_PLUGINS) not in sys.path:
    sys.path.insert(0, str(_PLUGINS))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Artifacts for one test module (see ``eval_env.Env``)."""
    from eval_env import Env

    return Env(tmp_path_factory.mktemp("eval"))
