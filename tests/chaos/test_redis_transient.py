"""Redis refusing commands for a while, as real servers do, under a running daemon.

LOADING (a restart on a large RDB), MISCONF (a failed BGSAVE with stop-writes-on-bgsave-error),
BUSY (a script past busy-reply-threshold), CLIENT PAUSE WRITE and OOM (maxmemory, noeviction):
each starts while a batch is in hand (:mod:`tests.chaos.transient`). The daemon backs off and
retries, says why in its retry lines, never exits, dead-letters no good entry and delivers none
twice; once the condition ends it drains with exact totals.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
import redis

from streamproc.dev.localservers import RedisServer, free_port, start_redis
from streamproc.errors import SourceUnavailable
from streamproc.redis.source import RedisSource
from tests.chaos.conftest import Throwaway
from tests.chaos.transient import BOUND_S, Condition, ride_out
from tests.conftest import Daemons, wait_for


def daemon_settings(make_settings: Any, server: RedisServer) -> Any:
    return make_settings(redis_url=server.url, batch_size=100, flushers=1, enrich=False, filter_bots=False)


def admin(port: int) -> redis.Redis:
    """A client that sends nothing on connect (redis-py's CLIENT SETINFO is refused while LOADING)."""
    return redis.Redis(port=port, socket_timeout=30, driver_info=None)


def said(text: str, step: str | None = None) -> Any:
    def seen(line: dict[str, Any]) -> bool:
        return text in str(line.get("error", "")) and (step is None or line.get("step") == step)

    return seen


def test_misconf_failed_bgsave_is_waited_out(
    make_settings, schema, stream, daemons: Daemons, throwaway: Throwaway
) -> None:
    """A BGSAVE fails (its directory is gone) on a server with save points and
    stop-writes-on-bgsave-error: every write, the daemon's XACK and dead letters included, gets
    MISCONF. The daemon retries the ack of the batch it committed, keeps it pending, and acks it
    once a BGSAVE succeeds again."""
    server = throwaway.redis(
        extra=("--save", "3600 1", "--stop-writes-on-bgsave-error", "yes", "--enable-protected-configs", "yes")
    )
    c = admin(server.port)
    gone = throwaway.tmp / "gone"

    def bgsave_status(want: str) -> None:
        def done() -> bool:
            info = c.info("persistence")
            return not info["rdb_bgsave_in_progress"] and info["rdb_last_bgsave_status"] == want

        c.bgsave()
        wait_for(done, BOUND_S, f"a BGSAVE ending {want}")

    def on() -> None:
        gone.mkdir()
        c.config_set("dir", str(gone))  # Redis chdirs there: with it removed, the child cannot write
        gone.rmdir()
        bgsave_status("err")
        assert str(_refused(lambda: c.xadd("probe", {"a": 1}))).startswith("MISCONF")

    def off() -> None:
        c.config_set("dir", str(server.directory))
        bgsave_status("ok")

    ride_out(daemon_settings(make_settings, server), c, stream, daemons, Condition(on, off), said("persist", "ack"))


def test_oom_refuses_dead_letters_not_acks(
    make_settings, schema, stream, daemons: Daemons, throwaway: Throwaway
) -> None:
    """maxmemory below what Redis uses, policy noeviction: Redis still serves XREADGROUP, XACK and
    XCLAIM (they are not `denyoom`), but refuses the XADD of a dead letter. The batch holding a
    malformed entry waits (its good entries too: one atomic ack) with an OOM retry line, and is
    acked, its malformed entries dead-lettered once, when memory is given back."""
    server = throwaway.redis()
    c = admin(server.port)

    def on() -> None:
        c.config_set("maxmemory-policy", "noeviction")
        c.config_set("maxmemory", "1")
        assert isinstance(_refused(lambda: c.xadd("probe", {"a": 1})), redis.exceptions.OutOfMemoryError)

    ride_out(
        daemon_settings(make_settings, server),
        c,
        stream,
        daemons,
        Condition(on, lambda: c.config_set("maxmemory", "0")),
        said("out of memory", "ack"),
    )


def test_busy_script_is_waited_out(make_settings, schema, stream, daemons: Daemons, throwaway: Throwaway) -> None:
    """A script loops past busy-reply-threshold: every other command gets BUSY. The daemon retries
    (its ack among them) until SCRIPT KILL ends the script."""
    server = throwaway.redis()
    c = admin(server.port)
    script = BusyScript(server.port)

    ride_out(
        daemon_settings(make_settings, server),
        c,
        stream,
        daemons,
        Condition(script.start, script.kill, readable=False),
        said("busy running a script", "ack"),
    )


def test_client_pause_write_is_waited_out(
    make_settings, schema, stream, daemons: Daemons, throwaway: Throwaway
) -> None:
    """CLIENT PAUSE WRITE for longer than the daemon's socket timeout: XACK and XREADGROUP (writes)
    get no reply; each attempt times out and is retried (redis-py closes the connection, so the
    postponed command is dropped, never run late). CLIENT UNPAUSE: the ack goes through."""
    server = throwaway.redis()
    c = admin(server.port)
    ride_out(
        daemon_settings(make_settings, server),
        c,
        stream,
        daemons,
        Condition(lambda: c.client_pause(3_600_000, all=False), c.client_unpause),
        said("Timeout", "ack"),
    )


def test_loading_after_a_restart_is_waited_out(
    make_settings, schema, stream, daemons: Daemons, throwaway: Throwaway
) -> None:
    """Redis restarts on a large RDB and loads it slowly (50 ms a key, until the test lifts the
    delay once the daemon has reported LOADING on its ack): the daemon's connection
    is refused, then every command gets LOADING. It retries until the load ends, and acks the
    batch it committed in the meantime against the reloaded stream."""
    server = throwaway.redis()
    c = admin(server.port)
    pad = c.pipeline(transaction=False)
    for i in range(3_000):
        # 1 KiB a key, incompressible: Redis answers clients between two keys (events every 1 KiB read)
        pad.set(f"pad:{i}", os.urandom(1024))
    pad.execute()
    restarted: list[RedisServer] = []

    def on() -> None:
        c.shutdown(save=True)
        server.process.wait(BOUND_S)
        slow = ("--key-load-delay", "50000", "--loading-process-events-interval-bytes", "1024")
        restarted.append(start_redis(server.directory, server.port, (*server.args, *slow)))
        throwaway.redises.append(restarted[0])
        assert isinstance(_refused(lambda: admin(server.port).xlen(stream)), redis.exceptions.BusyLoadingError)

    def off() -> None:
        c2 = admin(server.port)
        c2.config_set("key-load-delay", "0")
        wait_for(lambda: _refused(lambda: c2.ping(), ok=True) is None, BOUND_S, "the load to end")

    ride_out(
        daemon_settings(make_settings, server),
        admin(server.port),
        stream,
        daemons,
        Condition(on, off, readable=False),
        said("loading its data set", "ack"),
    )


def test_demoted_to_replica_while_running_is_waited_out(
    make_settings, schema, stream, daemons: Daemons, throwaway: Throwaway
) -> None:
    """The daemon's server is demoted (REPLICAOF a primary that is not there yet, as in a failover
    in progress) under a plain URL: XACK and XREADGROUP get READONLY and are retried; REPLICAOF NO
    ONE promotes it back with its data, and the ack goes through."""
    server = throwaway.redis()
    c = admin(server.port)
    ride_out(
        daemon_settings(make_settings, server),
        c,
        stream,
        daemons,
        Condition(lambda: c.replicaof("127.0.0.1", str(free_port())), lambda: c.replicaof("NO", "ONE")),
        said("read-only replica", "ack"),
    )


def test_not_enough_replicas_is_waited_out(
    make_settings, schema, stream, daemons: Daemons, throwaway: Throwaway
) -> None:
    """min-replicas-to-write 1 on a primary without a replica: every write, XACK included, gets
    NOREPLICAS and is retried until the setting is lifted (or a replica connects)."""
    server = throwaway.redis()
    c = admin(server.port)

    def on() -> None:
        c.config_set("min-replicas-to-write", "1")
        assert str(_refused(lambda: c.xadd("probe", {"a": 1}))).startswith("NOREPLICAS")

    ride_out(
        daemon_settings(make_settings, server),
        c,
        stream,
        daemons,
        Condition(on, lambda: c.config_set("min-replicas-to-write", "0")),
        said("not enough replicas", "ack"),
    )


def test_group_check_on_a_busy_server_is_transient_not_a_vanished_group(throwaway: Throwaway) -> None:
    """The group check of a (re)start (XINFO GROUPS) answered BUSY, by a script past
    busy-reply-threshold, on a stream this deployment consumed before: the answer says nothing
    about the group, so the check is retried (SourceUnavailable), never taken for a vanished group
    (GroupMissing, exit 3, which systemd does not restart). The same holds for every transient
    error reply (MASTERDOWN, ...) that comes between the start's PING and this check."""
    server = throwaway.redis()
    c = admin(server.port)
    c.xgroup_create("st", "g", id="0", mkstream=True)
    source = RedisSource(server.url, ["st"], "g", "c1", socket_timeout_s=30)
    script = BusyScript(server.port)
    script.start()
    try:
        with pytest.raises(SourceUnavailable, match="busy running a script"):
            source.ensure_groups("0", known=lambda: {"st"})
    finally:
        script.kill()
    assert source.ensure_groups("0", known=lambda: {"st"}) == []
    source.close()


class BusyScript:
    """A Lua busy loop past a 50 ms busy-reply-threshold: every other command gets BUSY."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.thread = threading.Thread(target=lambda: _refused(lambda: admin(port).eval("while true do end", 0)))

    def start(self) -> None:
        """Returns once a PING gets BUSY."""
        admin(self.port).config_set("busy-reply-threshold", "50")
        self.thread.start()
        wait_for(lambda: str(_refused(lambda: admin(self.port).ping(), ok=True)).startswith("BUSY"), BOUND_S, "BUSY")

    def kill(self) -> None:
        admin(self.port).script_kill()
        self.thread.join(BOUND_S)


def _refused(call: Any, ok: bool = False) -> BaseException | None:
    """The error ``call`` raises; with ``ok``, None when it succeeds (else an AssertionError)."""
    try:
        call()
    except redis.exceptions.RedisError as exc:  # the server's refusal is the point
        return exc
    assert ok, "the server accepted the command"
    return None
