"""`streamproc report` views against an independent truth.

Synthetic traffic goes through a real `streamproc run --drain` process into a
real Postgres once for the module (pinned in time around the Europe/Paris
switch to summer time, 2026-03-29 01:00 UTC); every view's JSON is compared
with figures computed here in plain Python from the events the producer meant.
Views whose logic is easier to pin down with chosen numbers (realtime, the
previous-period change) get rows inserted straight into the rollup tables.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
import secrets
import struct
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
import redis
from typer.testing import CliRunner

from streamproc.cli.app import app
from streamproc.config import Settings, load_settings
from streamproc.dev.synth import Generator, produce
from streamproc.postgres.migrate import migrate
from streamproc.reports.export import COLUMNS
from streamproc.reports.report import build_report
from streamproc.reports.textplot import HEAT, bar, heat_level, sparkline
from streamproc.reports.timerange import buckets, day_window, last_window, noon_days
from tests.conftest import SECRET, Daemons
from tests.truth import expected_report, nearest_rank, referrer_value, valid_events

NOW = dt.datetime(2026, 3, 30, 9, 30, tzinfo=dt.UTC)
NOW_MS = int(NOW.timestamp() * 1000)
PARIS = ZoneInfo("Europe/Paris")
SITE = "shop.example"
ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/streamproc-analytics.json"


@dataclass
class Loaded:
    settings: Settings
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def loaded(servers: tuple[str, str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """6,000 events over the 4 days before NOW, processed by a real daemon into a schema of this module's own."""
    redis_url, database_url, _ = servers
    ns = "t_" + secrets.token_hex(5)
    stream = f"{ns}:events"
    migrate(database_url, ns)
    settings = load_settings(
        {
            "redis_url": redis_url,
            "database_url": database_url,
            "db_schema": ns,
            "streams": stream,
            "group": "g",
            "consumer": "c1",
            "visitor_secret": SECRET,
            "block_ms": 200,
            "max_event_age_days": 3650,  # traffic at a fixed date: a backfill
        },
        environ={},
    )
    entries = list(Generator(seed=11, now_ms=NOW_MS, days=4, bad_ratio=0.002).entries(6000))
    client = redis.Redis.from_url(redis_url)
    produce(client, stream, entries)
    daemons = Daemons(tmp_path_factory.mktemp("report-daemons"))
    try:
        proc = daemons.start(settings, "--drain")
        assert proc.wait(timeout=120) == 0, daemons.logs()[-3000:]
        yield Loaded(settings, valid_events(entries))
    finally:
        daemons.stop_all()
        client.delete(stream, f"{stream}:dlq")
        client.close()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{ns}" CASCADE')


# --- helpers ---------------------------------------------------------------------------------------


