"""Tests for the event contract: ``streamproc.core.decode`` over ``streamproc.core.events``.

Every test uses a fixed ``NOW_MS`` so results do not depend on the wall clock.
Hypothesis runs derandomized and without an example database, so the file is
deterministic and writes nothing to the tree.
"""

from __future__ import annotations

import datetime as dt
import json
import string
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.core.decode import (
    DEFAULT_MAX_ENTRY_BYTES,
    Accepted,
    Decoded,
    Rejected,
    decode_batch,
    decode_entry,
)
from streamproc.core.events import (
    PATH_MAX,
    SHORT_MAX,
    SITE_MAX,
    TEXT_MAX,
    ApiRequest,
    Click,
    Conversion,
    Custom,
    PageView,
)

NOW_MS = 1_800_000_000_000  # 2027-01-15T08:00:00Z
DAY_MS = 86_400_000
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
EID = b"1800000000000-0"

PROPS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


# --------------------------------------------------------------------------- helpers


def as_json(event: Mapping[str, Any]) -> dict[bytes, bytes]:
    """Entry fields carrying ``event`` in JSON form (Decimals become JSON strings)."""
    return {b"event": msgspec.json.encode(dict(event))}


def flat_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def as_flat(event: Mapping[str, Any]) -> dict[bytes, bytes]:
    """Entry fields carrying ``event`` in flat form (``None`` attributes omitted)."""
    return {k.encode(): flat_value(v).encode() for k, v in event.items() if v is not None}


def decode(fields: Mapping[bytes, bytes] | None, **kw: Any) -> Accepted | Rejected:
    return decode_entry(EID, fields, NOW_MS, **kw)


def accept(fields: Mapping[bytes, bytes] | None) -> Accepted:
    result = decode(fields)
    assert isinstance(result, Accepted), result
    assert result.entry_id == EID
    return result


def reject(fields: Mapping[bytes, bytes] | None, **kw: Any) -> Rejected:
    result = decode(fields, **kw)
    assert isinstance(result, Rejected), result
    assert result.entry_id == EID
    assert isinstance(result.reason, str)
    assert result.reason.strip()
    assert result.fields == (fields or {})
    return result


def never_raises(fields: Mapping[bytes, bytes] | None) -> Accepted | Rejected:
    result = decode(fields)
    assert isinstance(result, Accepted | Rejected)
    if isinstance(result, Rejected):
        assert result.reason.strip()
        assert result.fields == (fields or {})
    return result


