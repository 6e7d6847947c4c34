"""The garbage collector's settings for a long-running daemon.

A batch allocates hundreds of thousands of short-lived containers (decoded events,
rollup keys, SQL parameters) that reference counting frees; Python's default
collector still scans its young generation every 700 allocations and, every 100 of
those scans, the whole heap, including the ~150 000 objects of the user-agent rules
loaded at start-up that never die. :func:`settle` moves everything alive after
start-up out of the collector's sight (:func:`gc.freeze`) and lets the young
generation grow to :data:`YOUNG_THRESHOLD` containers between scans. Nothing is
kept longer than a few batches: cyclic garbage is still collected, only less often
(its amount is bounded by the threshold).
"""

from __future__ import annotations

import gc
from typing import Final

YOUNG_THRESHOLD: Final = 50_000  # net new containers between two young-generation scans (default 700)


def settle() -> None:
    """Collect once, freeze the survivors (start-up state: rules, modules, settings), and
    raise the young-generation threshold. Call once, after start-up's loading is done."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
