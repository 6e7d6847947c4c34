"""Redis Cluster slots moving while the daemon runs: a slot migrated by hand (held in the
migrating/ASK state while the daemon reads) and a manual `CLUSTER FAILOVER` of a shard's replica.

Before, the first MOVED or ASK that outlasted redis-py's own redirection handling (the
per-slot MULTI/EXEC of :mod:`streamproc.redis.gaps` does not send ASKING) was taken for a plain
client pointed at a cluster node: "set redis_cluster = true" and exit 2, which systemd does
not restart.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable

import redis
from redis.cluster import RedisCluster

from streamproc.dev.localservers import RedisCluster as LocalCluster
from streamproc.dev.synth import Generator, SynthEntry
from streamproc.errors import SourceUnavailable
from streamproc.redis.source import RedisSource
from tests.chaos.checks import figure, stop, tail, wait_batches
from tests.conftest import Daemons, wait_for
from tests.test_cluster import SHARDS, cluster, cluster_client, settle, shards, spread  # noqa: F401  # the module-scoped cluster fixture
from tests.test_crash import assert_totals

STEP_S = 30  # bound of each wait; a daemon that needs longer has a problem the test should show


def node_client(client: RedisCluster, name: str) -> redis.Redis:
    host, port = name.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), socket_timeout=10)


def node_id(node: redis.Redis) -> str:
    return str(node.execute_command("CLUSTER", "MYID").decode())


def wait_alive(proc: subprocess.Popen[bytes], done: Callable[[], bool], what: str) -> None:
    """Wait for ``done()`` (at most ``STEP_S``), failing at once if the daemon exits."""
    deadline = time.monotonic() + STEP_S
    while not done():
        assert proc.poll() is None, f"daemon exited with {proc.returncode} while waiting for {what}: {tail(proc)}"
        assert time.monotonic() < deadline, f"timed out after {STEP_S} s waiting for {what}"
        time.sleep(0.05)


def lag_asking(node: redis.Redis, stream: str) -> int | None:
    """The group's lag on a node importing the stream's slot (ASKING first, on one connection)."""
    pipe = node.pipeline(transaction=False)
    pipe.execute_command("ASKING")
    pipe.xinfo_groups(stream)
    _, groups = pipe.execute()
    return None if groups[0]["lag"] is None else int(groups[0]["lag"])


def delivered_all(client: RedisCluster, names: list[str]) -> bool:
    try:
        return all(g["pending"] == 0 and g["lag"] == 0 for g in settle(client, names).values())
    except redis.RedisError:
        return False  # a slot moving or a failover under the check itself: ask again


def test_slots_migrated_and_a_replica_failed_over_while_the_daemon_runs(
    cluster: LocalCluster,  # noqa: F811
    make_settings,
    schema,
    ns: str,
    daemons: Daemons,
) -> None:
    """Six shards on three primaries, one daemon reading them, entries added at every step:
    the slot of one shard is migrated to another primary key by key (IMPORTING/MIGRATING,
    MIGRATE, held there while the daemon reads, then SETSLOT NODE), and a replica of another
    shard's primary takes over with `CLUSTER FAILOVER`. The daemon never exits; every redirect
    is a retry; in the end nothing is pending, nothing is dead-lettered and the totals equal
    the truth."""
    client = cluster_client(cluster)
    names = shards(ns)
    pool = list(Generator(seed=81, days=1, bad_ratio=0).entries(8_000))
    chunks: list[list[SynthEntry]] = [pool[i : i + 2_000] for i in range(0, len(pool), 2_000)]
    sent: list[SynthEntry] = []

    def produce_next() -> None:
        chunk = chunks.pop(0)
        spread(client, names, chunk)
        sent.extend(chunk)

    produce_next()
    settings = make_settings(
        redis_url=cluster.url,
        redis_cluster=True,
        streams=f"{ns}:events:{{0..{SHARDS - 1}}}",
        batch_size=100,
        min_idle_ms=1500,
    )
    proc = daemons.start(settings)
    wait_batches(proc, 3)

    # 1. The slot of names[0] migrates from its primary to the primary of another shard.
    moving = names[0]
    slot = int(client.keyslot(moving))
    source_name = client.get_node_from_key(moving).name
    target_name = next(n for n in (client.get_node_from_key(s).name for s in names) if n != source_name)
    source, target = node_client(client, source_name), node_client(client, target_name)
    source_id, target_id = node_id(source), node_id(target)
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    assert moving.encode() in keys
    host, port = target_name.rsplit(":", 1)
    source.execute_command("MIGRATE", host, port, "", 0, 10_000, "KEYS", *keys)
    # Held here: the stream lives on the target, the source answers ASK for it, the
    # target answers MOVED unless asked with ASKING. Entries keep coming meanwhile.
    redirects = tail(proc, 10**9).count("unavailable, retrying")
    produce_next()
    wait_alive(
        proc,
        lambda: tail(proc, 10**9).count("unavailable, retrying") > redirects or lag_asking(target, moving) == 0,
        "the daemon to read while the slot is migrating",
    )
    for node in (target, source):
        node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    for other in {client.get_node_from_key(s).name for s in names} - {source_name, target_name}:
        node_client(client, other).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    produce_next()

    # 2. A replica of a third shard's primary takes over (a coordinated manual failover).
    third = next(s for s in names if client.get_node_from_key(s).name not in (source_name, target_name))
    primary_name = client.get_node_from_key(third).name
    primary = node_client(client, primary_name)
    (replica_info,) = [v for k, v in primary.info("replication").items() if k.startswith("slave")]
    replica = redis.Redis(host=replica_info["ip"], port=int(replica_info["port"]), socket_timeout=10)
    replica.execute_command("CLUSTER", "FAILOVER")
    wait_alive(proc, lambda: replica.info("replication")["role"] == "master", "the replica to take over")
    client.close()
    client = cluster_client(cluster)
    produce_next()

    wait_alive(proc, lambda: delivered_all(client, names), "the daemon to drain every shard")
    stop(proc)
    assert settle(client, names) == {s: {"pending": 0, "lag": 0, "dlq": 0} for s in names}
    assert int(client.get_node_from_key(moving).port) == int(port), "the slot was migrated"
    assert client.get_node_from_key(third).name != primary_name, "the replica took over"
    assert_totals(settings, sent)
    logs = daemons.logs()
    figure(
        f"cluster reshard + failover: {len(sent)} entries exact, {logs.count('unavailable, retrying')} retry lines,"
        f" {logs.count('slot map changed')} of them for a moved slot"
    )


def test_a_read_blocked_on_a_stream_whose_slot_migrates_away_is_a_retry(cluster: LocalCluster, ns: str) -> None:  # noqa: F811
    """MIGRATE wakes a read blocked on the moved stream with "UNBLOCKED the stream key no longer
    exists", the same words as a deleted stream: on a cluster the group is looked up through the
    slot map first, and a group that followed its stream is a retry, not exit 3 (the CI run of the
    test above met this in the daemon's 100 ms idle read)."""
    client = cluster_client(cluster)
    stream = f"{ns}:mig:{{{ns}}}"  # a slot of its own, not one of the shards' slots
    client.xgroup_create(stream, "g", id="0", mkstream=True)
    source = RedisSource(cluster.url, [stream], "g", "c1", socket_timeout_s=60, cluster=True)
    outcome: list[BaseException | None] = []

    def blocked_read() -> None:
        try:
            source._wait_on_next_stream(10, 30_000)
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    slot = int(client.keyslot(stream))
    source_name = client.get_node_from_key(stream).name
    target_name = next(n.name for n in client.get_primaries() if n.name != source_name)
    origin, target = node_client(client, source_name), node_client(client, target_name)
    reader = threading.Thread(target=blocked_read)
    reader.start()
    wait_for(lambda: b"cmd=xreadgroup" in origin.execute_command("CLIENT", "LIST"), STEP_S, "the read to block")
    origin_id, target_id = node_id(origin), node_id(target)
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", origin_id)
    origin.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    host, port = target_name.rsplit(":", 1)
    origin.execute_command("MIGRATE", host, port, "", 0, 10_000, "KEYS", stream)
    for node in client.get_primaries():
        node_client(client, node.name).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    reader.join(60)
    assert not reader.is_alive(), "the blocked read was not woken by the migration"
    (exc,) = outcome
    assert isinstance(exc, SourceUnavailable), f"expected a retry, got {exc!r}"
    assert "moved to another cluster node" in str(exc)
    assert source.read_new(10, 100).entries == {}, "the group is read on its new node"
    source.client.xadd(stream, {"x": "1"})
    assert [len(e) for e in source.read_new(10, 100).entries.values()] == [1]
    client.delete(stream)
