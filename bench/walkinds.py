"""WAL by kind of record over a drain: which writes the bytes of ``WAL B / event`` are.

``pg_waldump --stats=record`` between two LSNs of the benchmark's own Postgres, grouped
into what a rollup write is made of: heap tuples inserted, the confirmation record each
``INSERT ... ON CONFLICT`` insert adds, index entries, index page splits, row locks (the
``ON CONFLICT DO UPDATE`` and ``FOR UPDATE`` locks), updates, full-page images, and the
rest. Bytes per event; record counts per event for the first four.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Final

from streamproc.dev.localservers import pg_tool

KINDS: Final = {
    "Heap/INSERT": "heap inserts",
    "Heap/INSERT+INIT": "heap inserts",
    "Heap/HEAP_CONFIRM": "insert confirmations (ON CONFLICT)",
    "Btree/INSERT_LEAF": "index entries",
    "Btree/INSERT_UPPER": "index entries",
    "Btree/INSERT_POST": "index entries",
    "Btree/DEDUP": "index entries",
    "Btree/SPLIT_L": "index page splits",
    "Btree/SPLIT_R": "index page splits",
    "Btree/NEWROOT": "index page splits",
    "Heap/LOCK": "row locks",
    "Heap/UPDATE": "updates",
    "Heap/HOT_UPDATE": "updates",
    "Heap/UPDATE+INIT": "updates",
}
_LINE: Final = re.compile(r"^(\S+)\s+(\d+)\s+\(\s*[\d.]+\)\s+(\d+)\s+\(\s*[\d.]+\)\s+(\d+)\s+\(")


def wal_by_kind(wal_dir: Path, start: str, end: str, events: int) -> dict[str, dict[str, float]]:
    """``{kind: {"bytes": B per event, "records": per event}}`` of the WAL from ``start`` to
    ``end`` (LSNs as ``pg_current_wal_lsn`` gives them) in ``wal_dir`` (a data directory's
    ``pg_wal``); full-page images are their own kind whatever record carries them. Raises
    :class:`subprocess.CalledProcessError` if ``pg_waldump`` fails."""
    res = subprocess.run(
        [pg_tool("pg_waldump"), "--stats=record", "-s", start, "-e", end, "-p", str(wal_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    totals: dict[str, list[int]] = {}
    for line in res.stdout.splitlines():
        m = _LINE.match(line)
        if m is None or m.group(1) == "Total":
            continue
        name, records, size, fpi = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        kind = KINDS.get(name, "other")
        totals.setdefault(kind, [0, 0])
        totals[kind][0] += size
        totals[kind][1] += records
        if fpi:
            totals.setdefault("full-page images", [0, 0])[0] += fpi
    return {
        kind: {"bytes": round(b / events, 1), "records": round(n / events, 3)}
        for kind, (b, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])
    }