def iso_ms(text: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 string, computed independently."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (value - EPOCH) // dt.timedelta(milliseconds=1)


def page_view(**kw: Any) -> dict[str, Any]:
    return {"type": "page_view", "site": "example.com", "ts": NOW_MS, "path": "/home", **kw}


def click(**kw: Any) -> dict[str, Any]:
    return {"type": "click", "site": "example.com", "ts": NOW_MS, "path": "/", "x": 0.25, "y": 0.75, **kw}


def api_request(**kw: Any) -> dict[str, Any]:
    base = {"type": "api_request", "site": "example.com", "ts": NOW_MS, "method": "GET"}
    return {**base, "route": "/api/items/:id", "status": 200, "duration_ms": 12.5, **kw}


def conversion(**kw: Any) -> dict[str, Any]:
    return {"type": "conversion", "site": "example.com", "ts": NOW_MS, "name": "signup", **kw}


def custom(**kw: Any) -> dict[str, Any]:
    return {"type": "custom", "site": "example.com", "ts": NOW_MS, "name": "video_play", **kw}


def without(event: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != key}


# --------------------------------------------------------------------------- 1. accepted


def test_page_view_json_all_attributes() -> None:
    """A JSON page_view with every optional attribute decodes into an equal PageView."""
    attrs = {
        "id": "e-1",
        "session": "s-1",
        "visitor": "v-1",
        "referrer": "https://ref.example/",
        "device": "mobile",
        "browser": "Firefox",
        "os": "Linux",
        "country": "NL",
        "utm_source": "news",
        "utm_medium": "email",
        "utm_campaign": "spring",
    }
    result = accept(as_json(page_view(**attrs)))
    assert result.event == PageView(site="example.com", ts=NOW_MS, path="/home", **attrs)
    assert result.ts_ms == NOW_MS


def test_page_view_flat_minimal() -> None:
    """A flat page_view with only required attributes gets None for every optional one."""
    result = accept(as_flat(page_view()))
    assert result.event == PageView(site="example.com", ts=NOW_MS, path="/home")
    assert result.event.referrer is None and result.event.utm_campaign is None
    assert result.ts_ms == NOW_MS


def test_page_view_flat_all_attributes_equals_json() -> None:
    """Flat and JSON forms of the same page_view produce equal structs."""
    event = page_view(
        referrer="r",
        device="d",
        browser="b",
        os="o",
        country="c",
        utm_source="s",
        utm_medium="m",
        utm_campaign="c2",
        session="s1",
    )
    assert accept(as_flat(event)).event == accept(as_json(event)).event


@pytest.mark.parametrize("form", [as_json, as_flat], ids=["json", "flat"])
def test_click_both_forms(form: Any) -> None:
    """A click carries path, float x/y in [0,1] and an optional selector in both forms."""
    result = accept(form(click(selector="#buy > button", x=0.0, y=1.0)))
    assert isinstance(result.event, Click)
    assert (result.event.x, result.event.y) == (0.0, 1.0)
    assert isinstance(result.event.x, float) and isinstance(result.event.y, float)
    assert result.event.selector == "#buy > button"
    assert result.event.path == "/"


def test_click_flat_numbers_parse_from_decimal_strings() -> None:
    """Flat click coordinates are decimal strings parsed to floats (including exponent form)."""
    fields = as_flat(click())
    fields[b"x"], fields[b"y"] = b"0.5", b"1e-05"
    result = accept(fields)
    assert (result.event.x, result.event.y) == (0.5, 1e-05)


@pytest.mark.parametrize("form", [as_json, as_flat], ids=["json", "flat"])
def test_api_request_both_forms(form: Any) -> None:
    """An api_request keeps method, route, int status and float duration_ms."""
    result = accept(form(api_request(status=503, duration_ms=0.0)))
    assert result.event == ApiRequest(
        site="example.com", ts=NOW_MS, method="GET", route="/api/items/:id", status=503, duration_ms=0.0
    )
    assert type(result.event.status) is int
    assert isinstance(result.event.duration_ms, float)


@pytest.mark.parametrize("status", [100, 599])
def test_api_request_status_bounds_inclusive(status: int) -> None:
    """HTTP status 100 and 599 are the inclusive bounds of the accepted range."""
    assert accept(as_json(api_request(status=status))).event.status == status
    assert accept(as_flat(api_request(status=status))).event.status == status


def test_api_request_flat_integer_duration() -> None:
    """A flat integer duration_ms string is accepted as a float."""
    fields = as_flat(api_request())
    fields[b"duration_ms"] = b"250"
    assert accept(fields).event.duration_ms == 250.0


def test_conversion_flat_revenue_exact_decimal() -> None:
    """Flat revenue "19.99" becomes exactly Decimal("19.99"), never a float."""
    result = accept(as_flat(conversion(revenue="19.99", currency="EUR")))
    assert isinstance(result.event, Conversion)
    assert isinstance(result.event.revenue, Decimal)
    assert result.event.revenue == Decimal("19.99")
    assert str(result.event.revenue) == "19.99"
    assert result.event.currency == "EUR"


@pytest.mark.parametrize("literal", ["0.1", "19.99", "1.10", "0", "123456.000001", "-5.5", "1e2"])
def test_conversion_json_number_revenue_is_exact(literal: str) -> None:
    """A JSON-number revenue is kept as the exact Decimal of its literal (0.1 stays 0.1)."""
    raw = b'{"type":"conversion","site":"s","ts":1800000000000,"name":"buy","revenue":' + literal.encode() + b"}"
    result = accept({b"event": raw})
    assert isinstance(result.event.revenue, Decimal)
    assert result.event.revenue == Decimal(literal)


def test_conversion_json_number_point_one_not_float() -> None:
    """JSON number 0.1 decodes to Decimal("0.1"), not the binary float 0.1000000000000000055..."""
    result = accept({b"event": b'{"type":"conversion","site":"s","ts":1800000000000,"name":"buy","revenue":0.1}'})
    assert result.event.revenue == Decimal("0.1")
    assert str(result.event.revenue) == "0.1"


def test_conversion_json_string_revenue_exact() -> None:
    """A JSON-string revenue is kept as the exact Decimal of the string."""
    result = accept(as_json(conversion(revenue="19.99")))
    assert result.event.revenue == Decimal("19.99")


@pytest.mark.parametrize("form", [as_json, as_flat], ids=["json", "flat"])
def test_conversion_without_revenue(form: Any) -> None:
    """A conversion needs only a name; revenue and currency default to None."""
    result = accept(form(conversion()))
    assert result.event == Conversion(site="example.com", ts=NOW_MS, name="signup")


def test_custom_json_with_props() -> None:
    """A JSON custom event keeps its props object verbatim."""
    props = {"a": 1, "b": [True, None, "x"], "c": {"d": 1.5}}
    result = accept(as_json(custom(props=props)))
    assert result.event == Custom(site="example.com", ts=NOW_MS, name="video_play", props=props)


def test_custom_flat_without_props() -> None:
    """A flat custom event (no props) decodes with props None."""
    result = accept(as_flat(custom()))
    assert result.event == Custom(site="example.com", ts=NOW_MS, name="video_play")


@pytest.mark.parametrize("form", [as_json, as_flat], ids=["json", "flat"])
def test_ts_int_ms(form: Any) -> None:
    """An integer ts is milliseconds since the epoch and passes through as ts_ms."""
    result = accept(form(page_view(ts=1_799_000_000_123)))
    assert result.event.ts == 1_799_000_000_123
    assert result.ts_ms == 1_799_000_000_123


@pytest.mark.parametrize(
    "text",
    [
        "2027-01-15T08:00:00Z",
        "2027-01-15T08:00:00+00:00",
        "2027-01-15T10:00:00.123+02:00",
        "2027-01-15T02:30:00.999-05:30",
        "2027-01-14T23:59:59.5-23:59",
        "2026-12-17T01:46:40+00:00",
    ],
)
@pytest.mark.parametrize("form", [as_json, as_flat], ids=["json", "flat"])
def test_ts_rfc3339_with_offset(form: Any, text: str) -> None:
    """An RFC 3339 ts (Z or any offset, with fractions) converts to the right UTC ts_ms."""
    result = accept(form(page_view(ts=text)))
    assert isinstance(result.event.ts, dt.datetime)
    assert result.event.ts.utcoffset() is not None
    assert result.ts_ms == iso_ms(text)


def test_ts_rfc3339_non_utc_offset_value() -> None:
    """10:00+02:00 and 08:00Z name the same instant, 1_800_000_000_000 ms."""
    assert accept(as_json(page_view(ts="2027-01-15T10:00:00+02:00"))).ts_ms == NOW_MS
    assert accept(as_json(page_view(ts="2027-01-15T03:00:00-05:00"))).ts_ms == NOW_MS


@pytest.mark.parametrize("form", [as_json, as_flat], ids=["json", "flat"])
def test_ts_exactly_one_day_ahead_accepted(form: Any) -> None:
    """A ts exactly 24 h after now is still accepted (the limit is inclusive)."""
    assert accept(form(page_view(ts=NOW_MS + DAY_MS))).ts_ms == NOW_MS + DAY_MS


def test_ts_epoch_zero_rejected() -> None:
    """ts 0 (the epoch itself) is never counted: nothing is ever counted in 1970."""
    assert "before 2000-01-01" in reject(as_json(page_view(ts=0))).reason


@pytest.mark.parametrize("form", [as_json, as_flat], ids=["json", "flat"])
def test_unknown_attributes_ignored(form: Any) -> None:
    """Unknown extra attributes are dropped without affecting the decoded event."""
    extra = page_view(colour="blue", props_x="1", **{"x-forwarded-for": "10.0.0.1"})
    assert accept(form(extra)).event == accept(form(page_view())).event


def test_unknown_json_attributes_of_any_json_type_ignored() -> None:
    """Unknown JSON attributes may hold any JSON value (object, array, null, number)."""
    extra = click(meta={"deep": [1, {"a": None}]}, tags=["a"], nothing=None, n=1e300)
    assert accept(as_json(extra)).event == accept(as_json(click())).event


def test_json_event_takes_precedence_over_flat_fields() -> None:
    """When an `event` field is present, the JSON form is used and other fields are ignored."""
    fields = {**as_json(click()), b"type": b"page_view", b"site": b"other"}
    result = accept(fields)
    assert isinstance(result.event, Click)
    assert result.event.site == "example.com"


def test_strings_at_their_limits_accepted() -> None:
    """site of 128, path/referrer of 2048 and short attributes of 256 chars are accepted."""
    event = page_view(site="s" * SITE_MAX, path="/" * PATH_MAX, referrer="r" * TEXT_MAX, device="d" * SHORT_MAX)
    result = accept(as_json(event))
    assert len(result.event.site) == SITE_MAX
    assert len(result.event.path) == PATH_MAX
    assert accept(as_flat(event)).event == result.event


def test_limits_count_characters_not_bytes() -> None:
    """String limits count characters, so 128 four-byte emoji is a valid site."""
    result = accept(as_json(page_view(site="😀" * SITE_MAX)))
    assert result.event.site == "😀" * SITE_MAX


# --------------------------------------------------------------------------- 2. rejected

LONG_SITE = "s" * (SITE_MAX + 1)

REJECTED: list[Any] = [
    # entry shape
    pytest.param(None, None, id="fields-none"),
    pytest.param({}, None, id="fields-empty"),
    pytest.param({b"foo": b"bar", b"site": b"x"}, "event", id="neither-event-nor-type"),
    # JSON form: not JSON / not an object
    pytest.param({b"event": b""}, "JSON", id="json-empty"),
    pytest.param({b"event": b"{not json"}, "JSON", id="json-malformed"),
    pytest.param({b"event": b'{"type":"click"'}, "JSON", id="json-truncated"),
    pytest.param({b"event": as_json(click())[b"event"] + b" trailing"}, "JSON", id="json-trailing"),
    pytest.param({b"event": b"[1,2]"}, "object", id="json-array"),
    pytest.param({b"event": b'"page_view"'}, "object", id="json-string"),
    pytest.param({b"event": b"42"}, "object", id="json-number"),
    pytest.param({b"event": b"null"}, "object", id="json-null"),
    pytest.param({b"event": b"\xff\xfe{}"}, None, id="json-invalid-utf8-outside-string"),
    # NaN / Infinity are not JSON
    pytest.param(
        {b"event": b'{"type":"click","site":"s","ts":1800000000000,"path":"/","x":NaN,"y":0.5}'}, None, id="json-nan"
    ),
    pytest.param(
        {
            b"event": b'{"type":"api_request","site":"s","ts":1800000000000,"method":"GET","route":"/",'
            b'"status":200,"duration_ms":Infinity}'
        },
        None,
        id="json-infinity",
    ),
    # type
    pytest.param(as_json(without(click(), "type")), "type", id="json-missing-type"),
    pytest.param(as_json(click(type="purchase")), "type", id="json-unknown-type"),
    pytest.param(as_json(click(type=1)), "type", id="json-type-not-string"),
    pytest.param(as_flat(click(type="purchase")), "type", id="flat-unknown-type"),
    pytest.param(as_flat(click(type="")), "type", id="flat-empty-type"),
    # site
    pytest.param(as_json(without(page_view(), "site")), "site", id="json-missing-site"),
    pytest.param(as_flat(without(page_view(), "site")), "site", id="flat-missing-site"),
    pytest.param(as_json(page_view(site="")), "site", id="json-empty-site"),
    pytest.param(as_flat(page_view(site="")), "site", id="flat-empty-site"),
    pytest.param(as_json(page_view(site=LONG_SITE)), "site", id="json-site-too-long"),
    pytest.param(as_flat(page_view(site=LONG_SITE)), "site", id="flat-site-too-long"),
    pytest.param(as_json(page_view(site=12)), "site", id="json-site-not-string"),
    # ts
    pytest.param(as_json(without(page_view(), "ts")), "ts", id="json-missing-ts"),
    pytest.param(as_flat(without(page_view(), "ts")), "ts", id="flat-missing-ts"),
    pytest.param(as_json(page_view(ts=NOW_MS + DAY_MS + 1)), "ts", id="json-ts-future-int"),
    pytest.param(as_flat(page_view(ts=NOW_MS + DAY_MS + 1)), "ts", id="flat-ts-future-int"),
    pytest.param(as_json(page_view(ts="2027-01-16T08:00:00.001Z")), "ts", id="json-ts-future-rfc3339"),
    pytest.param(as_json(page_view(ts="2027-01-16T10:00:01+02:00")), "ts", id="json-ts-future-offset"),
    pytest.param(as_json(page_view(ts="9999-12-31T23:59:59Z")), "ts", id="json-ts-year-9999"),
    pytest.param(as_json(page_view(ts=2**63)), "ts", id="json-ts-huge-int"),
    pytest.param(as_json(page_view(ts=-1)), "ts", id="json-ts-negative"),
    pytest.param(as_json(page_view(ts="1969-12-31T23:59:59Z")), "ts", id="json-ts-before-epoch"),
    pytest.param(as_json(page_view(ts="2027-01-15T08:00:00")), "ts", id="json-ts-no-offset"),
    pytest.param(as_flat(page_view(ts="2027-01-15T08:00:00")), "ts", id="flat-ts-no-offset"),
    pytest.param(as_json(page_view(ts="yesterday")), "ts", id="json-ts-garbage"),
    pytest.param(as_flat(page_view(ts="yesterday")), "ts", id="flat-ts-garbage"),
    pytest.param(as_json(page_view(ts=True)), "ts", id="json-ts-bool"),
    pytest.param(as_json(page_view(ts=1.8e99)), "ts", id="json-ts-float-far-future"),
    pytest.param(as_json(page_view(ts="1e400")), "ts", id="json-ts-infinite-string"),
    pytest.param(as_flat(page_view(ts="inf")), "ts", id="flat-ts-inf"),
    pytest.param(as_json(page_view(ts=NOW_MS - 31 * DAY_MS)), "max_event_age_days", id="json-ts-older-than-30-days"),
    pytest.param(as_flat(page_view(ts=NOW_MS - 31 * DAY_MS)), "max_event_age_days", id="flat-ts-older-than-30-days"),
    pytest.param(as_json(page_view(ts=20 * 86_400)), "before 2000-01-01", id="json-ts-seconds-in-1970"),
    pytest.param(as_flat(page_view(ts=1_795_168_800 // 1000)), "before 2000-01-01", id="flat-ts-1970-ms"),
    pytest.param(as_json(page_view(ts="2027-02-30T00:00:00Z")), "ts", id="json-ts-impossible-date"),
    # common optional strings
    pytest.param(as_json(page_view(id="i" * (SHORT_MAX + 1))), "id", id="json-id-too-long"),
    pytest.param(as_flat(page_view(session="s" * (SHORT_MAX + 1))), "session", id="flat-session-too-long"),
    pytest.param(as_json(page_view(visitor=7)), "visitor", id="json-visitor-not-string"),
    # page_view
    pytest.param(as_json(without(page_view(), "path")), "path", id="json-page-view-missing-path"),
    pytest.param(as_flat(without(page_view(), "path")), "path", id="flat-page-view-missing-path"),
    pytest.param(as_json(page_view(path="")), "path", id="json-empty-path"),
    pytest.param(as_json(page_view(path="/" * (PATH_MAX + 1))), "path", id="json-path-too-long"),
    pytest.param(as_flat(page_view(path="/" * (PATH_MAX + 1))), "path", id="flat-path-too-long"),
    pytest.param(as_json(page_view(referrer="r" * (TEXT_MAX + 1))), "referrer", id="json-referrer-too-long"),
    pytest.param(as_json(page_view(device="d" * (SHORT_MAX + 1))), "device", id="json-device-too-long"),
    pytest.param(
        as_flat(page_view(utm_campaign="c" * (SHORT_MAX + 1))), "utm_campaign", id="flat-utm-campaign-too-long"
    ),
    pytest.param(as_json(page_view(country=["NL"])), "country", id="json-country-not-string"),
    # click
    pytest.param(as_json(without(click(), "x")), "x", id="json-click-missing-x"),
    pytest.param(as_flat(without(click(), "y")), "y", id="flat-click-missing-y"),
    pytest.param(as_json(without(click(), "path")), "path", id="json-click-missing-path"),
    pytest.param(as_json(click(x=1.5)), "x", id="json-x-above-1"),
    pytest.param(as_json(click(y=-0.1)), "y", id="json-y-below-0"),
    pytest.param(as_flat(click(x=1.0000001)), "x", id="flat-x-above-1"),
    pytest.param(as_json(click(x="1.5")), "x", id="json-x-string-above-1"),
    pytest.param(as_flat(click(x="left")), "x", id="flat-x-not-number"),
    pytest.param(as_flat(click(x="nan")), "x", id="flat-x-nan"),
    pytest.param(as_flat(click(y="NaN")), "y", id="flat-y-NaN"),
    pytest.param(as_flat(click(x="inf")), "x", id="flat-x-inf"),
    pytest.param(as_flat(click(y="-Infinity")), "y", id="flat-y-neg-infinity"),
    pytest.param(as_json(click(selector="s" * (TEXT_MAX + 1))), "selector", id="json-selector-too-long"),
    # api_request
    pytest.param(as_json(without(api_request(), "method")), "method", id="json-missing-method"),
    pytest.param(as_json(without(api_request(), "route")), "route", id="json-missing-route"),
    pytest.param(as_flat(without(api_request(), "status")), "status", id="flat-missing-status"),
    pytest.param(as_json(without(api_request(), "duration_ms")), "duration_ms", id="json-missing-duration"),
    pytest.param(as_json(api_request(status=99)), "status", id="json-status-99"),
    pytest.param(as_json(api_request(status=600)), "status", id="json-status-600"),
    pytest.param(as_flat(api_request(status=600)), "status", id="flat-status-600"),
    pytest.param(as_flat(api_request(status="OK")), "status", id="flat-status-not-number"),
    pytest.param(as_json(api_request(status=200.5)), "status", id="json-status-float"),
    pytest.param(as_json(api_request(status="OK")), "status", id="json-status-not-number"),
    pytest.param(as_json(api_request(status="600")), "status", id="json-status-string-600"),
    pytest.param(as_json(api_request(status=True)), "status", id="json-status-bool"),
    pytest.param(as_json(api_request(duration_ms=-1)), "duration_ms", id="json-duration-negative"),
    pytest.param(as_flat(api_request(duration_ms=-0.5)), "duration_ms", id="flat-duration-negative"),
    pytest.param(as_flat(api_request(duration_ms="nan")), "duration_ms", id="flat-duration-nan"),
    pytest.param(as_flat(api_request(duration_ms="inf")), "duration_ms", id="flat-duration-inf"),
    pytest.param(as_json(api_request(method="")), "method", id="json-method-empty"),
    # conversion
    pytest.param(as_json(without(conversion(), "name")), "name", id="json-conversion-missing-name"),
    pytest.param(as_flat(without(conversion(), "name")), "name", id="flat-conversion-missing-name"),
    pytest.param(as_json(conversion(name="")), "name", id="json-conversion-empty-name"),
    pytest.param(as_json(conversion(revenue="abc")), "revenue", id="json-revenue-garbage"),
    pytest.param(as_flat(conversion(revenue="12,50")), "revenue", id="flat-revenue-comma"),
    pytest.param(as_flat(conversion(revenue="")), "revenue", id="flat-revenue-empty"),
    pytest.param(as_json(conversion(revenue=True)), "revenue", id="json-revenue-bool"),
    pytest.param(as_json(conversion(revenue="NaN")), "revenue", id="json-revenue-nan"),
    pytest.param(as_flat(conversion(revenue="nan")), "revenue", id="flat-revenue-nan"),
    pytest.param(as_json(conversion(revenue="sNaN")), "revenue", id="json-revenue-snan"),
    pytest.param(as_json(conversion(revenue="Infinity")), "revenue", id="json-revenue-infinity"),
    pytest.param(as_flat(conversion(revenue="-Infinity")), "revenue", id="flat-revenue-neg-infinity"),
    pytest.param(as_json(conversion(currency="EURO-DOLLAR")), "currency", id="json-currency-too-long"),
    # custom
    pytest.param(as_json(without(custom(), "name")), "name", id="json-custom-missing-name"),
    pytest.param(as_json(custom(props=[1, 2])), "props", id="json-props-array"),
    pytest.param(as_json(custom(props="{}")), "props", id="json-props-string"),
    pytest.param(as_json(custom(props={"a": 1}, name=5)), "name", id="json-custom-name-not-string"),
    # flat form UTF-8
    pytest.param({**as_flat(page_view()), b"site": b"ex\xffample"}, "UTF-8", id="flat-invalid-utf8-value"),
    pytest.param({**as_flat(page_view()), b"\xc3\x28": b"x"}, "UTF-8", id="flat-invalid-utf8-key"),
    pytest.param({**as_flat(page_view()), b"junk": b"\xed\xa0\x80"}, "UTF-8", id="flat-surrogate-utf8"),
    # entry size
    pytest.param(
        as_json(custom(props={"blob": "x" * DEFAULT_MAX_ENTRY_BYTES})), "limit", id="json-entry-over-default-limit"
    ),
    pytest.param(
        {**as_flat(page_view()), b"pad": b"p" * DEFAULT_MAX_ENTRY_BYTES}, "limit", id="flat-entry-over-default-limit"
    ),
]


@pytest.mark.parametrize(("fields", "mentions"), REJECTED)
def test_rejected(fields: Mapping[bytes, bytes] | None, mentions: str | None) -> None:
    """Each bad-input class is Rejected with a readable reason naming the offending attribute."""
    result = reject(fields)
    if mentions is not None:
        assert mentions in result.reason, result.reason
    if fields:
        assert result.fields is fields


def test_rejected_reason_points_at_attribute_path() -> None:
    """Validation reasons give the JSON path of the bad attribute, e.g. `$.status`."""
    assert "$.status" in reject(as_json(api_request(status=700))).reason
    assert "$.ts" in reject(as_json(page_view(ts=NOW_MS + 2 * DAY_MS))).reason
    assert "$.site" in reject(as_flat(page_view(site=LONG_SITE))).reason


def test_entry_size_limit_is_configurable() -> None:
    """max_entry_bytes counts keys plus values; one byte over the limit is Rejected."""
    fields = as_flat(page_view())
    size = sum(len(k) + len(v) for k, v in fields.items())
    assert isinstance(decode_entry(EID, fields, NOW_MS, max_entry_bytes=size), Accepted)
    result = decode_entry(EID, fields, NOW_MS, max_entry_bytes=size - 1)
    assert isinstance(result, Rejected)
    assert str(size) in result.reason and "limit" in result.reason


def test_future_limit_is_relative_to_now_ms() -> None:
    """The 24 h future limit is measured from the now_ms argument, not the wall clock."""
    fields = as_json(page_view(ts=NOW_MS))
    assert isinstance(decode_entry(EID, fields, NOW_MS - DAY_MS), Accepted)
    assert isinstance(decode_entry(EID, fields, NOW_MS - DAY_MS - 1), Rejected)


# --------------------------------------------------------------------------- edge cases once found escaping

_HUGE_REVENUE = [
    pytest.param(as_json(conversion(revenue="1E+1000000")), id="json-string"),
    pytest.param(
        {b"event": b'{"type":"conversion","site":"s","ts":1800000000000,"name":"n","revenue":1E+1000000}'},
        id="json-number",
    ),
    pytest.param(as_flat(conversion(revenue="-1E+1000000")), id="flat"),
]


@pytest.mark.parametrize("fields", _HUGE_REVENUE)
def test_revenue_with_huge_exponent_rejected_not_raised(fields: dict[bytes, bytes]) -> None:
    """A revenue like 1E+1000000 is Rejected (over the magnitude limit), never raises."""
    assert "revenue" in reject(fields).reason


@pytest.mark.parametrize(
    ("revenue", "currency", "kept"),
    [
        ("0.1000000000000000000000000000001", None, "0.100000"),
        ("123456789012.0000000000000000000001", "", "123456789012.000000"),
        ("0.0000001", None, "0.000000"),
        ("0.0000005", None, "0.000000"),  # half-even: to the even neighbour
        ("0.0000015", None, "0.000002"),
        ("10.005", "EUR", "10.00"),
        ("10.015", "eur", "10.02"),
        ("5000.5", "JPY", "5000"),
        ("1.2345", "BHD", "1.234"),
        ("1.23456", "CLF", "1.2346"),
        ("1.1234567", "XAU", "1.123457"),  # no minor unit: 6 places
        ("1.1234567", "ZZZ", "1.123457"),  # not an ISO 4217 code: 6 places
    ],
)
@pytest.mark.parametrize("form", [as_json, as_flat], ids=["json", "flat"])
def test_revenue_rounds_half_even_to_the_currency_minor_unit(
    revenue: str, currency: str | None, kept: str, form: Any
) -> None:
    """Revenue with more places than its currency's ISO 4217 minor unit (6 without one) is
    rounded half-even, the same in both forms, however many digits it has."""
    result = accept(form(conversion(revenue=revenue, currency=currency)))
    assert str(result.event.revenue) == kept


@pytest.mark.parametrize(
    ("literal", "currency", "kept"),
    [
        ("89.69999999999999", "EUR", "89.70"),
        ("0.30000000000000004", "USD", "0.30"),
        ("4999.999999999999", "JPY", "5000"),
        ("0.1", None, "0.1"),
    ],
)
def test_revenue_javascript_float_json_number_rounds(literal: str, currency: str | None, kept: str) -> None:
    """`29.9*3` in JavaScript serialises as 89.69999999999999: accepted as a JSON number and
    counted as 89.70 EUR (other float artefacts likewise); an exact amount is kept as sent."""
    cur = b"" if currency is None else b',"currency":"' + currency.encode() + b'"'
    raw = b'{"type":"conversion","site":"s","ts":1800000000000,"name":"buy","revenue":' + literal.encode() + cur + b"}"
    assert str(accept({b"event": raw}).event.revenue) == kept


@pytest.mark.parametrize("revenue", ["abc", "1,50", "12 EUR", "0x10", "", "1.2.3", "--1"])
@pytest.mark.parametrize("form", [as_json, as_flat], ids=["json", "flat"])
def test_revenue_strings_that_are_not_decimals_rejected(revenue: str, form: Any) -> None:
    """A revenue string that is not a decimal number is still Rejected, naming revenue."""
    assert "revenue" in reject(form(conversion(revenue=revenue, currency="EUR"))).reason


def test_revenue_magnitude_limit() -> None:
    """Revenue of 10^12 or more in magnitude is Rejected naming revenue."""
    assert "revenue" in reject(as_json(conversion(revenue="1000000000000"))).reason
    assert "revenue" in reject(as_flat(conversion(revenue="-1E+12"))).reason


@pytest.mark.parametrize("revenue", ["0E+1000000", "0E+12"])
def test_revenue_whose_written_scale_postgres_cannot_store_is_rejected(revenue: str) -> None:
    """A zero written with an exponent beyond what a numeric sum can keep is Rejected naming
    revenue (Postgres answers "value overflows numeric format")."""
    assert "exponent" in reject(as_json(conversion(revenue=revenue))).reason
    assert "exponent" in reject(as_flat(conversion(revenue=revenue))).reason


@pytest.mark.parametrize(
    ("revenue", "kept"), [("0E-1000000", "0.00"), ("0." + "0" * 31, "0.00"), ("1." + "0" * 31, "1.00")]
)
def test_revenue_written_with_too_many_places_is_stored_at_the_currency_scale(revenue: str, kept: str) -> None:
    """Places beyond the currency's minor unit are rounded away, trailing zeros included, so
    "0E-1000000" (which made Postgres answer "value overflows numeric format") is stored as 0.00."""
    for form in (as_json, as_flat):
        assert str(accept(form(conversion(revenue=revenue, currency="EUR"))).event.revenue) == kept


@pytest.mark.parametrize("revenue", ["0", "0.00", "0E+11", "1.000000000000000000000000000000", "-0.0"])
def test_revenue_written_with_trailing_zeros_within_limits_is_accepted(revenue: str) -> None:
    """Trailing zeros up to 30 written places (and zero in any such form) stay accepted."""
    accept(as_json(conversion(revenue=revenue)))


_BAD_UTF8_IN_JSON_STRING = [
    pytest.param(b'{"type":"click","site":"\xff","ts":1800000000000,"path":"/","x":0.5,"y":0.5}', id="site-0xff"),
    pytest.param(
        b'{"type":"custom","site":"s","ts":1800000000000,"name":"n","props":{"a":"\xed\xa0\x80"}}', id="props-surrogate"
    ),
    pytest.param(b'{"type":"page_view","site":"s","ts":1800000000000,"path":"/\xc3\x28"}', id="path-bad-continuation"),
]


@pytest.mark.parametrize("raw", _BAD_UTF8_IN_JSON_STRING)
def test_json_invalid_utf8_in_string_rejected_not_raised(raw: bytes) -> None:
    """Invalid UTF-8 inside a JSON string value is Rejected, never raises."""
    reject({b"event": raw})


def test_json_invalid_utf8_in_unknown_attribute_rejected() -> None:
    """Invalid UTF-8 anywhere in the `event` JSON is Rejected, as in the flat form."""
    reject({b"event": b'{"type":"click","site":"s","ts":1800000000000,"path":"/","x":0.5,"y":0.5,"note":"\xff"}'})


def test_ts_just_before_epoch_rejected() -> None:
    """An RFC 3339 ts a fraction of a millisecond before 1970 is Rejected like any pre-1970 ts."""
    assert "ts" in reject(as_json(page_view(ts="1969-12-31T23:59:59.9999Z"))).reason


def _nested_props_entry(depth: int, kind: str) -> dict[bytes, bytes]:
    opener, closer = (b'{"a":', b"}") if kind == "object" else (b"[", b"]")
    leaf = b"1" if kind == "object" else b""
    props = b'{"k":' + opener * depth + leaf + closer * depth + b"}"
    return {b"event": b'{"type":"custom","site":"s","ts":1800000000000,"name":"n","props":' + props + b"}"}


@pytest.mark.parametrize(
    ("depth", "kind"),
    [
        (10, "object"),
        (10, "array"),
        (200, "object"),
        (200, "array"),
        (10_000, "object"),
        (10_000, "array"),
    ],
)
def test_deeply_nested_props_never_raise(depth: int, kind: str) -> None:
    """Deeply nested props JSON is Accepted or Rejected, never raises."""
    fields = _nested_props_entry(depth, kind)
    assert sum(len(v) for v in fields.values()) < DEFAULT_MAX_ENTRY_BYTES
    never_raises(fields)


# --------------------------------------------------------------------------- 3. properties

JSON_TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b'"',
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-1",
    b"1e309",
    b"NaN",
    b"Infinity",
    b"0.5",
    b'"type"',
    b'"page_view"',
    b'"click"',
    b'"api_request"',
    b'"conversion"',
    b'"custom"',
    b'"site"',
    b'"ts"',
    b'"path"',
    b'"x"',
    b'"y"',
    b'"status"',
    b'"revenue"',
    b'"props"',
    b'"name"',
    b" ",
    b"\n",
]

json_ish = st.lists(st.sampled_from(JSON_TOKENS), max_size=40).map(b"".join)


@PROPS
@given(raw=st.one_of(st.binary(max_size=512), json_ish))
def test_prop_arbitrary_event_bytes_never_raise(raw: bytes) -> None:
    """Any bytes in the `event` field give Accepted or Rejected, never an exception."""
    never_raises({b"event": raw})


@PROPS
@given(raw=json_ish)
def test_prop_json_prefixed_event_bytes_never_raise(raw: bytes) -> None:
    """Token soup after a valid event prefix gives Accepted or Rejected, never an exception."""
    never_raises({b"event": b'{"type":"custom","site":"s","ts":1800000000000,"name":"n","props":' + raw})


FIELD_KEYS = [
    b"type",
    b"site",
    b"ts",
    b"path",
    b"x",
    b"y",
    b"method",
    b"route",
    b"status",
    b"duration_ms",
    b"name",
    b"revenue",
    b"currency",
    b"props",
    b"id",
    b"event",
]
FIELD_VALUES = [
    b"page_view",
    b"click",
    b"api_request",
    b"conversion",
    b"custom",
    b"",
    b"0",
    b"1",
    b"0.5",
    b"-1",
    b"1800000000000",
    b"2027-01-15T08:00:00Z",
    b"nan",
    b"inf",
    b"{}",
    b"19.99",
    b"\xff",
    b"\x00",
    b"GET",
    b"/",
]


@PROPS
@given(
    fields=st.dictionaries(
        keys=st.one_of(st.sampled_from(FIELD_KEYS), st.binary(max_size=16)),
        values=st.one_of(st.sampled_from(FIELD_VALUES), st.binary(max_size=64)),
        max_size=12,
    )
)
def test_prop_arbitrary_fields_never_raise(fields: dict[bytes, bytes]) -> None:
    """Any mapping of bytes to bytes gives Accepted or Rejected, never an exception."""
    never_raises(fields)


# Valid-event strategies ------------------------------------------------------


def text(min_size: int = 0, max_size: int = 32) -> st.SearchStrategy[str]:
    """Valid text: any UTF-8 character but NUL (Postgres text cannot hold it; rejected, tested above)."""
    return st.text(st.characters(codec="utf-8", blacklist_characters="\x00"), min_size=min_size, max_size=max_size)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[int | str, int]:
    """A valid ts (int ms or RFC 3339 with offset) and its expected ts_ms."""
    ms = draw(st.integers(min_value=NOW_MS - 30 * DAY_MS, max_value=NOW_MS + DAY_MS))
    form = draw(st.sampled_from(["ms", "s", "rfc3339"]))
    if form == "ms":
        return ms, ms
    if form == "s":
        return ms // 1000, ms // 1000 * 1000
    offset = dt.timezone(dt.timedelta(minutes=draw(st.integers(min_value=-1439, max_value=1439))))
    local = (EPOCH + dt.timedelta(milliseconds=ms)).astimezone(offset)
    rendered = local.isoformat(timespec=draw(st.sampled_from(["seconds", "milliseconds"])))
    if rendered.endswith("+00:00") and draw(st.booleans()):
        rendered = rendered[: -len("+00:00")] + "Z"
    # "seconds" drops the sub-second part, so the expected instant does too
    return rendered, iso_ms(rendered)


unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def revenue_values(draw: st.DrawFn) -> Decimal:
    places = draw(st.integers(min_value=0, max_value=6))
    return draw(st.decimals(min_value=0, max_value=10**9, places=places, allow_nan=False, allow_infinity=False))


@st.composite
def valid_events(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    """A valid page_view/click/api_request/conversion dict and its expected ts_ms."""
    ts, ts_ms = draw(timestamps())
    common = {
        "site": draw(text(1, SITE_MAX)),
        "ts": ts,
        "id": draw(optional(text(0, SHORT_MAX))),
        "session": draw(optional(text(0, SHORT_MAX))),
        "visitor": draw(optional(text(0, SHORT_MAX))),
    }
    kind = draw(st.sampled_from(["page_view", "click", "api_request", "conversion"]))
    specific: dict[str, Any]
    if kind == "page_view":
        specific = {"path": draw(text(1, PATH_MAX)), "referrer": draw(optional(text(0, TEXT_MAX)))}
        for key in ("device", "browser", "os", "country", "utm_source", "utm_medium", "utm_campaign"):
            specific[key] = draw(optional(text(0, SHORT_MAX)))
    elif kind == "click":
        specific = {
            "path": draw(text(1, PATH_MAX)),
            "x": draw(unit),
            "y": draw(unit),
            "selector": draw(optional(text(0, TEXT_MAX))),
        }
    elif kind == "api_request":
        specific = {
            "method": draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])),
            "route": draw(text(1, PATH_MAX)),
            "status": draw(st.integers(min_value=100, max_value=599)),
            "duration_ms": draw(st.floats(min_value=0.0, max_value=1e6, allow_nan=False)),
        }
    else:
        specific = {
            "name": draw(text(1, SHORT_MAX)),
            "revenue": draw(optional(revenue_values())),
            "currency": draw(optional(st.sampled_from(["EUR", "USD", "JPY", ""]))),
        }
    extras = draw(
        st.dictionaries(
            st.text(string.ascii_lowercase, min_size=1, max_size=8).map("zz_".__add__), text(0, 16), max_size=3
        )
    )
    return {"type": kind, **common, **specific, **extras}, ts_ms


@PROPS
@given(case=valid_events())
def test_prop_valid_events_accepted_equally_in_both_forms(case: tuple[dict[str, Any], int]) -> None:
    """A generated valid event is Accepted in JSON and flat form, with equal structs and the right ts_ms."""
    event, ts_ms = case
    from_json = accept(as_json(event))
    from_flat = accept(as_flat(event))
    assert from_json.event == from_flat.event
    assert from_json.ts_ms == from_flat.ts_ms == ts_ms
    decoded = from_json.event
    assert type(decoded).__struct_config__.tag == event["type"]
    for key, value in event.items():
        if key in ("type", "ts") or key.startswith("zz_"):
            continue
        assert getattr(decoded, key) == value, key
        assert getattr(from_flat.event, key) == value, key


def test_revenue_json_number_and_string_forms_agree() -> None:
    """revenue as a JSON number, a JSON string and a flat string yield the same Decimal."""
    for literal in ["0.1", "19.99", "999999999.999999", "0.000001"]:
        raw = b'{"type":"conversion","site":"s","ts":1800000000000,"name":"n","revenue":' + literal.encode() + b"}"
        as_number = {b"event": raw}
        event = conversion(ts=1800000000000, site="s", name="n", revenue=literal)
        values = {accept(f).event.revenue for f in (as_number, as_json(event), as_flat(event))}
        assert values == {Decimal(literal)}


# Hostile strings -------------------------------------------------------------

HOSTILE = [
    "'; DROP TABLE events; --",
    '" OR 1=1 --',
    "%' OR ''='",
    "\\",
    "\\x00",
    "$$ ; $$",
    "\x00",
    "a\x00b",
    "😀",
    "👨‍👩‍👧‍👦",
    "\u202eevil\u202c",
    "עברית",
    "مرحبا",
    "\ufeff",
    "\u200b",
    "\U0010ffff",
    "\r\n",
    "\t",
    "<script>alert(1)</script>",
    "{}",
    "[]",
    "null",
    "NaN",
    " ",
    "%s%n%x",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]

hostile_text = st.lists(st.one_of(st.sampled_from(HOSTILE), text(0, 4)), max_size=8).map("".join)


@PROPS
@given(site=hostile_text, path=hostile_text, name=hostile_text, referrer=hostile_text)
def test_prop_hostile_strings_round_trip(site: str, path: str, name: str, referrer: str) -> None:
    """SQL metacharacters and odd unicode (RTL, emoji) are kept verbatim when in limits, never raise;
    a NUL, which Postgres text cannot hold, is rejected with its field named."""
    for event in (page_view(site=site, path=path, referrer=referrer), custom(site=site, name=name)):
        for fields in (as_json(event), as_flat(event)):
            result = never_raises(fields)
            valid = 1 <= len(site) <= SITE_MAX and len(path) >= 1 and len(name) >= 1
            stored = (site, path, referrer) if event["type"] == "page_view" else (site, name)
            if valid and any("\x00" in value for value in stored):
                assert isinstance(result, Rejected) and "contains a NUL character" in result.reason, result
            elif valid:
                assert isinstance(result, Accepted), result
                assert result.event.site == site
                if isinstance(result.event, PageView):
                    assert (result.event.path, result.event.referrer) == (path, referrer)
                else:
                    assert result.event.name == name
            elif not site or len(site) > SITE_MAX:
                assert isinstance(result, Rejected)
                assert "site" in result.reason


@PROPS
@given(
    props=st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**63), 2**63 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
            text(0, 8),
        ),
        lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(text(0, 8), children, max_size=4)),
        max_leaves=30,
    ).map(lambda v: {"v": v})
)
def test_prop_custom_props_round_trip(props: dict[str, Any]) -> None:
    """Any JSON object as custom props is Accepted and kept equal to what was sent."""
    result = accept({b"event": json.dumps(custom(props=props), allow_nan=False).encode()})
    assert result.event.props == props


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(page_view(site="s" * 100_000), id="huge-site"),
        pytest.param(page_view(path="/" * 60_000), id="huge-path-under-entry-limit"),
        pytest.param(page_view(referrer="😀" * 20_000), id="huge-emoji-referrer"),
        pytest.param(custom(name="n" * 1_000_000), id="megabyte-name"),
        pytest.param(conversion(revenue="9" * 60_000), id="huge-revenue-digits"),
        pytest.param(api_request(status=10**4000), id="huge-int-status"),
    ],
)
@pytest.mark.parametrize("form", [as_json, as_flat], ids=["json", "flat"])
def test_huge_values_rejected_not_raised(event: dict[str, Any], form: Any) -> None:
    """Huge strings and numbers are Rejected (attribute limit or entry-size limit), never raise."""
    if form is as_json and isinstance(event.get("status"), int):
        fields = {b"event": json.dumps(event).encode()}
    else:
        fields = form(event)
    reject(fields)


