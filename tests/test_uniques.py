"""Approximate uniques: HyperLogLog sketches (Postgres `hll` extension) merged inside the upsert."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import psycopg
import pytest

from streamproc.core import rollups as R
from streamproc.dev.synth import Generator, produce
from streamproc.postgres.migrate import migrate
from tests.conftest import Daemons, daemon_env
from tests.test_crash import assert_totals, log_lines


@pytest.fixture
def approximate_schema(schema: str, database_url: str) -> str:
    applied = migrate(database_url, schema, approximate=True)
    assert [m.version for m in applied] == [101]
    return schema


def test_approximate_mode_swaps_the_exact_sets_for_sketches() -> None:
    exact = {r.table for r in R.rollups(False)}
    approximate = {r.table for r in R.rollups(True)}
    assert exact - approximate == {r.table for r in R.EXACT_UNIQUES}
    assert approximate - exact == {r.table for r in R.APPROXIMATE_UNIQUES}
    sql = R.SITE_VISITORS_HLL.upsert_sql()
    assert "hll_add_agg(hll_hash_bigint(t.visitor))" in sql and "GROUP BY t.site, t.day" in sql
    assert "hll_union(visitors_daily_hll.visitors, EXCLUDED.visitors)" in sql


@pytest.mark.slow
def test_crash_after_commit_in_approximate_mode_counts_once(
    make_settings, approximate_schema, r, stream, daemons: Daemons
) -> None:
    """kill -9 between COMMIT and XACK with sketches on: the redelivered batch is skipped by the
    ledger, so every count is exact, and visitors, sessions and per-path visitors are within
    three HyperLogLog standard errors of the independent truth."""
    entries = list(Generator(seed=71, days=2, bad_ratio=0.002).entries(30_000))
    produce(r, stream, entries)
    settings = make_settings(batch_size=500, uniques="approximate")
    crashed = daemons.start(settings, STREAMPROC_FAILPOINTS="after_commit@5")
    assert crashed.wait(timeout=60) == -signal.SIGKILL
    survivor = daemons.start(settings, "--drain")
    assert survivor.wait(timeout=180) == 0, daemons.logs()[-3000:]
    (drained,) = log_lines(survivor.logfile, "drained")  # type: ignore[attr-defined]
    assert drained["duplicates"] >= 500, "the committed, unacked batch came back and was skipped"
    assert_totals(settings, entries)


def test_sketches_hold_few_rows_and_merge_idempotently(make_settings, approximate_schema, r, stream, database_url):
    """One sketch row per site and day instead of one row per visitor; applying the same
    sketch again (a union with itself) changes no estimate."""
    entries = list(Generator(seed=72, days=1, bad_ratio=0).entries(8_000))
    produce(r, stream, entries)
    settings = make_settings(batch_size=400, uniques="approximate")
    run = subprocess.run(
        [sys.executable, "-m", "streamproc", "run", "--drain"],
        env=daemon_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    visitors = {
        e.event["visitor"] for e in entries if e.event and e.event["type"] == "page_view" and "visitor" in e.event
    }
    with psycopg.connect(database_url, options=f"-c search_path={settings.db_schema},public", autocommit=True) as pg:
        (rows,) = pg.execute("SELECT count(*) FROM visitors_daily_hll").fetchone()
        sites_days = pg.execute("SELECT count(DISTINCT (site, day)) FROM pageviews_daily").fetchone()
        assert (rows,) == sites_days and rows < len(visitors) / 50
        assert pg.execute("SELECT count(*) FROM visitors_daily").fetchone() == (0,), "exact sets stay empty"
        before = pg.execute(
            "SELECT site, day, hll_cardinality(visitors) FROM visitors_daily_hll ORDER BY 1, 2"
        ).fetchall()
        pg.execute("UPDATE visitors_daily_hll SET visitors = hll_union(visitors, visitors)")
        after = pg.execute(
            "SELECT site, day, hll_cardinality(visitors) FROM visitors_daily_hll ORDER BY 1, 2"
        ).fetchall()
        assert before == after


def test_approximate_mode_on_an_exact_only_schema_says_what_to_run(make_settings, schema, daemons: Daemons) -> None:
    """The daemon refuses to start on a schema without the sketch tables, and names the command."""
    settings = make_settings(uniques="approximate")
    proc = daemons.start(settings)
    assert proc.wait(timeout=60) != 0
    logs = daemons.logs()
    assert "STREAMPROC_UNIQUES=approximate" in logs and "streamproc migrate" in logs, logs[-2000:]
    assert "Traceback" not in logs


def test_report_json_names_the_mode_and_marks_uniques_inexact(
    make_settings, approximate_schema, r, stream, database_url
) -> None:
    entries = list(Generator(seed=73, days=1, bad_ratio=0).entries(3_000))
    produce(r, stream, entries)
    settings = make_settings(uniques="approximate")
    env = daemon_env(settings)
    run = subprocess.run(
        [sys.executable, "-m", "streamproc", "run", "--drain"], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    site = next(e.event["site"] for e in entries if e.event)
    view = subprocess.run(
        [sys.executable, "-m", "streamproc", "report", "overview", "--site", site, "--last", "3d", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert view.returncode == 0, view.stderr
    data = json.loads(view.stdout)
    assert data["uniques"] == "approximate"
    assert data["metrics"]["visitors"]["exact"] is False and data["metrics"]["pageviews"]["exact"] is True
    assert data["metrics"]["visitors"]["value"] > 0


def test_maintain_partitions_the_sketch_tables(make_settings, approximate_schema, database_url: str) -> None:
    """`streamproc maintain` gives the sketch tables monthly partitions like the exact sets."""
    from streamproc.postgres.partitions import SKETCH_TABLES, maintain

    result = maintain(database_url, approximate_schema, drop=False)
    assert not result.errors, result.errors
    created = {step["table"] for step in result.created}
    assert set(SKETCH_TABLES) <= created, created
