"""Options and helpers the operational command modules share (`ops`, `dlq`, `consumers`).

Imports no command module. Exit codes of those commands: 0 ok; 1 runtime failure (Redis
unreachable, stream or group missing); 2 bad usage, or a change refused without confirmation.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from streamproc.cli.options import settings_from
from streamproc.config import Settings
from streamproc.redis import ops

EXIT_CODES = (
    "Exit codes: 0 ok, or nothing to do; 1 runtime failure (Redis unreachable, stream or group missing,"
    " an id or consumer given that is not there); 2 bad usage or refused."
)


def duration_ms(value: str) -> int:
    try:
        return ops.parse_duration_ms(str(value))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


StreamsOpt = Annotated[
    str | None,
    typer.Option(
        "--streams",
        help="Comma-separated stream keys; `events:{0..7}` expands [env: STREAMPROC_STREAMS] (default events).",
        show_default=False,
    ),
]
GroupOpt = Annotated[
    str | None,
    typer.Option("--group", help="Consumer group [env: STREAMPROC_GROUP] (default streamproc).", show_default=False),
]
StreamOpt = Annotated[
    str | None,
    typer.Option(
        "--stream", "-s", help="One stream key (default: the configured one, if only one).", show_default=False
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output with stable keys.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; change nothing.")]
IdsArg = Annotated[
    list[str], typer.Argument(metavar="IDS...", help="Stream entry ids, e.g. 1763800000000-0.", show_default=False)
]


def load(config: Path | None, redis_url: str | None, streams: str | None, group: str | None) -> Settings:
    return settings_from(config, redis_url=redis_url, streams=streams, group=group)


def chosen_streams(settings: Settings, stream: str | None) -> list[str]:
    return [stream] if stream else list(settings.streams)


def one_stream(settings: Settings, stream: str | None) -> str:
    if stream:
        return stream
    if len(settings.streams) == 1:
        return settings.streams[0]
    raise ops.Refused(f"several streams are configured ({', '.join(settings.streams)}): name one with --stream")


def entry_ids(values: list[str], hint: str = "IDS") -> list[str]:
    try:
        return list(dict.fromkeys(ops.parse_entry_id(v) for v in values))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from None


def confirm(action: str, yes: bool) -> None:
    """Go ahead with --yes; on a terminal ask; otherwise refuse (exit 2)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ops.Refused(f"refusing to {action} without confirmation: pass --yes")
    if not typer.confirm(f"{action[0].upper()}{action[1:]}?", default=False, err=True):
        raise ops.Refused("not confirmed; nothing changed")


def emit_json(data: Any) -> None:
    """``--json`` output: a dict or a dataclass (its field names are the keys), indented, on stdout."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = dataclasses.asdict(data)
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
