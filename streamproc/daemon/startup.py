"""Start-up: wait for both servers, then check them, before any entry is read.

A stop request while waiting ends the run with nothing in hand (:class:`StoppedBeforeReady`).
"""

from __future__ import annotations

from typing import NoReturn

import structlog

from streamproc.config import Settings
from streamproc.daemon.notify import Notifier
from streamproc.daemon.retry import Retrier
from streamproc.errors import SchemaNotReady
from streamproc.postgres.grants import check_privileges
from streamproc.postgres.migrate import check_migrated
from streamproc.postgres.sink import PostgresSink
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
    log.info(
        "ready",
        streams=source.streams,
        group=source.group,
        consumer=source.consumer,
        groups_created=created,
        drain=drain,
    )
    notifier.ready(f"consuming {', '.join(source.streams)} as {source.consumer}")
