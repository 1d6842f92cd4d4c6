"""Exceptions that the CLI turns into clear messages and exit codes."""

from __future__ import annotations

from dataclasses import dataclass


class LmforgeError(Exception):
    """Base class of errors reported without a traceback."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec: where (file:line, key path), what is wrong, and a hint."""

    message: str
    path: str = ""  # dotted key path, e.g. "stages[2].config.lr"
    file: str | None = None
    line: int | None = None  # 1-based
    hint: str = ""

    def where(self) -> str:
        loc = self.file or "<spec>"
        if self.line is not None:
            loc += f":{self.line}"
        return loc

    def format(self) -> str:
        text = f"{self.where()}: {self.path + ': ' if self.path else ''}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class SpecError(LmforgeError):
    """The spec is invalid. Carries every issue found, not just the first (exit code 2)."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(i.format() for i in issues))


class ConfigValueError(ValueError):
    """A config value that cannot work, raised by a config model's validator or by a stage
    config's ``check_inputs`` (see :mod:`lmforge.spec.validate`), naming the key at fault.

    ``path`` is relative to the model being validated, e.g. ``("sources", 1, "mode")`` from
    ``CurateConfig``; validation reports the error at that key's file:line and key path. A plain
    ``ValueError`` is reported at the model itself.
    """

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = tuple(path)


class PluginError(LmforgeError):
    """A plugin could not be loaded or conflicts with another."""


class StageInputError(LmforgeError):
    """A stage's input is unusable (missing file, bad record ...). Message names file and record."""


class StageFailed(LmforgeError):
    """A stage failed at run time; wraps the cause and names stage and plugin (exit code 1)."""

    def __init__(self, stage_id: str, plugin: str, cause: BaseException) -> None:
        self.stage_id, self.plugin, self.cause = stage_id, plugin, cause
        super().__init__(f"stage {stage_id!r} (plugin {plugin!r}) failed: "
                         f"{type(cause).__name__}: {cause}")


class IntegrityWarning(UserWarning):
    """Data on disk no longer matches the hashes recorded when it was written (a checkpoint set
    aside, a stage's output that changed): it is not used, and the message says what was found
    and what happens instead. The CLI prints these as ``warning:`` lines."""
