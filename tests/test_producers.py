"""Producer recipes, proven end to end: the Node helper (clients/node/streamproc.js) through the
real ioredis and node-redis packages (installed by ``npm ci`` in setup.sh), and the Python helper
(:mod:`streamproc.redis.producer`), against real Redis, drained by the real daemon.

- every event written through any of the three is counted once: the report equals the truth
  computed from the events meant, retries (same event, same id) included, nothing dead-lettered;
- Redis frozen (SIGSTOP) or stopped: the Node producer's promises reject and fire-and-forget
  events are counted as failed, through the configured timeout or at once - the driver exits
  on its own, no request would hang;
- the ``streamproc-producer`` ACL user: the recommended ioredis options log no NOPERM (ioredis's
  default ready check runs INFO, which the user may not run: shown too).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from streamproc.config import Settings
from streamproc.dev.localservers import start_redis
from streamproc.dev.synth import Generator
from streamproc.errors import SourceMisconfigured, SourceUnavailable
from streamproc.redis.producer import InvalidEvent, build_event, encode_event, produce, producer_client
from tests.conftest import Daemons
from tests.test_e2e import report_json
from tests.test_security import AclRedis, acl_redis  # noqa: F401  # the module-scoped ACL server fixture
from tests.truth import assert_report_matches, day_of, expected_report

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "clients" / "node"
DRIVER = NODE_DIR / "test" / "driver.mjs"
CLIENTS = ("ioredis", "node-redis")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
HANG_GUARD_S = 120  # a driver still running after this is a hang, not a slow machine


def node() -> str:
    """The node binary and the installed npm packages; missing ones fail the run."""
    binary = shutil.which("node")
    assert binary, "node is not installed: run ./setup.sh test"
    for package in ("ioredis", "redis", "typescript"):
        assert (NODE_DIR / "node_modules" / package / "package.json").is_file(), (
            f"{package} is not installed in clients/node: run ./setup.sh test (npm ci)"
        )
    return binary


def run_node(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node(), *args],
        cwd=NODE_DIR,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
        env=env,
    )


def drive(client: str, url: str, stream: str, events: list[dict[str, Any]], retry: list[int]) -> dict[str, Any]:
    """Produce ``events`` (then the ``retry`` ones again) through the Node helper and ``client``."""
    out = run_node(str(DRIVER), "produce", client, url, stream, stdin=json.dumps({"events": events, "retry": retry}))
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


def test_events_from_node_and_python_producers_are_counted_once(
    make_settings: Callable[..., Settings], schema: str, r: redis.Redis, stream: str, daemons: Daemons
) -> None:
    """A third of the events through ioredis, a third through node-redis (half awaited, half
    fire-and-forget), a third through the Python helper; one event in ten is sent a second time
    with the same id, as a retrying web app would. The daemon drains them: no dead letter, and
    every per-site figure of `report --json` equals the truth computed from the events meant.
    Events without an id got a fresh UUID; events that came with one kept it."""
    gen = Generator(seed=18, days=2, bad_ratio=0)
    n = 1500
    events = [gen.event(i, n) for i in range(n)]
    given_ids = {i: e["id"] for i, e in enumerate(events) if "id" in e}
    assert 0 < len(given_ids) < n
    chunks = [list(range(k, n, 3)) for k in range(3)]
    settings = make_settings()
    written = 0

    for client, indices in zip(CLIENTS, chunks[:2], strict=True):
        retry = list(range(0, len(indices), 10))
        result = drive(client, settings.redis_url, stream, [events[i] for i in indices], retry)
        assert result["stats"] == {"sent": len(indices) + len(retry), "failed": 0, "inFlight": 0}, result
        assert result["warnings"] == []
        for i, event_id in zip(indices, result["ids"], strict=True):
            assert event_id == given_ids[i] if i in given_ids else UUID.match(event_id), (i, event_id)
        assert len(set(result["ids"])) == len(indices)
        written += len(indices) + len(retry)

    built = [build_event(events[i]) for i in chunks[2]]
    for event in built + built[::10]:
        assert re.match(r"^\d+-\d+$", produce(r, stream, event))
    written += len(built) + len(built[::10])
    for i, event in zip(chunks[2], built, strict=True):
        assert event["id"] == given_ids[i] if i in given_ids else UUID.match(event["id"]), (i, event)

    assert r.xlen(stream) == written
    assert daemons.start(settings, "--drain").wait(timeout=240) == 0, daemons.logs()[-3000:]
    assert r.xlen(f"{stream}:dlq") == 0
    days = sorted({day_of(e["ts"]) for e in events})
    for site in sorted({e["site"] for e in events}):
        got = report_json(settings, site, days[0].isoformat(), days[-1].isoformat())
        assert_report_matches(got, expected_report(events, site, days[0], days[-1]))
        assert sum(got["events"].values()) == sum(1 for e in events if e["site"] == site)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("how", ["frozen", "stopped"])
def test_node_producer_does_not_wait_for_an_absent_redis(tmp_path: Path, client: str, how: str) -> None:
    """The Node helper with the recommended options, connected; then Redis is frozen (SIGSTOP:
    the connection stays open, no reply ever comes) or stopped (the connection closes). Every
    awaited produce() rejects - with a timeout when frozen, with the client's offline error when
    stopped - and every fire-and-forget send() is counted as failed and reported to onError
    (the default onError warns once, not once per event). Once Redis is back (resumed, or
    restarted on the same port) the same client writes again and the default onError says so;
    the driver then exits by itself."""
    server = start_redis(tmp_path / "redis")
    n = 20
    proc: subprocess.Popen[str] | None = None
    try:
        proc = subprocess.Popen(
            [node(), str(DRIVER), "outage", client, server.url, "outage:events", str(n)],
            cwd=NODE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == "connected\n", proc.communicate(timeout=HANG_GUARD_S)
        if how == "frozen":
            server.process.send_signal(signal.SIGSTOP)
        else:
            server.kill()
        proc.stdin.write(f"{how}\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "outage done\n", proc.communicate(timeout=HANG_GUARD_S)
        if how == "frozen":
            server.process.send_signal(signal.SIGCONT)
        else:
            server = start_redis(tmp_path / "redis-again", port=server.port)
        proc.stdin.write("back\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)
        server.stop()
    assert proc.returncode == 0, err
    result = json.loads(out.splitlines()[-1])
    assert result["stats"]["sent"] == 1 and result["stats"]["failed"] == 2 * n, result
    assert sum(result["rejected"].values()) == n and sum(result["sendErrors"].values()) == n, result
    errors = set(result["rejected"]) | set(result["sendErrors"])
    if how == "frozen":
        # The producer's timeoutMs, or ioredis's own commandTimeout of the same length.
        expected = {"ProducerTimeoutError: streamproc: Redis did not answer within 500 ms", "Error: Command timed out"}
    elif client == "ioredis":
        expected = {"Error: Stream isn't writeable and enableOfflineQueue options is false"}
    else:
        expected = {"ClientOfflineError: The client is offline"}
    assert errors <= expected, errors
    # The default onError: one warning when events start failing, not one per event.
    assert (result["quietStats"]["sent"], result["quietStats"]["failed"]) == (0, n), result
    ours = [w for w in result["warnings"] if w.startswith("streamproc:")]
    assert len(ours) == 2 and ours[0].startswith("streamproc: events are not being written ("), ours
    assert ours[1] == f"streamproc: events are written again, after {n} failed", ours


def test_producer_acl_user_with_the_recommended_options(acl_redis: AclRedis) -> None:  # noqa: F811
    """As `streamproc-producer` (deploy/redis/streamproc.acl): both Node clients with the
    recommended options write their events and nothing logs NOPERM. The same ioredis client with
    its default ready check (INFO) does log the NOPERM warning - which is what the recommended
    `enableReadyCheck: false` avoids. The Python helper writes too, and a write outside the
    user's keys is SourceMisconfigured, naming the ACL file."""
    url = acl_redis.url("streamproc-producer")
    events = [{"type": "page_view", "site": "acl.example", "path": f"/{i}"} for i in range(10)]
    for client in CLIENTS:
        result = drive(client, url, "events:{acl}", events, [0])
        assert result["stats"]["sent"] == 11 and result["warnings"] == [], result
    noisy = run_node(
        str(DRIVER),
        "produce",
        "ioredis",
        url,
        "events:{acl}",
        stdin=json.dumps({"events": events, "retry": []}),
        env={**os.environ, "DRIVER_READY_CHECK": "1"},
    )
    assert noisy.returncode == 0, noisy.stderr
    assert "NOPERM" in noisy.stderr and any("NOPERM" in w for w in json.loads(noisy.stdout)["warnings"])

    with producer_client(url) as client:
        produce(client, "events:{acl}", build_event(events[0]))
        with pytest.raises(
            SourceMisconfigured, match=re.escape("lacks a permission (see deploy/redis/streamproc.acl)")
        ):
            produce(client, "events:{acl}:dlq", build_event(events[0]))
    with acl_redis.client("streamproc-admin") as admin:
        assert admin.xlen("events:{acl}") == 2 * 11 + 10 + 1


