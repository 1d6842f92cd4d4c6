"""A test plugin that adds two ``lmforge`` subcommands (loaded with ``-p``)."""

from __future__ import annotations

import argparse
from typing import Any

from lmforge import hookimpl
from lmforge.commands import Command

LOADED: list[str] = []


def greet_setup(parser: argparse.ArgumentParser) -> Any:
    LOADED.append("greet")
    parser.add_argument("name", help="who to greet")
    parser.add_argument("--times", type=int, default=1, help="how many times")

    def run(args: argparse.Namespace, plugins: Any) -> int:
        print(" ".join([f"hello {args.name}"] * args.times), "plugins:", len(plugins.plugins))
        return 3 if args.name == "exit3" else 0

    return run


def broken_setup(parser: argparse.ArgumentParser) -> Any:
    LOADED.append("broken")
    raise RuntimeError("setup exploded")


@hookimpl
def lmforge_commands() -> list[Command]:
    return [Command("greet", help="say hello", factory=greet_setup,
                    epilog="example: lmforge greet world"),
            Command("broken", help="a command whose setup fails", factory=broken_setup),
            Command("run", help="clashes with a built-in", factory=greet_setup)]
