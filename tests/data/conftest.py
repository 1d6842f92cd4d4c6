"""Fixtures for the data plugin's tests."""

from __future__ import annotations

from typing import Any

import pytest

import lmforge_data.plugin
from lmforge.testing import plugin_manager


@pytest.fixture(scope="session")
def pm() -> Any:
    return plugin_manager(lmforge_data.plugin)

