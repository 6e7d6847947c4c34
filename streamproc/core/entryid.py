"""Redis stream entry ids as numbers: ``b"1763800000000-3"`` -> ``(1763800000000, 3)``."""

from __future__ import annotations


def split_entry_id(entry_id: bytes | str) -> tuple[int, int]:
    """``b"1763800000000-3"`` (or the str) -> ``(1763800000000, 3)``: sortable, as Redis orders ids.
    Raises ValueError for a malformed id."""
    if isinstance(entry_id, bytes) and entry_id.isascii():  # every id Redis writes: no decode needed
        ms, _, seq = entry_id.partition(b"-")
        return int(ms), int(seq or 0)
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms_text, _, seq_text = text.partition("-")
    return int(ms_text), int(seq_text or 0)
