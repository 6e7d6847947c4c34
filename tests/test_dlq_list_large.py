"""`dlq list` in table form streams its rows: a large listing is complete, in order, and matches --json."""

from __future__ import annotations

import json
import subprocess
import sys

import redis

from tests.test_ops import subprocess_env

LETTERS = 5_000  # five pages of the listing's reads


def reason_of(i: int) -> str:
    return f"`event` field is not valid JSON: #{i}" if i % 3 == 0 else f"invalid event: #{i}"


def fill(r: redis.Redis, stream: str) -> list[tuple[str, str, str]]:
    """LETTERS dead letters, every third with a reason containing "JSON"; (dlq id, source id, reason)."""
    pipe = r.pipeline(transaction=False)
    for i in range(LETTERS):
        fields = {"_dlq_source": stream, "_dlq_id": f"{i + 1}-0", "_dlq_reason": reason_of(i), "n": str(i)}
        pipe.xadd(f"{stream}:dlq", fields)  # type: ignore[arg-type]  # redis-py's narrow field type
    ids = [eid.decode() for eid in pipe.execute()]
    return [(ids[i], f"{i + 1}-0", reason_of(i)) for i in range(LETTERS)]


def listing(redis_url: str, stream: str, *args: str) -> str:
    env = {**subprocess_env(), "STREAMPROC_REDIS_URL": redis_url, "STREAMPROC_STREAMS": stream}
    res = subprocess.run(
        [sys.executable, "-m", "streamproc", "dlq", "list", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0 and res.stderr == "", res.stderr
    return res.stdout


def rows(text: str) -> list[tuple[str, str, str]]:
    """(dlq id, source id, reason) of each row line of the table form."""
    lines = text.splitlines()
    assert lines[1].split() == ["dlq", "id", "source", "id", "reason"]
    out = []
    for line in lines[2:]:
        if line.startswith("oldest ") or " whose reason contains " in line:
            break  # the footer
        dlq_id, source_id, reason = line.split(maxsplit=2)
        out.append((dlq_id, source_id, reason))
    return out


def test_a_large_table_listing_is_complete_in_order_and_matches_json(
    redis_url: str, r: redis.Redis, stream: str
) -> None:
    """--limit 100000 over 5 000 letters lists every one, oldest first, with the same ids and
    reasons as --json; a smaller --limit cuts at the oldest N and says so; --reason filters across
    page boundaries; a control character in a reason is shown as an escape, never raw."""
    letters = fill(r, stream)
    text = listing(redis_url, stream, "--limit", "100000")
    assert text.splitlines()[0] == f"{stream}:dlq - {LETTERS:,} dead letters"
    assert rows(text) == letters
    assert "shown" not in text.splitlines()[-1]  # nothing left out
    (doc,) = json.loads(listing(redis_url, stream, "--limit", "100000", "--json"))["streams"]
    assert [(e["id"], e["source_id"], e["reason"]) for e in doc["entries"]] == letters

    cut = listing(redis_url, stream, "--limit", "2500")
    assert rows(cut) == letters[:2500]
    assert cut.splitlines()[-1] == "oldest 2,500 shown (see --limit; --json for machines)"

    only = listing(redis_url, stream, "--limit", "100000", "--reason", "JSON")
    assert rows(only) == [x for x in letters if "JSON" in x[2]]
    assert only.splitlines()[-1] == f"{len(rows(only)):,} whose reason contains 'JSON'"

    r.xadd(f"{stream}:dlq", {"_dlq_source": stream, "_dlq_id": "9999-0", "_dlq_reason": "bad \x1b[31m red"})
    last = listing(redis_url, stream, "--limit", "100000").splitlines()[-1]
    assert "\x1b" not in last and last.endswith("bad \\x1b[31m red")
