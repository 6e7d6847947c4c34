"""How a rollup is declared, and the upsert SQL derived from the declaration.

A rollup is a target table, its key columns and its measures, each measure
with a merge rule. A rollup without measures is a *set*: rows are inserted
once and never updated (exact unique visitors, sessions). A set with a
*sketch* column keeps its members as a HyperLogLog instead (approximate
uniques): the last key column is hashed into one sketch per remaining key,
and sketches merge inside the upsert (``hll_union``). The declared rollups
themselves are in :mod:`streamproc.core.rollups`; their in-memory
accumulation is :class:`streamproc.core.shard.Shard`.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streamproc.core.wire import array_literal


class Kind(enum.Enum):
    """Column kinds: the SQL type, the type sent over the wire and how Postgres turns
    the one into the other. Times travel as integers (cheap to build and to send) and
    become timestamps or dates in the statement, with exact integer arithmetic."""

    TEXT = ("text",)
    SMALLINT = ("smallint",)
    BIGINT = ("bigint",)
    FLOAT = ("double precision",)
    NUMERIC = ("numeric",)
    HOUR = ("timestamptz", "bigint", "(TIMESTAMPTZ 'epoch' + {} * INTERVAL '1 hour')")  # hours since the epoch
    DAY = ("date", "bigint", "(DATE '1970-01-01' + {}::integer)")  # days since the epoch
    TIME_MS = ("timestamptz", "bigint", "(TIMESTAMPTZ 'epoch' + {} * INTERVAL '1 millisecond')")  # ms since the epoch

    def __init__(self, sql_type: str, wire_type: str | None = None, from_wire: str = "{}") -> None:
        self.sql_type = sql_type
        self.wire_type = wire_type or sql_type
        self.from_wire = from_wire


class Merge(enum.Enum):
    SUM = "sum"
    MIN = "min"
    MAX = "max"


@dataclass(frozen=True)
class Col:
    name: str
    kind: Kind


@dataclass(frozen=True)
class Measure:
    name: str
    kind: Kind
    merge: Merge = Merge.SUM


@dataclass(frozen=True)
class Rollup:
    table: str
    keys: tuple[Col, ...]
    measures: tuple[Measure, ...] = ()
    doc: str = ""
    payload: tuple[Col, ...] = ()  # set rollups only: stored with the key, never updated
    sketch: str = ""  # set rollups only: the HyperLogLog column the last key column is added to

    @functools.cached_property
    def merges(self) -> tuple[Merge, ...]:
        return tuple(m.merge for m in self.measures)

    @property
    def is_set(self) -> bool:
        return not self.measures

    @property
    def columns(self) -> tuple[Col | Measure, ...]:
        return (*self.keys, *self.payload, *self.measures)

    def upsert_sql(self) -> str:
        """One multi-row upsert fed by arrays, applied in key order.

        Every writer applies rows in the same (key) order, so two workers that
        touch overlapping keys wait on each other instead of deadlocking.
        """
        names = ", ".join(c.name for c in self.columns)
        arrays = ", ".join(f"%t::{c.kind.wire_type}[]" for c in self.columns)
        if self.sketch:
            return self._sketch_sql(arrays, names)
        values = ", ".join(_value(c) for c in self.columns)
        keys = ", ".join(c.name for c in self.keys)
        order = ", ".join(f"t.{c.name}" for c in self.keys)
        head = (
            f"INSERT INTO {self.table} ({names}) "
            f"SELECT {values} FROM unnest({arrays}) AS t({names}) ORDER BY {order} "
            f"ON CONFLICT ({keys}) DO "
        )
        if self.is_set:
            return head + "NOTHING"
        sets = ", ".join(_merge_expr(self.table, m) for m in self.measures)
        return head + f"UPDATE SET {sets}"

    def _sketch_sql(self, arrays: str, names: str) -> str:
        """Members grouped into one sketch per key, merged with the stored one (``hll`` extension)."""
        *group, member = self.keys
        keys = ", ".join(c.name for c in group)
        values = ", ".join(_value(c) for c in group)
        by = ", ".join(f"t.{c.name}" for c in group)
        s = self.sketch
        return (
            f"INSERT INTO {self.table} ({keys}, {s}) "
            f"SELECT {values}, hll_add_agg(hll_hash_bigint(t.{member.name})) "
            f"FROM unnest({arrays}) AS t({names}) GROUP BY {by} ORDER BY {by} "
            f"ON CONFLICT ({keys}) DO UPDATE SET {s} = hll_union({self.table}.{s}, EXCLUDED.{s})"
        )

    def parameters(self, columns: Iterable[tuple[Any, ...]]) -> list[str]:
        """The parameters of :meth:`upsert_sql`: one array literal per column."""
        return [array_literal(values, c.kind is Kind.TEXT) for c, values in zip(self.columns, columns, strict=True)]


def _value(c: Col | Measure) -> str:
    """The column's value in the statement, from the array element ``t.<name>``."""
    return c.kind.from_wire.format(f"t.{c.name}")


def _merge_expr(table: str, m: Measure) -> str:
    old, new = f"{table}.{m.name}", f"EXCLUDED.{m.name}"
    if m.merge is Merge.SUM:
        return f"{m.name} = {old} + {new}"
    fn = "LEAST" if m.merge is Merge.MIN else "GREATEST"
    return f"{m.name} = {fn}({old}, {new})"
