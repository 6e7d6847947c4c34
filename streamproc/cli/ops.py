"""Operational commands on the consumer group: status, pending, claim, ack, trim, top.

Thin: parse options, call :mod:`streamproc.redis.ops` / :mod:`streamproc.redis.maintenance`, render
with :mod:`streamproc.cli.ops_render` or print ``--json``. Exit codes: 0 ok; 1 runtime
failure (Redis unreachable, stream or group missing); 2 bad usage, or a
change refused without confirmation.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
import time
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.live import Live

from streamproc.cli import ops_render
from streamproc.cli.ops_options import (
    EXIT_CODES,
    DryRunOpt,
    IdsArg,
    OpsCall,
    StreamOpt,
    YesOpt,
    confirm,
    duration_ms,
    emit_json,
    entry_ids,
    redis_command,
)
from streamproc.cli.options import out
from streamproc.config import mask_url
from streamproc.redis import maintenance, ops
from streamproc.redis import top as top_sampling

# --- status, pending, claim, ack, trim, top --------------------------------------------------


@redis_command()
def status(
    call: OpsCall,
    stream: StreamOpt = None,
) -> None:
    """Length, ids, lag, pending, consumers and DLQ length of each stream's consumer group.

    Lag is the entries after the last delivered id: Redis's figure checked
    against the stream (Redis reports none after deletions, and a figure too
    high after a trim before Redis 8); `lag_exact` is false when a count
    stopped at its limit.

    Examples:

        streamproc status

        streamproc status --streams 'events:{0..7}' --json | jq '.streams[].lag'
    """
    with call.redis() as client:
        states = ops.status(client, call.chosen(stream), call.group)
    url = mask_url(call.settings.redis_url)
    call.show(
        {"redis_url": url, "group": call.group, "streams": states},
        lambda: ops_render.print_status(out, url, call.group, states),
    )


@redis_command()
def pending(
    call: OpsCall,
    stream: StreamOpt = None,
    consumer: Annotated[str | None, typer.Option("--consumer", help="Only this consumer's entries.")] = None,
    min_idle: Annotated[
        int,
        typer.Option(
            "--min-idle",
            parser=duration_ms,
            metavar="DURATION",
            help="Only entries idle this long, e.g. 5m (default 0: all).",
            show_default=False,
        ),
    ] = 0,
    limit: Annotated[int, typer.Option("--limit", min=0, max=100_000, help="Entries to list per stream.")] = 100,
    show_payload: Annotated[
        bool, typer.Option("--show-payload", help="Decode each entry (shows visitor ids!) or say why it fails.")
    ] = False,
) -> None:
    """Entries delivered but not yet acknowledged: summary, then id, consumer, idle time and delivery count.

    Examples:

        streamproc pending --min-idle 5m

        streamproc pending --consumer worker-3 --limit 10 --show-payload
    """
    with call.redis() as client:
        reports = [
            ops.pending(
                client,
                s,
                call.group,
                consumer=consumer,
                min_idle_ms=min_idle,
                limit=limit,
                show_payload=show_payload,
                max_entry_bytes=call.settings.max_entry_bytes,
                max_age_days=call.settings.max_event_age_days,
            )
            for s in call.chosen(stream)
        ]
    call.show(
        {"group": call.group, "streams": [dataclasses.asdict(r) for r in reports]},
        lambda: ops_render.print_pending(out, reports, show_payload),
    )


@redis_command()
def claim(
    call: OpsCall,
    ids: IdsArg,
    to: Annotated[str, typer.Option("--to", help="Consumer that takes the entries.", show_default=False)],
    create: Annotated[
        bool, typer.Option("--create", help="Allow --to to name a consumer the group does not have yet.")
    ] = False,
    stream: StreamOpt = None,
    yes: YesOpt = False,
) -> None:
    """Give pending entries to another consumer now (XCLAIM, min idle 0, delivery counts unchanged).

    The daemon named in --to processes them at its next start, or any daemon
    reclaims them once idle for `min_idle_ms`. A --to the group does not know
    (a typo would park the entries on a phantom consumer) is refused, exit 2,
    unless --create. Asks first on a terminal; elsewhere it needs --yes. Exit 1
    if some IDS were not pending (the others are still claimed), as `dlq replay`
    does for --ids not in the DLQ.

    Example: `streamproc claim 1763800000000-0 1763800000000-1 --to worker-2 --yes`
    """
    wanted = entry_ids(ids)
    target = call.one(stream)
    with call.redis() as client:
        ops.check_group(client, target, call.group)
        known = [c.name for c in maintenance.consumers(client, target, call.group)]
        if to not in known and not create:
            close = difflib.get_close_matches(to, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ops.Refused(f"group {call.group} on {target} has no consumer {to!r}{hint}; pass --create to make it")
        held = ops.owners(client, target, call.group, wanted)
        confirm(f"claim {len(held)} pending entries on {target} for consumer {to!r}", yes or not held)
        result = ops.claim(client, target, call.group, wanted, to)
    call.show(
        result, lambda: ops_render.print_repair(out, f"claimed for {to}:", result), failed=bool(result.not_pending)
    )


@redis_command()
def ack(
    call: OpsCall,
    ids: IdsArg,
    force: Annotated[bool, typer.Option("--force", help="Yes, drop them uncounted.")] = False,
    stream: StreamOpt = None,
    yes: YesOpt = False,
) -> None:
    """Acknowledge pending entries by hand: they are dropped, never counted and never dead-lettered.

    Last resort for an entry you know must not be processed; prefer letting
    the daemon dead-letter it. Needs --force, and asks first on a terminal
    (elsewhere it needs --yes). Exit 1 if some IDS were not pending (the others
    are still acknowledged).

    Example: `streamproc ack 1763800000000-0 --force --yes`
    """
    wanted = entry_ids(ids)
    if not force:
        raise ops.Refused(
            "XACK by hand drops these entries: they are never counted in Postgres and never reach the DLQ."
            " If that is really what you want, add --force"
        )
    target = call.one(stream)
    with call.redis() as client:
        ops.check_group(client, target, call.group)
        held = ops.owners(client, target, call.group, wanted)
        confirm(f"acknowledge {len(held)} pending entries on {target}, uncounted", yes or not held)
        result = ops.ack(client, target, call.group, wanted)
    call.show(
        result,
        lambda: ops_render.print_repair(out, "acknowledged (dropped uncounted):", result),
        failed=bool(result.not_pending),
    )


@redis_command(group=False)
def trim(
    call: OpsCall,
    stream: StreamOpt = None,
    all_streams: Annotated[
        bool, typer.Option("--all", help="Every configured stream (what streamproc-trim.timer runs).")
    ] = False,
    older_than: Annotated[
        int | None,
        typer.Option(
            "--older-than",
            parser=duration_ms,
            metavar="DURATION",
            help="Keep entries younger than this even once every group is done with them (a retention, e.g. 1d).",
            show_default=False,
        ),
    ] = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Trim a stream safely: XTRIM MINID to the lowest id still pending in, or not yet delivered to, ANY group.

    Never trims past that bound (exact trimming, every group on the stream
    counted, not only ours); a stream without groups is left alone. With
    --older-than, entries younger than the retention stay too.

    Examples:

        streamproc trim --stream events --dry-run

        streamproc trim --stream events --json

        streamproc trim --all --older-than 1d   # hourly, from deploy/systemd/streamproc-trim.timer
    """
    targets = list(call.settings.streams) if all_streams else [call.one(stream)]
    plans = []
    with call.redis() as client:
        for target in targets:
            plan = maintenance.plan_trim(client, target, retention_ms=older_than)
            if not dry_run:
                maintenance.trim(client, plan)
            plans.append(plan)
    if call.as_json:
        emit_json([dataclasses.asdict(p) for p in plans] if all_streams else plans[0])
    else:
        for plan in plans:
            ops_render.print_trim(out, plan)


