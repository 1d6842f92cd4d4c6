"""Paths written in a spec: relative to the spec file's folder, checked at validation.

Spec validation (:func:`lmforge.spec.validate.validate`) passes a pydantic *validation context*
to every config model, nested component configs included:

* :data:`SPEC_DIR` — the folder of the spec file (absent or ``None`` for a spec given as text or
  a dict, e.g. in tests, unless a ``base_dir`` is given);
* :data:`CHECK_FILES` — true when validators should check that the files a config names exist
  (``lmforge validate``, ``plan`` and ``run`` ask for it; :func:`lmforge.testing.validate_spec`
  only with ``check_files=True``).

A config field typed :data:`SpecPath` (or ``SpecPath | list[SpecPath]``) gets a relative path
made absolute against :data:`SPEC_DIR`, so ``lmforge run some/dir/pipeline.yaml`` reads the same
files from any current directory, and the stage key (which hashes the config) tells apart
pipelines that read different files. Absolute paths, ``~`` paths and paths starting with a
``{placeholder}`` (``{stdlib}``) are left as written; without :data:`SPEC_DIR` nothing changes
(the path is then relative to the current directory when it is used).

This module imports only pydantic: config modules, imported at plugin discovery, may use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationInfo

#: Validation-context key: the spec file's folder (str), or None.
SPEC_DIR = "lmforge_spec_dir"
#: Validation-context key: whether validators should check the filesystem (bool).
CHECK_FILES = "lmforge_check_files"

#: Said in messages about paths that do not resolve.
RELATIVE_HINT = "relative paths in a spec file are relative to the spec file's folder"


def _context(info: ValidationInfo | None) -> dict[str, Any]:
    ctx = getattr(info, "context", None)
    return ctx if isinstance(ctx, dict) else {}


def spec_dir(info: ValidationInfo | None) -> Path | None:
    """The spec file's folder from the validation context, or None when unknown."""
    value = _context(info).get(SPEC_DIR)
    return Path(value) if value else None


def check_files(info: ValidationInfo | None) -> bool:
    """Whether this validation should check that named files exist."""
    return bool(_context(info).get(CHECK_FILES))


def resolve_spec_path(value: str, base: Path | str | None) -> str:
    """``value`` made absolute against ``base`` when it is relative (see the module doc);
    returned unchanged when ``base`` is None, ``value`` is empty, absolute, starts with ``~`` or
    with a ``{placeholder}``. Glob characters are kept."""
    if base is None or not value or value.startswith(("~", "{")) or os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(os.fspath(base), value))


def _resolve(value: str, info: ValidationInfo) -> str:
    return resolve_spec_path(value, spec_dir(info))


#: A path (or glob) in a spec: relative to the spec file's folder once validated.
SpecPath = Annotated[str, AfterValidator(_resolve)]
