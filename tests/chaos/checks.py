"""Shared steps of the fault tests: feeding, waiting, and the final checks."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import redis

from streamproc.dev.synth import SynthEntry, produce
from streamproc.postgres.sink import PostgresSink
from tests.conftest import Daemons, wait_ready
from tests.test_crash import assert_totals, log_lines
from tests.test_e2e import dlq_fields, report_json
from tests.truth import day_of, malformed, valid_events


def logfile(proc: subprocess.Popen[bytes]) -> str:
    return str(proc.logfile)  # type: ignore[attr-defined]  # attached by Daemons.start


def tail(proc: subprocess.Popen[bytes], chars: int = 3000) -> str:
    return Path(logfile(proc)).read_text(errors="replace")[-chars:]


def figure(text: str) -> None:
    """One measured line per scenario (shown with ``pytest -s`` or in the captured output)."""
    print(f"\nFIGURE {text}")


def group_info(client: redis.Redis, stream: str, group: str = "g") -> dict[str, Any]:
    for g in client.xinfo_groups(stream):
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name == group:
            return dict(g)
    raise AssertionError(f"group {group!r} missing on {stream!r}")


def is_drained(client: redis.Redis, stream: str, group: str = "g") -> bool:
    """Nothing pending and nothing undelivered (False while the daemon has not created its group)."""
    if not client.exists(stream) or not client.xinfo_groups(stream):
        return False
    g = group_info(client, stream, group)
    last = client.xinfo_stream(stream)["last-generated-id"]
    return int(g["pending"]) == 0 and g["last-delivered-id"] == last


def wait_drained(
    client: redis.Redis, stream: str, timeout_s: float, *, alive: Sequence[subprocess.Popen[bytes]] = ()
) -> None:
    """Wait until :func:`is_drained`; ``timeout_s`` counts from the moment every ``alive``
    daemon has said `ready` (its start-up has a bound of its own, :func:`wait_ready`)."""
    for p in alive:
        wait_ready(p)
    deadline = time.monotonic() + timeout_s
    while not is_drained(client, stream):
        for p in alive:
            assert p.poll() is None, f"daemon {p.pid} exited with {p.returncode} before draining"
        assert time.monotonic() < deadline, f"not drained after {timeout_s} s: {group_info(client, stream)}"
        time.sleep(0.1)


def wait_delivered(
    client: redis.Redis, stream: str, timeout_s: float, *, alive: Sequence[subprocess.Popen[bytes]] = ()
) -> None:
    """Every entry delivered to some consumer (lag 0); some may still be pending. ``timeout_s``
    counts from the moment every ``alive`` daemon has said `ready`."""
    for p in alive:
        wait_ready(p)
    deadline = time.monotonic() + timeout_s
    while not client.exists(stream) or not client.xinfo_groups(stream) or group_info(client, stream)["lag"] != 0:
        for p in alive:
            assert p.poll() is None, f"daemon {p.pid} exited with {p.returncode}"
        assert time.monotonic() < deadline, f"not delivered after {timeout_s} s"
        time.sleep(0.1)


def pending_after(client: redis.Redis, stream: str, timeout_s: float) -> int:
    """Wait up to ``timeout_s`` for the pending count to reach 0; returns what is left."""
    deadline = time.monotonic() + timeout_s
    while (pending := int(group_info(client, stream)["pending"])) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pending


def batches(proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    return log_lines(logfile(proc), "batch")


def log_count(proc: subprocess.Popen[bytes], *events: str) -> int:
    return sum(len(log_lines(logfile(proc), e)) for e in events)


def wait_batches(proc: subprocess.Popen[bytes], n: int, timeout_s: float = 60) -> None:
    """Wait for ``n`` `batch` lines; ``timeout_s`` counts from the daemon's `ready` line."""
    wait_ready(proc)
    deadline = time.monotonic() + timeout_s
    while len(batches(proc)) < n:
        assert proc.poll() is None, f"daemon exited with {proc.returncode}: {tail(proc)}"
        assert time.monotonic() < deadline, f"fewer than {n} batches after {timeout_s} s"
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 40) -> None:
    """SIGTERM: finish the batch in hand and exit 0."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=timeout_s) == 0, tail(proc)


class Feeder:
    """Produce entries in chunks from a background thread, at a steady pace."""

    def __init__(self, client: redis.Redis, stream: str, entries: Sequence[SynthEntry], chunk: int, pause_s: float):
        self.sent = 0
        self._chunks = [entries[i : i + chunk] for i in range(0, len(entries), chunk)]
        self._client, self._stream, self._pause_s = client, stream, pause_s
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="feeder")

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join()

    def _run(self) -> None:
        try:
            for chunk in self._chunks:
                self.sent += produce(self._client, self._stream, chunk)
                time.sleep(self._pause_s)
        except BaseException as exc:  # re-raised by join() in the test thread
            self.error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise self.error


def assert_dlq(
    client: redis.Redis, stream: str, entries: Iterable[SynthEntry], poison: Sequence[dict[str, str]] = ()
) -> int:
    """The DLQ holds exactly the malformed entries and the injected poison ones."""
    key: Callable[[dict[str, str]], str] = lambda f: json.dumps(f, sort_keys=True)  # noqa: E731
    want = Counter(map(key, [*malformed(entries), *poison]))
    got = Counter(map(key, dlq_fields(client, stream)))
    assert got == want, f"DLQ differs: missing {want - got}, extra {got - want}"
    return sum(want.values())


def assert_no_deadlock(logs: str) -> None:
    assert "40P01" not in logs and "deadlock" not in logs.lower(), "a Postgres deadlock shows in the daemon logs"


def lost_and_doubled(settings: Any, entries: Sequence[SynthEntry]) -> tuple[int, int, int]:
    """(events in the truth, lost, doubled), from the per-site, per-type event counts."""
    events = valid_events(entries)
    days = sorted({day_of(e["ts"]) for e in events})
    want: Counter[tuple[str, str]] = Counter((e["site"], e["type"]) for e in events)
    got: Counter[tuple[str, str]] = Counter()
    for site in sorted({site for site, _ in want}):
        report = report_json(settings, site, days[0].isoformat(), days[-1].isoformat())
        for kind, n in report["events"].items():
            got[(site, kind)] += n
    return len(events), sum((want - got).values()), sum((got - want).values())


def ledger_entries(client: redis.Redis, stream: str, database_url: str, schema: str) -> int:
    """How many of the stream's entries the ledger holds as applied."""
    sink = PostgresSink(database_url, schema)
    try:
        sink.register_streams([stream])
        reply: Any = client.xrange(stream)
        return sink.covered(stream, [eid for eid, _ in reply])
    finally:
        sink.close()


