"""Make ``plugins/`` importable even when the editable install predates the plugin packages."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
if importlib.util.find_spec("lmforge_tokenizers") is None and str(_PLUGINS) not in sys.path:
    sys.path.insert(0, str(_PLUGINS))
