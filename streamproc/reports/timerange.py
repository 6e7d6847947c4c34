"""Report time windows: ``--from/--to``, ``--last``, ``--tz``. Pure: no I/O, ``now`` is passed in.

A :class:`Window` is a half-open interval of instants ``[start, end)`` in UTC,
plus the time zone it was asked in. Hourly rollups re-bucket into it exactly
when its edges fall on whole UTC hours (every zone whose offset is a whole
number of hours); daily rollups are per *UTC* day, so figures that only exist
per day (unique visitors, sessions, dimensions, clicks) are read on the UTC
days of :meth:`Window.visitor_days` (one rule for every view) and are exact only
when the window is whole UTC days.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

HOUR: Final = dt.timedelta(hours=1)
DAY: Final = dt.timedelta(days=1)
MAX_DAYS: Final = 3660
MAX_HOURS: Final = 24 * 366
UTC_ZONE: Final = ZoneInfo("UTC")

Unit = Literal["day", "hour"]
_LAST: Final = re.compile(r"^\s*(\d{1,5})\s*([hd])\s*$")


class RangeError(ValueError):
    """A bad time-range option; ``flag`` names the option to blame."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


@dataclass(frozen=True)
class Bucket:
    """One slot of a time series: ``[start, end)`` in UTC and a local label."""

    start: dt.datetime
    end: dt.datetime
    label: str


@dataclass(frozen=True)
class Window:
    start: dt.datetime  # inclusive, UTC
    end: dt.datetime  # exclusive, UTC
    tz: ZoneInfo
    unit: Unit  # asked as whole local days or as hours

    @property
    def first(self) -> dt.date:
        """Local date of the first instant."""
        return self.start.astimezone(self.tz).date()

    @property
    def last(self) -> dt.date:
        """Local date of the last instant (inclusive)."""
        return (self.end - dt.timedelta(microseconds=1)).astimezone(self.tz).date()

    @property
    def hour_exact(self) -> bool:
        """Both edges on whole UTC hours: hourly rollups re-bucket exactly."""
        return _on_hour(self.start) and _on_hour(self.end)

    @property
    def utc_days_exact(self) -> bool:
        """Both edges at UTC midnight: daily rollups (visitor sets, dimensions, clicks) are exact."""
        return _on_midnight(self.start) and _on_midnight(self.end)

    def noon_days(self) -> list[dt.date]:
        return noon_days(self.start, self.end)

    def visitor_days(self) -> list[dt.date]:
        """The UTC days every per-day figure of every view is read on (one rule, docs/reports.md):
        for a window of local days, the UTC day each local day overlaps most (:func:`noon_days`);
        for a window of hours (``--last Nh``), every UTC day it touches, so the current day's
        traffic is always in it. Never empty."""
        if self.unit == "hour":
            return touched_days(self.start, self.end)
        return noon_days(self.start, self.end)

    def previous(self) -> Window:
        """The period of the same length just before (same number of local days for a day window)."""
        if self.unit == "day":
            n = (self.last - self.first).days + 1
            return day_window(self.first - dt.timedelta(days=n), self.first - dt.timedelta(days=1), self.tz)
        return Window(self.start - (self.end - self.start), self.start, self.tz, "hour")

    def describe(self) -> str:
        zone = self.tz.key
        if self.unit == "day":
            days = str(self.first) if self.first == self.last else f"{self.first} .. {self.last}"
            return f"{days} ({zone} days)"
        a, b = self.start.astimezone(self.tz), self.end.astimezone(self.tz)
        return f"{a:%Y-%m-%d %H:%M} .. {b:%Y-%m-%d %H:%M} {zone} ({(self.end - self.start) // HOUR} h)"

    def as_json(self) -> dict[str, Any]:
        return {
            "from": self.first.isoformat(),
            "to": self.last.isoformat(),
            "start": iso(self.start),
            "end": iso(self.end),
            "tz": self.tz.key,
            "unit": self.unit,
        }


def _on_hour(t: dt.datetime) -> bool:
    return t.minute == 0 and t.second == 0 and t.microsecond == 0


def _on_midnight(t: dt.datetime) -> bool:
    return _on_hour(t.astimezone(dt.UTC)) and t.astimezone(dt.UTC).hour == 0


def iso(t: dt.datetime) -> str:
    """An instant as ISO 8601 UTC with a Z."""
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.UTC)


