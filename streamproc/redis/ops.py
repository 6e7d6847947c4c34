"""Operator actions on the Redis side: status, pending entries, manual claim/ack.

No printing here: every function takes a Redis client and returns data (dicts
and dataclasses whose field names are the stable ``--json`` keys). The CLI
(`streamproc.cli.ops`) renders them. Samples for `streamproc top` live in
`streamproc.redis.top`, dead letters in `streamproc.redis.dlq`, consumer and
trim maintenance in `streamproc.redis.maintenance`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, cast

import msgspec
import redis.exceptions as rx
from redis.typing import StreamIdT

from streamproc.config import Settings, mask_url
from streamproc.core.decode import DEFAULT_MAX_AGE_DAYS, Accepted, decode_entry
from streamproc.core.entryid import split_entry_id
from streamproc.errors import GroupMissing, SourceError, SourceUnavailable, StreamprocError
from streamproc.redis.classify import TLS_SILENT_HINT, translate
from streamproc.redis.client import Client, connect
from streamproc.redis.groupstate import read_group_state
from streamproc.redis.url import parse_redis_url

OPS_SOCKET_TIMEOUT_S: Final = 10.0

_UNITS_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_ENTRY_ID: Final = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")


class Refused(StreamprocError):
    """The operator must confirm or correct the request; nothing was changed."""

    exit_code = 2


class StreamMissing(SourceError):
    """The stream key does not exist (or is not a stream)."""


class NoSuchGroup(SourceError):
    """The consumer group does not exist. Exit 1 for operator commands: unlike the
    daemon's `GroupMissing` (its own exit code, for systemd), nothing restarts here."""


# --- small pure helpers ---------------------------------------------------------


def parse_duration_ms(text: str) -> int:
    """``"30s"`` -> 30000. Units ms, s, m, h, d, combinable (``1h30m``); a plain number is ms."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+", value):
        return int(value)
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS_MS[m.group(2)]
        pos = m.end()
    if not value or pos != len(value):
        raise ValueError(f"{text!r} is not a duration like 500ms, 30s, 5m, 1h, 1d or 1h30m (a plain number is ms)")
    return int(total)


def format_ms(ms: int | float | None) -> str:
    """A short human duration: ``850ms``, ``12s``, ``5m 03s``, ``2h 05m``, ``3d 04h``."""
    if ms is None:
        return "-"
    ms = int(ms)
    if ms < 1000:
        return f"{ms}ms"
    s = ms // 1000
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86_400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86_400}d {s % 86_400 // 3600:02d}h"


def parse_entry_id(text: str) -> str:
    """Validate a stream entry id; ``"1763800000000"`` means ``1763800000000-0``."""
    m = _ENTRY_ID.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a stream entry id like 1763800000000-0")
    return f"{int(m.group(1))}-{int(m.group(2) or 0)}"


def id_after(entry_id: str) -> str:
    """The smallest id greater than ``entry_id``."""
    ms, seq = split_entry_id(entry_id)
    return f"{ms + 1}-0" if seq >= 2**64 - 1 else f"{ms}-{seq + 1}"


def text(value: bytes | str | int) -> str:
    """Bytes from Redis as text; invalid UTF-8 shows as ``\\xNN`` escapes."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def fields_text(fields: Mapping[bytes, bytes]) -> dict[str, str]:
    return {text(k): text(v) for k, v in fields.items()}


def now_ms() -> int:
    return int(time.time() * 1000)


# --- typed Redis replies (redis-py types stream replies loosely) ----------------------

Entry = tuple[bytes, dict[bytes, bytes]]


