"""Data Postgres refuses is isolated in the running process: that entry alone is dead-lettered.

The decoder cannot know every limit of the database: a counter pushed past
bigint, a row for which no partition exists. The daemon bisects the failing
batch, commits the neighbours and dead-letters the culprit on its first
delivery, with Postgres's own message as the reason.
"""

from __future__ import annotations

import json

import psycopg

from tests.conftest import Daemons
from tests.test_crash import log_lines
from tests.test_ledger import ledger_covers

BASE = 1_763_800_000_000  # 2025-11-22 08:26:40 UTC
SEPTEMBER = 1_757_000_000_000  # 2025-09-04: a month no partition of pageviews_daily takes
BIGINT_MAX = 9_223_372_036_854_775_807


def page_view(ts_ms: int, path: str) -> dict[str, str]:
    return {"event": json.dumps({"type": "page_view", "site": "rej.example", "ts": ts_ms, "path": path})}


def test_entries_postgres_refuses_are_dead_lettered_alone_with_its_message(
    make_settings, schema, r, stream, pg: psycopg.Connection, daemons: Daemons
) -> None:
    """One batch of 40: a page view whose daily counter is already at the bigint maximum, and one
    for a month with no partition (the DEFAULT partition dropped). The daemon runs through
    (exit 0, no restart), dead-letters exactly those two on their first delivery with
    "bigint out of range" and "no partition of relation ..." as reasons, and counts the 38 others."""
    pg.execute("ALTER TABLE pageviews_daily DETACH PARTITION pageviews_daily_default")
    pg.execute("DROP TABLE pageviews_daily_default")
    pg.execute(
        "CREATE TABLE pageviews_daily_p202511 PARTITION OF pageviews_daily"
        " FOR VALUES FROM ('2025-11-01') TO ('2025-12-01')"
    )
    pg.execute("INSERT INTO pageviews_daily VALUES ('rej.example', '2025-11-22', '/full', %s)", (BIGINT_MAX,))
    ids = {}
    for n in range(40):
        if n == 11:
            ids["full"] = r.xadd(stream, page_view(BASE + n, "/full"))
        elif n == 29:
            ids["unpartitioned"] = r.xadd(stream, page_view(SEPTEMBER, "/old"))
        else:
            r.xadd(stream, page_view(BASE + n, f"/p{n % 5}"))
    proc = daemons.start(make_settings(batch_size=40), "--drain")
    assert proc.wait(timeout=120) == 0, daemons.logs()[-3000:]

    dead = {entry_id: fields for entry_id, fields in r.xrange(f"{stream}:dlq")}
    assert len(dead) == 2, dead
    reasons = {f[b"_dlq_id"]: f[b"_dlq_reason"].decode() for f in dead.values()}
    assert "bigint out of range" in reasons[ids["full"]], reasons
    assert "no partition of relation" in reasons[ids["unpartitioned"]], reasons
    assert pg.execute("SELECT sum(views)::int FROM pageviews_daily WHERE path <> '/full'").fetchone() == (38,)
    assert pg.execute("SELECT views FROM pageviews_daily WHERE path = '/full'").fetchone() == (BIGINT_MAX,)
    assert ledger_covers(pg, [eid for eid, _ in r.xrange(stream)]) == 38  # not the two dead-lettered
    rejected = log_lines(proc.logfile, "entry rejected by Postgres")  # type: ignore[attr-defined]
    assert sorted(line["entry_id"] for line in rejected) == sorted(i.decode() for i in ids.values())
    assert "delivered" not in " ".join(reasons.values())  # isolated on the first delivery, not as poison
