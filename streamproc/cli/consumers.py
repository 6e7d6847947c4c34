"""`streamproc consumers list | drain | prune`: consumers of the group."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from streamproc.cli import ops_render
from streamproc.cli.ops_options import (
    EXIT_CODES,
    DryRunOpt,
    OpsCall,
    StreamOpt,
    duration_ms,
    emit_json,
    redis_command,
)
from streamproc.cli.options import App, out
from streamproc.errors import SourceError
from streamproc.redis import maintenance

consumers_app = App(
    help="Consumers of the group: list, drain a retired one, prune idle ones."
    "\n\nExamples: `streamproc consumers list`; `streamproc consumers drain old-host-1 --to new-host-1`;"
    " `streamproc consumers prune --idle 7d --dry-run`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


# --- consumers ---------------------------------------------------------------------------------


@consumers_app.command("list", epilog=EXIT_CODES)
@redis_command()
def consumers_list(
    call: OpsCall,
    stream: StreamOpt = None,
) -> None:
    """Each consumer of the group: pending entries and idle time.

    Example: `streamproc consumers list --json`
    """
    with call.redis() as client:
        per = {s: maintenance.consumers(client, s, call.group) for s in call.chosen(stream)}
    if call.as_json:
        emit_json(
            {
                "group": call.group,
                "streams": [{"stream": s, "consumers": [dataclasses.asdict(c) for c in cs]} for s, cs in per.items()],
            }
        )
    else:
        ops_render.print_consumers(out, call.group, per)


@consumers_app.command("drain", epilog=EXIT_CODES)
@redis_command()
def consumers_drain(
    call: OpsCall,
    name: Annotated[str, typer.Argument(help="The retired consumer.", show_default=False)],
    to: Annotated[
        str | None, typer.Option("--to", help="Consumer that takes its entries (default: the most recently active).")
    ] = None,
    stream: StreamOpt = None,
) -> None:
    """Move a retired consumer's pending entries to a live one, then delete it (only once it holds none).

    Works on every configured stream where the consumer exists. Stop the
    retired process first: if entries reach it while draining it is kept and
    the command exits 1.

    Example: `streamproc consumers drain worker-old --to worker-1`
    """
    if to == name:
        raise typer.BadParameter("cannot drain a consumer into itself", param_hint="--to")
    with call.redis() as client:
        results = [maintenance.drain(client, s, call.group, name, to) for s in call.chosen(stream)]
    found = [r for r in results if r.present]
    if not found:
        raise SourceError(
            f"consumer {name!r} not found in group {call.group!r} on {', '.join(r.stream for r in results)}"
        )
    call.show(
        {"group": call.group, "consumer": name, "streams": [dataclasses.asdict(r) for r in found]},
        lambda: ops_render.print_drain(out, found),
        failed=not all(r.deleted for r in found),
    )


@consumers_app.command("prune", epilog=EXIT_CODES)
@redis_command()
def consumers_prune(
    call: OpsCall,
    idle: Annotated[
        int,
        typer.Option(
            "--idle",
            parser=duration_ms,
            metavar="DURATION",
            help="Idle at least this long (default 1d).",
            show_default=False,
        ),
    ] = 86_400_000,
    dry_run: DryRunOpt = False,
    stream: StreamOpt = None,
) -> None:
    """Delete consumers idle that long that hold NO pending entries; list those skipped and why.

    A consumer with pending entries is never deleted (that would drop its
    entries uncounted): drain it first.

    Examples:

        streamproc consumers prune --idle 1d --dry-run

        streamproc consumers prune --idle 12h --json
    """
    with call.redis() as client:
        results = [maintenance.prune(client, s, call.group, idle, dry_run=dry_run) for s in call.chosen(stream)]
    call.show(
        {"group": call.group, "streams": [dataclasses.asdict(r) for r in results]},
        lambda: ops_render.print_prune(out, results),
    )


def register(app: typer.Typer) -> None:
    """Add `consumers` and its sub-commands to ``app``."""
    app.add_typer(consumers_app, name="consumers")
