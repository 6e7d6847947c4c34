"""Turn raw stream entries into validated events, or into a reason they are bad.

Pure functions: bytes in, structs out. Nothing here raises for bad input; a
bad entry becomes a :class:`Rejected` carrying a sentence a person can act on,
and the worker sends it to the dead-letter stream.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple

import iso4217
import msgspec

from streamproc.core.entryid import split_entry_id
from streamproc.core.events import Conversion, Event
from streamproc.core.props import FLAT_PREFIX

DAY_MS: Final = 86_400_000
MAX_FUTURE_MS: Final = DAY_MS
DEFAULT_MAX_AGE_DAYS: Final = 30
EARLIEST_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z: nothing before it is ever counted
SECONDS_BELOW: Final = 10**11  # a numeric `ts` below this is seconds (10^11 s is the year 5138)
DEFAULT_MAX_ENTRY_BYTES: Final = 64 * 1024
REVENUE_DIGITS: Final = 12  # |revenue| < 10**12
REVENUE_MAX_PLACES: Final = 6  # without a currency that has an ISO 4217 minor unit

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FLAT_PROPS: Final = FLAT_PREFIX.encode()
_ONE_MS: Final = dt.timedelta(milliseconds=1)
# Lax in both forms: a number may come as a decimal string ("200") in JSON as it must in the flat form.
_json_decoder: Final = msgspec.json.Decoder(Event, strict=False)
_flat_decoder: Final = _json_decoder


class Accepted(NamedTuple):
    """A valid event and its timestamp in milliseconds since the epoch (UTC)."""

    entry_id: bytes
    event: Event
    ts_ms: int


class Rejected(NamedTuple):
    """A bad entry: its original fields and why it cannot be counted."""

    entry_id: bytes
    fields: Mapping[bytes, bytes]
    reason: str


class Decoded(NamedTuple):
    accepted: list[Accepted]
    rejected: list[Rejected]


def decode_entry(
    entry_id: bytes,
    fields: Mapping[bytes, bytes] | None,
    now_ms: int,
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    max_age_days: int = DEFAULT_MAX_AGE_DAYS,
) -> Accepted | Rejected:
    """Validate one stream entry. Never raises on bad input.

    ``now_ms`` bounds ``ts`` in the future (24 h). The past bound is measured from the
    time in ``entry_id`` (when Redis took the entry), not from ``now_ms``, so a
    redelivery decides exactly as the first delivery did: ``ts`` older than
    ``max_age_days`` before it, or before 2000-01-01, is rejected.
    """
    try:
        return _decode_entry(entry_id, fields, now_ms, max_entry_bytes, max_age_days)
    except Exception as exc:  # last line of defence: bad input must never stop the batch
        return Rejected(entry_id, fields or {}, f"entry could not be decoded ({type(exc).__name__}: {exc})")


def _decode_entry(
    entry_id: bytes,
    fields: Mapping[bytes, bytes] | None,
    now_ms: int,
    max_entry_bytes: int,
    max_age_days: int,
) -> Accepted | Rejected:
    if not fields:
        return Rejected(entry_id, fields or {}, "entry has no fields")
    values = b"".join(fields.values())  # one C call serves the size and the NUL look below
    size = len(values) + sum(map(len, fields))
    if size > max_entry_bytes:
        return Rejected(entry_id, fields, f"entry is {size} bytes, over the {max_entry_bytes}-byte limit")
    raw = fields.get(b"event")
    if raw is not None:
        result = _decode_json(raw)
    elif b"type" in fields:
        result = _decode_flat(fields)
    else:
        result = "entry has neither an `event` field (JSON form) nor a `type` field (flat form)"
    if isinstance(result, str):
        return Rejected(entry_id, fields, result)
    # Postgres text cannot hold NUL: a cheap look at the raw bytes, the exact check only on a hit.
    if (b"\\" in raw and b"\\u0000" in raw) if raw is not None else (b"\x00" in values):
        nul = _nul_problem(result)
        if nul is not None:
            return Rejected(entry_id, fields, nul)
    ts_ms = _timestamp_ms(result.ts)
    problem = _check_time(result, ts_ms, now_ms, _written_ms(entry_id), max_age_days)
    if problem is None and isinstance(result, Conversion) and result.revenue is not None:
        problem = _check_revenue(result.revenue)
        if problem is None:
            result = _round_revenue(result, result.revenue)
            problem = _check_rounded_revenue(result)
    if problem is not None:
        return Rejected(entry_id, fields, problem)
    return Accepted(entry_id, result, ts_ms)


def decode_batch(
    entries: Iterable[tuple[bytes, Mapping[bytes, bytes] | None]],
    now_ms: int | None = None,
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    max_age_days: int = DEFAULT_MAX_AGE_DAYS,
) -> Decoded:
    """Split a batch of ``(id, fields)`` entries into accepted and rejected."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    out = Decoded([], [])
    for entry_id, fields in entries:
        item = decode_entry(entry_id, fields, now, max_entry_bytes, max_age_days)
        if isinstance(item, Accepted):
            out.accepted.append(item)
        else:
            out.rejected.append(item)
    return out


