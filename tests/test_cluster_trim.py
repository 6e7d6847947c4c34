"""Entries trimmed on a Redis Cluster: counted per stream key as on a single Redis, and `--drain` ends.

Before, on a cluster the daemon read each shard with a plain pipelined XREADGROUP: entries
a producer's ``XADD … MAXLEN`` removed before any worker read them were skipped with
``trimmed=0``, no metric, no alert.
"""

from __future__ import annotations

import json

from redis.cluster import RedisCluster

from streamproc.dev.localservers import RedisCluster as LocalCluster
from streamproc.dev.synth import Generator, SynthEntry, produce
from tests.conftest import Daemons
from tests.test_cluster import SHARDS, cli_on, cluster, cluster_client, shards  # noqa: F401  # the module-scoped cluster fixture
from tests.test_crash import assert_totals, log_lines
from tests.test_redis_gaps import DRAIN_HANG_S, assert_drains_counting_the_trim, trim_under_a_dead_consumer

KEEP = 150  # the producer's MAXLEN


def unique_entries(seed: int, n: int) -> list[SynthEntry]:
    """``n`` synthetic entries with no deliberate duplicates (each counts once)."""
    out = [e for e in Generator(seed=seed, days=1, bad_ratio=0).entries(2 * n) if not e.event.get("_duplicate")]
    assert len(out) >= n
    return out[:n]


def produce_capped(client: RedisCluster, stream: str, entries: list[SynthEntry]) -> None:
    """A producer's ``XADD … MAXLEN KEEP`` (exact), one entry at a time."""
    for entry in entries:
        client.xadd(stream, entry.fields, maxlen=KEEP, approximate=False)  # type: ignore[arg-type]


def test_entries_trimmed_before_delivery_are_counted_per_shard_on_a_cluster(
    cluster: LocalCluster,  # noqa: F811
    make_settings,
    schema,
    ns: str,
    daemons: Daemons,
) -> None:
    """Six shards on three primaries. A first drain reads 100 entries per shard; then, with no
    worker running, a producer adds 200 + 40·i entries to shard i with MAXLEN 150. Two daemons
    drain at once: the entries each shard lost (produced after the first drain, less the 150
    left) are counted exactly once between them, per stream key (`entries deleted before
    delivery` lines, `trimmed` in the totals); every entry left is counted exactly; a further
    run counts nothing more, and `status` shows no lag on any shard."""
    client = cluster_client(cluster)
    names = shards(ns)
    assert len({client.get_node_from_key(s).name for s in names}) == 3, "the shards should span every primary"
    for s in names:
        client.xgroup_create(s, "g", id="0", mkstream=True)
    pool = unique_entries(73, SHARDS * 100 + sum(200 + 40 * i for i in range(SHARDS)))
    first = {s: [pool.pop() for _ in range(100)] for s in names}
    for s in names:
        produce(client, s, first[s])
    settings = make_settings(redis_url=cluster.url, redis_cluster=True, streams=f"{ns}:events:{{0..{SHARDS - 1}}}")
    assert daemons.start(settings, "--drain").wait(timeout=DRAIN_HANG_S) == 0, daemons.logs()[-2000:]

    later = {s: [pool.pop() for _ in range(200 + 40 * i)] for i, s in enumerate(names)}
    for s in names:
        produce_capped(client, s, later[s])
    truth = {s: len(later[s]) - KEEP for s in names}
    assert all(client.xlen(s) == KEEP for s in names)

    two = [daemons.start(settings, "--drain", STREAMPROC_CONSUMER=c) for c in ("c1", "c2")]
    assert [p.wait(timeout=DRAIN_HANG_S) for p in two] == [0, 0], daemons.logs()[-3000:]
    counted: dict[str, int] = {}
    for proc in two:
        for line in log_lines(proc.logfile, "entries deleted before delivery"):  # type: ignore[attr-defined]
            counted[line["stream"]] = counted.get(line["stream"], 0) + line["entries"]
    assert counted == truth
    drained = [log_lines(p.logfile, "drained")[0] for p in two]  # type: ignore[attr-defined]
    assert sum(d["trimmed"] for d in drained) == sum(truth.values())
    assert_totals(settings, [e for s in names for e in first[s] + later[s][-KEEP:]])

    again = daemons.start(settings, "--drain")
    assert again.wait(timeout=DRAIN_HANG_S) == 0
    assert log_lines(again.logfile, "entries deleted before delivery") == []  # type: ignore[attr-defined]

    # Redis 7 keeps each shard's lag at its loss (the read counter missed the trimmed entries);
    # `status` reports what is really left on every shard: nothing.
    res = cli_on(cluster, "status", "--json", "--streams", ",".join(names), "--group", "g")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["streams"]
    assert {row["stream"]: (row["lag"], row["pending"]) for row in rows} == {s: (0, 0) for s in names}


def test_drain_ends_on_a_cluster_after_pending_and_undelivered_entries_are_trimmed(
    cluster: LocalCluster,  # noqa: F811
    make_settings,
    schema,
    ns: str,
    daemons: Daemons,
) -> None:
    """On one shard a consumer that then dies reads 100 of 200 entries; `XTRIM MAXLEN 50` deletes
    them and the 50 after them. `run --drain` on two shards used to run forever (the group's lag
    stays at 50 on Redis before 8); it ends, with the 100 trimmed pending entries and the 50
    lost before delivery counted, and the 50 left counted exactly."""
    client = cluster_client(cluster)
    names = shards(ns)[:2]
    client.xgroup_create(names[1], "g", id="0", mkstream=True)
    entries = trim_under_a_dead_consumer(client, names[0])
    settings = make_settings(redis_url=cluster.url, redis_cluster=True, streams=",".join(names), min_idle_ms=100)
    assert_drains_counting_the_trim(daemons.start(settings, "--drain"), daemons, settings, entries)
