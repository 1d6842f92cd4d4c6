"""Subcommands that plugins add to the ``lmforge`` command line.

A plugin implements the ``lmforge_commands`` hook and returns :class:`Command` records::

    @hookimpl
    def lmforge_commands():
        return [Command("rate", help="collect human preferences in a web page",
                        factory="my_plugin.rate_cli:setup")]

Discovery stays cheap: the record holds only a name and help texts, so ``lmforge --help`` lists
the command without importing it. Only when the command is the one being run (or its ``--help``
is asked for) does the CLI import ``factory`` and call it as ``factory(parser)``: it adds the
command's arguments to ``parser`` (an ``argparse.ArgumentParser``, with the plugin options
``-p``/``--plugins``/``--no-autoload`` already on it) and returns the function that runs it,
``run(args, plugins) -> int`` — ``args`` the parsed ``argparse.Namespace``, ``plugins`` the
loaded :class:`lmforge.plugins.PluginManager`, the result the exit code (0 ok, 1 failed, 2 bad
usage). ``run`` may raise :class:`lmforge.LmforgeError` (e.g. a ``StageInputError`` naming a
bad input file): it is printed as ``error: ...`` and the exit code is 1.

Built-in commands (``run``, ``validate`` ...) always win: a plugin command of the same name is
ignored with a warning, and two plugins adding one name is an error naming both when that name
is run.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.plugins import PluginManager

COMMAND_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class Command:
    """A subcommand a plugin adds to ``lmforge`` (see the module docstring).

    Attributes:
        name: what the user types (``lmforge <name>``): lowercase letters, digits and ``-``.
        help: one line for ``lmforge --help``.
        factory: ``"module:attr"`` (imported only when the command runs) or a callable;
            called as ``factory(parser)``, returns ``run(args, plugins) -> int``.
        description: what ``lmforge <name> --help`` starts with (default: ``help``); wrapped
            to the terminal, paragraphs separated by blank lines.
        epilog: text after the arguments in ``--help`` (examples); shown as written.
    """

    name: str
    help: str
    factory: str | Callable[..., Any]
    description: str = ""
    epilog: str = ""
    # Filled in when collected: the plugin that added it.
    plugin: str = ""

    def __post_init__(self) -> None:
        if not COMMAND_NAME.match(self.name):
            raise ValueError(f"command name {self.name!r} must be lowercase letters, digits and "
                             f"'-', starting with a letter")

    def load_factory(self) -> Callable[..., Any]:
        """Import and return the factory (where the command's own imports happen)."""
        if callable(self.factory):
            return self.factory
        module, _, attr = self.factory.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
        return obj


def collect_commands(plugins: PluginManager) -> tuple[dict[str, list[Command]], list[str]]:
    """Every plugin's commands, by name (a name with two entries is a conflict), and warnings
    for plugins whose hook failed or returned something that is not a :class:`Command`."""
    from dataclasses import replace

    found: dict[str, list[Command]] = {}
    warnings: list[str] = []
    for impl in plugins.hook.lmforge_commands.get_hookimpls():
        try:
            result = list(impl.function() or [])
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not break the CLI
            warnings.append(f"plugin {impl.plugin_name!r}: lmforge_commands raised "
                            f"{type(exc).__name__}: {exc}")
            continue
        for cmd in result:
            if not isinstance(cmd, Command):
                warnings.append(f"plugin {impl.plugin_name!r}: lmforge_commands returned "
                                f"{cmd!r}, not an lmforge.commands.Command")
                continue
            found.setdefault(cmd.name, []).append(replace(cmd, plugin=impl.plugin_name))
    return found, warnings