def floor_hour(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


# --- parsing -----------------------------------------------------------------------------------


def parse_zone(name: str | None) -> ZoneInfo:
    if name is None or name.upper() in ("UTC", "Z"):
        return UTC_ZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory such as "Europe"
        raise RangeError("--tz", f"{name!r} is not a known time zone (IANA names like Europe/Paris, or UTC)") from None


def parse_day(value: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise RangeError(flag, f"{value!r} is not a date like 2026-01-31") from None


def parse_last(value: str) -> tuple[int, Unit]:
    m = _LAST.match(value)
    if m is None:
        raise RangeError("--last", f"{value!r} is not a span like 24h, 7d or 30d")
    n, unit = int(m.group(1)), m.group(2)
    limit = MAX_HOURS if unit == "h" else MAX_DAYS
    if not 1 <= n <= limit:
        raise RangeError("--last", f"{value!r}: between 1{unit} and {limit}{unit}")
    return n, ("hour" if unit == "h" else "day")


def parse_instant(value: str, flag: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        t = None
    if t is None or t.tzinfo is None:
        raise RangeError(flag, f"{value!r} is not a date-time with an offset, like 2026-03-30T09:30:00Z")
    return t.astimezone(dt.UTC)


def day_window(first: dt.date, last: dt.date, tz: ZoneInfo) -> Window:
    return Window(_midnight(first, tz), _midnight(last + dt.timedelta(days=1), tz), tz, "day")


def last_window(n: int, unit: Unit, tz: ZoneInfo, now: dt.datetime) -> Window:
    """``n`` hours ending with the current one, or ``n`` local days ending with today."""
    if unit == "hour":
        end = floor_hour(now) + HOUR
        return Window(end - n * HOUR, end, tz, "hour")
    today = now.astimezone(tz).date()
    return day_window(today - dt.timedelta(days=n - 1), today, tz)


def make_window(
    *, start: str | None, end: str | None, last: str | None, tz: str | None, now: dt.datetime, default: str = "7d"
) -> Window:
    """The window the options ask for; with none of them, ``--last default``."""
    zone = parse_zone(tz)
    if last is not None and (start is not None or end is not None):
        raise RangeError("--last", "give either --last or --from/--to, not both")
    if start is None and end is not None:
        raise RangeError("--from", "is required with --to")
    if start is None:
        n, unit = parse_last(last or default)
        return last_window(n, unit, zone, now)
    first = parse_day(start, "--from")
    final = parse_day(end, "--to") if end is not None else now.astimezone(zone).date()
    if final < first:
        if end is None:
            raise RangeError("--from", f"{first} is after today ({final} in {zone.key})")
        raise RangeError("--to", "--to is before --from")
    if (final - first).days >= MAX_DAYS:
        raise RangeError("--to", f"at most {MAX_DAYS} days per report")
    return day_window(first, final, zone)


# --- buckets and day mapping -------------------------------------------------------------------


def noon_days(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    """UTC days whose noon falls in ``[start, end)``: the UTC days standing for the window in
    the per-UTC-day sets (for a local day, the UTC day that overlaps it most). Equal to the
    window's own days when it is whole UTC days; empty for a window shorter than a day that
    contains no UTC noon."""
    start, end = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    days: list[dt.date] = []
    day = start.date()
    while (noon := dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)) < end:
        if noon >= start:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def touched_days(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    """Every UTC day that ``[start, end)`` overlaps, in order."""
    first = start.astimezone(dt.UTC).date()
    last = (end.astimezone(dt.UTC) - dt.timedelta(microseconds=1)).date()
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def pick_unit(window: Window, by: str | None) -> Unit:
    """``--by`` if given, else hours for a single day or up to 48 hours, days beyond."""
    if by is not None:
        if by not in ("hour", "day"):
            raise RangeError("--by", f"{by!r}: hour or day")
        return "hour" if by == "hour" else "day"
    if window.unit == "day":
        return "hour" if window.first == window.last else "day"
    return "hour" if window.end - window.start <= 2 * DAY else "day"


def buckets(window: Window, unit: Unit) -> list[Bucket]:
    """Local days (clipped to the window) or UTC hours whose start lies in the window."""
    out: list[Bucket] = []
    if unit == "hour":
        t = floor_hour(window.start)
        if t < window.start:
            t += HOUR
        while t < window.end:
            out.append(Bucket(t, t + HOUR, f"{t.astimezone(window.tz):%Y-%m-%d %H:%M}"))
            t += HOUR
        return out
    day = window.first
    while (lo := max(_midnight(day, window.tz), window.start)) < window.end:
        hi = min(_midnight(day + dt.timedelta(days=1), window.tz), window.end)
        out.append(Bucket(lo, hi, day.isoformat()))
        day += dt.timedelta(days=1)
    return out


def bucket_index(bks: list[Bucket], starts: list[dt.datetime], t: dt.datetime) -> int | None:
    """Index of the bucket holding instant ``t`` (``starts`` = the buckets' starts), or None."""
    i = bisect.bisect_right(starts, t) - 1
    if i < 0 or t >= bks[i].end:
        return None
    return i


def rebucket(bks: list[Bucket], rows: list[tuple[dt.datetime, int]]) -> list[int]:
    """Sum ``(instant, count)`` rows into the buckets; rows outside every bucket are dropped."""
    starts = [b.start for b in bks]
    sums = [0] * len(bks)
    for t, n in rows:
        i = bucket_index(bks, starts, t)
        if i is not None:
            sums[i] += int(n)
    return sums
