"""The documented session rule, computed independently of the daemon (docs/sessions.md).

A visitor's sessions are the maximal runs of its events, sorted by time, in which
consecutive events are at most ``timeout_ms`` apart. The visitor is the producer's
``visitor`` when sent, else the (site, UTC day, ip, ua) it came with. Events that carry
a producer ``session`` are cut by the same rule, per (site, session id).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

DAY_MS = 86_400_000


class Session(NamedTuple):
    site: str
    first_ms: int
    last_ms: int
    pageviews: int
    events: int
    days: frozenset[int]  # UTC days (since the epoch) on which it has a page view


def visitor_of(ev: Mapping[str, Any]) -> tuple[Any, ...] | None:
    if ev.get("visitor"):
        return (ev["site"], "v", ev["visitor"])
    if ev.get("ip"):
        return (ev["site"], "a", int(ev["ts"]) // DAY_MS, ev["ip"], ev.get("ua") or "")
    return None


def sessionize(events: Iterable[Mapping[str, Any]], timeout_ms: int) -> list[Session]:
    """Sessions of the events that have a producer ``session`` (per session id) or else a
    visitor; ``ts`` in ms."""
    by_visitor: dict[tuple[Any, ...], list[tuple[int, bool]]] = {}
    for ev in events:
        who = (ev["site"], "s", ev["session"]) if ev.get("session") else visitor_of(ev)
        if who is not None:
            by_visitor.setdefault(who, []).append((int(ev["ts"]), ev["type"] == "page_view"))
    out = []
    for who, points in by_visitor.items():
        points.sort()
        start = 0
        for i in range(1, len(points) + 1):
            if i == len(points) or points[i][0] - points[i - 1][0] > timeout_ms:
                run = points[start:i]
                days = frozenset(ts // DAY_MS for ts, pv in run if pv)
                out.append(Session(who[0], run[0][0], run[-1][0], sum(1 for _, pv in run if pv), len(run), days))
                start = i
    return sorted(out)
