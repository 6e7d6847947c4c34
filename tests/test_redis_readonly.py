"""READONLY through a plain Redis URL is transient: the daemon waits for a primary, never exits.

Before, the first read against a replica (or a primary being demoted) ended the
daemon with exit 1, and systemd restarted it into the same wall.
"""

from __future__ import annotations

import signal
from pathlib import Path

import redis

from streamproc.dev.localservers import start_redis
from streamproc.dev.synth import Generator, produce
from tests.conftest import Daemons, wait_for
from tests.test_crash import log_lines


def test_a_replica_url_is_retried_not_fatal(
    make_settings, schema, stream: str, daemons: Daemons, tmp_path: Path
) -> None:
    """The URL names a replica: every XREADGROUP gets READONLY. The daemon logs `redis unavailable,
    retrying` with the READONLY reason again and again, stays up, and a SIGTERM ends it with exit 0."""
    primary = start_redis(tmp_path / "primary")
    replica = start_redis(tmp_path / "replica", extra=("--replicaof", "127.0.0.1", str(primary.port)))
    source = redis.Redis(port=primary.port)
    follower = redis.Redis(port=replica.port)
    try:
        source.xgroup_create(stream, "g", id="0", mkstream=True)
        produce(source, stream, Generator(seed=81, days=1, bad_ratio=0).entries(50))
        wait_for(lambda: follower.exists(stream) == 1 and follower.xlen(stream) == 50, 30, "the replica to sync")

        proc = daemons.start(make_settings(redis_url=replica.url))

        def readonly_retries() -> int:
            lines = log_lines(proc.logfile, "redis unavailable, retrying")  # type: ignore[attr-defined]
            return sum(1 for x in lines if "read-only replica" in x["error"])

        wait_for(lambda: readonly_retries() >= 3 or proc.poll() is not None, 120, "READONLY retries")
        assert proc.poll() is None, daemons.logs()[-2000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, daemons.logs()[-2000:]
        assert source.xpending(stream, "g")["pending"] == 0  # nothing was read anywhere
    finally:
        source.close()
        follower.close()
        replica.kill()
        primary.kill()
