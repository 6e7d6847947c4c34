"""Custom event properties as counted: ``props`` -> bounded ``(key, value)`` text pairs. Pure.

A custom event's ``props`` count in ``event_props_daily`` (site, UTC day, event name,
key, value). Values are text: a string as sent, anything else as its JSON text
(``3``, ``1.5``, ``true``, ``null``, ``{"a":1}`` with keys sorted), so the JSON form and
the flat form (``props.<key>`` fields, all strings) count ``3`` and ``"3"`` alike.

Bounds, like the other caps (overflow counted under ``(other)``): the first
:data:`MAX_KEYS_PER_EVENT` keys of an event in key order count as themselves, later
ones as key and value ``(other)``; a key or value longer than :data:`MAX_TEXT`
characters counts as ``(other)``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

MAX_KEYS_PER_EVENT: Final = 30
MAX_TEXT: Final = 256
OVERFLOW: Final = "(other)"
FLAT_PREFIX: Final = "props."

_encode: Final = msgspec.json.Encoder(order="sorted")


def prop_text(value: Any) -> str:
    """A property value as counted: a string as sent, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return _encode.encode(value).decode()


def prop_pairs(props: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``(key, value)`` pairs an event's ``props`` count as, bounded (see the module docstring)."""
    pairs = []
    for i, key in enumerate(sorted(props)):
        if i >= MAX_KEYS_PER_EVENT or len(key) > MAX_TEXT:
            pairs.append((OVERFLOW, OVERFLOW))
            continue
        text = prop_text(props[key])
        pairs.append((key, text if len(text) <= MAX_TEXT else OVERFLOW))
    return pairs
