"""Retention of the one daemon-written table that has no time partitions and no pruning of its
own: ``sessions`` (key ``(site, session)``, no time column to partition by).

A session's row goes once its last event is older than the retention of ``sessions_daily``
(the per-day sets it is read beside): by then every report window it could fall in has lost
its page views and visitors. Run by ``streamproc maintain``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import psycopg

SESSIONS_TABLE: Final = "sessions"
RETAINED_LIKE: Final = "sessions_daily"  # its retention is the sessions table's
BATCH_ROWS: Final = 5000

# Every site, one index probe each (a loose scan of sessions_site_first_seen), not a full scan.
_SITES: Final = (
    "WITH RECURSIVE s(site) AS ("
    " (SELECT site FROM sessions ORDER BY site LIMIT 1)"
    " UNION ALL"
    " SELECT (SELECT site FROM sessions WHERE site > s.site ORDER BY site LIMIT 1) FROM s WHERE s.site IS NOT NULL)"
    " SELECT site FROM s WHERE site IS NOT NULL"
)
# A producer session's first row also holds its other runs (docs/sessions.md): it stays while
# one of them is younger, or a later event would start a session instead of joining that run.
_NO_LATER_RUN: Final = (
    "(run_lasts IS NULL OR NOT EXISTS (SELECT 1 FROM unnest(run_lasts) l"
    " WHERE TIMESTAMPTZ 'epoch' + l * INTERVAL '1 millisecond' >= %s))"
)
# Rows locked in key order, as the daemon locks them; rows a batch holds are skipped (left
# for the next run), so a prune never waits on a daemon or deadlocks with one.
_DELETE: Final = (
    "WITH old AS (SELECT site, session FROM sessions"
    f" WHERE site = %s AND first_seen < %s AND last_seen < %s AND {_NO_LATER_RUN}"
    " ORDER BY session LIMIT %s FOR UPDATE SKIP LOCKED)"
    " DELETE FROM sessions t USING old WHERE t.site = old.site AND t.session = old.session"
)
_COUNT: Final = (
    f"SELECT count(*) FROM sessions WHERE site = %s AND first_seen < %s AND last_seen < %s AND {_NO_LATER_RUN}"
)


def prune_sessions(conn: psycopg.Connection[Any], before: dt.datetime, dry_run: bool = False) -> int:
    """Delete ``sessions`` rows whose last event is before ``before`` (an aware datetime), in
    transactions of at most :data:`BATCH_ROWS` rows; returns the rows deleted (``dry_run``:
    the rows that would be, nothing changed). ``conn`` is in autocommit mode. Raises
    :class:`psycopg.Error` as the server does."""
    with conn.transaction():
        sites = [site for (site,) in conn.execute(_SITES).fetchall()]
    total = 0
    for site in sites:
        if dry_run:
            with conn.transaction():
                row = conn.execute(_COUNT, (site, before, before, before)).fetchone()
            total += int(row[0]) if row else 0
            continue
        while True:
            with conn.transaction():
                deleted = conn.execute(_DELETE, (site, before, before, before, BATCH_ROWS)).rowcount
            total += deleted
            if deleted < BATCH_ROWS:
                break
    return total