def test_python_helper_refuses_what_the_daemon_would_dead_letter(r: redis.Redis, stream: str) -> None:
    """encode_event runs the daemon's decoder: the reasons are the daemon's, nothing is written
    for an invalid event; a Decimal revenue stays exact; an event without an id is refused."""
    bad = [
        (
            {"type": "api_request", "site": "s", "method": "GET", "route": "/", "status": 700, "duration_ms": 1},
            "Expected `int` <= 599 - at `$.status`",
        ),
        ({"type": "page_view", "site": "s"}, "Object missing required field `path`"),
        ({"type": "teleport", "site": "s"}, "Invalid value 'teleport' - at `$.type`"),
        ({"type": "page_view", "site": "s", "path": "/", "ts": 4_000_000_000_000}, "in the future"),
        ({"type": "page_view", "site": "s", "path": "/\x00"}, "NUL character"),
        ({"type": "custom", "site": "s", "name": "x", "props": {"blob": "x" * 70_000}}, "65536-byte limit"),
    ]
    for attrs, reason in bad:
        with pytest.raises(InvalidEvent, match=re.escape(reason)):
            produce(r, stream, build_event(attrs))
    with pytest.raises(InvalidEvent, match="no `id`"):
        produce(r, stream, {"type": "page_view", "site": "s", "path": "/", "ts": 1})
    assert r.xlen(stream) == 0
    raw = encode_event(build_event({"type": "conversion", "site": "s", "name": "buy", "revenue": Decimal("0.10")}))
    assert b'"revenue":"0.10"' in raw, raw


