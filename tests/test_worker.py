"""Daemon behaviours around the happy path: poison entries, SIGTERM, lost group (reclaiming: test_reclaim)."""

from __future__ import annotations

import json
import signal

from streamproc.dev.localservers import free_port
from streamproc.dev.synth import Generator, produce
from tests.conftest import Daemons, wait_for
from tests.pgroles import daemon_role
from tests.test_crash import assert_totals, log_lines

GOOD = {"type": "page_view", "site": "s.example", "ts": "1700000000000", "path": "/", "visitor": "v1"}


def test_entry_delivered_too_often_is_dead_lettered(make_settings, schema, r, stream, daemons: Daemons) -> None:
    """An entry already delivered more than max_deliveries times (a poison entry that kept
    killing workers) goes to the DLQ with a reason instead of looping; good entries flow on."""
    poison_id = r.xadd(stream, {"type": "page_view", "site": "s.example", "ts": "1700000000000", "path": "/x"})
    r.xgroup_create(stream, "g", id="0")
    r.xreadgroup("g", "c1", {stream: ">"}, count=1)
    for _ in range(5):  # five more deliveries of the same entry to the same consumer
        r.xreadgroup("g", "c1", {stream: "0"}, count=1)
    assert r.xpending_range(stream, "g", "-", "+", 10)[0]["times_delivered"] == 6
    for _ in range(20):
        r.xadd(stream, GOOD)
    settings = make_settings(max_deliveries=5)
    assert daemons.start(settings, "--drain").wait(timeout=60) == 0, daemons.logs()[-2000:]

    dead = r.xrange(f"{stream}:dlq")
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"_dlq_id"] == poison_id
    assert b"delivered 7 times" in fields[b"_dlq_reason"]  # the daemon's own read is the 7th
    assert fields[b"path"] == b"/x", "the original fields travel with the dead letter"
    drained = log_lines(daemons.procs[0].logfile, "drained")[0]  # type: ignore[attr-defined]
    assert drained["ok"] == 20 and drained["dead_lettered"] == 1


def test_sigterm_finishes_the_batch_in_hand_and_exits_0(make_settings, schema, r, stream, daemons: Daemons) -> None:
    """SIGTERM under load: the daemon stops reading, commits and acks what it holds, exits 0
    within the drain deadline, and leaves nothing pending under its name."""
    entries = list(Generator(seed=4, days=1, bad_ratio=0).entries(20_000))
    produce(r, stream, entries)
    settings = make_settings(batch_size=200)
    proc = daemons.start(settings)
    wait_for(lambda: len(log_lines(proc.logfile, "batch")) >= 3, 60, "a few batches")  # type: ignore[attr-defined]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=settings.drain_timeout_s + 5) == 0, daemons.logs()[-2000:]
    assert log_lines(proc.logfile, "stopping")  # type: ignore[attr-defined]
    consumers = {c["name"]: c["pending"] for c in r.xinfo_consumers(stream, "g")}
    assert consumers.get(b"c1", consumers.get("c1")) == 0
    # The rest is processed by the next run; totals stay exact.
    assert daemons.start(settings, "--drain").wait(timeout=120) == 0
    assert_totals(settings, entries)


def test_sigterm_while_waiting_for_redis_at_start_exits_0_at_once(make_settings, schema, daemons: Daemons) -> None:
    """Redis unreachable at start: the daemon retries; a SIGTERM then ends it cleanly (exit 0,
    a `shutdown` line) instead of retrying until the drain deadline and failing - nothing is
    in hand yet. The deadline is set far beyond the wait below, so only the clean path passes."""
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    proc = daemons.start(settings, STREAMPROC_DRAIN_TIMEOUT_S="3600")
    wait_for(lambda: "redis unavailable, retrying" in daemons.logs(), 60, "a retry line")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, daemons.logs()[-2000:]
    (line,) = log_lines(proc.logfile, "shutdown")  # type: ignore[attr-defined]
    assert line["before_ready"] is True and line["batches"] == 0


def test_sigterm_during_start_up_work_exits_0(make_settings, schema, stream, daemons: Daemons) -> None:
    """A stop sent as soon as the daemon says `starting` (systemd stopping a unit that is
    still loading its user-agent rules, seconds of work) ends it cleanly with exit 0 and a
    `shutdown` line, never killed by the signal's default action (exit -15). Whether the
    signal lands during the warm-up or just after `ready`, only a handled stop passes."""
    proc = daemons.start(make_settings())
    wait_for(lambda: bool(log_lines(proc.logfile, "starting")), 60, "the starting line")  # type: ignore[attr-defined]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, daemons.logs()[-2000:]
    assert log_lines(proc.logfile, "shutdown"), daemons.logs()[-2000:]  # type: ignore[attr-defined]