def _decode_json(raw: bytes) -> Event | str:
    try:
        if not raw.isascii():  # ASCII is valid UTF-8, and the usual case
            raw.decode("utf-8")  # msgspec skips unknown fields unchecked; check the whole field
    except UnicodeDecodeError as exc:
        return f"`event` field is not valid UTF-8: {exc}"
    try:
        event: Event = _json_decoder.decode(raw)
        return event
    except msgspec.ValidationError as exc:
        return f"invalid event: {exc}"
    except msgspec.DecodeError as exc:
        lone = _lone_surrogate(raw) if b"\\u" in raw else None
        return f"`event` field is not valid JSON: {lone or exc}"
    except RecursionError:
        return "`event` field is nested too deeply"


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _lone_surrogate(raw: bytes) -> str | None:
    """Where ``raw`` holds a ``\\uD800``-``\\uDFFF`` escape that is not half of a UTF-16 pair
    (msgspec reports it as "Input data was truncated"), as a reason; None if it holds none."""
    try:
        doc = json.loads(raw)  # the standard library keeps a lone surrogate as a code point
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[str, object]] = [("$", doc)]
    while stack:
        at, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    return _surrogate_reason(key, f"a key of `{at}`")
                stack.append((f"{at}.{key}", item))
        elif isinstance(value, list):
            stack.extend((f"{at}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, str) and _SURROGATE.search(value):
            return _surrogate_reason(value, f"`{at}`")
    return None


def _surrogate_reason(text: str, where: str) -> str:
    found = _SURROGATE.search(text)
    assert found is not None
    escape = f"\\u{ord(found.group()):04x}"
    return f"invalid Unicode: a lone surrogate escape ({escape}) not part of a UTF-16 pair - at {where}"


def _decode_flat(fields: Mapping[bytes, bytes]) -> Event | str:
    try:
        attrs: dict[str, object] = {k.decode(): v.decode() for k, v in fields.items()}
    except UnicodeDecodeError as exc:
        return f"flat entry is not valid UTF-8: {exc}"
    # Custom properties as `props.<key>` fields; one C-level look at all keys first (the usual: none).
    if _FLAT_PROPS in b"".join(fields) and any(k.startswith(_FLAT_PROPS) for k in fields):
        props = {k[len(FLAT_PREFIX) :]: attrs.pop(k) for k in list(attrs) if k.startswith(FLAT_PREFIX)}
        if any("\x00" in k for k in props):
            return "invalid event: a `props` key contains a NUL character (\\u0000) - at `$.props`"
        attrs["props"] = props
    try:
        # Through JSON rather than msgspec.convert: the same lax conversions ("12" -> 12) and
        # the same error messages, in a third of the time.
        converted: Event = _flat_decoder.decode(msgspec.json.encode(attrs))
        return converted
    except msgspec.ValidationError as exc:
        return f"invalid event: {exc}"


def _nul_problem(event: Event) -> str | None:
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if isinstance(value, str) and "\x00" in value:
            return (
                f"invalid event: `{name}` contains a NUL character (\\u0000), which Postgres text"
                f" cannot hold - at `$.{name}`"
            )
    props = getattr(event, "props", None)
    for key, value in (props or {}).items():  # nested values are stored as JSON text, NUL escaped
        if "\x00" in key or (isinstance(value, str) and "\x00" in value):
            return (
                "invalid event: a `props` key or value contains a NUL character (\\u0000), which"
                " Postgres text cannot hold - at `$.props`"
            )
    return None


def _written_ms(entry_id: bytes) -> int:
    """The time part of a stream entry id (ms), or 0 for an id that has none."""
    try:
        return split_entry_id(entry_id)[0]
    except ValueError:
        return 0


def _timestamp_ms(ts: int | float | dt.datetime) -> int:
    """``ts`` in whole milliseconds, floored; -1 for a value :func:`_check_time` must reject.

    One rule for both forms: a number below 10^11 is seconds, any other number
    milliseconds; a fraction (of a second or of a millisecond) is floored to the
    millisecond, exactly (the number's shortest decimal text, never float arithmetic).
    """
    if isinstance(ts, int):
        return ts * 1000 if -SECONDS_BELOW < ts < SECONDS_BELOW else ts
    if isinstance(ts, float):
        if not math.isfinite(ts):
            return -1
        exact = decimal.Decimal(repr(ts))
        return math.floor(exact * 1000 if abs(exact) < SECONDS_BELOW else exact)
    if ts.tzinfo is None:
        return -1
    return (ts - _EPOCH) // _ONE_MS  # exact integer arithmetic, no float rounding


def _check_time(event: Event, ts_ms: int, now_ms: int, written_ms: int, max_age_days: int) -> str | None:
    if ts_ms < 0:
        if isinstance(event.ts, dt.datetime) and event.ts.tzinfo is None:
            return "invalid event: `ts` date-time has no UTC offset (RFC 3339 needs one) - at `$.ts`"
        if isinstance(event.ts, float) and not math.isfinite(event.ts):
            return "invalid event: `ts` must be a finite number - at `$.ts`"
        return "invalid event: `ts` is before 1970-01-01 - at `$.ts`"
    if ts_ms > now_ms + MAX_FUTURE_MS:
        ahead_h = (ts_ms - now_ms) / 3_600_000
        return f"invalid event: `ts` is {ahead_h:.1f} h in the future (limit 24 h) - at `$.ts`"
    if ts_ms < EARLIEST_MS:
        return (
            f"invalid event: `ts` is {_iso(ts_ms)}, before 2000-01-01 (a number below 10^11 is read as"
            " seconds, any other as milliseconds) - at `$.ts`"
        )
    if ts_ms < written_ms - max_age_days * DAY_MS:
        age_d = (written_ms - ts_ms) / DAY_MS
        return (
            f"invalid event: `ts` is {_iso(ts_ms)}, {age_d:.1f} days before the entry was written"
            f" (limit {max_age_days} days: max_event_age_days) - at `$.ts`"
        )
    return None


def _iso(ts_ms: int) -> str:
    return (_EPOCH + ts_ms * _ONE_MS).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_revenue(revenue: decimal.Decimal) -> str | None:
    # Only exact tuple arithmetic here: context operations round or trap on huge exponents.
    if not revenue.is_finite():
        return "invalid event: `revenue` must be a finite decimal - at `$.revenue`"
    _sign, digits, exponent = revenue.as_tuple()
    assert isinstance(exponent, int)
    significant = "".join(map(str, digits)).rstrip("0")
    if significant and revenue.adjusted() >= REVENUE_DIGITS:
        return "invalid event: `revenue` magnitude must be below 10^12 - at `$.revenue`"
    if exponent >= REVENUE_DIGITS:
        # "0E+1000000" is zero, but Postgres cannot store the scale it is written with. Too many
        # places ("0E-1000000") are rounded away by _round_revenue.
        return (
            f"invalid event: `revenue` is written with exponent {exponent} (at most {REVENUE_DIGITS - 1},"
            " trailing zeros included) - at `$.revenue`"
        )
    return None


def _check_rounded_revenue(event: Conversion) -> str | None:
    """The bound again after rounding: 999999999999.9999999 EUR rounds to 1000000000000.00."""
    revenue = event.revenue
    if revenue is None or not revenue or revenue.adjusted() < REVENUE_DIGITS:
        return None
    places = revenue_places(event.currency)
    return (
        f"invalid event: `revenue` rounds to {revenue} ({places} decimal places for"
        f" {event.currency or 'no currency'}), and its magnitude must be below 10^12 - at `$.revenue`"
    )


@functools.lru_cache(maxsize=512)
def revenue_places(currency: str | None) -> int:
    """Decimal places revenue is kept to: the ISO 4217 minor unit of ``currency`` (any case),
    or 6 for no currency, an unknown code or one without a minor unit (XAU, XXX)."""
    if currency:
        try:
            exponent = iso4217.Currency(currency.upper()).exponent
        except ValueError:
            exponent = None
        if exponent is not None:
            return int(exponent)
    return REVENUE_MAX_PLACES


_ROUNDING: Final = decimal.Context(prec=REVENUE_DIGITS + REVENUE_MAX_PLACES + 2, rounding=decimal.ROUND_HALF_EVEN)


def _round_revenue(event: Conversion, revenue: decimal.Decimal) -> Conversion:
    """Round half-even to :func:`revenue_places` (``29.9*3`` in JavaScript is 89.69999999999999,
    counted as 89.70 EUR). An amount written with no more places keeps its event unchanged; one
    written with more is replaced by the rounded amount, trailing zeros trimmed to the places
    (``0E-1000000`` becomes 0.00, a scale Postgres can store and sum)."""
    places = revenue_places(event.currency)
    exponent = revenue.as_tuple().exponent
    assert isinstance(exponent, int)  # finite: checked before
    if exponent >= -places:
        return event  # "10" stays "10": no places added
    rounded = revenue.quantize(decimal.Decimal(1).scaleb(-places), context=_ROUNDING)
    return msgspec.structs.replace(event, revenue=rounded)
