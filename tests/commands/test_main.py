"""`python -m direct2event <command>`: the one entry point lists and dispatches the commands."""

from __future__ import annotations

import subprocess
import sys

import pytest

from direct2event.__main__ import COMMANDS, HELP, main
from direct2event.commands import run as run_command


def test_no_argument_prints_the_commands_without_starting_a_run() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "direct2event"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: python -m direct2event <command>")
    for name in ("run", "seeds", "params", "export-nir", "registry", "reap-runs", "services"):
        assert f"\n  {name} " in done.stdout
    assert "Using" not in done.stdout + done.stderr  # Kedro's logging set-up is not imported


def test_every_command_is_a_module_with_main_and_help(capsys: pytest.CaptureFixture) -> None:
    for name, (command, text) in COMMANDS.items():
        assert callable(command) and text and name in HELP
        if name == "run":
            continue  # Kedro's own --help
        with pytest.raises(SystemExit) as exit_info:
            command(["--help"])
        assert exit_info.value.code == 0
        assert f"python -m direct2event {name}" in capsys.readouterr().out
    assert run_command.PACKAGE == "direct2event"


def test_an_unknown_command_names_the_commands(capsys: pytest.CaptureFixture) -> None:
    assert main(["exprot-nir"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'exprot-nir'" in err and "export-nir" in err
