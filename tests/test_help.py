"""Every command and command group says what it does with at least one example."""

from __future__ import annotations

import typer.main
from typer.core import TyperGroup
from typer.testing import CliRunner

from streamproc.cli.app import app


def command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    paths = []
    for name, command in root.commands.items():
        paths.append([name])
        if isinstance(command, TyperGroup):
            paths += [[name, sub] for sub in command.commands]
    return paths


def test_every_command_has_an_example() -> None:
    """`streamproc X --help` (and `X Y --help`) shows an example for every command and group."""
    missing = []
    for path in command_paths():
        res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        if "example" not in res.stdout.lower():
            missing.append(" ".join(path))
    assert missing == [], f"no example in --help of: {missing}"
