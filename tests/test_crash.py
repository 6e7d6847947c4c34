"""Crashes and races against real daemon processes; totals must equal the truth exactly."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from streamproc.dev.synth import Generator, SynthEntry, produce
from tests.conftest import Daemons, exit_code, wait_for, wait_ready
from tests.test_e2e import report_json
from tests.truth import assert_report_matches, day_of, expected_report, valid_events


def assert_totals(settings: Any, entries: list[SynthEntry]) -> None:
    """Per site over the whole range: every figure equals the truth."""
    events = valid_events(entries)
    days = sorted({day_of(e["ts"]) for e in events})
    for site in sorted({e["site"] for e in events}):
        got = report_json(settings, site, days[0].isoformat(), days[-1].isoformat())
        assert_report_matches(got, expected_report(events, site, days[0], days[-1]), settings.approximate_uniques)


def log_lines(path: str, event: str) -> list[dict[str, Any]]:
    out = []
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == event:
            out.append(rec)
    return out


def is_stopped(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.slow
# Bounded in count (8 kills), each start by READY_TIMEOUT_S; with the default settings every start
# compiles the user-agent rules (20 s and more on a loaded machine), so the whole run can take
# longer than the suite's default per-test timeout: a bound for a hang.
@pytest.mark.timeout(1200)
def test_kill_9_at_random_moments_under_load(make_settings, schema, r, stream, daemons: Daemons) -> None:
    """SIGKILL the daemon again and again while a producer writes; restarts alternate between
    two consumer names so some pending entries are resumed by their owner and others are
    reclaimed from a dead consumer. With the default max_deliveries, totals equal the truth
    exactly and no good entry is dead-lettered as poison (an entry redelivered twice is handed
    out alone, see streamproc.daemon.redelivery)."""
    rng = random.Random(11)
    gen = Generator(seed=11, days=2, bad_ratio=0.005)
    entries = list(gen.entries(40_000))
    chunks = [entries[i : i + 2000] for i in range(0, len(entries), 2000)]

    def producer() -> None:
        for chunk in chunks:
            produce(r, stream, chunk)
            time.sleep(0.05)

    feeder = threading.Thread(target=producer)
    feeder.start()
    kills = 0
    for i in range(8):
        settings = make_settings(
            consumer=f"c{i % 2}", batch_size=rng.choice((50, 300, 1000)), backlog_batch_size=rng.choice((1000, 10_000))
        )
        proc = daemons.start(settings)
        # Killed while it works, not while it loads its user-agent rules (before `ready`).
        wait_ready(proc)
        time.sleep(rng.uniform(0.3, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    feeder.join()
    final = make_settings(consumer="c0", min_idle_ms=500)
    assert exit_code(daemons.start(final, "--drain"), 240) == 0, daemons.logs()[-3000:]
    assert kills == 8
    assert r.xpending(stream, "g")["pending"] == 0
    reasons = [fields[b"_dlq_reason"].decode() for _id, fields in r.xrange(f"{stream}:dlq")]
    assert not [x for x in reasons if "delivered" in x], "a good entry was dead-lettered as poison"
    assert_totals(final, entries)


def test_crash_between_commit_and_ack_counts_once(make_settings, schema, r, stream, daemons: Daemons) -> None:
    """A failpoint kills the daemon right after COMMIT, before XACK: the restarted daemon
    gets the same entries again, the ledger recognises them, nothing is counted twice."""
    entries = list(Generator(seed=5, days=1, bad_ratio=0).entries(5000))
    produce(r, stream, entries)
    settings = make_settings(batch_size=500, backlog_batch_size=500)  # every batch 500: the arithmetic below
    # Producer retries (same event id) after the three committed batches are duplicates too.
    retries = sum(1 for e in entries[1500:] if e.event and e.event.get("_duplicate"))
    crashed = daemons.start(settings, STREAMPROC_FAILPOINTS="after_commit@3")
    assert exit_code(crashed, 60) == -signal.SIGKILL
    assert r.xpending(stream, "g")["pending"] > 0, "the crash left the committed batch unacked"

    survivor = daemons.start(settings, "--drain")
    assert exit_code(survivor, 120) == 0, daemons.logs()[-3000:]
    drained = log_lines(survivor.logfile, "drained")  # type: ignore[attr-defined]
    assert drained and drained[0]["duplicates"] == 500 + retries, drained
    assert_totals(settings, entries)


def test_crash_mid_transaction_counts_once(make_settings, schema, r, stream, daemons: Daemons) -> None:
    """A kill inside the open transaction (ledger claimed, rollups not written) rolls back:
    the entries are counted once, by the next run."""
    entries = list(Generator(seed=6, days=1, bad_ratio=0).entries(3000))
    produce(r, stream, entries)
    settings = make_settings(batch_size=400)
    assert exit_code(daemons.start(settings, STREAMPROC_FAILPOINTS="before_commit@2"), 60) == -signal.SIGKILL
    assert exit_code(daemons.start(settings, "--drain"), 120) == 0, daemons.logs()[-3000:]
    assert_totals(settings, entries)


def test_zombie_consumer_late_commit_adds_nothing(make_settings, schema, r, stream, daemons: Daemons) -> None:
    """Worker A freezes (SIGSTOP) holding a batch; B reclaims it after min-idle and commits;
    A wakes up (SIGCONT) and commits the same batch late: the ledger makes it add nothing.
    A has one flusher so that it freezes outside any transaction: a second flusher could be
    frozen inside one, holding row locks B would wait for until Postgres ends the idle
    transaction (idle_in_transaction_session_timeout) - another scenario."""
    entries = list(Generator(seed=8, days=1, bad_ratio=0).entries(4000))
    produce(r, stream, entries)
    a_settings = make_settings(consumer="a", batch_size=500, min_idle_ms=600_000, flushers=1)
    a = daemons.start(a_settings, "--drain", STREAMPROC_FAILPOINTS="before_flush@3:stop")
    wait_ready(a)
    wait_for(lambda: is_stopped(a.pid), 60, "worker A to freeze")

    b_settings = make_settings(consumer="b", batch_size=500, min_idle_ms=500)
    b = daemons.start(b_settings, "--drain")
    assert exit_code(b, 120) == 0, daemons.logs()[-3000:]
    assert r.xpending(stream, "g")["pending"] == 0

    a.send_signal(signal.SIGCONT)
    assert exit_code(a, 60) == 0, daemons.logs()[-3000:]
    late = log_lines(a.logfile, "batch")  # type: ignore[attr-defined]
    assert late[-1]["duplicates"] == 500 and late[-1]["ok"] == 0, late[-1]
    assert_totals(b_settings, entries)


def test_several_workers_share_the_group_without_deadlock(make_settings, schema, r, stream, daemons: Daemons) -> None:
    """Three worker processes on one group, hot overlapping keys: exact totals, no deadlock.

    The entries are produced once all three workers read the group (each is a consumer of
    it): a worker still loading its rules while the others drained everything would take no
    share, whatever the code."""
    entries = list(Generator(seed=9, days=1, bad_ratio=0.005).entries(30_000))
    procs = [daemons.start(make_settings(consumer=f"w{i}", batch_size=300)) for i in range(3)]
    wait_for(lambda: _consumers(r, stream) == 3, 240, "three workers reading the group")
    produce(r, stream, entries)
    from tests.chaos.checks import wait_drained  # not at the top: that module imports this one

    wait_drained(r, stream, 240, alive=procs)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        assert exit_code(p, 60) == 0, daemons.logs()[-3000:]
    logs = daemons.logs()
    assert "deadlock" not in logs.lower()
    batches = [log_lines(p.logfile, "batch") for p in procs]  # type: ignore[attr-defined]
    assert all(b for b in batches), "every worker took a share"
    assert_totals(make_settings(), entries)


def _consumers(r: Any, stream: str) -> int:
    try:
        return len(r.xinfo_consumers(stream, "g"))
    except redis.ResponseError:  # no stream or group yet: the daemons create them
        return 0
