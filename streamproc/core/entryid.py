"""Redis stream entry ids as numbers: ``b"1763800000000-3"`` -> ``(1763800000000, 3)``."""

from __future__ import annotations


def split_entry_id(entry_id: bytes | str) -> tuple[int, int]:
    """``b"1763800000000-3"`` (or the str) -> ``(1763800000000, 3)``: sortable, as Redis orders ids."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