def cli(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(
        app, ["report", *args, "--database-url", settings.database_url, "--schema", settings.db_schema]
    )


def view_json(settings: Settings, *args: str) -> dict[str, Any]:
    res = cli(settings, *args, "--json", "--now", NOW.isoformat())
    assert res.exit_code == 0, res.output
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def view_csv(settings: Settings, *args: str) -> list[dict[str, str]]:
    res = cli(settings, *args, "--csv", "--now", NOW.isoformat())
    assert res.exit_code == 0, res.output
    reader = csv.DictReader(io.StringIO(res.stdout))
    view = next(a for a in args if not a.startswith("-"))
    assert tuple(reader.fieldnames or ()) == COLUMNS[view]
    return list(reader)


def ts(e: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromtimestamp(e["ts"] / 1000, dt.UTC)


def between(events: list[dict[str, Any]], start: dt.datetime, end: dt.datetime, kind: str | None = None) -> list[Any]:
    return [e for e in events if e["site"] == SITE and start <= ts(e) < end and (kind is None or e["type"] == kind)]


def visitors_on_utc_days(events: list[dict[str, Any]], days: set[dt.date]) -> int:
    return len(
        {
            e["visitor"]
            for e in events
            if e["site"] == SITE and e["type"] == "page_view" and "visitor" in e and ts(e).date() in days
        }
    )


def session_truth(events: list[dict[str, Any]]) -> dict[str, tuple[dt.datetime, dt.datetime, int]]:
    """Per session of SITE: first event, last event, page views (over all its events)."""
    first: dict[str, dt.datetime] = {}
    last: dict[str, dt.datetime] = {}
    views: Counter[str] = Counter()
    for e in events:
        if e["site"] != SITE or "session" not in e:
            continue
        s, t = e["session"], ts(e)
        first[s], last[s] = min(first.get(s, t), t), max(last.get(s, t), t)
        views[s] += e["type"] == "page_view"
    return {s: (first[s], last[s], views[s]) for s in first}


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


# --- overview --------------------------------------------------------------------------------------


def test_overview_figures_and_change_against_previous_period(loaded: Loaded) -> None:
    """Over whole UTC days every overview figure is exact and equals the truth, for the range and for
    the period of the same length before it; change is the difference and change_rel the ratio."""
    data = view_json(loaded.settings, "overview", "--site", SITE, "--from", "2026-03-29", "--to", "2026-03-30")
    assert data["previous_range"]["from"] == "2026-03-27" and data["previous_range"]["to"] == "2026-03-28"
    cur = expected_report(loaded.events, SITE, dt.date(2026, 3, 29), dt.date(2026, 3, 30))
    prev = expected_report(loaded.events, SITE, dt.date(2026, 3, 27), dt.date(2026, 3, 28))
    for name in ("pageviews", "visitors", "sessions", "bounce_rate", "avg_session_seconds"):
        m = data["metrics"][name]
        assert m["exact"] is True, name
        assert math.isclose(m["value"], cur[name], abs_tol=1e-3), (name, m, cur[name])
        assert math.isclose(m["previous"], prev[name], abs_tol=1e-3), (name, m, prev[name])
        assert math.isclose(m["change"], cur[name] - prev[name], abs_tol=2e-3), name
        assert math.isclose(m["change_rel"], (m["value"] - m["previous"]) / m["previous"], abs_tol=1e-4), name
    series = data["series"]
    assert series["unit"] == "day" and [b["label"] for b in series["buckets"]] == ["2026-03-29", "2026-03-30"]
    for b in series["buckets"]:
        day = dt.date.fromisoformat(b["label"])
        assert b["pageviews"] == expected_report(loaded.events, SITE, day, day)["pageviews"]
        assert b["visitors"] == expected_report(loaded.events, SITE, day, day)["visitors"]


def test_tz_rebuckets_hourly_views_into_local_days_exactly(loaded: Loaded) -> None:
    """With --tz Europe/Paris, page views per local day (including the 23-hour day of the switch to
    summer time) are exact from the hourly rows; visitors come from the UTC days whose noon falls in
    each local day and are flagged approximate; bounce rate and session length stay exact."""
    data = view_json(
        loaded.settings,
        "overview",
        "--site",
        SITE,
        "--from",
        "2026-03-27",
        "--to",
        "2026-03-30",
        "--tz",
        "Europe/Paris",
        "--by",
        "day",
    )
    rng = data["range"]
    assert (rng["start"], rng["end"], rng["tz"]) == ("2026-03-26T23:00:00Z", "2026-03-30T22:00:00Z", "Europe/Paris")
    start, end = dt.datetime(2026, 3, 26, 23, tzinfo=dt.UTC), dt.datetime(2026, 3, 30, 22, tzinfo=dt.UTC)
    views = between(loaded.events, start, end, "page_view")
    per_local_day = Counter(ts(e).astimezone(PARIS).date().isoformat() for e in views)
    got = {b["label"]: b["pageviews"] for b in data["series"]["buckets"]}
    assert got == {d: per_local_day[d] for d in ("2026-03-27", "2026-03-28", "2026-03-29", "2026-03-30")}
    assert data["metrics"]["pageviews"] == {**data["metrics"]["pageviews"], "value": len(views), "exact": True}
    # Visitors: the documented approximation, on UTC days of the same dates.
    days = {dt.date(2026, 3, d) for d in (27, 28, 29, 30)}
    assert data["visitor_days"] == sorted(d.isoformat() for d in days)
    assert data["metrics"]["visitors"]["value"] == visitors_on_utc_days(loaded.events, days)
    assert data["metrics"]["visitors"]["exact"] is False and data["series"]["exact"]["visitors"] is False
    for b in data["series"]["buckets"]:
        assert b["visitors"] == visitors_on_utc_days(loaded.events, {dt.date.fromisoformat(b["label"])})
    # Sessions that started in the local range: exact whatever the zone.
    engaged = [(f, la, v) for f, la, v in session_truth(loaded.events).values() if v and start <= f < end]
    bounce = data["metrics"]["bounce_rate"]
    assert bounce["exact"] is True
    assert math.isclose(bounce["value"], sum(1 for *_, v in engaged if v == 1) / len(engaged), abs_tol=1e-4)
    avg = sum((la - f).total_seconds() for f, la, _ in engaged) / len(engaged)
    assert math.isclose(data["metrics"]["avg_session_seconds"]["value"], avg, abs_tol=1e-3)


def test_last_24h_is_hourly_with_sessions_started(loaded: Loaded) -> None:
    """`--last 24h` is the current hour and the 23 before: page views and sessions started per hour
    equal the truth, and the previous period is the 24 hours before that."""
    data = view_json(loaded.settings, "overview", "--site", SITE, "--last", "24h")
    end = dt.datetime(2026, 3, 30, 10, tzinfo=dt.UTC)
    start = end - dt.timedelta(hours=24)
    assert (data["range"]["start"], data["range"]["end"], data["range"]["unit"]) == (
        "2026-03-29T10:00:00Z",
        "2026-03-30T10:00:00Z",
        "hour",
    )
    rows = data["series"]["buckets"]
    assert data["series"]["unit"] == "hour" and len(rows) == 24
    views = Counter(
        ts(e).replace(minute=0, second=0, microsecond=0) for e in between(loaded.events, start, end, "page_view")
    )
    started = Counter(
        f.replace(minute=0, second=0, microsecond=0)
        for f, _, v in session_truth(loaded.events).values()
        if v and start <= f < end
    )
    for b in rows:
        hour = dt.datetime.fromisoformat(b["start"])
        assert (b["pageviews"], b["sessions"], b["visitors"]) == (views[hour], started[hour], None), b
    previous = between(loaded.events, start - dt.timedelta(hours=24), start, "page_view")
    assert data["metrics"]["pageviews"]["previous"] == len(previous)
    # A 24-hour window reads its per-day figures on every UTC day it touches (today's traffic
    # included), flagged approximate.
    assert data["visitor_days"] == ["2026-03-29", "2026-03-30"] and data["metrics"]["visitors"]["exact"] is False
    both = {dt.date(2026, 3, 29), dt.date(2026, 3, 30)}
    assert data["metrics"]["visitors"]["value"] == visitors_on_utc_days(loaded.events, both)


def test_last_7d_is_today_and_six_local_days_before(loaded: Loaded) -> None:
    """`--last 7d --tz Europe/Paris` covers the local days from six days ago to today, and its page
    views equal the truth over exactly those instants."""
    data = view_json(loaded.settings, "overview", "--site", SITE, "--last", "7d", "--tz", "Europe/Paris")
    assert (data["range"]["from"], data["range"]["to"]) == ("2026-03-24", "2026-03-30")
    assert (data["range"]["start"], data["range"]["end"]) == ("2026-03-23T23:00:00Z", "2026-03-30T22:00:00Z")
    start, end = dt.datetime(2026, 3, 23, 23, tzinfo=dt.UTC), dt.datetime(2026, 3, 30, 22, tzinfo=dt.UTC)
    assert data["metrics"]["pageviews"]["value"] == len(between(loaded.events, start, end, "page_view"))
    assert [b["label"] for b in data["series"]["buckets"]] == [f"2026-03-{d}" for d in range(24, 31)]
    # Late in the evening UTC it is already tomorrow in Paris.
    late = dt.datetime(2026, 3, 30, 22, 30, tzinfo=dt.UTC)
    res = cli(
        loaded.settings,
        "overview",
        "--site",
        SITE,
        "--last",
        "7d",
        "--tz",
        "Europe/Paris",
        "--json",
        "--now",
        late.isoformat(),
    )
    assert json.loads(res.stdout)["range"]["to"] == "2026-03-31"


# --- pages, sources, devices ----------------------------------------------------------------------------


def test_pages_top_paths_visitors_and_csv(loaded: Loaded) -> None:
    """`pages` lists the top paths by views (ties by path) with exact visitors per path and the share
    of all views; the CSV carries the same rows."""
    data = view_json(
        loaded.settings, "pages", "--site", SITE, "--from", "2026-03-27", "--to", "2026-03-29", "--limit", "7"
    )
    views = [
        e
        for e in loaded.events
        if e["site"] == SITE
        and e["type"] == "page_view"
        and dt.date(2026, 3, 27) <= ts(e).date() <= dt.date(2026, 3, 29)
    ]
    counts = Counter(e["path"] for e in views)
    visitors: dict[str, set[str]] = defaultdict(set)
    for e in views:
        if "visitor" in e:
            visitors[e["path"]].add(e["visitor"])
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:7]
    assert data["pageviews"] == len(views)
    assert [(p["path"], p["views"], p["visitors"]) for p in data["paths"]] == [(p, n, len(visitors[p])) for p, n in top]
    assert all(math.isclose(p["share"], p["views"] / len(views), abs_tol=1e-4) for p in data["paths"])
    rows = view_csv(
        loaded.settings, "pages", "--site", SITE, "--from", "2026-03-27", "--to", "2026-03-29", "--limit", "7"
    )
    assert [(r["path"], int(r["views"]), int(r["visitors"])) for r in rows] == [
        (p, n, len(visitors[p])) for p, n in top
    ]


def dimension_truth(events: list[dict[str, Any]], day: dt.date, name: str) -> dict[str, tuple[int, int]]:
    views: Counter[str] = Counter()
    who: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e["site"] != SITE or e["type"] != "page_view" or ts(e).date() != day:
            continue
        value = referrer_value(e) if name == "referrer" else e.get(name, "")
        views[value] += 1
        if "visitor" in e:
            who[value].add(e["visitor"])
    return {v: (n, len(who[v])) for v, n in views.items()}


@pytest.mark.parametrize("view", ["sources", "devices"])
def test_sources_and_devices_per_value(loaded: Loaded, view: str) -> None:
    """`sources` (referrer host, utm_*) and `devices` (device, browser, os, country) give exact page
    views and visitors per value over a UTC day, '' standing for an absent value; CSV rows agree."""
    args = ("--site", SITE, "--from", "2026-03-28", "--to", "2026-03-28", "--limit", "50")
    data = view_json(loaded.settings, view, *args)
    names = (
        ("referrer", "utm_source", "utm_medium", "utm_campaign")
        if view == "sources"
        else ("device", "browser", "os", "country")
    )
    assert tuple(data["dimensions"]) == names and data["exact"] == {"views": True, "visitors": True}
    for name in names:
        want = dimension_truth(loaded.events, dt.date(2026, 3, 28), name)
        got = data["dimensions"][name]
        assert {r["value"]: (r["views"], r["visitors"]) for r in got} == want, name
        assert [r["views"] for r in got] == sorted((r["views"] for r in got), reverse=True)
    rows = view_csv(loaded.settings, view, *args)
    assert len(rows) == sum(len(v) for v in data["dimensions"].values())
    assert {(r["dimension"], r["value"]) for r in rows} == {
        (n, v["value"]) for n, vs in data["dimensions"].items() for v in vs
    }


# --- api, conversions ---------------------------------------------------------------------------------


def test_api_routes_counts_errors_and_quantiles(loaded: Loaded, tmp_path: Path) -> None:
    """`api` counts requests and 5xx exactly per route, its mean latency is the true mean and its
    quantiles are within the histogram's bound; the hourly series adds up; --png draws 1200x600."""
    png = tmp_path / "api.png"
    data = view_json(loaded.settings, "api", "--site", SITE, "--last", "48h", "--png", str(png))
    end = dt.datetime(2026, 3, 30, 10, tzinfo=dt.UTC)
    reqs = between(loaded.events, end - dt.timedelta(hours=48), end, "api_request")
    per_route: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in reqs:
        per_route[(e["method"].upper(), e["route"])].append(e)
    assert {(r["method"], r["route"]) for r in data["routes"]} == set(per_route)
    for r in data["routes"]:
        want = per_route[(r["method"], r["route"])]
        durations = [float(e["duration_ms"]) for e in want]
        errors = sum(1 for e in want if e["status"] >= 500)
        assert (r["count"], r["errors"]) == (len(want), errors)
        assert math.isclose(r["error_rate"], errors / len(want), abs_tol=1e-4)
        assert math.isclose(r["avg_ms"], sum(durations) / len(durations), abs_tol=1e-3)
        for q, key in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
            true = nearest_rank(durations, q)
            assert abs(r[key] - true) <= 0.05 * true + 1e-3, (r, key, true)
    assert sum(b["requests"] for b in data["series"]["buckets"]) == len(reqs)
    assert png_size(png) == (1200, 600)
    rows = view_csv(loaded.settings, "api", "--site", SITE, "--last", "48h")
    assert [(r["method"], r["route"], int(r["count"])) for r in rows] == [
        (r["method"], r["route"], r["count"]) for r in data["routes"]
    ]


def test_conversions_count_and_exact_revenue(loaded: Loaded) -> None:
    """`conversions` gives count and exact decimal revenue per name and currency, and the per-day series adds up."""
    data = view_json(loaded.settings, "conversions", "--site", SITE, "--from", "2026-03-26", "--to", "2026-03-30")
    count: Counter[tuple[str, str]] = Counter()
    revenue: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for e in loaded.events:
        if e["site"] == SITE and e["type"] == "conversion":
            key = (e["name"], e.get("currency", "").upper())
            count[key] += 1
            revenue[key] += Decimal(e.get("revenue", "0"))
    assert {(c["name"], c["currency"]): (c["count"], Decimal(c["revenue"])) for c in data["conversions"]} == {
        k: (n, revenue[k]) for k, n in count.items()
    }
    assert data["total_count"] == sum(count.values())
    assert sum(b["conversions"] for b in data["series"]["buckets"]) == sum(count.values())
    assert len(view_csv(loaded.settings, "conversions", "--site", SITE, "--from", "2026-03-26")) == len(count)


# --- heatmap ----------------------------------------------------------------------------------------


def test_heatmap_grid_blocks_csv_and_png(loaded: Loaded, tmp_path: Path) -> None:
    """`heatmap --path /` counts clicks per cell of the 20x20 grid exactly, draws them with ░▒▓█
    (█ for the busiest cell), lists all 400 cells in CSV and writes a PNG of the asked size."""
    args = ("heatmap", "--site", SITE, "--path", "/", "--from", "2026-03-26", "--to", "2026-03-30")
    data = view_json(loaded.settings, *args)
    grid = [[0] * 20 for _ in range(20)]
    selectors: Counter[str] = Counter()
    for e in loaded.events:
        if e["site"] == SITE and e["type"] == "click" and e["path"] == "/":
            grid[min(int(e["y"] * 20), 19)][min(int(e["x"] * 20), 19)] += 1
            selectors[e.get("selector", "")] += 1
    assert data["grid"] == grid and data["clicks"] == sum(map(sum, grid)) > 50
    assert {s["selector"]: s["clicks"] for s in data["selectors"]} == dict(selectors)
    res = cli(loaded.settings, *args, "--now", NOW.isoformat())
    assert res.exit_code == 0, res.output
    assert "█" in res.stdout and set(res.stdout) & set(HEAT[1:4])
    rows = view_csv(loaded.settings, *args)
    assert len(rows) == 400 and sum(int(r["clicks"]) for r in rows) == data["clicks"]
    png = tmp_path / "heat.png"
    res = cli(loaded.settings, *args, "--png", str(png), "--size", "640x480", "--now", NOW.isoformat())
    assert res.exit_code == 0, res.output
    assert png_size(png) == (640, 480)
    empty = cli(
        loaded.settings, "heatmap", "--site", SITE, "--path", "/nowhere", "--last", "7d", "--now", NOW.isoformat()
    )
    assert empty.exit_code == 0 and "no clicks on '/nowhere'" in empty.stdout


def test_time_series_png_has_the_requested_size(loaded: Loaded, tmp_path: Path) -> None:
    """`overview --png` writes a valid PNG of exactly --size pixels (views per day with visitors)
    alongside the human output."""
    png = tmp_path / "views.png"
    res = cli(
        loaded.settings,
        "overview",
        "--site",
        SITE,
        "--last",
        "7d",
        "--png",
        str(png),
        "--size",
        "900x450",
        "--now",
        NOW.isoformat(),
    )
    assert res.exit_code == 0, res.output
    assert "page views" in res.stdout and f"chart written to {png}" in res.stdout
    assert png_size(png) == (900, 450)


@pytest.mark.parametrize(
    "args",
    [
        ["overview", "--last", "7d", "--tz", "Europe/Paris"],
        ["overview", "--last", "6h"],
        ["pages", "--last", "30d"],
        ["sources", "--last", "24h"],
        ["devices", "--last", "7d"],
        ["api", "--last", "7d", "--by", "hour"],
        ["conversions", "--last", "7d"],
        ["realtime"],
        ["heatmap", "--path", "/p/1", "--last", "7d"],
    ],
)
def test_every_view_renders_for_people(loaded: Loaded, args: list[str]) -> None:
    """Each view's default output is a rich rendering that names the site, without error."""
    res = cli(loaded.settings, args[0], "--site", SITE, *args[1:], "--now", NOW.isoformat())
    assert res.exit_code == 0, res.output
    assert SITE in res.stdout and "Traceback" not in res.output


@pytest.mark.parametrize("last", ["6h", "24h", "30h"])
def test_hour_windows_read_per_day_figures_on_the_same_days_in_every_view(loaded: Loaded, last: str) -> None:
    """`--last Nh` reads every per-UTC-day figure of every view on the UTC days it touches, so
    today's traffic always shows: overview visitors, pages visitors, sources/devices and the
    heatmap agree on `visitor_days`, and page views stay exact to the hour."""
    n = int(last[:-1])
    end = dt.datetime(2026, 3, 30, 10, tzinfo=dt.UTC)
    start = end - dt.timedelta(hours=n)
    days = sorted({start.date(), (end - dt.timedelta(microseconds=1)).date()})
    want_days = [d.isoformat() for d in days]
    views = {
        name: view_json(loaded.settings, name, "--site", SITE, "--last", last, *extra)
        for name, extra in (("overview", []), ("pages", []), ("devices", []), ("heatmap", ["--path", "/"]))
    }
    assert {name: v["visitor_days"] for name, v in views.items() if "visitor_days" in v} == dict.fromkeys(
        ("overview", "pages", "devices", "heatmap"), want_days
    )
    overview = views["overview"]
    assert overview["metrics"]["visitors"]["value"] == visitors_on_utc_days(loaded.events, set(days)) > 0
    assert overview["metrics"]["pageviews"]["value"] == len(between(loaded.events, start, end, "page_view"))
    assert all(p["visitors"] is not None for p in views["pages"]["paths"])
    day_views = sum(r["views"] for r in views["devices"]["dimensions"]["device"])
    assert day_views == sum(
        1 for e in loaded.events if e["site"] == SITE and e["type"] == "page_view" and ts(e).date() in days
    )


# --- rows inserted directly -------------------------------------------------------------------------


def test_realtime_active_sessions_and_views_this_hour(make_settings: Any, pg: psycopg.Connection[Any]) -> None:
    """`realtime` counts sessions whose last event is in the last 5 minutes (not older, not in the
    future) and lists page views per path in the current UTC hour next to the hour before."""
    hour = NOW.replace(minute=0)
    pg.execute("INSERT INTO events_hourly VALUES ('rt.example', %s, 'page_view', '', 1)", (hour,))
    for i, (ago_s, views) in enumerate([(60, 2), (299, 0), (301, 1), (3600, 3), (-60, 1)]):
        seen = NOW - dt.timedelta(seconds=ago_s)
        pg.execute(
            "INSERT INTO sessions VALUES ('rt.example', %s, %s, %s, %s, %s)",
            (i, seen - dt.timedelta(minutes=1), seen, views, views + 1),
        )
    for h, path, n in [
        (hour, "/a", 5),
        (hour, "/b", 7),
        (hour - dt.timedelta(hours=1), "/a", 11),
        (hour - dt.timedelta(hours=2), "/old", 99),
    ]:
        pg.execute("INSERT INTO pageviews_hourly VALUES ('rt.example', %s, %s, %s)", (h, path, n))
    settings = make_settings()
    data = view_json(settings, "realtime", "--site", "rt.example")
    assert (data["active_sessions"], data["active_sessions_with_pageviews"]) == (2, 1)
    assert (data["pageviews_this_hour"], data["pageviews_previous_hour"]) == (12, 11)
    assert data["paths"] == [
        {"path": "/b", "views_this_hour": 7, "views_previous_hour": 0},
        {"path": "/a", "views_this_hour": 5, "views_previous_hour": 11},
    ]
    rows = view_csv(settings, "realtime", "--site", "rt.example")
    assert [r["path"] for r in rows] == ["/b", "/a"]


def test_overview_change_from_chosen_rows(make_settings: Any, pg: psycopg.Connection[Any]) -> None:
    """The previous period is the same number of local days just before; change and change_rel
    follow from chosen figures (a rate's change in points), and a previous zero gives no ratio."""
    day = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
    pg.execute("INSERT INTO events_hourly VALUES ('ch.example', %s, 'page_view', '', 1)", (day,))
    for hours, views in [(0, 100), (30, 50), (-2, 40), (-30, 60)]:  # two days vs the two before
        pg.execute(
            "INSERT INTO pageviews_hourly VALUES ('ch.example', %s, '/', %s)", (day + dt.timedelta(hours=hours), views)
        )
    # Current: 4 sessions, 1 bounce; previous: 2 sessions, both bounced.
    for i, (start_h, views) in enumerate([(1, 1), (2, 3), (3, 2), (4, 5), (-5, 1), (-6, 1)]):
        first = day + dt.timedelta(hours=start_h)
        pg.execute(
            "INSERT INTO sessions VALUES ('ch.example', %s, %s, %s, %s, %s)",
            (i, first, first + dt.timedelta(seconds=10 * (i + 1)), views, views),
        )
    data = view_json(make_settings(), "overview", "--site", "ch.example", "--from", "2026-03-10", "--to", "2026-03-11")
    m = data["metrics"]
    assert (data["previous_range"]["from"], data["previous_range"]["to"]) == ("2026-03-08", "2026-03-09")
    assert m["pageviews"] == {"value": 150, "previous": 100, "change": 50, "change_rel": 0.5, "exact": True}
    assert (m["bounce_rate"]["value"], m["bounce_rate"]["previous"], m["bounce_rate"]["change"]) == (0.25, 1.0, -0.75)
    assert m["avg_session_seconds"]["value"] == 25.0 and m["avg_session_seconds"]["previous"] == 55.0
    assert m["visitors"]["previous"] == 0 and m["visitors"]["change_rel"] is None
    rows = {
        r["metric"]: r
        for r in view_csv(
            make_settings(), "overview", "--site", "ch.example", "--from", "2026-03-10", "--to", "2026-03-11"
        )
    }
    assert rows["pageviews"] == {
        "metric": "pageviews",
        "value": "150",
        "previous": "100",
        "change": "50",
        "change_rel": "0.5",
        "exact": "true",
    }
    assert rows["visitors"]["change_rel"] == ""


# --- compatibility, errors, help -------------------------------------------------------------------


def test_legacy_report_is_unchanged(loaded: Loaded) -> None:
    """`report --site S --from D --to D --json` (no view) prints exactly `build_report`'s dict, and
    options given before a view name apply to the view."""
    res = cli(loaded.settings, "--site", SITE, "--from", "2026-03-28", "--to", "2026-03-29", "--json")
    assert res.exit_code == 0, res.output
    with psycopg.connect(loaded.settings.database_url, options=f"-c search_path={loaded.settings.db_schema}") as conn:
        want = build_report(conn, SITE, dt.date(2026, 3, 28), dt.date(2026, 3, 29))
    assert json.loads(res.stdout) == json.loads(json.dumps(want))
    human = cli(loaded.settings, "--site", SITE, "--from", "2026-03-28", "--to", "2026-03-29")
    assert human.exit_code == 0 and "top paths" in human.stdout
    before = cli(loaded.settings, "--site", SITE, "--from", "2026-03-28", "--to", "2026-03-29", "--json", "pages")
    assert before.exit_code == 0, before.output
    assert json.loads(before.stdout)["paths"][0]["path"] == "/"


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["overview", "--site", SITE, "--tz", "Mars/Olympus_Mons"], "--tz"),
        (["overview", "--site", SITE, "--tz", "Europe"], "--tz"),
        (["overview", "--site", SITE, "--last", "3y"], "--last"),
        (["overview", "--site", SITE, "--last", "7d", "--from", "2026-03-01"], "--last"),
        (["pages", "--site", SITE, "--from", "2026-02-30"], "--from"),
        (["pages", "--site", SITE, "--from", "2026-03-05", "--to", "2026-03-01"], "--to"),
        (["api", "--site", SITE, "--json", "--csv"], "--csv"),
        (["overview", "--site", SITE, "--png", "x.png", "--size", "huge"], "--size"),
        (["overview", "--site", "no-such.example"], "no-such.example"),
        (["--site", "no-such.example", "--from", "2026-03-29", "--to", "2026-03-29"], "no-such.example"),
        (["--site", "no-such.example", "--from", "2026-03-29", "--to", "2026-03-29", "--json"], "no-such.example"),
        (["devices", "--site", "no-such.example", "--last", "24h"], "no-such.example"),
        (["heatmap", "--site", SITE], "--path"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_line(loaded: Loaded, args: list[str], flag: str) -> None:
    """Bad dates, ranges, zones, spans, sizes, format combinations and unknown sites are usage errors:
    exit 2, the culprit named, no traceback."""
    res = cli(loaded.settings, *args)
    assert res.exit_code == 2, res.output
    assert flag in res.output and "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_help_says_where_figures_are_approximate() -> None:
    """Every view's --help states which figures are exact and which come from per-UTC-day sets."""
    for view in ("overview", "pages", "sources", "devices", "api", "conversions", "realtime", "heatmap"):
        res = CliRunner().invoke(app, ["report", view, "--help"], terminal_width=200)
        assert res.exit_code == 0, res.output
        assert "per UTC day" in res.output, view


# --- the Grafana dashboard ---------------------------------------------------------------------------


def grafana_sql(sql: str, schema: str, site: str, path: str, start: str, end: str) -> str:
    """Expand the Grafana variables and Postgres macros the dashboard uses, as Grafana does."""
    sql = (
        sql.replace("${schema}", schema)
        .replace("${site:sqlstring}", f"'{site}'")
        .replace("${path:sqlstring}", f"'{path}'")
    )
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN '{start}' AND '{end}'", sql)
    sql = sql.replace("$__timeFrom()", f"'{start}'").replace("$__timeTo()", f"'{end}'")
    assert "$" not in sql, f"unexpanded variable or macro in {sql!r}"
    return sql


def test_grafana_analytics_dashboard_queries_run_on_the_rollups(loaded: Loaded) -> None:
    """deploy/grafana/streamproc-analytics.json uses a Postgres data-source variable, and every one of
    its queries runs on a real migrated schema; its page views and p95 agree with the truth."""
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_POSTGRES"]["type"] == "datasource"
    assert variables["DS_POSTGRES"]["query"] == "grafana-postgresql-datasource"
    assert {"schema", "site", "path"} <= set(variables)
    s = loaded.settings
    expand = lambda q: grafana_sql(q, s.db_schema, SITE, "/", "2026-03-28T00:00:00Z", "2026-03-28T23:59:59Z")  # noqa: E731
    results: dict[str, list[Any]] = {}
    with psycopg.connect(s.database_url) as conn:
        for v in variables.values():
            if v["type"] == "query":
                assert conn.execute(expand(v["query"])).fetchall(), v["name"]
        targets = [(p["title"], t) for p in dash["panels"] for t in p.get("targets", [])]
        assert len(targets) >= 20
        for title, t in targets:
            assert t["datasource"]["uid"] == "${DS_POSTGRES}", title
            results.setdefault(title, conn.execute(expand(t["rawSql"])).fetchall())
    day = dt.date(2026, 3, 28)
    assert results["Page views"] == [(expected_report(loaded.events, SITE, day, day)["pageviews"],)]
    assert results["Visitors"] == [(expected_report(loaded.events, SITE, day, day)["visitors"],)]
    api = {(r[0], r[1]): r for r in results["API routes"]}
    for (method, route), w in expected_report(loaded.events, SITE, day, day)["api"].items():
        true = nearest_rank(w["durations"], 0.95)
        assert abs(float(api[(method, route)][7]) - true) <= 0.05 * true + 0.1, (method, route)


# --- pure pieces ------------------------------------------------------------------------------------


def test_local_days_dst_and_odd_offsets() -> None:
    """Local days are 23 or 25 hours around DST switches, map to the UTC day of the same date
    (Europe/Paris) or the day before (Pacific/Auckland), and a half-hour zone is not hour-exact."""
    w = day_window(dt.date(2026, 3, 28), dt.date(2026, 3, 30), PARIS)
    assert [b.end - b.start for b in buckets(w, "day")] == [dt.timedelta(hours=h) for h in (24, 23, 24)]
    autumn = day_window(dt.date(2026, 10, 25), dt.date(2026, 10, 25), PARIS)
    assert autumn.end - autumn.start == dt.timedelta(hours=25) and autumn.hour_exact and not autumn.utc_days_exact
    assert noon_days(w.start, w.end) == [dt.date(2026, 3, d) for d in (28, 29, 30)]
    auckland = day_window(dt.date(2026, 1, 10), dt.date(2026, 1, 10), ZoneInfo("Pacific/Auckland"))
    assert auckland.noon_days() == [dt.date(2026, 1, 9)]
    assert not day_window(dt.date(2026, 1, 10), dt.date(2026, 1, 10), ZoneInfo("Asia/Kolkata")).hour_exact
    assert day_window(dt.date(2026, 1, 10), dt.date(2026, 1, 11), ZoneInfo("UTC")).utc_days_exact
    short = last_window(6, "hour", ZoneInfo("UTC"), NOW)
    assert short.noon_days() == [] and short.visitor_days() == [dt.date(2026, 3, 30)]
    day = last_window(24, "hour", ZoneInfo("UTC"), NOW)
    assert day.visitor_days() == [dt.date(2026, 3, 29), dt.date(2026, 3, 30)]
    assert w.previous().first == dt.date(2026, 3, 25) and w.previous().last == dt.date(2026, 3, 27)


def test_text_pictures() -> None:
    """Heat levels are quarters of the busiest cell, sparklines scale to the largest value and shrink
    to fit, bars are drawn to an eighth of a cell."""
    assert [heat_level(v, 8) for v in (0, 1, 2, 3, 4, 5, 8)] == [0, 1, 1, 2, 2, 3, 4]
    assert sparkline([0, 4, 8]) == "▁▅█" and sparkline([None, 1]) == " █" and len(sparkline(range(100), 10)) == 10
    assert bar(10, 10, 4) == "████" and bar(1, 16, 2) == "▏" and bar(0, 5) == ""


def test_no_dashboard_query_adds_revenue_across_currencies() -> None:
    """Every Grafana query that reads revenue keeps currencies apart (grouped by currency)."""
    found = 0
    for board in sorted((ROOT / "deploy/grafana").glob("*.json")):
        for sql in re.findall(r'"rawSql":\s*"((?:[^"\\]|\\.)*)"', board.read_text()):
            if "revenue" in sql:
                found += 1
                assert re.search(r"GROUP BY[^;]*\bcurrency\b", sql), (board.name, sql)
    assert found, "the analytics dashboard shows revenue"
