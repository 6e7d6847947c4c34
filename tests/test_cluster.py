"""The daemon on a real Redis Cluster: three primaries and three replicas on loopback ports,
joined with `redis-cli --cluster create`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from streamproc.config import load_settings
from streamproc.dev.localservers import RedisCluster as LocalCluster
from streamproc.dev.localservers import start_redis_cluster
from streamproc.dev.synth import Generator, SynthEntry, produce
from streamproc.errors import ConfigError
from tests.chaos.checks import batches, figure, stop, wait_batches
from tests.conftest import Daemons, wait_for
from tests.test_crash import assert_totals
from tests.truth import malformed

SHARDS = 6


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = start_redis_cluster(primaries=3, replicas=1, node_timeout_ms=1500)
    yield c
    c.stop()


def cluster_client(cluster: LocalCluster) -> RedisCluster:
    """A client whose seeds are all nodes still running: it finds the cluster after a failover too."""
    alive = [n for n in cluster.nodes if n.process.poll() is None]
    return RedisCluster.from_url(alive[0].url.removesuffix("/0"), socket_timeout=30)


def shards(ns: str) -> list[str]:
    return [f"{ns}:events:{{{i}}}" for i in range(SHARDS)]


def spread(client: RedisCluster, names: list[str], entries: list[SynthEntry]) -> dict[str, list[SynthEntry]]:
    """Round-robin the entries over the shards, XADD them and wait until every replica has them
    (so that a failover later cannot lose what the truth counts)."""
    parts = {s: entries[i :: len(names)] for i, s in enumerate(names)}
    for s, part in parts.items():
        produce(client, s, part)
    for node in client.get_primaries():
        replicas = int(client.info("replication", target_nodes=node)["connected_slaves"])
        acked = client.execute_command("WAIT", replicas, 10_000, target_nodes=node)
        assert acked >= replicas, "a replica lags behind"
    return parts


def settle(client: RedisCluster, names: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for s in names:
        (group,) = client.xinfo_groups(s)
        out[s] = {"pending": group["pending"], "lag": group["lag"], "dlq": client.xlen(f"{s}:dlq")}
    return out


def drained(client: RedisCluster, names: list[str]) -> bool:
    try:
        return all(g["pending"] == 0 and g["lag"] == 0 for g in settle(client, names).values())
    except Exception:
        return False


def test_cluster_needs_hash_tagged_stream_names() -> None:
    """`events` and `events:dlq` hash to different slots: refused before anything starts."""
    with pytest.raises(ConfigError, match="hash tag"):
        load_settings({"redis_cluster": True, "streams": "events"}, environ={})
    ok = load_settings({"redis_cluster": "1", "streams": "events:{0..3}"}, environ={})
    assert ok.redis_cluster and len(ok.streams) == 4


@pytest.mark.slow
def test_sharded_streams_on_three_primaries_counted_exactly(
    cluster: LocalCluster, make_settings, schema, ns: str, daemons: Daemons
) -> None:
    """Six shards spread over the three primaries; one daemon drains them all: exact totals,
    dead letters in each shard's own (same-slot) DLQ, nothing left pending."""
    client = cluster_client(cluster)
    names = shards(ns)
    assert len({client.get_node_from_key(s).name for s in names}) == 3, "the shards should span every primary"
    entries = list(Generator(seed=61, days=1, bad_ratio=0.01).entries(12_000))
    parts = spread(client, names, entries)
    settings = make_settings(
        redis_url=cluster.url, redis_cluster=True, streams=f"{ns}:events:{{0..{SHARDS - 1}}}", batch_size=250
    )
    proc = daemons.start(settings, "--drain")
    assert proc.wait(timeout=240) == 0, daemons.logs()[-3000:]
    state = settle(client, names)
    assert state == {s: {"pending": 0, "lag": 0, "dlq": len(malformed(parts[s]))} for s in names}
    assert_totals(settings, entries)
    # Every shard was served from the first batch on.
    assert set(batches(proc)[0]["by_stream"]) == set(names)