def final_checks(
    settings: Any,
    client: redis.Redis,
    stream: str,
    entries: Sequence[SynthEntry],
    daemons: Daemons,
    poison: Sequence[dict[str, str]] = (),
) -> tuple[int, int, int]:
    """Exact totals against the truth, nothing pending, the DLQ as injected, no deadlock.

    Returns (events, lost, doubled) for the scenario's figure.
    """
    figures = lost_and_doubled(settings, entries)
    assert client.xpending(stream, "g")["pending"] == 0
    assert_dlq(client, stream, entries, poison)
    assert_no_deadlock(daemons.logs())
    # The ledger holds every good entry and nothing else (producer retries included: they are claimed,
    # then skipped; dead-lettered entries split the ranges of their batch).
    good = len(entries) - len(malformed(entries))
    assert ledger_entries(client, stream, settings.database_url, settings.db_schema) == good
    assert_totals(settings, list(entries))
    return figures


def producer_retries(entries: Iterable[SynthEntry]) -> int:
    return sum(1 for e in entries if e.event is not None and e.event.get("_duplicate"))


def skipped_by_ledger(daemons: Daemons, entries: Sequence[SynthEntry]) -> int:
    """Entries skipped as already applied (redeliveries), beyond the producer retries.

    Summed from the `batch` log lines, so exact only if no process was killed between a
    COMMIT and its log line (such a batch's counts are missing).
    """
    dups = sum(int(b["duplicates"]) for p in daemons.procs for b in batches(p))
    return dups - producer_retries(entries)


def redelivered(daemons: Daemons) -> int:
    """Entries handed to a daemon again: its own pending ones at start, or reclaimed from others."""
    return sum(
        int(x["entries"])
        for p in daemons.procs
        for event in ("recovering own pending entries", "reclaimed")
        for x in log_lines(logfile(p), event)
    )