def _b(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def xrange(client: Client, key: str, min: str = "-", max: str = "+", count: int | None = None) -> list[Entry]:
    rows = client.xrange(key, min=min, max=max, count=count)
    return [(_b(eid), dict(cast(dict[bytes, bytes], fields or {}))) for eid, fields in rows or []]


def xrevrange(client: Client, key: str, count: int) -> list[Entry]:
    rows = client.xrevrange(key, count=count)
    return [(_b(eid), dict(cast(dict[bytes, bytes], fields or {}))) for eid, fields in rows or []]


def xclaim_ids(client: Client, stream: str, group: str, to: str, ids: Sequence[str | bytes]) -> list[str]:
    """XCLAIM ... 0 JUSTID: ownership moves, delivery counts stay. Ids deleted from the stream are dropped."""
    if not ids:
        return []
    message_ids: list[StreamIdT] = list(ids)
    return [text(cast(bytes, x)) for x in client.xclaim(stream, group, to, 0, message_ids, justid=True)]


# --- connection -------------------------------------------------------------------


@contextmanager
def redis_client(settings: Settings) -> Iterator[Client]:
    """A short-lived client; Redis errors come out as streamproc errors naming the (masked) URL,
    classified by :func:`streamproc.redis.classify.translate` (a bad URL: ConfigError, exit 2)."""
    target = parse_redis_url(settings.redis_url, cluster=settings.redis_cluster)
    probe = target.address if target.scheme == "redis" else None
    tls_probe = target.address if target.scheme == "rediss" else None
    try:
        client = connect(settings.redis_url, cluster=settings.redis_cluster, socket_timeout=OPS_SOCKET_TIMEOUT_S)
    except (rx.RedisError, rx.RedisClusterException) as exc:
        raise _translated(exc, settings, probe, tls_probe) from exc
    try:
        yield client
    except (rx.RedisError, rx.RedisClusterException) as exc:
        raise _translated(exc, settings, probe, tls_probe) from exc
    finally:
        client.close()


def _translated(
    exc: Exception, settings: Settings, probe: tuple[str, int] | None, tls_probe: tuple[str, int] | None = None
) -> SourceError:
    error = translate(
        exc, group=settings.group, probe=probe or tls_probe, cluster=settings.redis_cluster, tls=bool(tls_probe)
    )
    if isinstance(error, GroupMissing):  # an operator command: exit 1, nothing restarts here
        return NoSuchGroup(f"consumer group {settings.group!r} does not exist: {exc}")
    if isinstance(error, SourceUnavailable):
        hint = f" ({TLS_SILENT_HINT})" if TLS_SILENT_HINT in str(error) else ""
        return SourceUnavailable(f"Redis unreachable at {mask_url(settings.redis_url)}: {exc}{hint}")
    return error


def check_stream(client: Client, stream: str) -> None:
    kind = text(client.type(stream))
    if kind == "none":
        raise StreamMissing(f"stream {stream!r} does not exist (check --stream/--streams and --redis-url)")
    if kind != "stream":
        raise StreamMissing(f"key {stream!r} is a {kind}, not a stream")


def check_group(client: Client, stream: str, group: str) -> None:
    check_stream(client, stream)
    names = [text(g["name"]) for g in client.xinfo_groups(stream)]
    if group not in names:
        there = ", ".join(names) or "none"
        raise NoSuchGroup(
            f"consumer group {group!r} does not exist on stream {stream!r} (groups there: {there});"
            " check --group, or whether Redis restarted empty"
        )


# --- status ---------------------------------------------------------------------------


def status(client: Client, streams: Sequence[str], group: str) -> list[dict[str, Any]]:
    """`read_group_state` per stream, plus the age of the oldest pending entry (from its id)."""
    states = []
    for stream in streams:
        check_group(client, stream, group)
        state = read_group_state(client, stream, group)
        oldest = state["oldest_pending_id"]
        state["oldest_pending_age_ms"] = max(0, now_ms() - split_entry_id(oldest)[0]) if oldest else None
        states.append(state)
    return states


# --- pending --------------------------------------------------------------------------


@dataclass
class PendingEntry:
    id: str
    consumer: str
    idle_ms: int
    deliveries: int
    in_stream: bool | None = None  # None: not looked up (no --show-payload)
    fields: dict[str, str] | None = None
    event: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class PendingReport:
    stream: str
    group: str
    pending: int
    min_id: str | None
    max_id: str | None
    consumers: dict[str, int]
    entries: list[PendingEntry] = field(default_factory=list)


def pending(
    client: Client,
    stream: str,
    group: str,
    *,
    consumer: str | None = None,
    min_idle_ms: int = 0,
    limit: int = 100,
    show_payload: bool = False,
    max_entry_bytes: int = 64 * 1024,
    max_age_days: int = DEFAULT_MAX_AGE_DAYS,
) -> PendingReport:
    """XPENDING summary and up to ``limit`` entries (oldest id first), optionally decoded."""
    check_group(client, stream, group)
    summary = client.xpending(stream, group)
    report = PendingReport(
        stream=stream,
        group=group,
        pending=int(summary["pending"]),
        min_id=text(summary["min"]) if summary["min"] else None,
        max_id=text(summary["max"]) if summary["max"] else None,
        consumers={text(c["name"]): int(c["pending"]) for c in summary["consumers"] or []},
    )
    if not report.pending or limit <= 0:
        return report
    rows = client.xpending_range(
        stream, group, min="-", max="+", count=limit, consumername=consumer, idle=min_idle_ms or None
    )
    report.entries = [
        PendingEntry(
            id=text(row["message_id"]),
            consumer=text(row["consumer"]),
            idle_ms=int(row["time_since_delivered"]),
            deliveries=int(row["times_delivered"]),
        )
        for row in rows
    ]
    if show_payload:
        _attach_payloads(client, stream, report.entries, max_entry_bytes, max_age_days)
    return report


def _attach_payloads(
    client: Client, stream: str, entries: list[PendingEntry], max_entry_bytes: int, max_age_days: int
) -> None:
    now = now_ms()
    for entry in entries:
        found = xrange(client, stream, entry.id, entry.id, 1)
        entry.in_stream = bool(found)
        if not found:
            entry.error = "entry is no longer in the stream (trimmed or deleted); the daemon acks it as trimmed"
            continue
        eid, raw = found[0]
        entry.fields = fields_text(raw)
        result = decode_entry(eid, raw, now, max_entry_bytes, max_age_days)
        if isinstance(result, Accepted):
            entry.event = msgspec.to_builtins(result.event)
        else:
            entry.error = result.reason


# --- manual repair: claim and ack --------------------------------------------------------


@dataclass
class RepairResult:
    stream: str
    group: str
    done: list[str]  # claimed / acked
    not_pending: list[str]  # not in the group's pending list: nothing done
    vanished: list[str] = field(default_factory=list)  # pending, but deleted from the stream (XCLAIM drops them)
    owners: dict[str, str] = field(default_factory=dict)  # id -> consumer before the action


def owners(client: Client, stream: str, group: str, ids: Sequence[str]) -> dict[str, str]:
    """Which consumer holds each of ``ids`` (only those that are pending)."""
    pipe = client.pipeline(transaction=False)
    for eid in ids:
        pipe.xpending_range(stream, group, min=eid, max=eid, count=1)
    out: dict[str, str] = {}
    for eid, rows in zip(ids, pipe.execute(), strict=True):
        if rows:
            out[eid] = text(rows[0]["consumer"])
    return out


def claim(client: Client, stream: str, group: str, ids: Sequence[str], to: str) -> RepairResult:
    """XCLAIM ``ids`` for consumer ``to`` regardless of idle time (JUSTID: delivery counts unchanged)."""
    held = owners(client, stream, group, ids)
    targets = [eid for eid in ids if eid in held]
    claimed = set(xclaim_ids(client, stream, group, to, targets))
    return RepairResult(
        stream=stream,
        group=group,
        done=[eid for eid in targets if eid in claimed],
        not_pending=[eid for eid in ids if eid not in held],
        vanished=[eid for eid in targets if eid not in claimed],
        owners=held,
    )


def ack(client: Client, stream: str, group: str, ids: Sequence[str]) -> RepairResult:
    """XACK ``ids``: they leave the pending list without being counted or dead-lettered."""
    held = owners(client, stream, group, ids)
    targets = [eid for eid in ids if eid in held]
    if targets:
        client.xack(stream, group, *targets)
    return RepairResult(
        stream=stream, group=group, done=targets, not_pending=[eid for eid in ids if eid not in held], owners=held
    )
