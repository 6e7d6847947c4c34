"""Skipped entries: taken back out of the batch's fold when they repeat counted events,
the batch folded again when they do not."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from streamproc.dev.synth import Generator, produce
from tests.conftest import daemon_env, exit_code
from tests.test_crash import assert_totals, log_lines

BASE = 1_763_800_000_000  # a fixed past instant (2025-11-22 08:26:40 UTC)


def run_drain(settings: Any, tmp_path) -> list[dict[str, Any]]:
    log = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}.log"
    with open(log, "wb") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", "streamproc", "run", "--drain"],
            env=daemon_env(settings),
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=180,
        )
    assert proc.returncode == 0, log.read_text()[-3000:]
    return log_lines(str(log), "batch")


def test_producer_retries_are_taken_back_without_folding_again(make_settings, schema, r, stream, tmp_path) -> None:
    """The synthetic traffic repeats 0.5 % of its events (same id, same content): nearly every
    batch holds one. Their sums are subtracted from the batch's fold (no second fold), and
    every figure still equals the truth."""
    entries = list(Generator(seed=81, days=1, bad_ratio=0).entries(12_000))
    produce(r, stream, entries)
    settings = make_settings(batch_size=500, backlog_batch_size=500)  # 24 batches: "nearly every batch"
    batches = run_drain(settings, tmp_path)
    with_dups = [b for b in batches if b["duplicates"]]
    assert len(with_dups) >= 10
    assert not any(b["refolded"] for b in with_dups), "repeats of counted events need no second fold"
    assert_totals(settings, entries)


def event(n: int, **fields: Any) -> dict[str, str]:
    ev = {"type": "page_view", "site": "dup.example", "ts": BASE + n * 1000, "session": f"s{n}", **fields}
    return {"event": json.dumps(ev)}


def two_batches(make_settings, r, stream, tmp_path, pg, retry: dict[str, str]) -> list[tuple[Any, ...]]:
    """Batch 1: a page view of /a with producer id `x` by v1, another of /a by v3. Batch 2:
    ``retry`` (which carries id `x`) and a page view of /c by v3. Returns (ok, duplicates,
    refolded) per batch, after checking the page views: the retry is never counted."""
    r.xadd(stream, event(1, id="x", path="/a", visitor="v1"))
    r.xadd(stream, event(2, path="/a", visitor="v3"))
    r.xadd(stream, retry)
    r.xadd(stream, event(4, path="/c", visitor="v3"))
    # One flusher: the batches commit (and log) in the order they were read. With two, batch 2
    # could commit first and its retry would win the id: a test of thread timing, not of this.
    batches = run_drain(make_settings(batch_size=2, flushers=1), tmp_path)
    views = dict(pg.execute("SELECT path, sum(views)::int FROM pageviews_daily GROUP BY path").fetchall())
    assert views == {"/a": 2, "/c": 1}
    return [(b["ok"], b["duplicates"], b.get("refolded")) for b in batches]


def test_a_reused_id_with_other_content_folds_again_and_counts_the_winner_only(
    make_settings, schema, r, stream, tmp_path, pg
) -> None:
    """A producer bug: id `x` again, on a page view of /b by v2. The retry is a duplicate but not
    a repeat: its visitor, path and session must not reach the sets, so the batch is folded
    again without it."""
    outcome = two_batches(make_settings, r, stream, tmp_path, pg, event(3, id="x", path="/b", visitor="v2"))
    assert outcome == [(2, 0, None), (1, 1, True)]
    path_visitors = pg.execute("SELECT path, count(*)::int FROM path_visitors_daily GROUP BY path ORDER BY 1")
    assert path_visitors.fetchall() == [("/a", 2), ("/c", 1)]
    assert pg.execute("SELECT count(*)::int FROM sessions_daily").fetchone() == (3,)
    assert pg.execute("SELECT count(DISTINCT visitor)::int FROM visitors_daily").fetchone() == (2,)


def test_a_retry_with_the_same_content_in_a_later_batch_is_taken_back(
    make_settings, schema, r, stream, tmp_path, pg
) -> None:
    """The common case: the retry carries the very event that won the id (its stored digest
    matches), so only its sums are taken back and the counts stay exact."""
    outcome = two_batches(make_settings, r, stream, tmp_path, pg, event(1, id="x", path="/a", visitor="v1"))
    assert outcome == [(2, 0, None), (1, 1, False)]
    assert pg.execute("SELECT sum(events)::int FROM events_hourly").fetchone() == (3,)
    assert pg.execute("SELECT sum(pageviews)::int, count(*)::int FROM sessions").fetchone() == (3, 3)
    assert pg.execute("SELECT count(*)::int FROM path_visitors_daily").fetchone() == (3,)


def test_a_redelivered_entry_first_counted_under_other_is_folded_again(make_settings, schema, r, stream, pg, daemons):
    """Run 1 caps its batch (10 distinct paths, 15 page views: 5 counted under "(other)"), commits
    and dies before XACK. Run 2, uncapped, gets the same entries back: they are skipped as
    already applied, but their fold now names the real paths, which were never counted - so the
    batch is folded again (the ledger remembers the capped entries) instead of taking sums back,
    and no real-path visitor row appears for the capped five."""
    for n in range(15):
        r.xadd(stream, event(n, path=f"/p{n}", visitor=f"v{n}"))
    settings = make_settings(batch_size=15)
    first = daemons.start(settings, STREAMPROC_FAILPOINTS="after_commit@1", STREAMPROC_MAX_KEYS_PER_BATCH="10")
    assert exit_code(first, 60) == -9
    before = pg.execute("SELECT path, visitor FROM path_visitors_daily ORDER BY 1, 2").fetchall()
    assert sum(1 for path, _ in before if path == "(other)") == 5
    second = daemons.start(settings, "--drain", STREAMPROC_MAX_KEYS_PER_BATCH="10000")
    assert exit_code(second, 60) == 0, daemons.logs()[-2000:]
    (batch,) = log_lines(second.logfile, "batch")
    assert (batch["ok"], batch["duplicates"], batch["refolded"]) == (0, 15, True)
    assert pg.execute("SELECT path, visitor FROM path_visitors_daily ORDER BY 1, 2").fetchall() == before
    assert pg.execute("SELECT sum(views)::int FROM pageviews_daily").fetchone() == (15,)
