"""Custom event properties: stored as a bounded rollup, read back by `report events --name`."""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from streamproc.cli.app import app
from streamproc.core.decode import Accepted, decode_entry
from streamproc.core.props import MAX_KEYS_PER_EVENT, MAX_TEXT, prop_pairs
from streamproc.dev.synth import Generator, produce
from tests.conftest import Daemons
from tests.truth import valid_events

SITE = "shop.example"


def test_property_values_are_text_the_same_in_both_forms() -> None:
    """`{"plan": "pro", "n": 3, "ok": true}` in JSON and `props.plan=pro props.n=3 props.ok=true`
    in the flat form count as the same pairs; nested values count as sorted JSON text."""
    now = int(time.time() * 1000)
    eid = f"{now}-0".encode()
    raw = {"type": "custom", "site": SITE, "ts": now, "name": "signup"}
    as_json = {b"event": json.dumps({**raw, "props": {"plan": "pro", "n": 3, "ok": True}}).encode()}
    flat = {k.encode(): str(v).encode() for k, v in raw.items()}
    flat |= {b"props.plan": b"pro", b"props.n": b"3", b"props.ok": b"true"}
    events = [decode_entry(eid, f, now) for f in (as_json, flat)]
    assert all(isinstance(e, Accepted) for e in events), events
    pairs = [prop_pairs(e.event.props) for e in events]  # type: ignore[union-attr]
    assert pairs[0] == pairs[1] == [("n", "3"), ("ok", "true"), ("plan", "pro")]
    assert prop_pairs({"x": {"b": 1, "a": [None, 1.5]}}) == [("x", '{"a":[null,1.5],"b":1}')]


def test_keys_per_event_and_value_length_are_capped_under_other() -> None:
    """Keys past the 30th (in key order) and keys or values over 256 characters count as `(other)`."""
    props: dict[str, Any] = {f"k{i:02d}": i for i in range(MAX_KEYS_PER_EVENT + 5)}
    props["long"] = "v" * (MAX_TEXT + 1)
    props["k" * (MAX_TEXT + 1)] = "x"
    pairs = prop_pairs(props)
    assert len(pairs) == len(props)
    kept = [p for p in pairs if p[0] != "(other)"]
    assert len(kept) == MAX_KEYS_PER_EVENT and kept[0] == ("k00", "0")
    assert Counter(p for p in pairs if p[0] == "(other)") == {("(other)", "(other)"): len(props) - MAX_KEYS_PER_EVENT}
    assert prop_pairs({"long": "v" * (MAX_TEXT + 1), "ok": "v" * MAX_TEXT}) == [("long", "(other)"), ("ok", "v" * 256)]


def report(settings: Any, *args: str) -> Any:
    res = CliRunner().invoke(
        app, ["report", "events", *args, "--database-url", settings.database_url, "--schema", settings.db_schema]
    )
    assert res.exit_code == 0, res.output
    return res


def test_events_view_breaks_an_event_down_by_property(
    make_settings: Any, schema: str, r: redis.Redis, stream: str, daemons: Daemons
) -> None:
    """Synthetic custom events (JSON and flat `props.<key>` forms, producer retries included) go
    through a real daemon; `report events` gives the events per name and `--name` the events per
    property key and value, equal to the truth counted from the events meant; CSV says the same."""
    now = int(time.time() * 1000)
    entries = list(Generator(seed=5, now_ms=now, days=1, bad_ratio=0).entries(3000))
    produce(r, stream, entries)
    extra = {"type": "custom", "site": SITE, "ts": now - 1000, "name": "video_play"}
    r.xadd(stream, {"event": json.dumps({**extra, "props": {f"k{i:02d}": "x" for i in range(32)}})})
    settings = make_settings()
    assert daemons.start(settings, "--drain").wait(timeout=120) == 0, daemons.logs()[-2000:]

    custom = [e for e in valid_events(entries) if e["type"] == "custom" and e["site"] == SITE]
    data = json.loads(report(settings, "--site", SITE, "--last", "2d", "--json").stdout)
    names = Counter(e["name"] for e in custom) + Counter({"video_play": 1})
    assert {e["name"]: e["events"] for e in data["events"]} == dict(names)

    data = json.loads(report(settings, "--site", SITE, "--last", "2d", "--name", "video_play", "--json").stdout)
    want: Counter[tuple[str, str]] = Counter()
    for e in custom:
        if e["name"] == "video_play":
            for k, v in (e.get("props") or {}).items():
                want[(k, str(v))] += 1
    want.update({(f"k{i:02d}", "x"): 1 for i in range(30)})
    want[("(other)", "(other)")] += 2
    got = {(k, v["value"]): v["events"] for k, values in data["properties"].items() for v in values}
    assert got == dict(want)
    rows = list(
        csv.DictReader(
            io.StringIO(report(settings, "--site", SITE, "--last", "2d", "--name", "video_play", "--csv").stdout)
        )
    )
    assert {(row["key"], row["value"]): int(row["events"]) for row in rows} == dict(want)
    assert {row["name"] for row in rows} == {"video_play"}
    human = report(settings, "--site", SITE, "--last", "2d", "--name", "video_play").stdout
    assert "video_play — plan" in human and "pro" in human


@pytest.mark.parametrize("flag", [["--name", "nope"], []])
def test_events_view_without_properties_says_so(
    make_settings: Any, schema: str, r: redis.Redis, stream: str, daemons: Daemons, flag: list[str]
) -> None:
    """An event name without properties (or none asked) renders without error."""
    now = int(time.time() * 1000)
    r.xadd(stream, {"type": "custom", "site": SITE, "ts": str(now), "name": "nope"})
    settings = make_settings()
    assert daemons.start(settings, "--drain").wait(timeout=120) == 0, daemons.logs()[-2000:]
    res = report(settings, "--site", SITE, *flag)
    assert "nope" in res.stdout
