"""Fixtures for the data plugin's tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

try:  # the editable install may predate plugins/lmforge_data; fall back to the source tree
    import lmforge_data  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the venv was installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

import lmforge_data.plugin  # noqa: E402
from lmforge.testing import plugin_manager  # noqa: E402


@pytest.fixture(scope="session")
def pm() -> Any:
    return plugin_manager(lmforge_data.plugin)

