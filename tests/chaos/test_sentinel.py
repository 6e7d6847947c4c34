"""Redis Sentinel: a real failover (``SENTINEL FAILOVER``) under load, with a running daemon.

One primary, one replica and three ``redis-sentinel`` processes on loopback; the
daemon and the producer both use the ``redis+sentinel://`` URL. After the
failover the old primary is a read-only replica: a client that kept talking to
it would get READONLY forever. The daemon must follow the sentinels to the new
primary, keep running, and count every entry exactly once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
import redis

from streamproc.dev.synth import Generator, SynthEntry, produce
from streamproc.redis.client import connect
from tests.chaos.checks import assert_dlq, figure, log_count, lost_and_doubled, stop, tail, wait_batches
from tests.chaos.sentinel import SentinelSet, start_sentinel_set
from tests.conftest import Daemons
from tests.test_crash import assert_totals


@pytest.fixture
def sentinels(tmp_path: Path) -> SentinelSet:
    group = start_sentinel_set(tmp_path / "sentinel", password="sentinel-test-pw")
    yield group  # type: ignore[misc]  # a generator fixture
    group.stop()


class ResendingFeeder:
    """Produce chunks through the Sentinel URL; a chunk that fails (the failover) or that no
    replica confirmed (WAIT 1) is sent again whole once a primary answers. Entries of a resent
    chunk may land twice: they carry producer ids, so the daemon skips the second copy; the
    truth is unchanged."""

    def __init__(self, url: str, stream: str, entries: Sequence[SynthEntry], chunk: int) -> None:
        self.client = connect(url, cluster=False, socket_timeout=5)
        self.stream = stream
        self.chunks = [entries[i : i + chunk] for i in range(0, len(entries), chunk)]
        self.resent = 0
        self.sent = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="feeder")

    def _run(self) -> None:
        try:
            for chunk in self.chunks:
                for _ in range(200):
                    try:
                        sent = produce(self.client, self.stream, chunk)
                        # Sentinel replication is asynchronous: a write the old primary took after
                        # the replica's promotion is dropped when it is demoted. A careful producer
                        # waits for a replica (WAIT 1) and sends the chunk again if none confirmed.
                        if int(self.client.wait(1, 2000)) < 1:
                            raise redis.TimeoutError("no replica confirmed the chunk")
                        self.sent += sent
                        break
                    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                        self.resent += 1
                        time.sleep(0.1)
                else:
                    raise AssertionError("no primary accepted writes after 200 attempts")
                time.sleep(0.25)  # about 20 s of writes: before, during and after the failover
        except BaseException as exc:  # re-raised in the test thread
            self.error = exc

    def join(self) -> None:
        self.thread.join()
        self.client.close()
        if self.error is not None:
            raise self.error


@pytest.mark.slow
def test_sentinel_failover_under_load(make_settings, schema, stream, daemons: Daemons, sentinels: SentinelSet) -> None:
    """SENTINEL FAILOVER while a producer writes and the daemon reads: the daemon keeps running,
    follows the sentinels to the new primary (no READONLY loop, no exit), processes the events
    written there, and the totals equal the truth exactly; nothing stays pending."""
    settings = make_settings(redis_url=sentinels.url, batch_size=200)
    before = list(Generator(seed=41, days=1, bad_ratio=0.01).entries(3_000))
    during = with_ids(Generator(seed=42, days=1, bad_ratio=0).entries(16_000))
    with connect(sentinels.url, cluster=False, socket_timeout=5) as client:
        produce(client, stream, before)
    proc = daemons.start(settings)
    wait_batches(proc, 5)

    old = sentinels.primary_port()
    feeder = ResendingFeeder(sentinels.url, stream, during, chunk=200)
    feeder.thread.start()
    wait_batches(proc, 20)
    new = sentinels.failover()
    sent_before_new_primary = feeder.sent
    feeder.join()
    assert new != old and proc.poll() is None, tail(proc)
    assert feeder.sent > sent_before_new_primary, "the producer finished before the failover: no load after it"

    primary = redis.Redis(port=new, password=sentinels.password, socket_timeout=10)
    deadline = time.monotonic() + 120
    while not _drained(primary, stream):
        assert proc.poll() is None, f"daemon exited with {proc.returncode}: {tail(proc)}"
        assert time.monotonic() < deadline, f"not drained on the new primary: {primary.xinfo_groups(stream)}"
        time.sleep(0.1)
    stop(proc)

    entries = before + during
    events, lost, doubled = lost_and_doubled(settings, entries)
    assert (lost, doubled) == (0, 0)
    assert_totals(settings, entries)
    assert primary.xpending(stream, "g")["pending"] == 0
    assert_dlq(primary, stream, before)
    retries = log_count(proc, "redis unavailable, retrying")
    figure(
        f"Sentinel failover {old} -> {new} under load: daemon kept running, {retries} Redis retries logged,"
        f" {feeder.resent} producer chunks resent, {feeder.sent - sent_before_new_primary} entries written after it;"
        f" {len(entries):,} entries, {events:,} events,"
        f" {lost} lost, {doubled} doubled"
    )
    primary.close()


def with_ids(entries: Iterable[SynthEntry]) -> list[SynthEntry]:
    """Every event with a producer id (JSON form), so a resent chunk is skipped, not counted twice."""
    out = []
    for n, entry in enumerate(entries):
        if entry.event is None or "id" in entry.event:
            out.append(entry)
            continue
        event = {**entry.event, "id": f"sentinel-test-{n}"}
        wire = {k: v for k, v in event.items() if not k.startswith("_")}
        out.append(SynthEntry({"event": json.dumps(wire)}, event))
    return out


def _drained(client: redis.Redis, stream: str) -> bool:
    try:
        group = next(g for g in client.xinfo_groups(stream) if g["name"] == b"g")
        last = client.xinfo_stream(stream)["last-generated-id"]
    except (redis.ConnectionError, redis.ResponseError, StopIteration):
        return False
    return int(group["pending"]) == 0 and group["last-delivered-id"] == last
