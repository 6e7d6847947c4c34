"""`streamproc maintain` deletes `sessions` rows past the sessions_daily retention (postgres/retention.py).

`sessions` has no time column in its key, so it has no partitions to drop: without this it
kept one row per session forever. Real Postgres; rows shaped as the daemon writes them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from streamproc.postgres import partitions as P
from streamproc.postgres import retention
from tests.test_partitions import maintain_json

NOW = dt.datetime.now(dt.UTC)


def ago(days: int) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


def add_sessions(
    pg: psycopg.Connection[Any], site: str, first_days: int, last_days: int, n: int, start: int
) -> set[tuple[str, int]]:
    rows = {(site, start + i) for i in range(n)}
    for _site, session in rows:
        pg.execute(
            "INSERT INTO sessions VALUES (%s, %s, %s, %s, 1, 1)", (site, session, ago(first_days), ago(last_days))
        )
    return rows


def sessions(pg: psycopg.Connection[Any]) -> set[tuple[str, int]]:
    return {(site, session) for site, session in pg.execute("SELECT site, session FROM sessions").fetchall()}


def test_sessions_past_retention_are_deleted_in_batches_and_dry_run_only_counts(
    make_settings: Callable[..., Any], schema: str, pg: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions of two sites whose last event is 500 days old go (in batches smaller than their
    number); a session that began then but went on until 10 days ago stays, and so do recent
    ones. `--dry-run` says how many would go and deletes none; `--retain sessions_daily=7` takes
    the 10-day-old one too; `setup`'s create-only run deletes nothing."""
    monkeypatch.setattr(retention, "BATCH_ROWS", 3)
    old = add_sessions(pg, "a.example", 501, 500, 7, 0) | add_sessions(pg, "b.example", 450, 420, 4, 100)
    long = add_sessions(pg, "a.example", 500, 10, 1, 200)
    recent = add_sessions(pg, "b.example", 5, 4, 2, 300)
    settings = make_settings()

    assert P.maintain(settings.database_url, schema, drop=False).pruned == {}
    dry = maintain_json(settings, "--dry-run")
    assert dry["pruned"] == {"sessions": len(old)}
    assert sessions(pg) == old | long | recent

    assert maintain_json(settings)["pruned"] == {"sessions": len(old)}
    assert sessions(pg) == long | recent
    assert maintain_json(settings)["pruned"] == {"sessions": 0}

    assert maintain_json(settings, "--retain", "sessions_daily=7")["pruned"] == {"sessions": 1}
    assert sessions(pg) == recent


def test_a_session_a_batch_holds_is_left_for_the_next_run(
    make_settings: Callable[..., Any], schema: str, pg: psycopg.Connection[Any], database_url: str
) -> None:
    """A batch has locked an old session's row (a producer reusing its id) and not committed:
    maintain deletes the other old sessions without waiting for it, and the held one on the
    next run."""
    old = add_sessions(pg, "a.example", 500, 500, 3, 0)
    settings = make_settings()
    with psycopg.connect(database_url, options=f"-c search_path={schema}") as batch:
        batch.execute("UPDATE sessions SET events = events + 1 WHERE site = 'a.example' AND session = 1")
        assert maintain_json(settings)["pruned"] == {"sessions": 2}
        batch.commit()
    assert sessions(pg) == {("a.example", 1)} and len(old) == 3
    assert maintain_json(settings)["pruned"] == {"sessions": 1}
    assert sessions(pg) == set()


def test_a_producer_sessions_first_row_stays_while_one_of_its_other_runs_is_retained(
    make_settings: Callable[..., Any], schema: str, pg: psycopg.Connection[Any]
) -> None:
    """A producer session id's first run is stored under the id's own hash, and that row holds
    the id's other runs (docs/sessions.md): an id first seen 500 days ago and reused 10 days ago
    keeps its first row (else a later event would not join the recent run); once every run is
    past retention it goes like any other."""
    add_sessions(pg, "a.example", 501, 500, 1, 0)
    add_sessions(pg, "a.example", 10, 10, 1, 1)
    ms = int(ago(10).timestamp() * 1000)
    pg.execute("UPDATE sessions SET run_ids = %s, run_firsts = %s, run_lasts = %s WHERE session = 0", ([1], [ms], [ms]))
    settings = make_settings()
    assert maintain_json(settings)["pruned"] == {"sessions": 0}
    assert sessions(pg) == {("a.example", 0), ("a.example", 1)}
    assert maintain_json(settings, "--retain", "sessions_daily=7")["pruned"] == {"sessions": 2}
    assert sessions(pg) == set()
