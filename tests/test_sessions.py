"""Server-side sessions through real daemons: out of order, redelivered, crashed, two workers;
always the sessions an independent oracle computes by the documented rule."""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import threading
import time
from typing import Any, Final

from streamproc.core.fold import DAY_MS
from tests.conftest import Daemons, wait_for
from tests.sessions_oracle import Session, sessionize
from tests.test_crash import log_lines
from tests.test_e2e import report_json
from tests.test_enrich import BOTS, PEOPLE

TIMEOUT_MS: Final = 1_800_000
SITE: Final = "sess.example"


def traffic(seed: int, visitors: int = 60) -> list[dict[str, Any]]:
    """Visitors (half with a producer `visitor` id, half known by ip + ua) browsing over the
    last two days with pauses around the timeout, bot page views mixed in, a few events with
    a producer session; the whole list shuffled, so events arrive out of order."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    events: list[dict[str, Any]] = []
    for v in range(visitors):
        ts = now - 2 * DAY_MS + rng.randrange(DAY_MS)
        who: dict[str, Any] = (
            {"visitor": f"v{v}"} if v % 2 else {"ip": f"192.0.2.{v}", "ua": PEOPLE[v % len(PEOPLE)][0]}
        )
        for _ in range(rng.randrange(1, 25)):
            kind = "page_view" if rng.random() < 0.7 else "click"
            ev: dict[str, Any] = {"type": kind, "site": SITE, "ts": ts, "path": f"/p{rng.randrange(5)}", **who}
            if kind == "click":
                ev.update(x=0.5, y=0.5)
            events.append(ev)
            pause = rng.choice((rng.randrange(60_000), rng.randrange(20 * 60_000), rng.randrange(25, 40) * 60_000))
            ts = min(ts + pause, now - 1)
    for i in range(40):
        ua = BOTS[i % len(BOTS)][0]
        events.append(
            {
                "type": "page_view",
                "site": SITE,
                "ts": now - rng.randrange(DAY_MS),
                "path": "/",
                "ua": ua,
                "ip": "192.0.2.250",
            }
        )
    for i in range(10):
        events.append({"type": "page_view", "site": SITE, "ts": now - i, "path": "/", "visitor": "p", "session": "own"})
    rng.shuffle(events)
    return events


def produce(r: Any, stream: str, events: list[dict[str, Any]]) -> None:
    pipe = r.pipeline(transaction=False)
    for ev in events:
        pipe.xadd(stream, {"event": json.dumps(ev)})
    pipe.execute()


def stored(pg: Any, site: str = SITE, approximate: bool = False) -> list[tuple[int, int, int, int, frozenset[int]]]:
    """Every stored session of ``site``: all are cut by the run rule, derived ones and the
    producer's own. ``approximate``: no days (a sketch's members cannot be read back)."""
    days: dict[int, set[int]] = {}
    if not approximate:
        query = "SELECT session, day - DATE '1970-01-01' FROM sessions_daily WHERE site = %s"
        for session, day in pg.execute(query, (site,)).fetchall():
            days.setdefault(session, set()).add(day)
    rows = pg.execute(
        "SELECT session, (extract(epoch FROM first_seen) * 1000)::bigint,"
        " (extract(epoch FROM last_seen) * 1000)::bigint,"
        " pageviews, events FROM sessions WHERE site = %s",
        (site,),
    ).fetchall()
    return sorted((f, last, pv, n, frozenset(days.get(s, ()))) for s, f, last, pv, n in rows)


def expected(events: list[dict[str, Any]]) -> list[tuple[int, int, int, int, frozenset[int]]]:
    people = [e for e in events if not any(e.get("ua") == b[0] for b in BOTS)]
    return sorted((s.first_ms, s.last_ms, s.pageviews, s.events, s.days) for s in sessionize(people, TIMEOUT_MS))


def assert_report(settings: Any, events: list[dict[str, Any]]) -> None:
    """Sessions, bounce rate and average duration in `report --json` over the whole range:
    the derived sessions and the producer's."""
    people = [e for e in events if not any(e.get("ua") == b[0] for b in BOTS)]
    sessions: list[Session] = [s for s in sessionize(people, TIMEOUT_MS) if s.pageviews]
    spans = [(s.last_ms - s.first_ms, s.pageviews) for s in sessions]
    first_day = min(e["ts"] for e in events) // DAY_MS
    last_day = max(e["ts"] for e in events) // DAY_MS
    got = report_json(
        settings,
        SITE,
        dt.date.fromordinal(dt.date(1970, 1, 1).toordinal() + first_day).isoformat(),
        dt.date.fromordinal(dt.date(1970, 1, 1).toordinal() + last_day).isoformat(),
    )
    assert got["sessions"] == len(spans)
    assert got["bounce_rate"] == round(sum(1 for _, pv in spans if pv == 1) / len(spans), 4)
    assert got["avg_session_seconds"] == round(sum(d for d, _ in spans) / len(spans) / 1000, 3)


