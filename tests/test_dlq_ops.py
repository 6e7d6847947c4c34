"""`dlq stats`, `dlq list --reason`, replay of letters that still fail, `claim --to` an unknown consumer."""

from __future__ import annotations

import redis

from streamproc.redis.deadletters import dlq_key
from tests.test_ops import GROUP, as_json, cli, produce, read
from tests.test_ops import good as good_fields


def letter(r: redis.Redis, stream: str, source_id: str, reason: str, fields: dict[str, str]) -> str:
    """A dead letter as the daemon writes it: the three `_dlq_*` fields, then the original ones."""
    meta = {"_dlq_source": stream, "_dlq_id": source_id, "_dlq_reason": reason}
    return r.xadd(dlq_key(stream), {**meta, **fields}).decode()


def test_stats_and_reason_filter(redis_url: str, r: redis.Redis, stream: str) -> None:
    """stats counts the whole DLQ by reason and by source stream and names the oldest letter;
    list --reason keeps only the letters whose reason contains the text, any case, and says how
    many matched (not "see --limit" when the limit cut nothing)."""
    produce(r, stream, 1)
    first = letter(r, stream, "1-0", "invalid JSON", {"event": "{"})
    letter(r, stream, "2-0", "invalid JSON", {"event": "["})
    letter(r, stream, "3-0", "missing field `site`", {"event": "{}"})
    data = as_json(cli(redis_url, stream, "dlq", "stats", "--json"))["streams"][0]
    assert data["length"] == 3 and data["by_reason"] == {"invalid JSON": 2, "missing field `site`": 1}
    assert data["by_source"] == {stream: 3} and data["oldest_id"] == first
    listed = as_json(cli(redis_url, stream, "dlq", "list", "--reason", "INVALID json", "--json"))["streams"][0]
    assert [e["source_id"] for e in listed["entries"]] == ["1-0", "2-0"] and listed["length"] == 3
    text = cli(redis_url, stream, "dlq", "stats")
    assert text.exit_code == 0 and "3 dead letters" in text.stdout and "2  reason: invalid JSON" in text.stdout
    shown = cli(redis_url, stream, "dlq", "list", "--reason", "json").stdout
    assert "2 whose reason contains 'json'" in shown and "see --limit" not in shown  # not cut by --limit
    cut = cli(redis_url, stream, "dlq", "list", "--reason", "json", "--limit", "1").stdout
    assert "1 whose reason contains 'json' (the oldest; see --limit)" in cut


def test_replay_keeps_letters_that_would_fail_again(redis_url: str, r: redis.Redis, stream: str) -> None:
    """--dry-run says how many letters would decode now; replay moves only those and leaves the
    others in the DLQ untouched, so a letter that still fails never becomes a new letter."""
    produce(r, stream, 1)
    r.xgroup_create(stream, GROUP, id="$")
    good = letter(r, stream, "1-0", "postgres refused", good_fields(1))
    bad = letter(r, stream, "2-0", "invalid JSON", {"event": "{"})
    dry = as_json(cli(redis_url, stream, "dlq", "replay", "--all", "--dry-run", "--json"))
    assert [m["dlq_id"] for m in dry["replayed"]] == [good] and [f["dlq_id"] for f in dry["still_failing"]] == [bad]
    done = as_json(cli(redis_url, stream, "dlq", "replay", "--all", "--json"))
    assert [m["dlq_id"] for m in done["replayed"]] == [good]
    assert [e.decode() for e, _ in r.xrange(dlq_key(stream))] == [bad]
    assert r.xlen(stream) == 2  # the one produced, and the one replayed


def test_claim_to_an_unknown_consumer_needs_create(redis_url: str, r: redis.Redis, stream: str) -> None:
    """`claim --to` a consumer the group lacks is refused (exit 2, nearest name suggested, nothing
    moved); with --create it is made and takes the entries."""
    produce(r, stream, 2)
    r.xgroup_create(stream, GROUP, id="0")
    ids = read(r, stream, "worker-1", 1)
    read(r, stream, "worker-2", 1)
    res = cli(redis_url, stream, "claim", *ids, "--to", "worker-3x", "--yes")
    assert res.exit_code == 2 and "no consumer 'worker-3x'" in res.stderr and "--create" in res.stderr
    res = cli(redis_url, stream, "claim", *ids, "--to", "wroker-2", "--yes")
    assert res.exit_code == 2 and "did you mean 'worker-2'" in res.stderr
    assert {row["consumer"] for row in r.xpending_range(stream, GROUP, "-", "+", 10, consumername="worker-1")} == {
        b"worker-1"
    }
    data = as_json(cli(redis_url, stream, "claim", *ids, "--to", "worker-3", "--create", "--yes", "--json"))
    assert data["done"] == ids
