"""Every command's --help is clean: an example, no `<bool>` on flags, each default said once."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.core import TyperGroup
from typer.testing import CliRunner

from streamproc.cli.app import app


def command_paths() -> list[list[str]]:
    """The root, every command and group, and every sub-command of a group, as argument lists."""
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    paths: list[list[str]] = [[]]
    for name, command in root.commands.items():
        paths.append([name])
        if isinstance(command, TyperGroup):
            paths += [[name, sub] for sub in command.commands]
    return paths


PATHS = command_paths()


def help_text(path: list[str]) -> str:
    # Wide enough that no option's help wraps: one option per row, plus its `[default: …]` line.
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    return res.stdout


def option_rows(text: str) -> list[str]:
    """The rows of the options panels: an option's line joined with the lines that continue it."""
    rows: list[str] = []
    for line in text.splitlines():
        if not line.startswith("│"):
            continue
        cell = line.strip("│ ")
        if re.match(r"^(\* +)?-", cell):
            rows.append(cell)
        elif rows and cell:
            rows[-1] += " " + cell
    return rows


def test_the_walk_finds_every_command() -> None:
    """The walk reaches the root, the groups and their sub-commands (so the tests below cover them)."""
    names = {" ".join(p) for p in PATHS}
    assert {"", "run", "check", "dlq", "dlq stats", "consumers drain", "report heatmap", "top"} <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "streamproc")
def test_help_is_clean(path: list[str]) -> None:
    """`streamproc X [Y] --help` has an example, shows no `<bool>` placeholder on flags, and no option
    says its default twice (e.g. `(default 1s)` and `[default: 1000]`) or shows an empty one."""
    text = help_text(path)
    assert "example" in text.lower(), "no example"
    assert "<bool>" not in text
    rows = option_rows(text)
    assert rows, "no options panel found"
    twice = [row for row in rows if len(re.findall(r"default", row, re.IGNORECASE)) > 1]
    assert twice == []
    empty = [row for row in rows if re.search(r"default: *[\]\)]", row)]
    assert empty == []
    in_ms = [row for row in rows if "DURATION" in row and re.search(r"\[default: \d+\]", row)]
    assert in_ms == [], "a DURATION option shows its default in ms"