def test_lost_group_is_an_error_not_a_silent_restart(make_settings, schema, r, stream, daemons: Daemons) -> None:
    """If the consumer group vanishes while running (Redis restarted empty), the daemon logs a
    clear fatal error and exits 3 (which the systemd units do not restart) without recreating
    the group."""
    settings = make_settings()
    proc = daemons.start(settings)
    wait_for(lambda: bool(log_lines(proc.logfile, "ready")), 30, "daemon ready")  # type: ignore[attr-defined]
    r.xgroup_destroy(stream, "g")
    assert proc.wait(timeout=30) == 3
    fatal = log_lines(proc.logfile, "fatal")  # type: ignore[attr-defined]
    assert fatal and fatal[0]["kind"] == "GroupMissing" and "Not recreating" in fatal[0]["error"]
    assert r.xinfo_groups(stream) == []


def test_canonical_batch_line_has_no_payload(make_settings, schema, r, stream, daemons: Daemons) -> None:
    """One log line per batch with counts and flush time; no visitor id or event payload."""
    r.xadd(stream, {"event": json.dumps({**GOOD, "visitor": "visitor-secret-id", "ts": 1700000000000})})
    settings = make_settings()
    assert daemons.start(settings, "--drain").wait(timeout=60) == 0
    text = daemons.logs()
    assert "visitor-secret-id" not in text
    batch = log_lines(daemons.procs[0].logfile, "batch")[0]  # type: ignore[attr-defined]
    assert set(batch) >= {"entries", "ok", "dead_lettered", "duplicates", "flush_ms"}


def test_flood_of_unique_paths_is_capped_per_batch(make_settings, schema, r, stream, daemons: Daemons, pg) -> None:
    """5 000 page views on 5 000 distinct paths with a cap of 100 keys per batch: every view is
    counted, at most 100 new paths per batch get rows of their own, the rest land in `(other)`."""
    pipe = r.pipeline(transaction=False)
    for i in range(5000):
        pipe.xadd(stream, {"type": "page_view", "site": "s.example", "ts": "1790000000000", "path": f"/u/{i}"})
    pipe.execute()
    settings = make_settings(batch_size=1000)
    proc = daemons.start(settings, "--drain", STREAMPROC_MAX_KEYS_PER_BATCH="100")
    assert proc.wait(timeout=120) == 0, daemons.logs()[-2000:]
    total, paths, other = pg.execute(
        "SELECT sum(views), count(*), sum(views) FILTER (WHERE path = '(other)') FROM pageviews_daily"
    ).fetchone()
    assert total == 5000
    assert paths <= 5 * 100 + 1
    assert other >= 5000 - 5 * 100
    assert log_lines(proc.logfile, "distinct key cap reached")  # type: ignore[attr-defined]


def test_entry_that_kills_the_worker_is_dead_lettered_and_the_stream_flows(
    make_settings, schema, r, stream, daemons: Daemons
) -> None:
    """An entry that crashes the worker process itself (a failpoint keyed on its content) is
    retried alone after the first crash, dead-lettered once its delivery count passes
    max_deliveries, and every good entry around it is counted exactly once."""
    gen = Generator(seed=12, days=1, bad_ratio=0)
    good = list(gen.entries(2000))
    produce(r, stream, good[:1000])
    poison_id = r.xadd(stream, {"type": "page_view", "site": "s.example", "ts": "1790000000000", "path": "/POISON-XYZ"})
    produce(r, stream, good[1000:])
    settings = make_settings(batch_size=100, max_deliveries=3)
    exits = []
    for _ in range(8):  # what systemd's Restart=on-failure does, bounded
        proc = daemons.start(settings, "--drain", STREAMPROC_FAILPOINTS="content=POISON-XYZ")
        exits.append(proc.wait(timeout=120))
        if exits[-1] == 0:
            break
    assert exits[-1] == 0 and exits.count(-signal.SIGKILL) == 3, exits  # deliveries 1..3 crash, the 4th is diverted
    dead = r.xrange(f"{stream}:dlq")
    assert [d[1][b"_dlq_id"] for d in dead] == [poison_id]
    assert b"delivered 4 times" in dead[0][1][b"_dlq_reason"]
    assert r.xpending(stream, "g")["pending"] == 0
    assert_totals(settings, good)