@redis_command()
def top(
    call: OpsCall,
    interval: Annotated[
        int,
        typer.Option(
            "--interval",
            parser=duration_ms,
            metavar="DURATION",
            help="Refresh period (default 1s).",
            show_default=False,
        ),
    ] = 1000,
    iterations: Annotated[
        int | None, typer.Option("--iterations", min=1, help="Stop after this many samples (default: until Ctrl-C).")
    ] = None,
    stream: StreamOpt = None,
) -> None:
    """A live view: entries delivered per second, lag, pending, DLQ length and DLQ growth per second.

    Rates come from Redis's per-group entries-read counter between samples.
    With --json, one JSON object per sample and line; when stdout is not a
    terminal, one table per sample.

    Examples:

        streamproc top

        streamproc top --interval 5s --iterations 12 --json
    """
    names = call.chosen(stream)
    if interval <= 0:
        raise typer.BadParameter("must be above zero", param_hint="--interval")
    prev: dict[str, top_sampling.Sample] = {}
    with call.redis() as client:

        def frame() -> list[dict[str, Any]]:
            samples = top_sampling.sample(client, names, call.group)
            rows = [top_sampling.rates(prev.get(s.stream), s) for s in samples]
            prev.update((s.stream, s) for s in samples)
            return rows

        try:
            if call.as_json:
                for i in _ticks(interval, iterations):
                    sys.stdout.write(json.dumps({"sample": i, "streams": frame()}) + "\n")
                    sys.stdout.flush()
            elif not out.is_terminal:  # piped or logged: one table per sample, nothing redrawn
                for i in _ticks(interval, iterations):
                    out.print(ops_render.top_table(frame(), interval / 1000, i))
            else:
                with Live(console=out, auto_refresh=False) as live:
                    for i in _ticks(interval, iterations):
                        live.update(ops_render.top_table(frame(), interval / 1000, i), refresh=True)
        except KeyboardInterrupt:
            return  # Ctrl-C is how one leaves `top`


def _ticks(interval_ms: int, iterations: int | None) -> Iterator[int]:
    i = 0
    while iterations is None or i < iterations:
        if i:
            time.sleep(interval_ms / 1000)
        i += 1
        yield i


def register(app: typer.Typer) -> None:
    """Add status, pending, claim, ack, trim and top to ``app``."""
    for fn in (status, pending, claim, ack, trim, top):
        app.command(fn.__name__, epilog=EXIT_CODES)(fn)
