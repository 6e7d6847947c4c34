"""Server-side enrichment: real user agents of current browsers and bots, a real MaxMind-format
database, the fold, and the daemon end to end against real servers."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any, Final

import pytest
from typer.testing import CliRunner

from streamproc.cli.app import app
from streamproc.core import rollups as R
from streamproc.core.decode import Accepted
from streamproc.core.enrich import AgentParser, CountryDatabase, Enricher
from streamproc.core.enrich.country import CountryDatabaseError
from streamproc.core.events import ApiRequest, Click, PageView
from streamproc.core.fold import OVERFLOW, Hasher, KeyCap, fold
from tests.conftest import Daemons
from tests.geodb import NETWORKS, write_country_db

CORPUS: Final = Path(__file__).parent / "data" / "user_agents.tsv"
DAY: Final = (int(time.time()) // 86_400 - 1) * 86_400_000  # yesterday's UTC midnight (events may not be too old)


def corpus() -> list[tuple[str, str, str, str, str]]:
    rows = []
    for line in CORPUS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        ua, browser, os_, device, bot = line.split("\t")
        rows.append((ua, browser, os_, device, bot))
    return rows


PEOPLE: Final = [r for r in corpus() if not r[4]]
BOTS: Final = [r for r in corpus() if r[4]]


def test_corpus_covers_the_kinds_the_issue_names() -> None:
    """The labelled corpus holds browsers of every kind and the bots operators see most."""
    browsers = {r[1] for r in PEOPLE}
    assert {"Chrome", "Safari", "Firefox", "Microsoft Edge", "Samsung Browser", "Instagram", "Facebook"} <= browsers
    assert {"desktop", "mobile", "tablet"} == {r[3] for r in PEOPLE}
    assert {"Googlebot", "GPTBot", "BingBot", "curl", "Python Requests", "Headless Chrome", "UptimeRobot"} <= {
        r[4] for r in BOTS
    }


@pytest.mark.parametrize(("ua", "browser", "os_", "device"), [r[:4] for r in PEOPLE], ids=[r[0][:60] for r in PEOPLE])
def test_a_browser_user_agent_gives_its_browser_os_and_device(ua: str, browser: str, os_: str, device: str) -> None:
    """Each real browser user agent (desktop, mobile, tablet, in-app) parses to its labels, and is no bot."""
    agent = AgentParser().parse(ua)
    assert (agent.browser, agent.os, agent.device, agent.bot) == (browser, os_, device, "")


@pytest.mark.parametrize(("ua", "bot"), [(r[0], r[4]) for r in BOTS], ids=[r[4] for r in BOTS])
def test_a_bot_user_agent_is_named(ua: str, bot: str) -> None:
    """Crawlers, AI crawlers, link expanders, uptime monitors, HTTP libraries and headless
    browsers are bots, by the name the bot rollup shows."""
    assert AgentParser().parse(ua).bot == bot


def test_repeated_user_agents_are_parsed_once() -> None:
    """The parser is memoised per distinct user agent."""
    parser = AgentParser(memo_size=100)
    for _ in range(3):
        for ua, *_ in PEOPLE[:5]:
            parser.parse(ua)
    info = parser.cache_info()
    assert (info.misses, info.hits) == (5, 10)


def test_country_from_a_real_mmdb_file(tmp_path: Path) -> None:
    """Country codes come from the database, IPv4-mapped IPv6 included; unknown or
    malformed addresses give no country, never an error."""
    db = CountryDatabase(write_country_db(tmp_path / "c.mmdb"))
    assert db.country("192.0.2.77") == "FR"
    assert db.country("::ffff:198.51.100.3") == "JP"
    assert db.country("2001:db8:1::5") == "BR"
    assert db.country("203.0.113.9") == "DE"  # registered_country when country is absent
    assert db.country("8.8.8.8") == ""
    assert db.country("not an address") == ""
    assert db.country("") == ""


def test_a_file_that_is_no_country_database_is_a_config_error(tmp_path: Path) -> None:
    """A wrong path or a file of another kind names the setting (exit 2 at the edge)."""
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"not a database" * 10)
    for path in (junk, tmp_path / "missing.mmdb"):
        with pytest.raises(CountryDatabaseError, match="STREAMPROC_COUNTRY_DB"):
            CountryDatabase(path)


def _accepted(events: list[Any]) -> list[Accepted]:
    return [Accepted(f"{DAY // 1000}-{i}".encode(), ev, DAY + i * 1000) for i, ev in enumerate(events)]


def _dims(shards: dict[str, R.Shard]) -> dict[tuple[str, str], int]:
    return {(k[2], k[3]): row[0] for k, row in shards[R.DIMENSIONS.table].rows.items()}


def test_fold_derives_dimensions_and_producer_values_win(tmp_path: Path) -> None:
    """A page view with only site, ts, path, ua, ip and referrer gets browser, OS, device and
    country; a value the producer sent is kept as sent."""
    enricher = Enricher(country_db=write_country_db(tmp_path / "c.mmdb"))
    chrome_win = PEOPLE[0][0]
    safari_ios = next(r[0] for r in PEOPLE if r[1:4] == ("Safari", "iOS", "mobile"))
    events = [
        PageView(site="s", ts=DAY, path="/", ua=chrome_win, ip="192.0.2.1", referrer="https://t.co/x"),
        PageView(site="s", ts=DAY, path="/", ua=safari_ios, ip="198.51.100.1", browser="MyApp", country="CA"),
    ]
    shards = fold(_accepted(events), Hasher(b"k" * 16), enricher=enricher)
    dims = _dims(shards)
    assert dims[("browser", "Chrome")] == 1 and dims[("browser", "MyApp")] == 1
    assert dims[("os", "Windows")] == 1 and dims[("os", "iOS")] == 1
    assert dims[("device", "desktop")] == 1 and dims[("device", "mobile")] == 1
    assert dims[("country", "FR")] == 1 and dims[("country", "CA")] == 1
    assert ("country", "JP") not in dims
    assert len(shards[R.SITE_VISITORS.table].members) == 2


def test_fold_counts_bots_apart_and_not_as_traffic() -> None:
    """Bot page views and clicks count in bots_daily only; an API call from an HTTP library
    is API traffic; with filtering off a bot counts like anyone."""
    googlebot = next(r[0] for r in BOTS if r[4] == "Googlebot")
    curl = next(r[0] for r in BOTS if r[4] == "curl")
    events = [
        PageView(site="s", ts=DAY, path="/", ua=googlebot, ip="192.0.2.1"),
        Click(site="s", ts=DAY, path="/", x=0.5, y=0.5, ua=googlebot, ip="192.0.2.1"),
        PageView(site="s", ts=DAY, path="/", ua=PEOPLE[0][0], ip="192.0.2.2"),
        ApiRequest(site="s", ts=DAY, method="GET", route="/api", status=200, duration_ms=3.0, ua=curl),
    ]
    shards = fold(_accepted(events), Hasher(b"k" * 16), enricher=Enricher())
    assert shards[R.BOTS.table].rows == {("s", DAY // 86_400_000, "Googlebot"): [2]}
    assert sum(r[0] for r in shards[R.PAGEVIEWS_DAILY.table].rows.values()) == 1
    assert len(shards[R.SITE_VISITORS.table].members) == 1
    assert not shards[R.CLICK_GRID.table].rows
    assert sum(r[0] for r in shards[R.API_REQUESTS.table].rows.values()) == 1
    unfiltered = fold(_accepted(events), Hasher(b"k" * 16), enricher=Enricher(filter_bots=False))
    assert not unfiltered[R.BOTS.table].rows
    assert sum(r[0] for r in unfiltered[R.PAGEVIEWS_DAILY.table].rows.values()) == 2


def test_derived_values_and_bot_names_go_through_the_key_cap() -> None:
    """Past the per-batch cap, a new derived browser or bot name folds into (other), and the
    entry is marked capped like any capped entry."""
    browsers = list(dict.fromkeys(r[0] for r in PEOPLE if r[1] not in ("Chrome",)))
    bots = [r[0] for r in BOTS]
    events = [PageView(site="s", ts=DAY, path="/", ua=ua, ip="192.0.2.1") for ua in browsers]
    events += [PageView(site="s", ts=DAY, path="/", ua=ua, ip="192.0.2.1") for ua in bots]
    cap = KeyCap(limit=3)
    shards = fold(_accepted(events), Hasher(b"k" * 16), cap, enricher=Enricher())
    browser_values = {k[1] for k in _dims(shards) if k[0] == "browser"}
    assert OVERFLOW in browser_values and len(browser_values) == 4
    bot_names = {k[2] for k in shards[R.BOTS.table].rows}
    assert OVERFLOW in bot_names and len(bot_names) == 4
    assert sum(r[0] for r in shards[R.BOTS.table].rows.values()) == len(bots)
    assert cap.capped


def test_daemon_enriches_and_filters_end_to_end(
    make_settings, schema, r, stream, pg, daemons: Daemons, tmp_path
) -> None:
    """Through a real daemon: plain {site, ts, path, ua, ip, referrer} page views fill the
    device/browser/OS/country rows and visitors; bots fill bots_daily, not page views."""
    db = write_country_db(tmp_path / "c.mmdb")
    ips = ["192.0.2.7", "198.51.100.7", "2001:db8:1::7"]  # in NETWORKS' three ranges, in order
    ts = str(DAY + 3_600_000)
    for i, (ua, *_rest) in enumerate(PEOPLE):
        r.xadd(stream, {"type": "page_view", "site": "e.example", "ts": ts, "path": "/", "ua": ua, "ip": ips[i % 3]})
    for ua, *_rest in BOTS:
        r.xadd(stream, {"type": "page_view", "site": "e.example", "ts": ts, "path": "/", "ua": ua, "ip": "192.0.2.9"})
    settings = make_settings()
    assert daemons.start(settings, "--drain", STREAMPROC_COUNTRY_DB=str(db)).wait(timeout=120) == 0, daemons.logs()
    views = pg.execute("SELECT sum(views) FROM pageviews_daily WHERE site = 'e.example'").fetchone()
    assert views == (len(PEOPLE),)
    rows = pg.execute("SELECT dimension, value, views FROM dimensions_daily WHERE site = 'e.example'").fetchall()
    got: dict[str, dict[str, int]] = {}
    for dim, value, n in rows:
        got.setdefault(dim, {})[value] = n
    for index, dim in ((1, "browser"), (2, "os"), (3, "device")):
        want: dict[str, int] = {}
        for row in PEOPLE:
            want[row[index]] = want.get(row[index], 0) + 1
        assert got[dim] == want, dim
    want_countries: dict[str, int] = {}
    for i in range(len(PEOPLE)):
        code = list(NETWORKS.values())[i % 3]
        want_countries[code] = want_countries.get(code, 0) + 1
    assert got["country"] == want_countries
    bots = dict(pg.execute("SELECT bot, events FROM bots_daily WHERE site = 'e.example'").fetchall())
    want_bots: dict[str, int] = {}
    for row in BOTS:
        want_bots[row[4]] = want_bots.get(row[4], 0) + 1
    assert bots == want_bots
    day = (dt.date(1970, 1, 1) + dt.timedelta(days=DAY // 86_400_000)).isoformat()
    args = ["report", "bots", "--site", "e.example", "--from", day, "--to", day, "--limit", "100", "--json"]
    args += ["--database-url", settings.database_url, "--schema", settings.db_schema]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["total"] == len(BOTS)
    assert {b["bot"]: b["events"] for b in shown["bots"]} == want_bots


def test_unreadable_country_db_exits_2_naming_the_setting(make_settings, schema, daemons: Daemons, tmp_path) -> None:
    """A country database that is not one stops the daemon at start with exit 2 and one
    line naming the setting, never a traceback."""
    junk = tmp_path / "junk.mmdb"
    junk.write_text("not a database")
    proc = daemons.start(make_settings(), "--drain", STREAMPROC_COUNTRY_DB=str(junk))
    assert proc.wait(timeout=60) == 2
    logs = daemons.logs()
    assert "STREAMPROC_COUNTRY_DB" in logs and "Traceback" not in logs, logs