def test_a_row_a_constraint_refuses_is_dead_lettered_with_the_constraints_message(
    make_settings, schema, r, stream, pg, daemons: Daemons
) -> None:
    """A CHECK constraint an operator added refuses one entry's row (SQLSTATE 23514): that entry is
    the one at fault, dead-lettered with Postgres's message on its first delivery; the run goes on
    and exits 0 with its neighbour counted."""
    pg.execute("ALTER TABLE pageviews_daily ADD CONSTRAINT no_boom CHECK (path <> '/boom')")
    boom = r.xadd(stream, {**GOOD, "path": "/boom"})
    r.xadd(stream, {**GOOD, "path": "/fine"})
    proc = daemons.start(make_settings(), "--drain")
    assert proc.wait(timeout=60) == 0, daemons.logs()[-2000:]
    ((_, dead),) = r.xrange(f"{stream}:dlq")
    assert dead[b"_dlq_id"] == boom and b"no_boom" in dead[b"_dlq_reason"], dead
    assert pg.execute("SELECT path, views::int FROM pageviews_daily").fetchall() == [("/fine", 1)]


def test_a_privilege_lost_while_running_stops_the_daemon_instead_of_hanging(
    make_settings, schema, database_url, r, stream, pg, daemons: Daemons
) -> None:
    """INSERT revoked while the daemon runs: the commit fails for good (a configuration problem),
    so the daemon ends with one line naming the GRANT and exit 2, also when no further batch comes
    to notice it; the entry stays pending (one delivery, not dead-lettered) and is counted by the
    run after the grant."""
    role = f"{schema}_daemon"
    with daemon_role(database_url, schema, role) as url:
        settings = make_settings(database_url=url)
        proc = daemons.start(settings, "--drain")
        wait_for(lambda: bool(log_lines(proc.logfile, "ready")), 60, "the daemon to be ready")  # type: ignore[attr-defined]
        pg.execute(f'REVOKE INSERT ON pageviews_daily FROM "{role}"')
        r.xadd(stream, {**GOOD, "path": "/boom"})
        assert proc.wait(timeout=60) == 2, daemons.logs()[-2000:]
        fatal = log_lines(proc.logfile, "fatal")  # type: ignore[attr-defined]
        assert fatal and f"INSERT, UPDATE ON {schema}.pageviews_daily TO {role}`" in fatal[0]["error"], fatal
        assert r.xpending(stream, "g")["pending"] == 1 and r.xlen(f"{stream}:dlq") == 0

        pg.execute(f'GRANT INSERT ON pageviews_daily TO "{role}"')
        assert daemons.start(settings, "--drain").wait(timeout=60) == 0, daemons.logs()[-2000:]
    assert pg.execute("SELECT sum(views)::int FROM pageviews_daily WHERE path = '/boom'").fetchone() == (1,)


def test_reads_grow_while_behind_and_start_over_when_caught_up(
    make_settings, schema, r, stream, daemons: Daemons
) -> None:
    """A backlog is read in doubling batches up to backlog_batch_size (fewer rollup rows per
    event); the first read that is not full starts over at batch_size. All entries are in the
    stream before the daemon starts, so the read sizes are known: 500, 1 000, 2 000, 2 000,
    1 500 (the rest, not full), then nothing. Totals stay exact."""
    entries = list(Generator(seed=12, days=1, bad_ratio=0).entries(7_000))
    produce(r, stream, entries)
    settings = make_settings(batch_size=500, backlog_batch_size=2_000)
    proc = daemons.start(settings, "--drain")
    assert proc.wait(timeout=120) == 0, daemons.logs()[-2000:]
    sizes = [b["entries"] for b in log_lines(proc.logfile, "batch")]  # type: ignore[attr-defined]
    assert sorted(sizes) == [500, 1_000, 1_500, 2_000, 2_000], sizes  # two flushers: any order
    assert_totals(settings, entries)

    # Off at or below batch_size: every read asks for batch_size.
    more = list(Generator(seed=13, days=1, bad_ratio=0).entries(1_200))
    produce(r, stream, more)
    flat = make_settings(batch_size=500, backlog_batch_size=100, consumer="c2")
    proc = daemons.start(flat, "--drain")
    assert proc.wait(timeout=120) == 0, daemons.logs()[-2000:]
    assert sorted(b["entries"] for b in log_lines(proc.logfile, "batch")) == [200, 500, 500]  # type: ignore[attr-defined]
    assert_totals(settings, entries + more)