def test_out_of_order_small_batches_give_the_oracles_sessions(
    make_settings, schema, r, stream, pg, daemons: Daemons
) -> None:
    """Shuffled events in batches of 7: every derived session (span, page views, events and
    its days) and the report's sessions, bounce rate and duration equal the oracle's."""
    events = traffic(seed=1)
    produce(r, stream, events)
    settings = make_settings(batch_size=7)
    assert daemons.start(settings, "--drain").wait(timeout=180) == 0, daemons.logs()[-3000:]
    assert stored(pg) == expected(events)
    assert_report(settings, events)


def test_crash_after_commit_and_mid_transaction_change_nothing(
    make_settings, schema, r, stream, pg, daemons: Daemons
) -> None:
    """A SIGKILL right after a COMMIT (its entries come back and the ledger skips them) and
    one inside an open transaction (rolled back): the sessions are still the oracle's."""
    events = traffic(seed=2)
    produce(r, stream, events)
    settings = make_settings(batch_size=25, min_idle_ms=500)
    assert daemons.start(settings, STREAMPROC_FAILPOINTS="after_commit@4").wait(timeout=60) == -signal.SIGKILL
    assert daemons.start(settings, STREAMPROC_FAILPOINTS="before_commit@3").wait(timeout=60) == -signal.SIGKILL
    assert daemons.start(settings, "--drain").wait(timeout=180) == 0, daemons.logs()[-3000:]
    assert r.xpending(stream, "g")["pending"] == 0
    assert stored(pg) == expected(events)
    assert_report(settings, events)


def test_two_workers_and_a_kill_9_give_the_oracles_sessions(
    make_settings, schema, r, stream, pg, daemons: Daemons
) -> None:
    """Two daemons share the group, each with two flushers, so batches of one visitor commit
    concurrently and in any order; one is killed with SIGKILL mid-run and a third reclaims its
    pending entries while the other still works. The sessions equal the oracle's."""
    events = traffic(seed=3, visitors=80)
    produce(r, stream, events)
    a = daemons.start(make_settings(consumer="a", batch_size=5, flushers=2))
    b = daemons.start(make_settings(consumer="b", batch_size=5, flushers=2, min_idle_ms=500))
    for proc in (a, b):
        wait_for(lambda p=proc: len(log_lines(p.logfile, "batch")) >= 3, 120, "both workers to commit batches")
    a.send_signal(signal.SIGKILL)
    a.wait()
    final = make_settings(consumer="c", batch_size=50, min_idle_ms=500)
    assert daemons.start(final, "--drain").wait(timeout=180) == 0, daemons.logs()[-3000:]
    b.send_signal(signal.SIGTERM)
    assert b.wait(timeout=60) == 0, daemons.logs()[-3000:]
    assert r.xpending(stream, "g")["pending"] == 0
    assert stored(pg) == expected(events)
    assert_report(final, events)


def test_a_visitor_created_by_a_concurrent_transaction_is_merged_not_overwritten(database_url, schema) -> None:
    """Two transactions see a new visitor at once: the second waits for the first's row,
    then locks it and merges into the run the first committed (one session, not two)."""
    from streamproc.postgres.sink import PostgresSink

    t0 = int(time.time() * 1000) - 3_600_000
    first, second, reader = (PostgresSink(database_url, schema) for _ in range(3))
    try:
        tx_first = first.transaction()
        a = tx_first.__enter__().derive_sessions({("s", 42): [(t0, True)]}, TIMEOUT_MS, False)
        assert a.started == 1
        second.open()
        pid = second.conn.info.backend_pid
        result: dict[str, Any] = {}

        def run_second() -> None:
            with second.transaction() as tx:
                result["derived"] = tx.derive_sessions({("s", 42): [(t0 + 60_000, True)]}, TIMEOUT_MS, False)

        worker = threading.Thread(target=run_second)
        worker.start()

        wait_for(lambda: waits_on_a_lock(reader, pid), 60, "the second transaction to wait for the first's new row")
        tx_first.__exit__(None, None, None)  # COMMIT
        worker.join(timeout=60)
        b = result["derived"]
        assert (b.started, list(b.sessions.values())) == (0, [[t0, t0 + 60_000, 1, 1]])
        with reader.transaction():
            rows = reader.conn.execute("SELECT firsts, lasts FROM visitor_runs WHERE visitor = 42").fetchall()
        assert rows == [([t0], [t0 + 60_000])]
    finally:
        for sink in (first, second, reader):
            sink.close()


