"""A stream deleted, flushed or evicted under the daemon; a stream whose lag Redis cannot tell.

The vanished-group class: a blocked XREADGROUP woken by ``UNBLOCKED the stream
key no longer exists`` stops the daemon with exit 3, and a restart does not
recreate the group at the configured start id (Postgres remembers that the
stream was consumed). ``--drain`` ends even when ``XINFO GROUPS`` reports no lag.
"""

from __future__ import annotations

import json
from pathlib import Path

import redis

from streamproc.dev.localservers import start_redis
from streamproc.dev.synth import Generator, produce
from tests.chaos.checks import wait_drained
from tests.conftest import Daemons, wait_for
from tests.test_crash import assert_totals, log_lines
from tests.test_worker import GOOD


def fatal_kind(proc) -> str:  # type: ignore[no-untyped-def]
    (line,) = log_lines(proc.logfile, "fatal")
    return str(line["kind"])


def test_stream_deleted_or_flushed_while_blocked_exits_3_and_restart_does_not_recreate(
    make_settings, schema, r: redis.Redis, stream: str, daemons: Daemons
) -> None:
    """DEL (as FLUSHALL or an eviction would) of the stream while the daemon waits in its BLOCK:
    exit 3 with one GroupMissing line. Producers write again; a restarted daemon (a user allowed
    to create groups) exits 3 too and leaves the new entries alone: no group at the start id."""
    entries = list(Generator(seed=51, days=1, bad_ratio=0).entries(500))
    produce(r, stream, entries)
    settings = make_settings(block_ms=5000)
    proc = daemons.start(settings)
    wait_drained(r, stream, 60, alive=[proc])
    wait_for(lambda: int(r.info("clients")["blocked_clients"]) > 0, 30, "the daemon to block in XREADGROUP")
    r.delete(stream)
    assert proc.wait(timeout=60) == 3, daemons.logs()[-2000:]
    assert fatal_kind(proc) == "GroupMissing"
    assert "Traceback" not in daemons.logs()

    r.xadd(stream, {"event": json.dumps(GOOD)})
    again = daemons.start(settings)
    assert again.wait(timeout=120) == 3, daemons.logs()[-2000:]
    assert fatal_kind(again) == "GroupMissing"
    assert r.xinfo_groups(stream) == [], "the restart recreated the group"
    assert_totals(settings, entries)


def test_flushall_under_a_blocked_read_exits_3(
    make_settings, schema, stream: str, daemons: Daemons, tmp_path: Path
) -> None:
    """FLUSHALL on the daemon's own Redis while it waits: the same exit 3."""
    server = start_redis(tmp_path / "flush")
    client = redis.Redis.from_url(server.url)
    try:
        settings = make_settings(redis_url=server.url, block_ms=5000)
        client.xadd(stream, {"event": json.dumps(GOOD)})
        proc = daemons.start(settings)
        wait_drained(client, stream, 60, alive=[proc])
        wait_for(lambda: int(client.info("clients")["blocked_clients"]) > 0, 30, "the daemon to block in XREADGROUP")
        client.flushall()
        assert proc.wait(timeout=60) == 3, daemons.logs()[-2000:]
        assert fatal_kind(proc) == "GroupMissing"
    finally:
        client.close()
        server.kill()


def test_drain_ends_when_lag_is_unknown(make_settings, schema, r: redis.Redis, stream: str, daemons: Daemons) -> None:
    """XDEL of the newest entry before any worker read it: XINFO GROUPS reports lag nil and the
    last-generated id is never delivered. `run --drain` still exits 0 once nothing is left,
    with every remaining entry counted."""
    entries = list(Generator(seed=52, days=1, bad_ratio=0).entries(300))
    produce(r, stream, entries)
    r.xgroup_create(stream, "g", id="0")
    newest = r.xrevrange(stream, count=1)[0][0]
    r.xdel(stream, newest)
    assert next(g for g in r.xinfo_groups(stream) if g["name"] == b"g")["lag"] is None
    proc = daemons.start(make_settings(), "--drain")
    assert proc.wait(timeout=60) == 0, daemons.logs()[-2000:]
    assert_totals(make_settings(), entries[:-1])
