"""Dead letters: at most one per source entry, written without Lua.

Before, a group rewound with ``XGROUP SETID`` dead-lettered every malformed
entry again (5 became 10, and ``dlq replay --all`` replayed each twice), and a
Redis user without scripting rights crashed on the first malformed entry.
"""

from __future__ import annotations

import json

import redis

from streamproc.dev.synth import Generator, produce
from tests.conftest import Daemons, daemon_env
from tests.test_config import run_cli
from tests.test_crash import assert_totals
from tests.truth import malformed


def test_rewound_group_writes_no_second_dead_letter_and_replay_counts_once(
    make_settings, schema, r: redis.Redis, stream: str, daemons: Daemons
) -> None:
    """Drain, rewind the group to 0 (XGROUP SETID), drain again: the DLQ still holds one dead
    letter per malformed entry, the totals are unchanged, and `dlq replay --all` replays each
    source entry once."""
    entries = list(Generator(seed=61, days=1, bad_ratio=0.02).entries(2_000))
    produce(r, stream, entries)
    bad = len(malformed(entries))
    settings = make_settings()
    assert daemons.start(settings, "--drain").wait(timeout=120) == 0, daemons.logs()[-2000:]
    assert bad > 0 and r.xlen(f"{stream}:dlq") == bad

    r.xgroup_setid(stream, "g", "0")
    assert daemons.start(settings, "--drain").wait(timeout=120) == 0, daemons.logs()[-2000:]
    assert r.xlen(f"{stream}:dlq") == bad, "a rewound group dead-lettered entries a second time"
    assert_totals(settings, entries)

    res = run_cli("dlq", "replay", "--force", "--all", "--json", env=daemon_env(settings))
    assert res.returncode == 0, res.stderr
    replayed = json.loads(res.stdout)["replayed"]
    assert len(replayed) == bad and len({d["source_id"] for d in replayed}) == bad


def test_dead_letters_need_no_scripting_rights(
    make_settings, schema, r: redis.Redis, stream: str, ns: str, daemons: Daemons
) -> None:
    """A Redis user denied every scripting command (-@scripting) still dead-letters malformed
    entries and counts the good ones exactly; nothing crashes."""
    user, password = f"{ns}-noscript", "noscript-pw-0123456789"
    r.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all", "-@scripting"])
    try:
        entries = list(Generator(seed=62, days=1, bad_ratio=0.02).entries(1_500))
        produce(r, stream, entries)
        url = make_settings().redis_url.replace("redis://", f"redis://{user}:{password}@")
        settings = make_settings(redis_url=url)
        proc = daemons.start(settings, "--drain")
        assert proc.wait(timeout=120) == 0, daemons.logs()[-2000:]
        assert "NOPERM" not in daemons.logs() and "no permissions" not in daemons.logs()
        assert r.xlen(f"{stream}:dlq") == len(malformed(entries)) > 0
        assert_totals(settings, entries)
    finally:
        r.acl_deluser(user)


def test_marks_go_with_trimmed_entries_and_the_rest_still_guard_a_rewind(
    make_settings, schema, r: redis.Redis, stream: str, daemons: Daemons
) -> None:
    """`<stream>:dlq:ids` shrinks with the stream: `streamproc trim` forgets the marks of the
    entries it trimmed, `dlq purge` those of entries no longer in the stream. The marks of
    entries still in the stream stay, even once their dead letters are purged: a group rewound
    to 0 then dead-letters nothing a second time, and the totals stay exact.

    Before, the hash kept every source id ever dead-lettered, for good."""
    settings = make_settings()
    env = daemon_env(settings)
    first = list(Generator(seed=63, days=1, bad_ratio=0.03).entries(800))
    second = list(Generator(seed=64, days=1, bad_ratio=0.03).entries(800))
    bad1, bad2 = len(malformed(first)), len(malformed(second))
    assert bad1 > 0 and bad2 > 0
    ids_key = f"{stream}:dlq:ids"

    produce(r, stream, first)
    assert daemons.start(settings, "--drain").wait(timeout=120) == 0, daemons.logs()[-2000:]
    assert r.hlen(ids_key) == bad1
    produce(r, stream, second)  # not read yet: trim keeps them
    res = run_cli("trim", "--stream", stream, "--json", env=env)
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["removed"] == len(first) and plan["marks_removed"] == bad1, plan
    assert r.hlen(ids_key) == 0

    assert daemons.start(settings, "--drain").wait(timeout=120) == 0, daemons.logs()[-2000:]
    assert r.hlen(ids_key) == bad2 and r.xlen(f"{stream}:dlq") == bad1 + bad2
    res = run_cli("dlq", "purge", "--stream", stream, "--before", "0s", "--yes", env=env)
    assert res.returncode == 0, res.stderr
    assert r.xlen(f"{stream}:dlq") == 0
    assert r.hlen(ids_key) == bad2, "marks of entries still in the stream must stay"

    r.xgroup_setid(stream, "g", "0")
    assert daemons.start(settings, "--drain").wait(timeout=120) == 0, daemons.logs()[-2000:]
    assert r.xlen(f"{stream}:dlq") == 0, "a rewound group dead-lettered entries a second time"
    assert_totals(settings, first + second)