@pytest.mark.slow
def test_primary_killed_replica_promoted_daemon_carries_on_exactly(
    cluster: LocalCluster, make_settings, schema, ns: str, daemons: Daemons
) -> None:
    """kill -9 of the primary holding two shards while the daemon works; its replica is
    promoted, the daemon's client follows the new slot map and the rest of the traffic
    arrives on the new primary. Acks and deliveries the dead primary had not passed on are
    redone and skipped by the ledger: every total is exact."""
    client = cluster_client(cluster)
    names = shards(ns)
    entries = list(Generator(seed=62, days=1, bad_ratio=0.005).entries(30_000))
    first, second = entries[:20_000], entries[20_000:]
    parts = spread(client, names, first)
    settings = make_settings(
        redis_url=cluster.url,
        redis_cluster=True,
        streams=f"{ns}:events:{{0..{SHARDS - 1}}}",
        batch_size=200,
        min_idle_ms=1500,
    )
    proc = daemons.start(settings)
    wait_batches(proc, 5)

    victim_port = int(client.get_node_from_key(names[0]).port)
    (victim,) = [n for n in cluster.nodes if n.port == victim_port]
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    killed_at = time.monotonic()
    client.close()

    def promoted() -> bool:
        try:
            probe = cluster_client(cluster)
            try:
                return int(probe.get_node_from_key(names[0]).port) != victim_port and bool(probe.ping())
            finally:
                probe.close()
        except Exception:
            return False

    wait_for(promoted, 60, "a replica to take over the killed primary's slots")
    failover_s = time.monotonic() - killed_at
    client = cluster_client(cluster)
    more = spread(client, names, second)
    wait_for(lambda: drained(client, names), 180, "the daemon to drain every shard")
    assert proc.poll() is None, "the daemon kept running through the failover"
    stop(proc)
    state = settle(client, names)
    assert state == {s: {"pending": 0, "lag": 0, "dlq": len(malformed(parts[s] + more[s]))} for s in names}
    assert_totals(settings, entries)
    retries = daemons.logs().count("unavailable, retrying")
    figure(
        f"cluster failover: primary killed, replica promoted in {failover_s:.1f} s, {retries} retry lines,"
        f" {len(entries)} entries, exact"
    )


