"""Distinct visitors and sessions, read from exact sets or from HyperLogLog sketches.

Every report asks the same four questions of the unique-visitor rollups; this
module answers them for both storage modes (``uniques = "exact" | "approximate"``),
so the views never name a set table. Exact counts are ``count(DISTINCT ...)``
over the sets; approximate ones are ``hll_cardinality`` of the union of the
day sketches (a union over several days counts a visitor once, as the exact
sets do), rounded to an integer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from streamproc.core.rollups import DIMENSION_NAMES

Conn = psycopg.Connection[Any]
_CARD = "round(hll_cardinality(hll_union_agg({col})))::bigint"


@dataclass(frozen=True)
class Uniques:
    approximate: bool = False

    @property
    def mode(self) -> str:
        return "approximate" if self.approximate else "exact"

    def total(self, conn: Conn, what: str, site: str, days: Sequence[dt.date]) -> int:
        """Distinct visitors (``what="visitors"``) or sessions over ``days``."""
        if self.approximate:
            table = "visitors_daily_hll" if what == "visitors" else "sessions_daily_hll"
            select = _CARD.format(col=what)
        else:
            table = "visitors_daily" if what == "visitors" else "sessions_daily"
            select = f"count(DISTINCT {'visitor' if what == 'visitors' else 'session'})"
        query = f"SELECT coalesce({select}, 0) FROM {table} WHERE site = %s AND day = ANY(%s)"
        row = conn.execute(query.encode(), (site, list(days))).fetchone()  # names from the code, not input
        return int(row[0]) if row else 0

    def by_day(self, conn: Conn, site: str, days: Sequence[dt.date]) -> dict[dt.date, int]:
        """Distinct visitors of each of ``days`` (days without any are absent)."""
        if self.approximate:
            query = (
                "SELECT day, round(hll_cardinality(visitors))::bigint FROM visitors_daily_hll"
                " WHERE site = %s AND day = ANY(%s)"
            )
        else:
            query = (
                "SELECT day, count(DISTINCT visitor) FROM visitors_daily WHERE site = %s AND day = ANY(%s) GROUP BY day"
            )
        return {day: int(n) for day, n in conn.execute(query.encode(), (site, list(days))).fetchall()}

    def by_path(self, conn: Conn, site: str, days: Sequence[dt.date], paths: Sequence[str]) -> dict[str, int]:
        """Distinct visitors per path over ``days``, for ``paths``."""
        if self.approximate:
            query = (
                f"SELECT path, {_CARD.format(col='visitors')} FROM path_visitors_daily_hll"
                " WHERE site = %s AND day = ANY(%s) AND path = ANY(%s) GROUP BY path"
            )
        else:
            query = (
                "SELECT path, count(DISTINCT visitor) FROM path_visitors_daily"
                " WHERE site = %s AND day = ANY(%s) AND path = ANY(%s) GROUP BY path"
            )
        rows = conn.execute(query.encode(), (site, list(days), list(paths))).fetchall()
        return {path: int(n) for path, n in rows}

    def by_value(
        self, conn: Conn, site: str, days: Sequence[dt.date], dimension: str, values: Sequence[str]
    ) -> dict[str, int]:
        """Distinct visitors per value of ``dimension`` over ``days``, for ``values``."""
        if dimension not in DIMENSION_NAMES:
            raise ValueError(f"unknown dimension {dimension!r}")
        if self.approximate:
            query: sql.Composed = sql.SQL(
                "SELECT value, " + _CARD.format(col="visitors") + " FROM dimension_visitors_daily_hll"
                " WHERE site = %s AND day = ANY(%s) AND dimension = {dim} AND value = ANY(%s) GROUP BY value"
            ).format(dim=sql.Literal(dimension))
        else:
            query = sql.SQL(
                "SELECT {col}, count(DISTINCT visitor) FROM visitors_daily WHERE site = %s AND day = ANY(%s)"
                " AND {col} = ANY(%s) GROUP BY {col}"
            ).format(col=sql.Identifier(dimension))
        rows = conn.execute(query, (site, list(days), list(values))).fetchall()
        return {value: int(n) for value, n in rows}
