"""Wire settings into a running worker; the edge where the daemon's errors end."""

from __future__ import annotations

import structlog

from streamproc.backoff import Failpoints
from streamproc.config import Settings
from streamproc.errors import StreamprocError
from streamproc.logs import configure
from streamproc.sink import PostgresSink
from streamproc.source import RedisSource
from streamproc.worker import Worker

log = structlog.get_logger("streamproc")


def build_worker(settings: Settings, drain: bool = False) -> Worker:
    source = RedisSource(
        settings.redis_url, settings.streams, settings.group, settings.consumer, settings.socket_timeout_s
    )
    sink = PostgresSink(settings.database_url, settings.db_schema)
    return Worker(settings, source, sink, drain=drain, failpoints=Failpoints.from_env())


def run_daemon(settings: Settings, drain: bool = False) -> int:
    """Run until drained or signalled. Returns the process exit code."""
    configure(settings.log_level)
    settings.require_secret()
    log.info("starting", **settings.redacted())
    worker = build_worker(settings, drain=drain)
    try:
        return worker.run()
    except StreamprocError as exc:
        log.error("fatal", error=str(exc), kind=type(exc).__name__)
        raise
    finally:
        worker.source.close()
        worker.sink.close()
