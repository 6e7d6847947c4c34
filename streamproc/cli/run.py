"""`streamproc run`: the daemon in the foreground (added to the app by :mod:`streamproc.cli.app`)."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer

from streamproc.cli.options import ConfigOpt, friendly, settings_from
from streamproc.cli.run_options import setting_parameters


def run(
    config: ConfigOpt = None,
    drain: Annotated[
        bool,
        typer.Option(
            "--drain",
            help="Exit 0 once no stream has undelivered or pending entries (backfills, tests).",
            show_default=False,
        ),
    ] = False,
    **settings: Any,
) -> None:
    """Run the daemon: read, validate, fold, commit to Postgres, then XACK.

    SIGTERM finishes the batch in hand (commit + ack) and exits 0; a second
    signal exits at once. Visitor ids are hashed with STREAMPROC_VISITOR_SECRET
    (required; also read from `$CREDENTIALS_DIRECTORY/visitor_secret`).

    Examples:

        STREAMPROC_VISITOR_SECRET=$(openssl rand -hex 32) streamproc run

        streamproc run --streams 'events:{0..7}' --consumer "$(hostname)-1"

        streamproc run --drain --batch-size 5000   # backfill, then exit
    """
    from streamproc.daemon.run import run_daemon

    raise typer.Exit(run_daemon(settings_from(config, **settings), drain=drain))


# Typer reads the parameters from the signature: `config`, `--drain`, then one flag per setting.
_PARAMETERS = [p for p in inspect.signature(run, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
run.__signature__ = inspect.Signature([*_PARAMETERS, *setting_parameters()])  # type: ignore[attr-defined]
run = friendly(run)
