"""The event contract: the msgspec types producers write against.

These types are the single source of truth for what a valid event is. The
JSON Schema in ``schemas/event.schema.json`` is generated from them
(``streamproc schema``) and a test fails if the checked-in copy drifts.

Checks that JSON Schema cannot express (a timestamp within its bounds, a
finite revenue and its rounding) live in :mod:`streamproc.core.decode`.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Annotated, Any, Final

import msgspec

SITE_MAX: Final = 128
PATH_MAX: Final = 2048
SHORT_MAX: Final = 256
TEXT_MAX: Final = 2048
MAX_DURATION_MS: Final = 86_400_000.0

Site = Annotated[str, msgspec.Meta(min_length=1, max_length=SITE_MAX)]
Path = Annotated[str, msgspec.Meta(min_length=1, max_length=PATH_MAX)]
Short = Annotated[str, msgspec.Meta(max_length=SHORT_MAX)]
Text = Annotated[str, msgspec.Meta(max_length=TEXT_MAX)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=SHORT_MAX)]
Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Timestamp = Annotated[
    int | float | dt.datetime,
    msgspec.Meta(
        description=(
            "A number since the Unix epoch: seconds below 10^11, else milliseconds (a fraction is"
            " allowed and floored to the millisecond), or an RFC 3339 date-time with offset."
        )
    ),
]


class _Event(msgspec.Struct, frozen=True, tag_field="type", kw_only=True):
    """Attributes every event carries."""

    site: Site
    ts: Timestamp
    id: Short | None = None
    session: Short | None = None
    visitor: Short | None = None
    ip: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=64,
                description="The client's IP address: the visitor's country (with a country database) and, without"
                " `visitor`, part of its daily hash. Never stored.",
            ),
        ]
        | None
    ) = None
    ua: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=TEXT_MAX,
                description="The client's User-Agent header: browser, OS, device type, bots (filtered into"
                " bots_daily) and, without `visitor`, part of its daily hash. Never stored.",
            ),
        ]
        | None
    ) = None


class PageView(_Event, tag="page_view", frozen=True):
    path: Path
    referrer: Text | None = None
    device: Short | None = None
    browser: Short | None = None
    os: Short | None = None
    country: Short | None = None
    utm_source: Short | None = None
    utm_medium: Short | None = None
    utm_campaign: Short | None = None


class Click(_Event, tag="click", frozen=True):
    path: Path
    x: Unit
    y: Unit
    selector: Text | None = None


class ApiRequest(_Event, tag="api_request", frozen=True):
    method: Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
    route: Path
    status: Annotated[int, msgspec.Meta(ge=100, le=599)]
    duration_ms: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_DURATION_MS)]


class Conversion(_Event, tag="conversion", frozen=True):
    name: Name
    revenue: decimal.Decimal | None = None
    currency: Annotated[str, msgspec.Meta(max_length=8)] | None = None


class Custom(_Event, tag="custom", frozen=True):
    name: Name
    props: dict[str, Any] | None = None


Event = PageView | Click | ApiRequest | Conversion | Custom
EVENT_TYPES: Final = ("page_view", "click", "api_request", "conversion", "custom")

SCHEMA_ID: Final = "https://streamproc.dev/schemas/event.schema.json"


def json_schema() -> dict[str, Any]:
    """Return the JSON Schema of one event, as checked in under ``schemas/``."""
    schema = msgspec.json.schema(Event)
    _refine(schema["$defs"])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "streamproc event",
        "description": (
            "One analytics event, carried by a Redis stream entry either as JSON in the "
            "`event` field or as flat string fields (numbers as decimal strings). "
            "Numbers may also be sent as decimal strings in either form. Unknown attributes are"
            " ignored. `ts` may be at most one day in the future and at most `max_event_age_days`"
            " (default 30) older than the entry's stream id; never before 2000-01-01."
        ),
        **schema,
    }


NUMERIC_TEXT: Final = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"


def _refine(defs: dict[str, Any]) -> None:
    """Say what msgspec's generic output cannot: ts formats, revenue as number or string,
    every number also as a numeric string (both forms accept one)."""
    for struct in defs.values():
        props = struct["properties"]
        for name, prop in props.items():
            if prop.get("type") in ("integer", "number"):
                props[name] = {
                    "anyOf": [prop, {"type": "string", "pattern": NUMERIC_TEXT}],
                    "description": "A number, or the same as a decimal string; bounds apply to its value.",
                }
        props["ts"]["anyOf"] = [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": NUMERIC_TEXT},
            {"type": "string", "format": "date-time"},
        ]
        if "props" in props:
            props["props"]["description"] = (
                "Custom event properties, counted per key and value (strings as sent, other values as"
                " JSON text; 30 keys per event and 256 characters per key or value, the rest under"
                " `(other)`). In the flat form: one `props.<key>` field per property."
            )
        if "revenue" in props:
            props["revenue"]["anyOf"] = [
                {"type": "number"},
                {"type": "string", "format": "decimal"},
                {"type": "null"},
            ]
            props["revenue"]["description"] = (
                "Exact decimal, never a float; rounded half-even to the currency's ISO 4217 minor"
                " unit (2 places for EUR, 0 for JPY), or to 6 places without a known currency."
            )


def schema_text() -> str:
    """The schema as stable, human-diffable JSON text (ends with a newline)."""
    raw = msgspec.json.encode(json_schema(), order="deterministic")
    return msgspec.json.format(raw, indent=2).decode() + "\n"