def waits_on_a_lock(observer: Any, pid: int) -> bool:
    """Whether the Postgres backend ``pid`` waits on a lock, as ``observer`` (a sink) sees it."""
    with observer.transaction():
        row = observer.conn.execute(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
    return bool(row == (True,))


def test_a_visitor_pruned_between_create_and_lock_restarts_the_batch(database_url, schema) -> None:
    """A stored visitor row that a prune deletes after the batch's INSERT found it and before
    the batch locks it makes the batch fail as retryable (40001), and leaves no trace: the
    batch never writes runs merged from a row that is gone. The batch's own new row is not
    re-locked, and the check still covers every row it did not create."""
    import psycopg.errors

    from streamproc.errors import StreamprocError
    from streamproc.postgres.sink import PostgresSink

    t0 = int(time.time() * 1000) - 3_600_000
    old, new = ("s", 1), ("s", 2)  # key order: the stored row first, the new one second
    batch, holder, pruner = (PostgresSink(database_url, schema) for _ in range(3))
    try:
        with pruner.transaction() as tx:
            tx.derive_sessions({old: [(t0, True)]}, TIMEOUT_MS, False)
        # Another transaction inserting the new visitor holds the batch's INSERT after it
        # has passed the stored row (ON CONFLICT DO NOTHING takes no lock on it).
        held = holder.transaction()
        held.__enter__().derive_sessions({new: [(t0, True)]}, TIMEOUT_MS, False)
        batch.open()
        pid = batch.conn.info.backend_pid
        result: dict[str, Any] = {}

        def run_batch() -> None:
            try:
                with batch.transaction() as tx:
                    tx.derive_sessions({old: [(t0 + 60_000, True)], new: [(t0 + 60_000, True)]}, TIMEOUT_MS, False)
            except StreamprocError as exc:
                result["error"] = exc

        worker = threading.Thread(target=run_batch)
        worker.start()

        wait_for(
            lambda: waits_on_a_lock(pruner, pid), 60, "the batch's INSERT to wait for the other transaction's new row"
        )
        with pruner.transaction():
            assert pruner.conn.execute("DELETE FROM visitor_runs WHERE visitor = 1").rowcount == 1
        held.__exit__(RuntimeError, RuntimeError("rolled back"), None)  # ROLLBACK: the batch creates it
        worker.join(timeout=60)
        assert not worker.is_alive()
        error = result.get("error")
        assert error is not None and isinstance(error.__cause__, psycopg.errors.SerializationFailure), result
        with pruner.transaction():
            assert pruner.conn.execute("SELECT count(*) FROM visitor_runs").fetchone() == (0,)
    finally:
        for sink in (batch, holder, pruner):
            sink.close()


def test_producer_sessions_are_cut_by_the_inactivity_window(
    make_settings, schema, r, stream, pg, daemons: Daemons
) -> None:
    """A producer's session id does not stretch a visit over days: one event from a clock five days
    behind and the same id reused a month later start sessions of their own, so a five-minute visit
    stays five minutes (it was reported as days). Shuffled, one event per batch, two workers: the
    cut is the oracle's whatever the order and the worker."""
    now = int(time.time() * 1000)
    visit = [now - 3_600_000 + m * 60_000 for m in (0, 2, 5)]  # five minutes, an hour ago
    events: list[dict[str, Any]] = [
        {"type": "page_view", "site": SITE, "ts": ts, "path": f"/v{i}", "session": "s1"} for i, ts in enumerate(visit)
    ]
    events.append({"type": "page_view", "site": SITE, "ts": visit[1] - 5 * DAY_MS, "path": "/", "session": "s1"})
    reused = [now - 31 * DAY_MS, now - 31 * DAY_MS + 60_000, now - 600_000]  # a month ago, and again today
    events += [{"type": "page_view", "site": SITE, "ts": ts, "path": "/r", "session": "s2"} for ts in reused]
    events += [  # within the window: one session across a 29-minute pause and a click
        {"type": "page_view", "site": SITE, "ts": now - 7_200_000, "path": "/a", "session": "s3"},
        {
            "type": "click",
            "site": SITE,
            "ts": now - 7_200_000 + 29 * 60_000,
            "path": "/a",
            "x": 0.1,
            "y": 0.1,
            "session": "s3",
        },
    ]
    random.Random(7).shuffle(events)
    produce(r, stream, events)
    # Runs are kept as long as the ledger: a horizon beyond the month-old events keeps the cut exact
    # (docs/sessions.md, "Very late events").
    horizon = {"STREAMPROC_LEDGER_RETENTION_S": str(40 * 86_400)}
    a = daemons.start(make_settings(consumer="a", batch_size=1, flushers=2), **horizon)
    b = daemons.start(make_settings(consumer="b", batch_size=1, flushers=2), **horizon)
    final = make_settings(consumer="c", batch_size=1, min_idle_ms=500)
    assert daemons.start(final, "--drain", **horizon).wait(timeout=180) == 0, daemons.logs()[-3000:]
    for proc in (a, b):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, daemons.logs()[-3000:]
    assert stored(pg) == expected(events)
    spans = sorted((s.last_ms - s.first_ms) // 1000 for s in sessionize(events, TIMEOUT_MS))
    assert spans == [0, 0, 60, 300, 29 * 60]
    today = dt.datetime.now(dt.UTC).date()
    got = report_json(final, SITE, (today - dt.timedelta(days=1)).isoformat(), today.isoformat())
    recent = [s for s in sessionize(events, TIMEOUT_MS) if s.first_ms >= now - 2 * DAY_MS and s.pageviews]
    assert got["avg_session_seconds"] == round(sum(s.last_ms - s.first_ms for s in recent) / len(recent) / 1000, 3)
    assert got["avg_session_seconds"] < TIMEOUT_MS / 1000, "no session is stretched over days"
