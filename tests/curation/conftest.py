"""Fixtures of the curation tests: the data plugin, and one planted corpus per session."""

from __future__ import annotations

from typing import Any

import pytest

import lmforge_data.plugin
from lmforge.testing import plugin_manager
from tests.curation.planted_corpus import Planted, planted_corpus


@pytest.fixture(scope="session")
def data_pm() -> Any:
    return plugin_manager(lmforge_data.plugin)


@pytest.fixture(scope="session")
def planted() -> Planted:
    """2,000 distinct documents and 480 copies at Jaccard 0.95 ... 0.3 (60 per level)."""
    return planted_corpus()
