"""Redis Sentinel over TLS (``rediss+sentinel://``): a real failover with a running daemon.

One primary, one replica and three ``redis-sentinel`` processes, all TLS-only (no plain port),
with certificates of a throwaway CA that the URL names (``ssl_ca_certs``, verified). The daemon
asks the sentinels over TLS, reads from the primary over TLS, follows ``SENTINEL FAILOVER`` to
the new primary, and counts every entry exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streamproc.dev.synth import Generator, produce
from streamproc.redis.client import connect
from tests.chaos.checks import assert_dlq, lost_and_doubled, stop, tail, wait_drained
from tests.chaos.sentinel import SentinelSet, TlsFiles, start_sentinel_set
from tests.conftest import Daemons
from tests.test_crash import assert_totals
from tests.test_security import make_ca, make_server_cert

BOUND_S = 120.0


@pytest.fixture
def tls_sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = make_ca(certs, "ca")
    cert, key = make_server_cert(certs, "ca")
    group = start_sentinel_set(tmp_path / "sentinel", password="sentinel-tls-pw", tls=TlsFiles(ca, cert, key))
    yield group
    group.stop()


def test_tls_sentinel_failover(make_settings, schema, stream, daemons: Daemons, tls_sentinels: SentinelSet) -> None:
    """Entries before and after a SENTINEL FAILOVER, everything over verified TLS: the daemon keeps
    running, follows the sentinels to the new primary, and the totals equal the truth; nothing
    pending, the dead-letter stream holds the malformed entries only."""
    sentinels = tls_sentinels
    assert sentinels.url.startswith("rediss+sentinel://")
    with pytest.raises(redis.ConnectionError):  # TLS only: a plain-text client gets nowhere
        redis.Redis(port=sentinels.sentinels[0].port, socket_timeout=5, password=sentinels.password).ping()
    settings = make_settings(redis_url=sentinels.url, batch_size=100, enrich=False, filter_bots=False)
    before = list(Generator(seed=61, days=1, bad_ratio=0.02).entries(600))
    after = list(Generator(seed=62, days=1, bad_ratio=0.02).entries(600))
    with connect(sentinels.url, cluster=False, socket_timeout=5) as client:
        produce(client, stream, before)
        proc = daemons.start(settings)
        wait_drained(client, stream, BOUND_S, alive=[proc])

    old = sentinels.primary_port()
    new = sentinels.failover()
    assert new != old
    with connect(sentinels.url, cluster=False, socket_timeout=5) as client:
        produce(client, stream, after)  # to the new primary, which the sentinels name now
        wait_drained(client, stream, BOUND_S, alive=[proc])
    assert proc.poll() is None, tail(proc)
    stop(proc)

    entries = before + after
    _, lost, doubled = lost_and_doubled(settings, entries)
    assert (lost, doubled) == (0, 0)
    assert_totals(settings, entries)
    with sentinels.client(new) as primary:
        assert primary.xpending(stream, "g")["pending"] == 0
        assert_dlq(primary, stream, entries)
