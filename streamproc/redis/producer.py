"""Write events to the stream from Python: build, check against the contract, XADD.

The Python side of ``clients/node/streamproc.js``, with the same contract: every event gets an
``id`` (a random UUID unless it has one: the daemon skips a second entry with the same site +
id, so a retried XADD never counts twice) and a ``ts`` (now, unless it has one), and is
written in the JSON form (one field ``event``). Unlike the Node helper it checks the whole
contract before writing, with the daemon's own decoder: an event that :func:`produce` accepts
is never dead-lettered by a daemon with the same ``max_entry_bytes``.

    client = producer_client("redis://streamproc-producer:PASSWORD@redis.internal:6379/0")
    event = build_event({"type": "page_view", "site": "shop.example", "path": "/"})
    entry_id = produce(client, "events", event)   # retry with the same `event` on failure
"""

from __future__ import annotations

import datetime as dt
import decimal
import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from streamproc.core.decode import DEFAULT_MAX_ENTRY_BYTES, Rejected, decode_entry
from streamproc.errors import StreamprocError
from streamproc.redis.classify import translate
from streamproc.redis.client import Client, is_cluster

DEFAULT_TIMEOUT_S: Final = 0.5
_NO_ID: Final = b"0-0"  # the decoder wants an entry id; the real one comes from XADD
_encoder: Final = msgspec.json.Encoder(decimal_format="string")


class InvalidEvent(StreamprocError, ValueError):
    """The event breaks the contract; the message is the reason the daemon would give."""


def producer_client(url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> redis.Redis:
    """A standalone client that never holds the caller for long: connecting and each command
    give up after ``timeout_s`` seconds, with no retry (:func:`produce` raises, the caller
    decides). The URL is the ``streamproc-producer`` user's (``deploy/redis/README.md``)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def build_event(attrs: Mapping[str, Any], now_ms: int | None = None) -> dict[str, Any]:
    """A complete event from its attributes (README, "The event contract").

    Returns a new dict: ``id`` set to a random UUID when absent or None, ``ts`` set to
    ``now_ms`` (default: the current time) when absent or None, an aware ``datetime`` ``ts``
    turned into integer milliseconds since the epoch. Nothing is checked here: see
    :func:`encode_event`.
    """
    event = dict(attrs)
    ts = event.get("ts")
    if ts is None:
        event["ts"] = int(time.time() * 1000) if now_ms is None else now_ms
    elif isinstance(ts, dt.datetime) and ts.tzinfo is not None:
        event["ts"] = (ts - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)
    if event.get("id") is None:
        event["id"] = str(uuid.uuid4())
    return event


def encode_event(
    event: Mapping[str, Any], now_ms: int | None = None, max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
) -> bytes:
    """The ``event`` field's value: the event as UTF-8 JSON (a ``Decimal`` revenue as a string,
    exact), checked with the daemon's decoder at ``now_ms`` (default: now).

    Raises :class:`InvalidEvent` with the daemon's reason, e.g. ``invalid event: Expected
    'int' <= 599 - at '$.status'``, when the daemon would dead-letter it.
    """
    try:
        raw = _encoder.encode(event)
    except (TypeError, msgspec.EncodeError, decimal.InvalidOperation) as exc:
        raise InvalidEvent(f"event cannot be written as JSON: {exc}") from exc
    now = int(time.time() * 1000) if now_ms is None else now_ms
    checked = decode_entry(_NO_ID, {b"event": raw}, now, max_entry_bytes)
    if isinstance(checked, Rejected):
        raise InvalidEvent(checked.reason)
    return raw


def produce(
    client: Client,
    stream: str,
    event: Mapping[str, Any],
    *,
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
) -> str:
    """Check and XADD one built event (:func:`build_event`); returns the stream entry id,
    e.g. ``"1763800000000-0"``.

    Raises :class:`InvalidEvent` (nothing written); for a Redis failure, what
    :func:`streamproc.redis.classify.translate` makes of it: :class:`SourceUnavailable` when
    Redis cannot be reached, does not answer in time or is not ready (the entry may or may not
    have been written: sending the same ``event`` again is counted once),
    :class:`SourceMisconfigured` when retrying cannot help (the Redis user may not XADD to
    ``stream``, wrong password, ...).
    """
    if event.get("id") is None:
        raise InvalidEvent("the event has no `id`: build it with build_event(), then retry with the same event")
    raw = encode_event(event, max_entry_bytes=max_entry_bytes)
    try:
        entry_id = client.xadd(stream, {"event": raw})
    except (redis.exceptions.RedisError, OSError) as exc:
        raise translate(
            exc,
            hint=f"the event was not written to {stream!r}; producers connect as streamproc-producer",
            cluster=is_cluster(client),
        ) from exc
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
