"""The network to Redis misbehaves: a black hole longer than the socket timeout, then latency."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

from streamproc.dev.synth import Generator, produce
from tests.chaos.checks import Feeder, batches, figure, final_checks, logfile, stop, wait_batches, wait_drained
from tests.chaos.conftest import Proxies, via
from tests.chaos.proxy import TcpProxy
from tests.conftest import Daemons
from tests.test_crash import log_lines

BLOCK_MS = 500
LATENCY_S = 0.05


def black_hole(proxy: TcpProxy, proc: subprocess.Popen[bytes], seconds: float) -> int:
    """Hold all traffic for ``seconds``; returns how many Redis timeouts the daemon logged meanwhile."""
    before = len(_timeouts(proc))
    proxy.blackhole()
    holed_at = time.monotonic()
    while time.monotonic() - holed_at < seconds:
        assert proc.poll() is None, "the daemon exited during the black hole"
        time.sleep(0.2)
    proxy.restore()
    return len(_timeouts(proc)) - before


def _timeouts(proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    return [x for x in log_lines(logfile(proc), "redis unavailable, retrying") if "imeout" in str(x["error"])]


@pytest.mark.slow
def test_redis_black_hole_and_latency(
    make_settings, schema, r, stream, redis_url, daemons: Daemons, proxies: Proxies
) -> None:
    """Daemon -> proxy -> Redis, STREAMPROC_BLOCK_MS=500 (socket timeout 10.5 s). Three phases:
    (1) while the daemon is busy, the proxy black-holes the traffic for 11.5 s (connections stay
    open, nothing is forwarded; held bytes arrive once the path heals, as TCP would deliver them);
    (2) every chunk is delayed by 50 ms for a while; (3) the same black hole while the daemon
    idles in XREADGROUP BLOCK and entries arrive. Each time its calls time out, it reconnects with
    backoff and carries on. Nothing is lost or doubled, nothing stays pending."""
    proxy = proxies(redis_url)
    settings = make_settings(redis_url=via(redis_url, proxy), block_ms=BLOCK_MS, batch_size=500)
    hole_s = settings.socket_timeout_s + 1
    assert settings.socket_timeout_s == BLOCK_MS / 1000 + 10
    entries = list(Generator(seed=39, days=1, bad_ratio=0.004).entries(30_000))
    a, b, c, d = entries[:12_000], entries[12_000:20_000], entries[20_000:25_000], entries[25_000:]

    produce(r, stream, a)
    proc = daemons.start(settings)
    wait_batches(proc, 5)
    busy_timeouts = black_hole(proxy, proc, hole_s)
    assert busy_timeouts, "no Redis timeout logged during the black hole"
    wait_drained(r, stream, 30, alive=[proc])

    proxy.latency_s = LATENCY_S
    slow_from = len(batches(proc))
    produce(r, stream, b)
    wait_drained(r, stream, 60, alive=[proc])
    slow_batches = len(batches(proc)) - slow_from
    proxy.latency_s = 0

    time.sleep(1)  # idle: blocked in XREADGROUP
    with Feeder(r, stream, c, chunk=500, pause_s=1.0):  # straight to Redis, during the hole
        idle_timeouts = black_hole(proxy, proc, hole_s)
    assert idle_timeouts, "no Redis timeout logged during the idle black hole"
    produce(r, stream, d)
    wait_drained(r, stream, 10, alive=[proc])  # reclaim would take min_idle_ms (1 s)
    stop(proc)

    _, lost, doubled = final_checks(settings, r, stream, entries, daemons)
    figure(
        f"Redis black hole 2 x {hole_s:.1f} s: {busy_timeouts} + {idle_timeouts} timeouts logged,"
        f" {proxy.accepted} connections through the proxy; {slow_batches} batches at"
        f" +{LATENCY_S * 1000:.0f} ms per chunk; {len(entries):,} entries, {lost} lost, {doubled} doubled"
    )
