"""lmforge: train language models end to end from one declarative pipeline spec.

The public API for plugin authors. Everything importable from here is light (no torch,
datasets or wandb); heavy helpers live in modules imported by running stages
(:mod:`lmforge.modelio`, :mod:`lmforge.datasetio`, :mod:`lmforge.chat`,
:mod:`lmforge.checkpoint`, :mod:`lmforge.training`).
"""

from lmforge._version import __version__
from lmforge.components import (
    ARTIFACT_KINDS,
    STAGE_KINDS,
    Component,
    Config,
    InputSlot,
    Slot,
    backend_ranks,
    stage,
)
from lmforge.errors import (
    ConfigValueError,
    LmforgeError,
    PluginError,
    SpecError,
    StageFailed,
    StageInputError,
)
from lmforge.hookspecs import hookimpl
from lmforge.interfaces import FilterResult
from lmforge.stages import Artifact, Stage, StageContext

__all__ = [
    "ARTIFACT_KINDS", "STAGE_KINDS", "Artifact", "Component", "Config", "ConfigValueError",
    "FilterResult", "InputSlot", "LmforgeError", "PluginError", "Slot", "SpecError", "Stage", "StageContext",
    "StageFailed", "StageInputError", "__version__", "backend_ranks", "hookimpl",
    "stage",
]
