"""Human output of the operational commands: rich tables. No Redis here."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streamproc.redis.dlq import DeadLetter, ReplayResult
from streamproc.redis.maintenance import Consumer, DrainResult, PruneResult, TrimPlan
from streamproc.redis.ops import PendingReport, RepairResult, format_ms
from streamproc.reports.literal import visible


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _table(title: str | None, *columns: str, right: Sequence[str] = ()) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", overflow="fold")
    return table


def print_status(console: Console, redis_url: str, group: str, states: list[dict[str, Any]]) -> None:
    console.print(f"redis {escape(redis_url)}   group {escape(group)}", highlight=False)
    main = _table(
        None,
        "stream",
        "length",
        "lag",
        "pending",
        "oldest pending",
        "consumers",
        "dlq",
        right=("length", "lag", "pending", "consumers", "dlq"),
    )
    ids = _table(None, "stream", "first id", "last id", "last delivered id")
    people = _table(None, "stream", "consumer", "pending", "idle", right=("pending", "idle"))
    for s in states:
        lag = _n(s["lag"]) if s["lag_exact"] else f">= {_n(s['lag'])}"
        oldest = "-"
        if s["oldest_pending_id"]:
            oldest = f"{format_ms(s['oldest_pending_age_ms'])} old, idle {format_ms(s['oldest_pending_idle_ms'])}"
        main.add_row(
            s["stream"], _n(s["length"]), lag, _n(s["pending"]), oldest, str(len(s["consumers"])), _n(s["dlq_length"])
        )
        ids.add_row(s["stream"], s["first_id"] or "-", s["last_id"] or "-", s["last_delivered_id"] or "-")
        for c in s["consumers"]:
            people.add_row(s["stream"], c["name"], _n(c["pending"]), format_ms(c["idle_ms"]))
    console.print(main)
    console.print(ids)
    if people.row_count:
        console.print(people)


def _payload(event: dict[str, Any]) -> str:
    """The decoded event as compact JSON, attributes that are absent left out."""
    return escape(json.dumps({k: v for k, v in event.items() if v is not None}, separators=(",", ":"), default=str))


def print_pending(console: Console, reports: list[PendingReport], show_payload: bool) -> None:
    for rep in reports:
        per = ", ".join(f"{name} {n:,}" for name, n in rep.consumers.items()) or "none"
        console.print(
            f"[bold]{escape(rep.stream)}[/] group {escape(rep.group)}: {rep.pending:,} pending"
            f" ({escape(rep.min_id or '-')} .. {escape(rep.max_id or '-')}); by consumer: {escape(per)}",
            highlight=False,
        )
        if not rep.entries:
            continue
        cols = ["id", "consumer", "idle", "deliveries"] + (["payload or reason"] if show_payload else [])
        table = _table(None, *cols, right=("idle", "deliveries"))
        for e in rep.entries:
            row = [e.id, e.consumer, format_ms(e.idle_ms), str(e.deliveries)]
            if show_payload:
                row.append(_payload(e.event) if e.event is not None else f"[red]{escape(e.error or '')}[/]")
            table.add_row(*row)
        console.print(table)
        if len(rep.entries) < rep.pending:
            console.print(f"showing {len(rep.entries):,} (see --limit, --consumer, --min-idle)", highlight=False)


def print_repair(console: Console, verb: str, result: RepairResult) -> None:
    console.print(f"{verb} {len(result.done):,} entr{'y' if len(result.done) == 1 else 'ies'}", highlight=False)
    for eid in result.done:
        console.print(f"  {eid} (was on {escape(result.owners.get(eid, '?'))})", highlight=False)
    if result.not_pending:
        console.print(f"not pending in the group, left alone: {', '.join(result.not_pending)}", highlight=False)
    if result.vanished:
        console.print(f"deleted from the stream, dropped from pending: {', '.join(result.vanished)}", highlight=False)


ID_WIDTH = 21  # "1700000000000-0" and longer stream ids; a longer one pushes its row, nothing is cut


def stream_dead_letters(
    write: Callable[[str], object],
    stream: str,
    length: int,
    letters: Iterable[DeadLetter],
    limit: int,
    reason: str | None = None,
) -> None:
    """The letters listed, then what they are out of (the oldest ``limit``, or those whose reason
    contains ``reason``), as plain aligned lines written one letter at a time: any ``limit`` in
    bounded memory (no table held). Control characters in reasons are shown as escapes."""
    write(f"{visible(stream)}:dlq - {length:,} dead letters\n")
    write(f"{'dlq id':<{ID_WIDTH}}  {'source id':<{ID_WIDTH}}  reason\n")
    shown = 0
    for d in letters:
        write(f"{d.id:<{ID_WIDTH}}  {visible(d.source_id or '-'):<{ID_WIDTH}}  {visible(d.reason or '-')}\n")
        shown += 1
    more = " (the oldest; see --limit)" if shown >= limit else ""
    if reason is not None:
        write(f"{shown:,} whose reason contains {visible(repr(reason))}{more}\n")
    elif shown < length:
        write(f"oldest {shown:,} shown (see --limit; --json for machines)\n")


def print_dead_letter(console: Console, d: DeadLetter) -> None:
    table = Table(title=f"dead letter {d.id}", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("source", escape(f"{d.source} {d.source_id or ''}"))
    table.add_row("reason", escape(d.reason or "-"))
    now = "valid now: replay would count it" if d.decodes_now else f"still invalid: {d.decode_error}"
    table.add_row("decodes now", escape(now))
    for k, v in d.fields.items():
        table.add_row(escape(f"field {k}"), escape(v))
    console.print(table)


def print_replay(console: Console, r: ReplayResult) -> None:
    verb = "would replay" if r.dry_run else "replayed"
    console.print(f"{verb} {len(r.replayed):,} dead letters from {escape(r.stream)}:dlq", highlight=False)
    if r.replayed:
        table = _table(None, "dlq id", "source", "source id", "new id")
        for m in r.replayed[:50]:
            table.add_row(m["dlq_id"], escape(m["source"]), m["source_id"], m["new_id"] or "-")
        console.print(table)
        if len(r.replayed) > 50:
            console.print(f"... and {len(r.replayed) - 50:,} more (--json lists all)", highlight=False)
    for s in r.skipped:
        console.print(f"skipped {s['dlq_id']}: {escape(s['why'])}", highlight=False)
    if r.still_failing:
        kept = (
            "replayed anyway (--force)"
            if r.replayed and not r.dry_run and r.still_failing[0]["dlq_id"] in {m["dlq_id"] for m in r.replayed}
            else "kept (still in the DLQ)"
        )
        console.print(
            f"{len(r.still_failing):,} would fail again, {kept}:"
            f" {escape(r.still_failing[0]['reason'])}" + (" ..." if len(r.still_failing) > 1 else ""),
            highlight=False,
        )
    if r.missing:
        console.print(f"not in the DLQ (already replayed or purged?): {', '.join(r.missing)}", highlight=False)


def print_consumers(console: Console, group: str, per_stream: dict[str, list[Consumer]]) -> None:
    table = _table(f"group {group}", "stream", "consumer", "pending", "idle", right=("pending", "idle"))
    for stream, members in per_stream.items():
        for c in members:
            table.add_row(escape(stream), escape(c.name), _n(c.pending), format_ms(c.idle_ms))
    console.print(table)


def print_drain(console: Console, results: list[DrainResult]) -> None:
    for r in results:
        where = escape(r.stream)
        line = f"{where}: moved {r.moved:,} pending entries to {escape(r.to)}" if r.to else f"{where}: nothing pending"
        if r.vanished:
            line += f", {r.vanished:,} were already deleted from the stream"
        console.print(line, highlight=False)
        if r.deleted:
            console.print(f"{where}: deleted consumer {escape(r.consumer)}", highlight=False)
        else:
            console.print(
                f"{where}: [yellow]kept[/] consumer {escape(r.consumer)}: {r.left:,} entries arrived while draining"
                " - is it still running? Stop it and drain again",
                highlight=False,
            )


def print_prune(console: Console, results: list[PruneResult]) -> None:
    for r in results:
        verb = "would delete" if r.dry_run else "deleted"
        names = ", ".join(r.deleted) or "none"
        console.print(f"{escape(r.stream)}: {verb} {escape(names)}", highlight=False)
        for s in r.skipped:
            console.print(f"{escape(r.stream)}: skipped {escape(str(s['name']))}: {escape(str(s['why']))}")


def print_trim(console: Console, plan: TrimPlan) -> None:
    table = _table(f"{plan.stream}: trim bound per group", "group", "oldest pending", "first undelivered", "keep from")
    for g in plan.groups:
        table.add_row(
            escape(g.group), g.oldest_pending_id or "-", g.first_undelivered_id or "-", g.keep_from or "(nothing)"
        )
    console.print(table)
    if plan.retention_bound is not None:
        console.print(f"retention: entries from {plan.retention_bound} on are kept", highlight=False)
    if plan.removed is None:
        console.print(
            f"would remove {plan.removable:,} of {plan.length:,} entries (XTRIM MINID {plan.minid})", highlight=False
        )
    else:
        console.print(
            f"removed {plan.removed:,} of {plan.length:,} entries (XTRIM MINID {plan.minid})", highlight=False
        )


def top_table(rows: list[dict[str, Any]], interval_s: float, iteration: int) -> Table:
    def rate(v: float | None) -> str:
        return "-" if v is None else f"{v:,.1f}/s"

    table = _table(
        f"streamproc top - every {interval_s:g}s - sample {iteration}",
        "stream",
        "delivered",
        "lag",
        "pending",
        "dlq",
        "dlq growth",
        right=("delivered", "lag", "pending", "dlq", "dlq growth"),
    )
    for r in rows:
        table.add_row(
            escape(r["stream"]),
            rate(r["delivered_per_s"]),
            _n(r["lag"]),
            _n(r["pending"]),
            _n(r["dlq_length"]),
            rate(r["dlq_per_s"]),
        )
    return table
