"""End to end: real producer, real daemon process, real report, independent truth."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any

from typer.testing import CliRunner

from streamproc.cli.app import app
from streamproc.dev.synth import Generator, produce
from tests.conftest import Daemons, daemon_env
from tests.truth import assert_report_matches, day_of, expected_report, malformed, valid_events

N_EVENTS = 30_000


def report_json(settings: Any, site: str, start: str, end: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        app,
        env={"STREAMPROC_UNIQUES": settings.uniques},
        args=[
            "report",
            "--site",
            site,
            "--from",
            start,
            "--to",
            end,
            "--json",
            "--database-url",
            settings.database_url,
            "--schema",
            settings.db_schema,
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def dlq_fields(r: Any, stream: str) -> list[dict[str, str]]:
    out = []
    for _id, fields in r.xrange(f"{stream}:dlq"):
        decoded = {k.decode(): v.decode() for k, v in fields.items()}
        assert decoded.pop("_dlq_reason"), "dead letter without a reason"
        assert decoded.pop("_dlq_source") == stream
        assert decoded.pop("_dlq_id")
        out.append(decoded)
    return out


def test_every_per_site_per_day_figure_matches_truth(make_settings, schema, r, stream, daemons: Daemons) -> None:
    """Tens of thousands of mixed JSON/flat events with malformed ones sprinkled in: every
    per-site, per-day figure of `report --json` equals the independently computed truth,
    and every malformed entry sits in the DLQ with a reason."""
    gen = Generator(seed=7, days=3, bad_ratio=0.01)
    entries = list(gen.entries(N_EVENTS))
    produce(r, stream, entries)
    settings = make_settings(batch_size=700)

    proc = daemons.start(settings, "--drain")
    assert proc.wait(timeout=240) == 0, daemons.logs()[-3000:]

    events = valid_events(entries)
    days = sorted({day_of(e["ts"]) for e in events})
    sites = sorted({e["site"] for e in events})
    for site in sites:
        for day in days:
            got = report_json(settings, site, day.isoformat(), day.isoformat())
            assert_report_matches(got, expected_report(events, site, day, day))
        # Whole range: uniques are distinct over the range, not summed per day.
        got = report_json(settings, site, days[0].isoformat(), days[-1].isoformat())
        assert_report_matches(got, expected_report(events, site, days[0], days[-1]))

    bad = malformed(entries)
    assert len(bad) > 100
    key = lambda f: json.dumps(f, sort_keys=True)  # noqa: E731
    assert Counter(map(key, dlq_fields(r, stream))) == Counter(map(key, bad))
    assert r.xpending(stream, "g")["pending"] == 0


def test_report_cli_entry_point_prints_json(make_settings, schema, r, stream, daemons: Daemons) -> None:
    """The installed `streamproc report` command prints the documented JSON keys."""
    gen = Generator(seed=3, days=1, bad_ratio=0)
    entries = list(gen.entries(2000))
    produce(r, stream, entries)
    settings = make_settings()
    assert daemons.start(settings, "--drain").wait(timeout=120) == 0, daemons.logs()[-2000:]
    site = entries[0].event["site"]
    day = day_of(entries[0].event["ts"]).isoformat()
    out = subprocess.run(
        [sys.executable, "-m", "streamproc", "report", "--site", site, "--from", day, "--to", day, "--json"],
        env=daemon_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data = json.loads(out.stdout)
    assert set(data) >= {
        "site",
        "from",
        "to",
        "pageviews",
        "visitors",
        "sessions",
        "bounce_rate",
        "avg_session_seconds",
        "events",
        "revenue_by_currency",
        "conversions",
        "top_paths",
        "api",
    }
    events = valid_events(entries)
    assert (
        data["pageviews"]
        == expected_report(events, site, day_of(entries[0].event["ts"]), day_of(entries[0].event["ts"]))["pageviews"]
    )
    assert data["pageviews"] > 0
