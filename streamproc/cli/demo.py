"""`streamproc demo`: synthetic traffic through throwaway servers, then a report."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer

from streamproc.cli.options import friendly, out


@friendly
def demo(
    events: Annotated[
        int, typer.Option("--events", "-n", min=1, max=5_000_000, help="How many synthetic events to produce.")
    ] = 50_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic traffic.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final summary as JSON.")] = False,
) -> None:
    """Produce synthetic traffic, process it, print a report.

    Starts throwaway Redis and Postgres on free loopback ports unless both
    STREAMPROC_REDIS_URL and STREAMPROC_DATABASE_URL are set (then it uses the
    stream `streamproc-demo:events` and the schema `streamproc_demo` there).

    Examples:

        streamproc demo

        streamproc demo --events 200000 --json
    """
    from streamproc.dev.demo import run_demo

    external = bool(os.environ.get("STREAMPROC_REDIS_URL")) and bool(os.environ.get("STREAMPROC_DATABASE_URL"))
    summary = run_demo(events, seed, external=external, console=out)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
