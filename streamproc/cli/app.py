"""The ``streamproc`` command line.

Exit codes: 0 success; 1 runtime failure (server unreachable, schema not
migrated, drain deadline passed); 2 bad usage or invalid configuration;
3 the consumer group vanished while the daemon ran.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from streamproc import __version__
from streamproc.cli import check, consumers, demo, dlq, maintain, ops, provision, report, run
from streamproc.cli.options import App, err, flush_stdout, out, quiet_on_closed_stdout, silence_stdout, stdout_closed
from streamproc.errors import ConfigError

app = App(
    name="streamproc",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def version_callback(value: bool) -> None:
    if value:
        out.print(f"streamproc {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Redis Streams -> Postgres analytics rollups, counted exactly once.

    Start with `streamproc demo`; in production run `streamproc setup` (or
    `streamproc migrate`) once, `streamproc check`, then `streamproc run` under systemd.

    Examples:

        streamproc demo

        streamproc check --json

        streamproc run --config /etc/streamproc/streamproc.toml
    """


# Commands in the order `streamproc --help` lists them.
for command in (run.run, check.check, provision.migrate, provision.setup, provision.schema, demo.demo):
    app.command()(command)
report.register(app)
ops.register(app)
dlq.register(app)
consumers.register(app)
maintain.register(app)


def main() -> None:
    """Run the CLI. A reader that closes stdout early (`streamproc status | head -1`) ends
    any command quietly with exit 0: nothing failed, the reader chose to stop reading."""
    quiet_on_closed_stdout()
    try:
        app()
    except ConfigError as exc:  # raised outside a command, e.g. while parsing
        err.print(f"streamproc: error: {exc}", markup=False, highlight=False)
        sys.exit(2)
    except BrokenPipeError:  # outside a command (e.g. --version)
        if not stdout_closed():
            raise
        silence_stdout()
        sys.exit(0)
    finally:
        flush_stdout()
