"""Registration of the ``lmforge_torch`` plugin. Light: imports no torch."""

from __future__ import annotations

from collections.abc import Sequence

from lmforge import Component, hookimpl
from lmforge_torch.config import LocalBackendConfig


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        Component(
            kind="backend", name="local", config=LocalBackendConfig,
            factory="lmforge_torch.local:LocalBackend",
            description="One process on one device (CPU, CUDA GPU or MPS), optional bf16 "
                        "autocast and torch.compile.",
        ),
    ]