@pytest.mark.parametrize("how", ["frozen", "stopped"])
def test_python_helper_raises_source_unavailable_when_redis_is_away(tmp_path: Path, how: str) -> None:
    """producer_client gives up instead of waiting: a frozen server (no reply within the
    client's socket timeout) and a stopped one are both SourceUnavailable."""
    server = start_redis(tmp_path / "redis")
    client = producer_client(server.url)
    event = build_event({"type": "page_view", "site": "s", "path": "/"})
    try:
        produce(client, "events", event)
        if how == "frozen":
            server.process.send_signal(signal.SIGSTOP)
        else:
            server.kill()
        with pytest.raises(SourceUnavailable, match="Redis unreachable"):
            produce(client, "events", event)
    finally:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)
        client.close()
        server.stop()


def test_node_helper_matches_the_contract_and_the_examples_parse() -> None:
    """The Node helper's required-attribute table is the JSON Schema's; tsc type-checks the JSDoc
    of streamproc.js, streamproc.d.ts against the real ioredis and node-redis types
    (test/types.ts) and the NestJS example against the real @nestjs/* and node-redis types; the
    Next.js examples parse (Next.js itself is not installed: too large for the test run)."""
    schema = json.loads((ROOT / "schemas" / "event.schema.json").read_text())
    want = {
        d["properties"]["type"]["enum"][0]: sorted(set(d["required"]) - {"type", "site", "ts"})
        for d in schema["$defs"].values()
    }
    script = "const m = await import('./streamproc.js'); console.log(JSON.stringify([m.EVENT_TYPES, m.REQUIRED]))"
    out = run_node("--input-type=module", "-e", script)
    assert out.returncode == 0, out.stderr
    types, required = json.loads(out.stdout)
    assert sorted(types) == sorted(want) and {t: sorted(r) for t, r in required.items()} == want

    # buildEvent refuses, with a TypeError, what cannot be valid; fills id and ts otherwise.
    script = """
    const { buildEvent } = await import('./streamproc.js');
    const bad = [{ type: 'teleport', site: 's' }, { type: 'page_view', path: '/' },
                 { type: 'click', site: 's', path: '/', x: 0.5 }, { type: 'page_view', site: 's', path: '/', ts: 1.5 },
                 { type: 'page_view', site: 's', path: '/', ts: new Date(NaN) }];
    const errors = bad.map((e) => { try { buildEvent(e); return null; } catch (x) { return x.constructor.name; } });
    const good = buildEvent({ type: 'page_view', site: 's', path: '/', ts: new Date(1763800000123) }, 5);
    const now = buildEvent({ type: 'page_view', site: 's', path: '/', id: 'mine' }, 5);
    console.log(JSON.stringify({ errors, good, now }));
    """
    out = run_node("--input-type=module", "-e", script)
    assert out.returncode == 0, out.stderr
    built = json.loads(out.stdout)
    assert built["errors"] == ["TypeError"] * 5
    assert built["good"]["ts"] == 1763800000123 and UUID.match(built["good"]["id"])
    assert (built["now"]["ts"], built["now"]["id"]) == (5, "mine")

    tsc = run_node(str(NODE_DIR / "node_modules" / "typescript" / "bin" / "tsc"), "-p", "tsconfig.json")
    assert tsc.returncode == 0, tsc.stdout + tsc.stderr
    examples = sorted(str(p.relative_to(NODE_DIR)) for p in (NODE_DIR / "examples").rglob("*.ts"))
    assert len(examples) >= 4
    parsed = run_node("test/syntax.mjs", *examples)
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr
    checked = run_node("--check", "streamproc.js")
    assert checked.returncode == 0, checked.stderr
