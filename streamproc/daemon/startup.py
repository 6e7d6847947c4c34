"""Start-up: wait for both servers, then check them, before any entry is read.

A stop request while waiting ends the run with nothing in hand (:class:`StoppedBeforeReady`).
"""

from __future__ import annotations

import time
from typing import NoReturn

import redis.exceptions as rx
import structlog

from streamproc.config import Settings
from streamproc.daemon.notify import Notifier
from streamproc.daemon.retry import Retrier
from streamproc.errors import SchemaNotReady
from streamproc.postgres.grants import check_privileges
from streamproc.postgres.migrate import check_migrated
from streamproc.postgres.sink import PostgresSink
from streamproc.redis.namesake import idle_ms_by_stream
from streamproc.redis.source import RedisSource

log = structlog.get_logger("streamproc")


class StoppedBeforeReady(Exception):
    """A stop request arrived while start-up waited for a server."""


def _stopped_before_ready() -> NoReturn:
    raise StoppedBeforeReady


def start(
    settings: Settings, source: RedisSource, sink: PostgresSink, retry: Retrier, notifier: Notifier, drain: bool
) -> None:
    """Ping Redis, make sure the groups exist, open and check Postgres, register the streams,
    then log ``ready`` and notify. Raises StoppedBeforeReady, and the checks' own errors."""
    approximate = settings.approximate_uniques
    started = time.monotonic()

    def consumed_streams() -> set[str]:
        """Streams this deployment consumed before: a group missing on one of them vanished
        (the stream was deleted, flushed or evicted) and is not recreated."""
        retry.call(sink.open, "postgres", "connect", on_stop=_stopped_before_ready)
        try:
            check_migrated(sink.conn, approximate)
        except SchemaNotReady:
            return set()  # nothing consumed yet; start() stops on this right after the group check
        known: set[str] = retry.call(
            lambda: sink.known_streams(source.streams), "postgres", "connect", on_stop=_stopped_before_ready
        )
        return known

    retry.call(source.ping, "redis", "connect", on_stop=_stopped_before_ready)
    created = retry.call(
        lambda: source.ensure_groups(settings.group_start_id, consumed_streams),
        "redis",
        "connect",
        on_stop=_stopped_before_ready,
    )
    retry.call(sink.open, "postgres", "connect", on_stop=_stopped_before_ready)
    check_migrated(sink.conn, approximate)
    # Before any entry is read: a missing grant exits 2 without adding a delivery to anything.
    retry.call(lambda: check_privileges(sink.conn, approximate), "postgres", "connect", on_stop=_stopped_before_ready)
    retry.call(lambda: sink.register_streams(source.streams), "postgres", "connect", on_stop=_stopped_before_ready)
    warn_if_name_in_use(source, settings.block_ms, started)
    log.info(
        "ready",
        streams=source.streams,
        group=source.group,
        consumer=source.consumer,
        groups_created=created,
        drain=drain,
    )
    notifier.ready(f"consuming {', '.join(source.streams)} as {source.consumer}")


def warn_if_name_in_use(source: RedisSource, block_ms: int, started: float) -> None:
    """Log one warning when another process reads the group under this daemon's consumer name:
    Redis saw that name after ``started`` (``time.monotonic()`` when start-up began), before this
    daemon read anything. Waits until start-up has lasted twice ``block_ms`` so that a namesake
    blocked in XREADGROUP has read again. Never raises: the check is advice, not a condition."""
    wait_s = 2 * block_ms / 1000 - (time.monotonic() - started)
    if wait_s > 0:
        time.sleep(wait_s)
    age_ms = (time.monotonic() - started) * 1000
    try:
        idle = idle_ms_by_stream(source.client, source.streams, source.group, source.consumer)
    except (rx.RedisError, rx.RedisClusterException) as exc:
        log.debug("could not look for a namesake consumer", error=str(exc), kind=type(exc).__name__)
        return
    seen = {stream: ms for stream, ms in idle.items() if ms < age_ms}
    if seen:
        stream, idle_ms = min(seen.items(), key=lambda item: item[1])
        log.warning(
            "another process reads this group under the same consumer name: give each daemon its own"
            " (setting consumer: --consumer / STREAMPROC_CONSUMER; the systemd units use --consumer %H-%i)",
            consumer=source.consumer,
            group=source.group,
            stream=stream,
            idle_ms=idle_ms,
        )
