"""Options and helpers the operational command modules share (`ops`, `dlq`, `consumers`).

:func:`redis_command` gives a command the options every one of them takes and hands it an
:class:`OpsCall`: the settings, a Redis client, the streams to work on and the output form.
Imports no command module. Exit codes of those commands: 0 ok; 1 runtime failure (Redis
unreachable, stream or group missing); 2 bad usage, or a change refused without confirmation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Concatenate, ParamSpec

import typer

from streamproc.cli.options import ConfigOpt, RedisOpt, option, own_options, settings_from, with_options
from streamproc.config import Settings
from streamproc.redis import ops
from streamproc.redis.client import Client

P = ParamSpec("P")

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


@dataclasses.dataclass
class OpsCall:
    """What one operational command was given besides its own options: where the settings come
    from (``--config``, ``--redis-url``, ``--streams``, ``--group``) and ``--json``."""

    as_json: bool
    config: Path | None
    redis_url: str | None
    streams: str | None
    group_name: str | None = None

    @functools.cached_property
    def settings(self) -> Settings:
        """Flags over environment over TOML; :class:`streamproc.errors.ConfigError` (exit 2) if invalid."""
        return settings_from(self.config, redis_url=self.redis_url, streams=self.streams, group=self.group_name)

    @property
    def group(self) -> str:
        return self.settings.group

    def redis(self) -> contextlib.AbstractContextManager[Client]:
        """A short-lived client; Redis errors leave it as streamproc errors (:func:`ops.redis_client`)."""
        return ops.redis_client(self.settings)

    def chosen(self, stream: str | None) -> list[str]:
        """``--stream`` if given, else every configured stream."""
        return [stream] if stream else list(self.settings.streams)

    def one(self, stream: str | None) -> str:
        """``--stream`` if given, else the only configured stream; :class:`ops.Refused` (exit 2) if several."""
        if stream:
            return stream
        configured = self.settings.streams
        if len(configured) == 1:
            return configured[0]
        raise ops.Refused(f"several streams are configured ({', '.join(configured)}): name one with --stream")

    def show(self, data: Any, render: Callable[[], None], *, failed: bool = False) -> None:
        """``data`` as JSON with ``--json``, else ``render()``; then exit 1 if ``failed`` (an id or
        consumer given was not there)."""
        if self.as_json:
            emit_json(data)
        else:
            render()
        if failed:
            raise typer.Exit(1)


_SHARED = (
    option("as_json", JsonOpt, False),
    option("config", ConfigOpt, None),
    option("redis_url", RedisOpt, None),
    option("streams", StreamsOpt, None),
)
_GROUP = option("group_name", GroupOpt, None)


def redis_command(*, group: bool = True) -> Callable[[Callable[Concatenate[OpsCall, P], None]], Callable[..., None]]:
    """Decorate an operational command ``fn(call: OpsCall, **own_options)``: its --help and parser get
    ``--json``, ``--config``, ``--redis-url``, ``--streams`` (and ``--group`` unless ``group=False``)
    after its own options; they reach it collected in ``call``; streamproc errors leave it as one line
    and their exit code (:func:`streamproc.cli.options.friendly`)."""

    def decorate(fn: Callable[Concatenate[OpsCall, P], None]) -> Callable[..., None]:
        shared = [*_SHARED, _GROUP] if group else list(_SHARED)

        def run(given: dict[str, Any], rest: dict[str, Any]) -> None:
            fn(OpsCall(**given), **rest)  # type: ignore[call-arg]  # the rest are fn's own options, by name

        return with_options(fn, own_options(fn)[1:], shared, run)

    return decorate


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
