"""The stream must not grow forever: `trim --all --older-than`, its systemd timer, the age gauge."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from streamproc.daemon import metrics
from tests.test_security import AclRedis, acl_redis, cli  # noqa: F401  # the ACL server fixture
from tests.test_systemd import UNIT_DIR, installable_copy, systemd_analyze

DAY_MS = 86_400_000


def test_trim_keeps_the_retention_and_everything_not_yet_acked(acl_redis: AclRedis) -> None:  # noqa: F811
    """As the `streamproc-admin` user the trim unit uses: on two streams, entries older than the
    retention that every group acked go; a pending old entry, everything after it, and every entry
    younger than the retention stay. Entry ids carry their time, so nothing here depends on timing."""
    now_ms = int(time.time() * 1000)
    admin = acl_redis.client("streamproc-admin")
    daemon = acl_redis.client("streamproc")
    kept: dict[str, list[str]] = {}
    for n, stream in enumerate(("events:{0}", "events:{1}")):
        old = [admin.xadd(stream, {"n": str(i)}, id=f"{now_ms - 3 * DAY_MS + i}-0").decode() for i in range(5)]
        young = [admin.xadd(stream, {"n": str(i)}, id=f"{now_ms - 60_000 + i}-0").decode() for i in range(3)]
        admin.xgroup_create(stream, "g", id="0")
        daemon.xreadgroup("g", "c", {stream: ">"}, count=100)
        pending_old = old[3] if n == 0 else None  # stream 0: one old entry still pending
        daemon.xack(stream, "g", *[i for i in old + young if i != pending_old])
        kept[stream] = (old[3:] if n == 0 else []) + young
    res = cli(
        "trim", "--all", "--older-than", "1d", "--json", "--redis-url", acl_redis.url("streamproc-admin"),
        "--streams", "events:{0..1}",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    plans = json.loads(res.stdout)
    assert [p["removed"] for p in plans] == [3, 5]
    for stream, ids in kept.items():
        assert [e.decode() for e, _ in admin.xrange(stream)] == ids


def test_oldest_entry_age_gauge(r: redis.Redis, stream: str) -> None:
    """streamproc_stream_oldest_entry_age_seconds follows the first entry's id: over two days for an
    entry stamped three days ago, under one once trimming has removed it, 0 for an empty stream."""
    now_ms = int(time.time() * 1000)
    r.xadd(stream, {"n": "0"}, id=f"{now_ms - 3 * DAY_MS}-0")
    r.xadd(stream, {"n": "1"}, id=f"{now_ms}-0")
    r.xgroup_create(stream, "g", id="0")
    refresher = metrics.GroupStateRefresher(lambda: r, [stream], "g", 60)
    refresher.refresh(r)
    assert metrics.OLDEST_ENTRY_AGE.labels(stream)._value.get() > 2 * 86_400
    r.xtrim(stream, minid=f"{now_ms}-0", approximate=False)
    refresher.refresh(r)
    assert metrics.OLDEST_ENTRY_AGE.labels(stream)._value.get() < 86_400
    r.xtrim(stream, maxlen=0, approximate=False)
    refresher.refresh(r)
    assert metrics.OLDEST_ENTRY_AGE.labels(stream)._value.get() == 0


@pytest.mark.parametrize("name", ["streamproc-trim", "streamproc-maintain"])
def test_timer_units_pass_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    """Each oneshot service and its timer load with no warning about them."""
    service = installable_copy(f"{name}.service", tmp_path)
    timer = tmp_path / f"{name}.timer"
    shutil.copy(UNIT_DIR / f"{name}.timer", timer)
    proc = subprocess.run(
        [systemd_analyze(), "verify", str(service), str(timer)], capture_output=True, text=True, timeout=30, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert [line for line in output.splitlines() if "streamproc" in line] == []
