"""Entries trimmed before any worker read them are counted, not silently skipped.

Before, a producer's ``XADD … MAXLEN 1000`` while the workers were behind lost
2 000 of 3 000 entries with ``trimmed=0``, no metric and no alert.
"""

from __future__ import annotations

import redis

from streamproc.dev.synth import Generator
from tests.conftest import Daemons
from tests.test_crash import assert_totals, log_lines


def test_entries_trimmed_before_delivery_are_counted(
    make_settings, schema, r: redis.Redis, stream: str, daemons: Daemons
) -> None:
    """The group exists, no worker runs, a producer writes 3 000 entries with MAXLEN 1000: the
    daemon's first read skips 2 000 deleted entries and counts exactly 2 000 (one `entries deleted
    before delivery` line, `trimmed` in the totals, the trimmed-entries metric behind the alert);
    the 1 000 left are counted exactly; a second run counts nothing more."""
    r.xgroup_create(stream, "g", id="0", mkstream=True)
    entries = [e for e in Generator(seed=71, days=1, bad_ratio=0).entries(3_300) if not e.event.get("_duplicate")]
    entries = entries[:3_000]
    pipe = r.pipeline(transaction=False)
    for entry in entries:
        pipe.xadd(stream, entry.fields, maxlen=1_000, approximate=False)  # type: ignore[arg-type]
    pipe.execute()
    assert r.xlen(stream) == 1_000

    settings = make_settings()
    proc = daemons.start(settings, "--drain")
    assert proc.wait(timeout=120) == 0, daemons.logs()[-2000:]
    lost = log_lines(proc.logfile, "entries deleted before delivery")  # type: ignore[attr-defined]
    assert [(x["stream"], x["entries"]) for x in lost] == [(stream, 2_000)], lost
    (drained,) = log_lines(proc.logfile, "drained")  # type: ignore[attr-defined]
    assert drained["trimmed"] == 2_000
    assert_totals(settings, entries[-1_000:])

    again = daemons.start(settings, "--drain")
    assert again.wait(timeout=120) == 0
    assert log_lines(again.logfile, "entries deleted before delivery") == []  # type: ignore[attr-defined]
