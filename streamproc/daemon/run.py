"""Wire settings into a running worker; the edge where the daemon's errors end."""

from __future__ import annotations

import structlog

from streamproc.config import Settings
from streamproc.daemon import heap, metrics
from streamproc.daemon.backoff import Failpoints
from streamproc.daemon.health import Health, PostgresProbe
from streamproc.daemon.notify import Notifier
from streamproc.daemon.worker import Worker
from streamproc.errors import StreamprocError
from streamproc.logs import configure
from streamproc.postgres.session import Timeouts
from streamproc.postgres.sink import PostgresSink
from streamproc.redis.client import connect
from streamproc.redis.source import RedisSource
from streamproc.redis.url import parse_redis_url

log = structlog.get_logger("streamproc")


def build_worker(settings: Settings, drain: bool = False, notifier: Notifier | None = None) -> Worker:
    source = RedisSource.from_settings(settings)
    timeouts = Timeouts(idle_in_transaction_ms=settings.idle_in_transaction_timeout_ms)
    sink = PostgresSink(settings.database_url, settings.db_schema, timeouts)
    return Worker(settings, source, sink, drain=drain, failpoints=Failpoints.from_env(), notifier=notifier)


def run_daemon(settings: Settings, drain: bool = False) -> int:
    """Run until drained or signalled. Returns the process exit code."""
    configure(settings.log_level)
    settings.require_secret()
    parse_redis_url(settings.redis_url, cluster=settings.redis_cluster)  # a bad URL: exit 2 before anything starts
    health = Health(settings.liveness_timeout_s)
    notifier = Notifier(health=health)
    worker = build_worker(settings, drain=drain, notifier=notifier)
    worker.install_signals()  # from here on a stop, even during the warm-up below, exits 0
    log.info("starting", **settings.redacted())
    worker.enrichment.warm_up()  # seconds of rule loading, before anything says the daemon is up
    worker.urls.warm_up()
    heap.settle()  # the rules just loaded never die: out of the collector's scans (see heap)
    health.turned()  # the warm-up was seconds of work, not a hung loop: liveness counts from here
    # (not a systemd WATCHDOG=1: READY=1 comes first, when the worker starts its loop)
    metrics.init(settings.streams, settings.group)
    metrics.serve(settings.metrics_port, settings.metrics_addr, health)
    refresher = metrics.GroupStateRefresher(
        lambda: connect(settings.redis_url, cluster=settings.redis_cluster, socket_timeout=10),
        settings.streams,
        settings.group,
        settings.metrics_interval_s,
        health,
    )
    refresher.start()
    probe = PostgresProbe(health, settings.database_url, settings.metrics_interval_s)
    probe.start()
    try:
        return worker.run()
    except StreamprocError as exc:
        log.error("fatal", error=str(exc), kind=type(exc).__name__)
        notifier.status(f"fatal: {exc}")
        raise
    finally:
        refresher.stop()
        probe.stop()
        worker.source.close()
        worker.close_sinks()
        notifier.close()
