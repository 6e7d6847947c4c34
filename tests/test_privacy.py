"""What is stored about people: keyed hashes only, never an id, IP address or user agent."""

from __future__ import annotations

import json

import psycopg

from streamproc.core.fold import Hasher
from tests.conftest import Daemons

DAY0 = 1_790_000_000_000 - 1_790_000_000_000 % 86_400_000  # a past UTC midnight, in ms


def test_ip_ua_visitor_hash_rotates_daily_by_event_day() -> None:
    """An ip/ua visitor hash depends only on the secret, site and the event's own day: a
    redelivery hashes the same whenever it happens; another day gives another hash."""
    h = Hasher(b"k" * 32)
    day = DAY0 // 86_400_000
    a = h.anonymous("s", day, "203.0.113.9", "Firefox")
    assert a == Hasher(b"k" * 32).anonymous("s", day, "203.0.113.9", "Firefox")
    assert a != h.anonymous("s", day + 1, "203.0.113.9", "Firefox")
    assert a != h.anonymous("s", day, "203.0.113.9", "Chrome")
    assert a != Hasher(b"j" * 32).anonymous("s", day, "203.0.113.9", "Firefox")


def test_raw_ids_ip_and_user_agent_never_reach_postgres(
    make_settings, schema, r, stream, daemons: Daemons, database_url: str
) -> None:
    """Events with visitor ids, session ids or ip/ua are counted as visitors, and none of those
    values appears anywhere in the database afterwards."""
    secrets_ = ["visitor-raw-id-42", "session-raw-id-7", "198.51.100.23", "SecretBrowser/9.9"]
    ts = DAY0 + 3_600_000
    r.xadd(
        stream,
        {
            "event": json.dumps(
                {
                    "type": "page_view",
                    "site": "p.example",
                    "ts": ts,
                    "path": "/",
                    "visitor": secrets_[0],
                    "session": secrets_[1],
                }
            )
        },
    )
    for path in ("/a", "/b"):  # the same ip/ua twice in a day: one visitor
        r.xadd(
            stream,
            {
                "type": "page_view",
                "site": "p.example",
                "ts": str(ts),
                "path": path,
                "ip": secrets_[2],
                "ua": secrets_[3],
            },
        )
    settings = make_settings()
    assert daemons.start(settings, "--drain").wait(timeout=60) == 0, daemons.logs()[-2000:]
    with psycopg.connect(database_url, options=f"-c search_path={schema}") as conn:
        visitors = conn.execute("SELECT count(DISTINCT visitor) FROM visitors_daily").fetchone()
        assert visitors == (2,)
        dump = []
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
        for (table,) in tables:
            dump.extend(map(str, conn.execute(f'SELECT * FROM "{table}"').fetchall()))
    text = "\n".join(dump)
    for value in secrets_:
        assert value not in text, f"{value!r} stored in clear"
    assert not any(value in daemons.logs() for value in secrets_), "raw value in the logs"
