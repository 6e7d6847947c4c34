"""Reports show what producers wrote literally, in every human view; JSON and CSV stay byte-exact.

Hostile strings (rich markup, emoji codes, terminal escapes, newlines, bidi overrides) go through
a real `streamproc run --drain` into a real Postgres; every view is then rendered for people.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from rich.console import Console
from typer.testing import CliRunner

from streamproc.cli.app import app
from streamproc.config import Settings
from streamproc.reports import render
from tests.conftest import Daemons

SITE = "[b]shop[/b].example"
ROUTE = "/user/{id}[/{name}]"
PATH = "/x[/b]"
ESC_PATH = "/esc\x1b[2J\x1b]0;owned\x07\n\u202etxt"
SELECTOR = "button[type=submit]"
QUERY_ROUTE = "/p?filter[color]=red"
NAME = "[bold red]sale[/] :smile:"
REFERRER = "https://evil.example/[red]x"
CAMPAIGN = "[link=x]go[/link]"
CURRENCY = "E[U]R"
ESC_SHOWN = "/esc\\x1b[2J\\x1b]0;owned\\x07\\x0a\\u202etxt"


def events(now_ms: int) -> list[dict[str, Any]]:
    base = {"site": SITE, "ts": now_ms - 3_600_000, "session": "s1", "visitor": "v1"}
    return [
        {**base, "type": "page_view", "path": PATH, "referrer": REFERRER, "utm_campaign": CAMPAIGN},
        {**base, "type": "page_view", "path": ESC_PATH, "device": "[i]phone", "country": "\x1b[31mNL"},
        {**base, "type": "page_view", "path": ROUTE},
        {**base, "type": "click", "path": PATH, "x": 0.5, "y": 0.5, "selector": SELECTOR},
        {**base, "type": "api_request", "method": "GET", "route": ROUTE, "status": 500, "duration_ms": 3.0},
        {**base, "type": "api_request", "method": "GET", "route": QUERY_ROUTE, "status": 200, "duration_ms": 1.0},
        {**base, "type": "conversion", "name": NAME, "revenue": "10", "currency": CURRENCY},
    ]


@pytest.fixture
def loaded(make_settings: Any, schema: str, r: redis.Redis, stream: str, daemons: Daemons) -> Iterator[Settings]:
    settings = make_settings()
    for e in events(int(time.time() * 1000)):
        r.xadd(stream, {"event": json.dumps(e)})
    assert daemons.start(settings, "--drain").wait(timeout=120) == 0, daemons.logs()[-2000:]
    assert not r.xrange(f"{stream}:dlq"), "every hostile event is a valid event"
    yield settings


def report(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(
        app, ["report", *args, "--database-url", settings.database_url, "--schema", settings.db_schema]
    )


VIEWS = [
    ["overview"],
    ["pages"],
    ["sources"],
    ["devices"],
    ["api"],
    ["conversions"],
    ["realtime"],
    ["heatmap", "--path", PATH],
    ["bots"],
]


def test_every_human_view_shows_producer_strings_literally(loaded: Settings) -> None:
    """Markup in a route, path, selector, name, site, referrer, campaign or currency neither breaks a
    view (it used to exit 1 with a traceback) nor is interpreted (`button[type=submit]` used to show
    as `button`); ESC, BEL, newline and bidi overrides never reach the terminal but show as escapes."""
    day = dt.datetime.now(dt.UTC).date()
    yesterday = (day - dt.timedelta(days=1)).isoformat()
    runs = [*(["--site", SITE, *v] for v in VIEWS), ["--site", SITE, "--from", yesterday, "--to", day.isoformat()]]
    seen = ""
    for args in runs:
        res = report(loaded, *args)
        assert res.exit_code == 0, (args, res.output)
        assert "Traceback" not in res.output and res.exception is None, args
        assert "\x1b" not in res.stdout and "\x07" not in res.stdout and "\u202e" not in res.stdout, args
        assert SITE in res.stdout, args
        seen += res.stdout
    for literal in (ROUTE, PATH, SELECTOR, QUERY_ROUTE, NAME, CURRENCY, ESC_SHOWN, CAMPAIGN, "[i]phone", "\\x1b[31mNL"):
        assert literal in seen, literal


def test_json_and_csv_keep_producer_strings_byte_exact(loaded: Settings) -> None:
    """The machine forms carry the original strings, control characters included."""
    pages = json.loads(report(loaded, "pages", "--site", SITE, "--json").stdout)
    assert {p["path"] for p in pages["paths"]} >= {PATH, ESC_PATH, ROUTE}
    api = report(loaded, "api", "--site", SITE, "--csv").stdout
    assert {row["route"] for row in csv.DictReader(io.StringIO(api))} == {ROUTE, QUERY_ROUTE}
    conv = json.loads(report(loaded, "conversions", "--site", SITE, "--json").stdout)
    assert conv["revenue_by_currency"] == {CURRENCY.upper(): "10"}
    assert [c["name"] for c in conv["conversions"]] == [NAME]


@pytest.mark.parametrize("printer", [getattr(render, n) for n in dir(render) if n.startswith("print_")])
def test_every_view_printer_goes_through_the_literal_console(printer: Any) -> None:
    """Every `print_*` view is wrapped: a new view cannot forget to escape."""
    assert getattr(printer, "literal", False), printer.__name__


def test_literal_console_on_a_terminal_keeps_its_own_styles_only() -> None:
    """On a colour terminal the report's own styles are still ANSI sequences, while a producer's
    escape sequence is shown, not sent."""
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, color_system="standard", width=120)
    render.print_conversions(
        console,
        {
            "site": SITE,
            "range": {"from": "2026-01-01", "to": "2026-01-01", "tz": "UTC", "unit": "day"},
            "conversions": [{"name": "\x1b[31mred", "currency": "EUR", "count": 1, "revenue": "1"}],
            "revenue_by_currency": {"EUR": "1"},
            "total_count": 1,
            "series": {"unit": "day", "buckets": []},
        },
    )
    text = buf.getvalue()
    assert "\\x1b[31mred" in text and "\x1b[31mred" not in text
    assert "[b]shop[/b].example" in text


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (0, "0.0 s"),
        (59.94, "59.9 s"),
        (61, "1 m 01 s"),
        (3599, "59 m 59 s"),
        (3600, "1 h 00 m"),
        (90_804, "25 h 13 m"),
        (216_300, "2 d 12 h"),
        (172_799, "47 h 59 m"),
    ],
)
def test_durations_for_people(seconds: float | None, shown: str) -> None:
    """Session lengths read as hours and minutes, not `1513m 24s`."""
    assert render.duration(seconds) == shown
