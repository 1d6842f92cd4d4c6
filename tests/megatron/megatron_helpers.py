"""Shared by the Megatron backend's tests (a module name of its own: ``conftest`` is taken by
every test folder)."""

from __future__ import annotations

import importlib.util

import pytest

HAVE_MEGATRON = importlib.util.find_spec("megatron") is not None and \
    importlib.util.find_spec("megatron.core") is not None

needs_megatron = pytest.mark.skipif(not HAVE_MEGATRON, reason="megatron-core is not installed "
                                    "(pip install -c constraints/dev.txt -e '.[megatron]')")
