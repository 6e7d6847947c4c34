"""Turn raw stream entries into validated events, or into a reason they are bad.

Pure functions: bytes in, structs out. Nothing here raises for bad input; a
bad entry becomes a :class:`Rejected` carrying a sentence a person can act on,
and the worker sends it to the dead-letter stream.
"""

from __future__ import annotations

import datetime as dt
import decimal
import time
from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple

import msgspec

from streamproc.core.events import Conversion, Event

DAY_MS: Final = 86_400_000
MAX_FUTURE_MS: Final = DAY_MS
DEFAULT_MAX_ENTRY_BYTES: Final = 64 * 1024
REVENUE_DIGITS: Final = 12  # |revenue| < 10**12
REVENUE_MAX_PLACES: Final = 6
# The exponent as written, trailing zeros included: "0E-1000000" is zero, but Postgres cannot
# store its scale ("value overflows numeric format"), and a sum keeps the widest scale.
REVENUE_MAX_WRITTEN_PLACES: Final = 30

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS: Final = dt.timedelta(milliseconds=1)
_json_decoder: Final = msgspec.json.Decoder(Event)
_flat_decoder: Final = msgspec.json.Decoder(Event, strict=False)  # flat form: every value is a string


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
) -> Accepted | Rejected:
    """Validate one stream entry. Never raises on bad input."""
    try:
        return _decode_entry(entry_id, fields, now_ms, max_entry_bytes)
    except Exception as exc:  # last line of defence: bad input must never stop the batch
        return Rejected(entry_id, fields or {}, f"entry could not be decoded ({type(exc).__name__}: {exc})")


def _decode_entry(
    entry_id: bytes,
    fields: Mapping[bytes, bytes] | None,
    now_ms: int,
    max_entry_bytes: int,
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
    problem = _check_semantics(result, ts_ms, now_ms)
    if problem is not None:
        return Rejected(entry_id, fields, problem)
    return Accepted(entry_id, result, ts_ms)


def decode_batch(
    entries: Iterable[tuple[bytes, Mapping[bytes, bytes] | None]],
    now_ms: int | None = None,
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
) -> Decoded:
    """Split a batch of ``(id, fields)`` entries into accepted and rejected."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    out = Decoded([], [])
    for entry_id, fields in entries:
        item = decode_entry(entry_id, fields, now, max_entry_bytes)
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
        return f"`event` field is not valid JSON: {exc}"
    except RecursionError:
        return "`event` field is nested too deeply"


def _decode_flat(fields: Mapping[bytes, bytes]) -> Event | str:
    try:
        attrs = {k.decode(): v.decode() for k, v in fields.items()}
    except UnicodeDecodeError as exc:
        return f"flat entry is not valid UTF-8: {exc}"
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
    return None  # `props` is never stored


def _timestamp_ms(ts: int | dt.datetime) -> int:
    if isinstance(ts, int):
        return ts
    if ts.tzinfo is None:
        return -1  # flagged by _check_semantics
    return (ts - _EPOCH) // _ONE_MS  # exact integer arithmetic, no float rounding


def _check_semantics(event: Event, ts_ms: int, now_ms: int) -> str | None:
    if ts_ms < 0:
        if isinstance(event.ts, dt.datetime) and event.ts.tzinfo is None:
            return "invalid event: `ts` date-time has no UTC offset (RFC 3339 needs one) - at `$.ts`"
        return "invalid event: `ts` is before 1970-01-01 - at `$.ts`"
    if ts_ms > now_ms + MAX_FUTURE_MS:
        ahead_h = (ts_ms - now_ms) / 3_600_000
        return f"invalid event: `ts` is {ahead_h:.1f} h in the future (limit 24 h) - at `$.ts`"
    if isinstance(event, Conversion) and event.revenue is not None:
        return _check_revenue(event.revenue)
    return None


def _check_revenue(revenue: decimal.Decimal) -> str | None:
    # Only exact tuple arithmetic here: context operations round or trap on huge exponents.
    if not revenue.is_finite():
        return "invalid event: `revenue` must be a finite decimal - at `$.revenue`"
    _sign, digits, exponent = revenue.as_tuple()
    assert isinstance(exponent, int)
    significant = "".join(map(str, digits)).rstrip("0")
    if significant:
        if revenue.adjusted() >= REVENUE_DIGITS:
            return "invalid event: `revenue` magnitude must be below 10^12 - at `$.revenue`"
        places = -(exponent + len(digits) - len(significant))
        if places > REVENUE_MAX_PLACES:
            return f"invalid event: `revenue` has more than {REVENUE_MAX_PLACES} decimal places - at `$.revenue`"
    if not -REVENUE_MAX_WRITTEN_PLACES <= exponent < REVENUE_DIGITS:
        return (
            f"invalid event: `revenue` is written with exponent {exponent} (allowed"
            f" {-REVENUE_MAX_WRITTEN_PLACES} to {REVENUE_DIGITS - 1}, trailing zeros included) - at `$.revenue`"
        )
    return None
