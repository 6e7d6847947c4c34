"""`streamproc dlq list | show | replay | purge`: dead letters in `<stream>:dlq`."""

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
    YesOpt,
    confirm,
    emit_json,
    entry_ids,
    redis_command,
)
from streamproc.cli.options import App, out
from streamproc.errors import SourceError
from streamproc.redis import dlq as dead
from streamproc.redis import ops

dlq_app = App(
    help="Dead letters in `<stream>:dlq`: list, stats, show, replay to the source stream, purge."
    "\n\nExamples: `streamproc dlq stats`; `streamproc dlq list --reason json`;"
    " `streamproc dlq replay --all --dry-run`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


# --- dlq -------------------------------------------------------------------------------------


@dlq_app.command("list", epilog=EXIT_CODES)
@redis_command(group=False)
def dlq_list(
    call: OpsCall,
    stream: StreamOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=0, max=100_000, help="Dead letters to list per stream.")] = 20,
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason", help="Only dead letters whose reason contains this text (any case).", show_default=False
        ),
    ] = None,
) -> None:
    """The oldest dead letters: DLQ id, original entry id and the reason (no payloads).

    Examples:

        streamproc dlq list

        streamproc dlq list --stream events --limit 100 --json

        streamproc dlq list --reason 'invalid json'
    """
    if not call.as_json:  # streamed, a page of letters at a time: any --limit in bounded memory
        with call.redis() as client:
            for s in call.chosen(stream):
                length, letters = dead.dead_letters(client, s, limit, reason)
                ops_render.stream_dead_letters(out.file.write, s, length, letters, limit, reason)
        return
    with call.redis() as client:
        listed = [(s, *dead.list_dead(client, s, limit, reason)) for s in call.chosen(stream)]
    if call.as_json:
        emit_json(
            {
                "streams": [
                    {"stream": s, "dlq": f"{s}:dlq", "length": n, "entries": [dataclasses.asdict(d) for d in letters]}
                    for s, n, letters in listed
                ]
            }
        )


@dlq_app.command("stats", epilog=EXIT_CODES)
@redis_command(group=False)
def dlq_stats(
    call: OpsCall,
    stream: StreamOpt = None,
) -> None:
    """A summary of each DLQ: dead letters by reason and by source stream, and the oldest one.

    Examples:

        streamproc dlq stats

        streamproc dlq stats --stream events --json
    """
    with call.redis() as client:
        summaries = [dead.stats(client, s) for s in call.chosen(stream)]
    if call.as_json:
        emit_json({"streams": [dataclasses.asdict(x) for x in summaries]})
        return
    for x in summaries:
        age = "-" if x.oldest_age_s is None else f"{x.oldest_age_s / 3600:,.1f} h ago ({x.oldest_id})"
        out.print(f"{x.stream}:dlq  {x.length:,} dead letters; oldest written {age}", highlight=False, markup=False)
        for name, counts in (("reason", x.by_reason), ("source", x.by_source)):
            for key, n in counts.items():
                out.print(f"  {n:>9,}  {name}: {key}", highlight=False, markup=False)


@dlq_app.command("show", epilog=EXIT_CODES)
@redis_command(group=False)
def dlq_show(
    call: OpsCall,
    dlq_id: Annotated[str, typer.Argument(metavar="ID", help="The dead letter's id in the DLQ.", show_default=False)],
    stream: StreamOpt = None,
) -> None:
    """One dead letter with all its fields (payload included), and whether it would decode today.

    Example: `streamproc dlq show 1763800000123-0 --stream events`
    """
    target = call.one(stream)
    (wanted,) = entry_ids([dlq_id], "ID")
    with call.redis() as client:
        letter = dead.show(client, target, wanted, call.settings.max_entry_bytes, call.settings.max_event_age_days)
    if letter is None:
        raise SourceError(f"no dead letter {wanted} in {target}:dlq")
    call.show(letter, lambda: ops_render.print_dead_letter(out, letter))


@dlq_app.command("replay", epilog=EXIT_CODES)
@redis_command(group=False)
def dlq_replay(
    call: OpsCall,
    ids: Annotated[list[str] | None, typer.Option("--ids", help="Dead letter ids (repeat the flag).")] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Every dead letter present when the command starts.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replay letters that would fail again too (each becomes a new letter).")
    ] = False,
    dry_run: DryRunOpt = False,
    stream: StreamOpt = None,
) -> None:
    """Move dead letters back to their source stream as new entries with their original fields.

    Each move is one atomic Lua script: XADD to the source stream, XADD to the
    replay log `<stream>:dlq:replayed` (dlq_id, source_id, new_id, reason,
    replayed_at_ms), XDEL from the DLQ. Killed at any moment, every dead letter
    is either replayed once or still in the DLQ. A letter that still fails to
    decode stays in the DLQ, untouched (replaying it would only make a new
    letter of it) unless --force; --dry-run says how many would decode now. Exit 1 if some
    --ids were not in the DLQ.

    Examples:

        streamproc dlq replay --all --dry-run

        streamproc dlq replay --ids 1763800000123-0 --ids 1763800000456-0
    """
    if bool(ids) == replay_all:
        raise typer.BadParameter("name dead letters with --ids, or pass --all (not both)", param_hint="--ids/--all")
    target = call.one(stream)
    wanted = entry_ids(ids, "--ids") if ids else None
    with call.redis() as client:
        result = dead.replay(
            client,
            target,
            wanted,
            dry_run=dry_run,
            max_entry_bytes=call.settings.max_entry_bytes,
            max_age_days=call.settings.max_event_age_days,
            force=force,
        )
    call.show(result, lambda: ops_render.print_replay(out, result), failed=bool(result.missing))


@dlq_app.command("purge", epilog=EXIT_CODES)
@redis_command(group=False)
def dlq_purge(
    call: OpsCall,
    before: Annotated[
        str,
        typer.Option(
            "--before",
            help="Delete dead letters with a lower id than this id, or older than this age (7d).",
            show_default=False,
        ),
    ],
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    stream: StreamOpt = None,
) -> None:
    """Delete old dead letters for good (exact XTRIM MINID on `<stream>:dlq`).

    `--before` takes an entry id (`1763800000000-0`; a bare number is a
    millisecond timestamp) or an age (`30s`, `12h`, `7d`). Asks first on a
    terminal; elsewhere it needs --yes.

    Examples:

        streamproc dlq purge --before 30d --dry-run

        streamproc dlq purge --before 1763800000000-0 --yes
    """
    target = call.one(stream)
    try:
        bound = ops.parse_entry_id(before)
    except ValueError:
        try:
            bound = dead.id_for_age(ops.parse_duration_ms(before))
        except ValueError:
            raise typer.BadParameter(
                f"{before!r} is neither an entry id (1763800000000-0) nor a duration (30s, 12h, 7d)",
                param_hint="--before",
            ) from None
    with call.redis() as client:
        dead.check_dlq(client, target)
        count = dead.count_before(client, target, bound)
        removed = 0
        if not dry_run and count:
            confirm(f"delete {count} dead letters older than {bound} from {target}:dlq for good", yes)
            removed = dead.purge(client, target, bound)
    verb = "would delete" if dry_run else "deleted"
    call.show(
        {"stream": target, "before_id": bound, "dry_run": dry_run, "matching": count, "removed": removed},
        lambda: out.print(f"{verb} {count if dry_run else removed:,} dead letters older than {bound}", highlight=False),
    )


def register(app: typer.Typer) -> None:
    """Add `dlq` and its sub-commands to ``app``."""
    app.add_typer(dlq_app, name="dlq")
