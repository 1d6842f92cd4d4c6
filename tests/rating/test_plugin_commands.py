"""Plugins add ``lmforge`` subcommands through the ``lmforge_commands`` hook."""

from __future__ import annotations

import pytest

from lmforge.cli import main
from lmforge.commands import Command
from tests.rating import command_plugin

P = ["--no-autoload", "-p", "tests.rating.command_plugin"]


def test_plugin_command_runs_with_its_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    command_plugin.LOADED.clear()
    assert main([*P, "greet", "world", "--times", "2"]) == 0
    out = capsys.readouterr()
    assert "hello world hello world plugins: 1" in out.out
    # only the chosen command's factory was imported and called
    assert command_plugin.LOADED == ["greet"]
    assert "'run', which is built in; the plugin's is ignored" in out.err
    assert main([*P, "greet", "exit3"]) == 3


def test_top_level_help_lists_plugin_commands(capsys: pytest.CaptureFixture[str]) -> None:
    command_plugin.LOADED.clear()
    with pytest.raises(SystemExit) as exc:
        main([*P, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "greet" in out and "say hello [plugin tests.rating.command_plugin]" in out
    assert command_plugin.LOADED == []  # listing imports no command


def test_plugin_command_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([*P, "greet", "--help"])
    out = capsys.readouterr().out
    assert "how many times" in out and "example: lmforge greet world" in out


def test_broken_setup_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*P, "broken"]) == 2
    err = capsys.readouterr().err
    assert "command 'broken' of plugin 'tests.rating.command_plugin' cannot be loaded" in err
    assert "RuntimeError: setup exploded" in err


def test_builtin_commands_do_not_call_the_hook(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import lmforge.commands

    def fail(_pm: object) -> None:
        raise AssertionError("plugins' commands collected for a built-in command")

    monkeypatch.setattr(lmforge.commands, "collect_commands", fail)
    assert main([*P, "plugins", "list"]) == 0


def test_unknown_command_lists_plugin_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*P, "gret"])
    assert exc.value.code == 2
    assert "'greet'" in capsys.readouterr().err


def test_command_names_are_checked() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        Command("Rate Me", help="x", factory="m:f")


def test_plugins_info_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*P, "plugins", "info", "tests.rating.command_plugin"]) == 0
    out = capsys.readouterr().out
    assert "command lmforge greet — say hello" in out
