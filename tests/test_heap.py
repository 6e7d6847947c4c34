"""The daemon's garbage-collector settings keep collecting what must be collected."""

from __future__ import annotations

import gc
import weakref

from streamproc.daemon import heap


def test_settle_freezes_start_up_objects_and_still_collects_cycles() -> None:
    """After settle(), start-up's objects are out of the collector's scans, and cyclic garbage
    made later is still freed by a collection."""
    before = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]  # a cycle reference counting cannot free
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