def cli_on(
    cluster: LocalCluster, *args: str, cluster_mode: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    env.update(STREAMPROC_REDIS_URL=cluster.url, STREAMPROC_REDIS_CLUSTER="1" if cluster_mode else "0", **extra)
    return subprocess.run(
        [sys.executable, "-m", "streamproc", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_on_a_cluster_and_a_clear_error_without_the_setting(cluster: LocalCluster, ns: str) -> None:
    """`status` works across the nodes; without redis_cluster it names the setting to change."""
    client = cluster_client(cluster)
    names = shards(ns)
    for s in names:
        client.xgroup_create(s, "g", id="0", mkstream=True)
        client.xadd(s, {"type": "page_view"})
    streams = f"{ns}:events:{{0..{SHARDS - 1}}}"
    res = cli_on(cluster, "status", "--json", "--streams", streams, "--group", "g")
    assert res.returncode == 0, res.stderr
    rows = {row["stream"]: row for row in json.loads(res.stdout)["streams"]}
    assert set(rows) == set(names) and all(row["lag"] == 1 for row in rows.values())

    res = cli_on(cluster, "status", "--streams", streams, "--group", "g", cluster_mode=False)
    assert res.returncode != 0
    assert "STREAMPROC_REDIS_CLUSTER=1" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_dlq_replay_on_a_cluster(cluster: LocalCluster, ns: str) -> None:
    """The replay script touches the DLQ, the stream and the replay log: one slot thanks to the
    hash tag, and run one call at a time since a cluster pipeline cannot carry scripts."""
    client = cluster_client(cluster)
    stream = f"{ns}:events:{{4}}"
    for i in range(3):
        client.xadd(
            f"{stream}:dlq", {"_dlq_source": stream, "_dlq_id": f"{i + 1}-0", "_dlq_reason": "bad", "n": str(i)}
        )
    res = cli_on(cluster, "dlq", "replay", "--force", "--all", "--json", "--stream", stream, "--streams", stream)
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)["replayed"]) == 3
    assert client.xlen(f"{stream}:dlq") == 0
    assert [f[b"n"] for _, f in client.xrange(stream)] == [b"0", b"1", b"2"]
    assert client.xlen(f"{stream}:dlq:replayed") == 3


ACL_FILE = Path(__file__).resolve().parent.parent / "deploy" / "redis" / "streamproc.acl"


def apply_acl_user(cluster: LocalCluster, user: str, password: str) -> None:
    """Load one user of deploy/redis/streamproc.acl on every node (ACLs are per node)."""
    (line,) = [line for line in ACL_FILE.read_text().splitlines() if line.startswith(f"user {user} ")]
    rules = re.findall(r"\([^)]*\)|\S+", line)[2:]
    rules = [f">{password}" if rule.startswith("#") else rule for rule in rules]
    for node in cluster.nodes:
        if node.process.poll() is not None:
            continue  # killed by the failover test
        with redis.Redis(port=node.port) as admin:
            admin.execute_command("ACL", "SETUSER", user, *rules)


def test_daemon_under_the_acl_file_on_a_cluster(
    cluster: LocalCluster, make_settings, schema, database_url: str, daemons: Daemons
) -> None:
    """The ACL file's `streamproc-admin` provisions and its `streamproc` user drains six shards
    on the cluster: the cluster client's CLUSTER SLOTS and COMMAND are granted, and no NOPERM."""
    for user in ("streamproc", "streamproc-admin"):
        apply_acl_user(cluster, user, f"{user}-pw")
    port = next(n.port for n in cluster.nodes if n.process.poll() is None)
    names = [f"events:{{{i}}}" for i in range(SHARDS)]
    setup = cli_on(
        cluster,
        "setup",
        "--json",
        "--redis-url",
        f"redis://streamproc-admin:streamproc-admin-pw@127.0.0.1:{port}",
        "--database-url",
        database_url,
        "--schema",
        schema,
        "--streams",
        f"events:{{0..{SHARDS - 1}}}",
        "--group",
        "g",
    )
    assert setup.returncode == 0, setup.stderr
    client = cluster_client(cluster)
    entries = list(Generator(seed=63, days=1, bad_ratio=0.01).entries(3000))
    parts = spread(client, names, entries)
    settings = make_settings(
        redis_url=f"redis://streamproc:streamproc-pw@127.0.0.1:{port}",
        redis_cluster=True,
        streams=f"events:{{0..{SHARDS - 1}}}",
    )
    proc = daemons.start(settings, "--drain")
    assert proc.wait(timeout=120) == 0, daemons.logs()[-3000:]
    logs = daemons.logs()
    assert "NOPERM" not in logs and "no permissions" not in logs, logs[-3000:]
    assert settle(client, names) == {s: {"pending": 0, "lag": 0, "dlq": len(malformed(parts[s]))} for s in names}
    assert_totals(settings, entries)


def test_lost_group_on_a_cluster_exits_3(cluster: LocalCluster, make_settings, schema, ns: str, daemons) -> None:
    """A group destroyed under a running daemon is caught in the cluster pipeline's reply too
    (redis-py prefixes it with the command): exit 3, the group not recreated."""
    client = cluster_client(cluster)
    names = shards(ns)
    settings = make_settings(redis_url=cluster.url, redis_cluster=True, streams=f"{ns}:events:{{0..{SHARDS - 1}}}")
    proc = daemons.start(settings)
    wait_for(lambda: '"event": "ready"' in daemons.logs(), 60, "the daemon to be ready")  # not "enrichment ready"
    client.xgroup_destroy(names[2], "g")
    assert proc.wait(timeout=30) == 3, daemons.logs()[-2000:]
    assert "GroupMissing" in daemons.logs()
    assert client.xinfo_groups(names[2]) == []


def test_reclaim_on_a_cluster_with_xautoclaim(cluster: LocalCluster, make_settings, schema, ns: str, daemons) -> None:
    """A dead consumer holds entries on every shard and part of one shard is trimmed while
    pending: the daemon's per-stream XAUTOCLAIM (each call on the shard's own primary) takes
    the others over and counts the trimmed ones from XAUTOCLAIM's deleted ids. Totals exact,
    nothing pending; the primaries' INFO commandstats show XAUTOCLAIM calls."""
    client = cluster_client(cluster)
    names = shards(ns)
    for s in names:
        client.xgroup_create(s, "g", id="0", mkstream=True)
    entries = list(Generator(seed=64, days=1, bad_ratio=0).entries(1200))
    parts = spread(client, names, entries)
    held = {s: client.xreadgroup("g", "dead", {s: ">"}, count=100)[0][1] for s in names}
    trimmed = 60  # of the dead consumer's entries on the first shard: XTRIM MINID its 61st
    assert client.xtrim(names[0], minid=held[names[0]][trimmed][0], approximate=False) == trimmed

    def autoclaims() -> int:
        stats = client.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        return sum(int(s.get("cmdstat_xautoclaim", {}).get("calls", 0)) for s in stats.values())

    before = autoclaims()
    settings = make_settings(
        redis_url=cluster.url, redis_cluster=True, streams=f"{ns}:events:{{0..{SHARDS - 1}}}", min_idle_ms=100
    )
    proc = daemons.start(settings, "--drain")
    assert proc.wait(timeout=120) == 0, daemons.logs()[-3000:]
    assert autoclaims() > before
    (line,) = [json.loads(x) for x in Path(proc.logfile).read_text().splitlines() if '"event": "drained"' in x]
    assert line["reclaimed"] == SHARDS * 100 - trimmed, line
    assert line["trimmed"] == trimmed, line
    assert all(g["pending"] == 0 for g in settle(client, names).values())
    kept = parts[names[0]][trimmed:]
    assert_totals(settings, [e for s in names[1:] for e in parts[s]] + kept)


def test_check_reads_every_primary_of_a_cluster(cluster: LocalCluster, database_url: str, schema: str, ns: str) -> None:
    """`check` reads the version and maxmemory-policy of each primary holding a stream, not only
    of the first stream's: an `allkeys-lru` on another primary fails the check, naming it."""
    client = cluster_client(cluster)
    names = shards(ns)
    for s in names:
        client.xgroup_create(s, "g", id="0", mkstream=True)
    primaries = {client.get_node_from_key(s).name for s in names}
    evicting = client.get_node_from_key(names[-1])
    assert evicting.name != client.get_node_from_key(names[0]).name
    client.config_set("maxmemory-policy", "allkeys-lru", target_nodes=evicting)
    try:
        res = cli_on(
            cluster, "check", "--json", "--streams", ",".join(names), "--group", "g",
            "--database-url", database_url, "--schema", schema, env={"STREAMPROC_VISITOR_SECRET": "s" * 32},
        )  # fmt: skip
    finally:
        client.config_set("maxmemory-policy", "noeviction", target_nodes=evicting)
    assert res.returncode == 1, res.stdout + res.stderr
    checks = {c["name"]: c["status"] for c in json.loads(res.stdout)["checks"]}
    assert {name: checks[f"redis {name}"] for name in primaries} == dict.fromkeys(primaries, "ok")
    policies = {name: checks[f"maxmemory-policy {name}"] for name in primaries}
    assert policies == {name: "fail" if name == evicting.name else "ok" for name in primaries}
