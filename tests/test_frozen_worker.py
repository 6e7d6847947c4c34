"""One frozen worker does not stop the group.

A worker frozen (SIGSTOP here; a stuck host or a lost network alike) in the
middle of its transaction holds row locks every other worker needs. Postgres
must end that transaction within the configured bound whatever state the
connection is in, so the others go on committing; the frozen worker, once
thawed, finds its transaction gone and its entries counted by the others.
"""

from __future__ import annotations

import json
import signal

import psycopg

from tests.conftest import Daemons, wait_for
from tests.test_crash import is_stopped
from tests.test_ledger import ledger_covers

N = 600
IDLE_IN_TRANSACTION_MS = "1500"


def page_view(n: int) -> dict[str, str]:
    """All on one site, path and hour: every batch upserts the same rollup rows."""
    return {"event": json.dumps({"type": "page_view", "site": "frozen.example", "ts": 1763800000000 + n, "path": "/"})}


def test_a_worker_frozen_mid_transaction_does_not_stop_the_others(
    make_settings, schema, r, stream, pg: psycopg.Connection, daemons: Daemons
) -> None:
    """Worker A is SIGSTOPped between two upserts of its transaction, holding the rows every batch
    needs. Postgres ends A's session after idle_in_transaction_timeout_ms, so worker B reclaims A's
    entries and commits all N events (it drains and exits 0 - before, B waited on A's row locks
    for as long as A was frozen). A, thawed, finds its transaction aborted, retries, and its entries
    are skipped as already counted: every event is counted exactly once."""
    for n in range(N):
        r.xadd(stream, page_view(n))
    env = {"STREAMPROC_IDLE_IN_TRANSACTION_TIMEOUT_MS": IDLE_IN_TRANSACTION_MS}
    a = daemons.start(
        make_settings(consumer="a", batch_size=100, flushers=1, min_idle_ms=600_000),
        "--drain",
        STREAMPROC_FAILPOINTS="between_upserts@1:stop",
        **env,
    )
    wait_for(lambda: is_stopped(a.pid), 60, "worker A to freeze inside its transaction")
    b = daemons.start(make_settings(consumer="b", batch_size=100, min_idle_ms=500), "--drain", **env)
    assert b.wait(timeout=180) == 0, daemons.logs()[-3000:]
    assert r.xpending(stream, "g")["pending"] == 0
    assert pg.execute("SELECT sum(views)::int FROM pageviews_daily").fetchone() == (N,)

    a.send_signal(signal.SIGCONT)
    assert a.wait(timeout=120) == 0, daemons.logs()[-3000:]
    assert pg.execute("SELECT sum(views)::int FROM pageviews_daily").fetchone() == (N,)
    assert ledger_covers(pg, [eid for eid, _ in r.xrange(stream)]) == N
    assert pg.execute("SELECT sum(events)::int FROM events_hourly").fetchone() == (N,)
