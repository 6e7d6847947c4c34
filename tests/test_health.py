"""`/metrics`, `/healthz` and `/ready` of a real daemon: a hung loop, a server killed.

Every wait polls for a state change within a generous deadline; nothing asserts a duration.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import redis

from streamproc.config import Settings
from streamproc.daemon.health import Health
from streamproc.daemon.notify import Notifier
from streamproc.dev.localservers import free_port, start_postgres, start_redis
from streamproc.postgres.migrate import migrate
from tests.conftest import Daemons, wait_for


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET ``path``; (0, error) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def event(marker: str = "") -> dict[str, str]:
    body = {"type": "pageview", "site": "s.example", "path": "/" + marker, "visitor": "v1", "id": "e-" + marker}
    return {"json": json.dumps(body)}


def test_paths_and_a_hung_loop(
    make_settings: Callable[..., Settings], r: redis.Redis, stream: str, schema: str, daemons: Daemons
) -> None:
    """/metrics serves Prometheus text, any other path 404; /healthz and /ready answer 200 while
    the daemon runs. When the main loop hangs (a failpoint blocks it on one entry) /healthz turns
    503 while the HTTP thread keeps answering; a process that answers nothing is dead too."""
    port = free_port()
    settings = make_settings()
    r.xgroup_create(stream, "g", id="0", mkstream=True)
    proc = daemons.start(
        settings,
        STREAMPROC_METRICS_PORT=str(port),
        STREAMPROC_METRICS_INTERVAL_S="0.2",
        STREAMPROC_LIVENESS_TIMEOUT_S="2",
        STREAMPROC_FAILPOINTS="hang=HANG-HERE",
    )
    wait_for(lambda: get(port, "/ready")[0] == 200, what="/ready 200: " + daemons.logs()[-2000:])
    assert get(port, "/healthz") == (200, "ok\n")
    status, body = get(port, "/metrics")
    assert status == 200 and "streamproc_events_total" in body
    assert get(port, "/")[0] == 404 and get(port, "/metrics/x")[0] == 404 and get(port, "/favicon.ico")[0] == 404

    r.xadd(stream, event("HANG-HERE"))
    wait_for(lambda: get(port, "/healthz")[0] == 503, what="/healthz 503 after the loop hung")
    assert "the main loop has not turned" in get(port, "/healthz")[1]
    assert proc.poll() is None


def test_ready_follows_both_servers(tmp_path: Path, make_settings: Callable[..., Settings], daemons: Daemons) -> None:
    """With servers of its own: /ready is 503 naming Postgres while Postgres is down and 200 once
    it is back; 503 naming Redis once Redis is killed. /healthz stays 200 throughout: the loop
    keeps turning while it waits out a server (not ready is not dead)."""
    redis_server = start_redis(tmp_path / "redis")
    pg = start_postgres()  # its own temp dir, owned by the postgres user
    try:
        migrate(pg.url, "streamproc")
        with redis.Redis(port=redis_server.port) as client:
            client.xgroup_create("ev", "g", id="0", mkstream=True)
        settings = make_settings(
            redis_url=f"redis://127.0.0.1:{redis_server.port}/0",
            database_url=pg.url,
            db_schema="streamproc",
            streams="ev",
        )
        port = free_port()
        daemons.start(settings, STREAMPROC_METRICS_PORT=str(port), STREAMPROC_METRICS_INTERVAL_S="0.2")
        wait_for(lambda: get(port, "/ready")[0] == 200, what="/ready 200: " + daemons.logs()[-2000:])

        pg.stop("immediate")
        wait_for(lambda: get(port, "/ready")[0] == 503, what="/ready 503 with Postgres down")
        assert "postgres: unreachable" in get(port, "/ready")[1]
        assert get(port, "/healthz")[0] == 200
        pg.start()
        wait_for(lambda: get(port, "/ready")[0] == 200, what="/ready 200 with Postgres back")

        redis_server.stop()
        wait_for(lambda: get(port, "/ready")[0] == 503, what="/ready 503 with Redis down")
        assert "redis" in get(port, "/ready")[1]
        assert get(port, "/healthz")[0] == 200
    finally:
        redis_server.stop()
        pg.destroy()


def test_start_up_work_is_not_a_hung_loop() -> None:
    """Liveness counts from the end of start-up: seconds of warm-up (the user-agent rules) and
    the start-up checks before `ready` never make /healthz answer 503 once the daemon is ready,
    however short ``liveness_timeout_s`` is."""
    health = Health(liveness_timeout_s=0.2)
    notifier = Notifier(health=health)
    time.sleep(0.3)  # start-up work longer than the liveness timeout
    assert health.live()[0] is False  # what a loop that stopped turning looks like
    notifier.ready("consuming s as c")
    assert health.live() == (True, "ok")
    assert health.ready()[0] is False  # not ready until the probes have seen both servers