# --------------------------------------------------------------------------- 4. decode_batch


def test_decode_batch_splits_and_keeps_order() -> None:
    """decode_batch puts each entry in accepted or rejected, preserving input order in both."""
    entries = [
        (b"1-0", as_json(page_view())),
        (b"2-0", {b"event": b"nope"}),
        (b"3-0", as_flat(click())),
        (b"4-0", None),
        (b"5-0", as_json(api_request(status=42))),
        (b"6-0", as_flat(conversion(revenue="19.99"))),
        (b"7-0", as_json(custom(props={"k": "v"}))),
        (b"8-0", {}),
    ]
    result = decode_batch(entries, now_ms=NOW_MS)
    assert isinstance(result, Decoded)
    assert [a.entry_id for a in result.accepted] == [b"1-0", b"3-0", b"6-0", b"7-0"]
    assert [r.entry_id for r in result.rejected] == [b"2-0", b"4-0", b"5-0", b"8-0"]
    assert [type(a.event) for a in result.accepted] == [PageView, Click, Conversion, Custom]
    assert result.rejected[0].fields == {b"event": b"nope"}
    assert "status" in result.rejected[2].reason
    assert all(r.reason for r in result.rejected)


def test_decode_batch_matches_decode_entry() -> None:
    """decode_batch gives the same result per entry as decode_entry with the same now_ms and limit."""
    entries = [(f"{i}-0".encode(), as_json(page_view(ts=NOW_MS + i * DAY_MS // 2))) for i in range(5)]
    result = decode_batch(iter(entries), now_ms=NOW_MS, max_entry_bytes=10_000)
    expected = [decode_entry(eid, f, NOW_MS, 10_000) for eid, f in entries]
    assert result.accepted == [e for e in expected if isinstance(e, Accepted)]
    assert result.rejected == [e for e in expected if isinstance(e, Rejected)]
    assert [a.entry_id for a in result.accepted] == [b"0-0", b"1-0", b"2-0"]


def test_decode_batch_passes_max_entry_bytes() -> None:
    """decode_batch applies its max_entry_bytes to every entry."""
    result = decode_batch([(b"1-0", as_flat(page_view()))], now_ms=NOW_MS, max_entry_bytes=10)
    assert not result.accepted
    assert "limit" in result.rejected[0].reason


def test_decode_batch_empty() -> None:
    """An empty batch yields two empty lists."""
    assert decode_batch([], now_ms=NOW_MS) == Decoded([], [])


@PROPS
@given(
    kinds=st.lists(st.booleans(), max_size=30),
)
def test_prop_decode_batch_partition(kinds: list[bool]) -> None:
    """For any mix of good and bad entries, accepted+rejected ids interleave back to the input order."""
    entries = [(f"{i}-0".encode(), as_flat(click()) if good else {b"event": b"[]"}) for i, good in enumerate(kinds)]
    result = decode_batch(entries, now_ms=NOW_MS)
    pairs = list(zip(entries, kinds, strict=True))
    assert [a.entry_id for a in result.accepted] == [eid for (eid, _), good in pairs if good]
    assert [r.entry_id for r in result.rejected] == [eid for (eid, _), good in pairs if not good]


# --------------------------------------------------------------------------- NUL characters


@pytest.mark.parametrize("form", [as_json, as_flat])
def test_a_nul_in_a_stored_text_field_is_rejected_with_a_reason(form: Any) -> None:
    """Postgres text cannot hold NUL: such an entry would fail every commit of its batch."""
    result = reject(form(page_view(path="/a\x00b")))
    assert "`path` contains a NUL character" in result.reason and "$.path" in result.reason
    assert "`visitor` contains a NUL" in reject(form(page_view(visitor="v\x00"))).reason


def test_nul_in_stored_props_is_rejected_but_nested_or_escaped_is_accepted() -> None:
    """`props` keys and string values are stored: a NUL in one is Rejected (both forms); a nested
    value is stored as JSON text (NUL escaped) and is accepted; the six characters `\\u0000` after
    an escaped backslash are no NUL."""
    assert "props" in reject(as_json(custom(props={"k": "a\x00b"}))).reason
    assert "props" in reject(as_json(custom(props={"a\x00": "b"}))).reason
    assert "props" in reject({**as_flat(custom()), b"props.k": b"a\x00b"}).reason
    assert "props" in reject({**as_flat(custom()), b"props.a\x00": b"b"}).reason
    accept(as_json(custom(props={"k": ["a\x00b"]})))
    result = accept(as_json(page_view(path="/a\\u0000b")))
    assert result.event.path == "/a\\u0000b"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- 5. one rule in both forms

ISSUE_NOW_MS = 1_795_168_800_000  # 2026-11-20T10:00:00Z
ISSUE_EID = b"1795168800000-0"


def decode_at(fields: Mapping[bytes, bytes], eid: bytes = ISSUE_EID, **kw: Any) -> Accepted | Rejected:
    return decode_entry(eid, fields, ISSUE_NOW_MS, **kw)


@pytest.mark.parametrize(
    ("ts", "ts_ms"),
    [
        (1_795_168_800, 1_795_168_800_000),  # Math.floor(Date.now() / 1000)
        ("1795168800", 1_795_168_800_000),
        (1_795_168_800.5, 1_795_168_800_500),
        ("1795168800.5", 1_795_168_800_500),
        (1_795_168_800.0005, 1_795_168_800_000),  # floored to the millisecond
        (1_795_168_800_000, 1_795_168_800_000),
        (1_795_168_800_000.5, 1_795_168_800_000),
        ("1795168800000.5", 1_795_168_800_000),
        (1_795_168_799_999.999, 1_795_168_799_999),
        ("2026-11-20T10:00:00.0009Z", 1_795_168_800_000),
        ("2026-11-20T09:59:59.9999Z", 1_795_168_799_999),
    ],
)
@pytest.mark.parametrize("form", [as_json, as_flat], ids=["json", "flat"])
def test_ts_seconds_and_milliseconds_one_rule_in_both_forms(ts: Any, ts_ms: int, form: Any) -> None:
    """A number below 10^11 is seconds, any other milliseconds; fractions of either are floored to
    the millisecond; the same in the JSON and flat forms (numbers or numeric strings)."""
    result = decode_at(form(page_view(ts=ts)))
    assert isinstance(result, Accepted), result
    assert result.ts_ms == ts_ms


def test_ts_json_number_and_every_string_form_agree() -> None:
    """`1795168800.5` as a JSON number, a JSON string and a flat string is one instant."""
    raw = b'{"type":"page_view","site":"s","path":"/","ts":1795168800.5}'
    got = {
        decode_at(f).ts_ms  # type: ignore[union-attr]
        for f in ({b"event": raw}, as_json(page_view(ts="1795168800.5")), as_flat(page_view(ts="1795168800.5")))
    }
    assert got == {1_795_168_800_500}


@pytest.mark.parametrize(
    "ts", [0, 1, 20 * 86_400, 1_700_000, 99_999_999_999 // 1000, "1970-01-21T00:00:00Z", 946_684_799_999]
)
@pytest.mark.parametrize("form", [as_json, as_flat], ids=["json", "flat"])
def test_nothing_is_ever_counted_before_2000(ts: Any, form: Any) -> None:
    """However large the age limit, a ts before 2000-01-01 (1970 from a unit mistake) is Rejected
    with a reason that names the seconds/milliseconds rule."""
    result = decode_at(form(page_view(ts=ts)), max_age_days=3650)
    assert isinstance(result, Rejected), result
    assert "before 2000-01-01" in result.reason and "seconds" in result.reason


@pytest.mark.parametrize("form", [as_json, as_flat], ids=["json", "flat"])
def test_past_bound_is_measured_from_the_entry_id(form: Any) -> None:
    """`ts` more than max_event_age_days before the entry's id time is Rejected naming the setting;
    the limit is inclusive, configurable, and independent of `now_ms`, so a redelivery decides
    exactly as the first delivery did."""
    limit = 30 * DAY_MS
    at_limit = form(page_view(ts=ISSUE_NOW_MS - limit))
    past_limit = form(page_view(ts=ISSUE_NOW_MS - limit - 1))
    assert isinstance(decode_at(at_limit), Accepted)
    rejected = decode_at(past_limit)
    assert isinstance(rejected, Rejected) and "max_event_age_days" in rejected.reason
    assert "30 days" in rejected.reason
    assert isinstance(decode_at(past_limit, max_age_days=31), Accepted)
    for later in (ISSUE_NOW_MS + DAY_MS, ISSUE_NOW_MS + 400 * DAY_MS):  # a redelivery much later
        assert isinstance(decode_entry(ISSUE_EID, at_limit, later), Accepted)
        assert isinstance(decode_entry(ISSUE_EID, past_limit, later), Rejected)


@pytest.mark.parametrize("status", [200, "200", "404", "599"])
@pytest.mark.parametrize("form", [as_json, as_flat], ids=["json", "flat"])
def test_numeric_strings_accepted_in_both_forms(status: Any, form: Any) -> None:
    """`status` (and every number) may be a numeric string in either form, as it must be in the flat form."""
    result = accept(form(api_request(status=status, duration_ms="12.5", ts=str(NOW_MS))))
    assert isinstance(result.event, ApiRequest)
    assert result.event.status == int(status) and result.event.duration_ms == 12.5
    assert result.ts_ms == NOW_MS
    assert accept(as_json(click(x="0.5", y="0.25"))).event == accept(as_flat(click(x=0.5, y=0.25))).event
