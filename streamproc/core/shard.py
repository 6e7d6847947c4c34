"""In-memory accumulation of one rollup for one batch, derived from its declaration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamproc.core.rollup_decl import Kind, Merge, Rollup

_SUM, _MIN = Merge.SUM, Merge.MIN


@dataclass
class Shard:
    """Pre-aggregated rows of one rollup for one batch.

    Each key appears once, which a multi-row upsert requires (it may not touch
    the same row twice).
    """

    rollup: Rollup
    rows: dict[tuple[Any, ...], list[Any]] = field(default_factory=dict)
    members: dict[tuple[Any, ...], tuple[Any, ...]] = field(default_factory=dict)

    def count(self, key: tuple[Any, ...], n: int = 1) -> None:
        """Add ``n`` to a rollup whose only measure is a sum."""
        count_into(self.rows, key, n)

    def merge(self, key: tuple[Any, ...], values: tuple[Any, ...]) -> None:
        """Merge a full measure tuple into the row at ``key``."""
        row = self.rows.get(key)
        if row is None:
            self.rows[key] = list(values)
            return
        for i, merge in enumerate(self.rollup.merges):
            if merge is _SUM:
                row[i] += values[i]
            elif merge is _MIN:
                if values[i] < row[i]:
                    row[i] = values[i]
            elif values[i] > row[i]:
                row[i] = values[i]

    def without_sums_of(self, repeats: Shard) -> Shard:
        """A copy with the sums of ``repeats`` (a fold of events that repeat ones already
        counted) taken out; their set members, minima and maxima change nothing and
        stay. A row whose counts (the integer sums) fall to zero was touched by repeats
        only, and is dropped with whatever minimum or maximum it carried. ``self`` is
        unchanged (a retried transaction starts again from it)."""
        measures = self.rollup.measures
        counts = [i for i, m in enumerate(measures) if m.merge is Merge.SUM and m.kind is Kind.BIGINT]
        rows = dict(self.rows)  # rows the repeats touch get copies below; the others are shared
        for key, values in repeats.rows.items():
            row = rows[key] = list(rows[key])
            for i, m in enumerate(measures):
                if m.merge is Merge.SUM:
                    row[i] -= values[i]
            if not any(row[i] for i in counts):
                del rows[key]
        return Shard(self.rollup, rows, self.members)

    def add(self, key: tuple[Any, ...], payload: tuple[Any, ...] = ()) -> None:
        """Add a member (and its payload, first one wins) to a set rollup."""
        if key not in self.members:
            self.members[key] = payload

    def __len__(self) -> int:
        return len(self.members) if self.rollup.is_set else len(self.rows)

    def columns(self) -> list[tuple[Any, ...]]:
        """The rows as columns (keys, payload or measures), transposed in C without a tuple per row."""
        rows: dict[tuple[Any, ...], Any] = self.members if self.rollup.is_set else self.rows
        if not rows:
            return []
        keys = list(zip(*rows, strict=True))
        if self.rollup.is_set and not self.rollup.payload:
            return keys
        return keys + list(zip(*rows.values(), strict=True))


def count_into(rows: dict[tuple[Any, ...], list[Any]], key: tuple[Any, ...], n: int = 1) -> None:
    """:meth:`Shard.count` on a shard's rows, for a caller that holds them (the fold's hot path)."""
    row = rows.get(key)
    if row is None:
        rows[key] = [n]
    else:
        row[0] += n
