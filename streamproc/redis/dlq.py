"""The dead-letter stream ``<stream>:dlq``: list, show, replay and purge.

A dead letter holds ``_dlq_source``, ``_dlq_id`` and ``_dlq_reason`` (written
first, see `streamproc.redis.source`) followed by the original fields. Replaying one
moves it back to its source stream as a NEW entry carrying only the original
fields, logs the move in ``<stream>:dlq:replayed`` and deletes the dead letter
- all in one Lua script, so a replay killed at any moment leaves every dead
letter either replayed exactly once or still in the DLQ, never both or neither.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from streamproc.core.decode import DEFAULT_MAX_AGE_DAYS, Accepted, decode_entry
from streamproc.redis.client import Client, run_script
from streamproc.redis.deadletters import dlq_key, prune_marks
from streamproc.redis.ops import Entry, check_stream, fields_text, now_ms, text, xrange, xrevrange

META_FIELDS: Final = (b"_dlq_source", b"_dlq_id", b"_dlq_reason")
CHUNK: Final = 100
Rows = list[Entry]

# KEYS: dlq, source stream, replay log. ARGV: dlq entry id, now (ms).
# Returns {'replayed', new id} | {'gone', ''} | {'empty', ''}.
_REPLAY_LUA: Final = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return {'gone', ''} end
local flat = found[1][2]
local meta, fields = {}, {}
for i = 1, #flat, 2 do
  local k, v = flat[i], flat[i + 1]
  local is_meta = (k == '_dlq_source' or k == '_dlq_id' or k == '_dlq_reason')
  if i <= 6 and is_meta and meta[k] == nil then
    meta[k] = v
  else
    fields[#fields + 1] = k
    fields[#fields + 1] = v
  end
end
if #fields == 0 then return {'empty', ''} end
local new_id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XADD', KEYS[3], '*', 'dlq_id', ARGV[1], 'source', KEYS[2], 'source_id', meta['_dlq_id'] or '',
  'new_id', new_id, 'reason', meta['_dlq_reason'] or '', 'replayed_at_ms', ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[1])
return {'replayed', new_id}
"""


def replay_log_key(stream: str) -> str:
    return f"{stream}:dlq:replayed"


@dataclass
class DeadLetter:
    id: str
    source: str
    source_id: str | None
    reason: str | None
    fields: dict[str, str]  # the original fields, as text
    decodes_now: bool | None = None  # only from `show`
    decode_error: str | None = None


def _dead_letter(stream: str, eid: bytes, raw: dict[bytes, bytes]) -> DeadLetter:
    source = raw.get(b"_dlq_source")
    sid = raw.get(b"_dlq_id")
    reason = raw.get(b"_dlq_reason")
    return DeadLetter(
        id=text(eid),
        source=text(source) if source else stream,
        source_id=text(sid) if sid else None,
        reason=text(reason) if reason is not None else None,
        fields=fields_text({k: v for k, v in raw.items() if k not in META_FIELDS}),
    )


def check_dlq(client: Client, stream: str) -> None:
    """The stream or its DLQ must exist (a typo in --stream should not look like an empty DLQ)."""
    if client.exists(dlq_key(stream)):
        check_stream(client, dlq_key(stream))
    else:
        check_stream(client, stream)


def dlq_length(client: Client, stream: str) -> int:
    return int(client.xlen(dlq_key(stream)))


def list_dead(client: Client, stream: str, limit: int, reason: str | None = None) -> tuple[int, list[DeadLetter]]:
    """The DLQ's length and its ``limit`` oldest dead letters (with ``reason``: only those whose
    reason contains it, any case)."""
    check_dlq(client, stream)
    if reason is None:
        rows = xrange(client, dlq_key(stream), count=limit) if limit > 0 else []
        return dlq_length(client, stream), [_dead_letter(stream, eid, raw) for eid, raw in rows]
    wanted, found = reason.lower(), []
    last = xrevrange(client, dlq_key(stream), 1)
    for rows in _walk(client, stream, text(last[0][0])) if last and limit > 0 else iter(()):
        found += [d for d in (_dead_letter(stream, e, raw) for e, raw in rows) if wanted in (d.reason or "").lower()]
        if len(found) >= limit:
            break
    return dlq_length(client, stream), found[:limit]


def dead_letters(
    client: Client, stream: str, limit: int, reason: str | None = None, page: int = 1000
) -> tuple[int, Iterator[DeadLetter]]:
    """The DLQ's length and an iterator over its ``limit`` oldest dead letters (with ``reason``:
    only those whose reason contains it, any case), read from Redis ``page`` at a time as the
    iterator is consumed: memory bounded by one page whatever ``limit``. Letters added after
    this call are left out. Raises like :func:`list_dead`."""
    check_dlq(client, stream)
    last = xrevrange(client, dlq_key(stream), 1)
    length = dlq_length(client, stream)

    def letters() -> Iterator[DeadLetter]:
        if not last or limit <= 0:
            return
        wanted, given, start = None if reason is None else reason.lower(), 0, "-"
        while rows := xrange(client, dlq_key(stream), start, text(last[0][0]), page):
            for eid, raw in rows:
                d = _dead_letter(stream, eid, raw)
                if wanted is None or wanted in (d.reason or "").lower():
                    yield d
                    given += 1
                    if given >= limit:
                        return
            start = "(" + text(rows[-1][0])

    return length, letters()


@dataclass
class DlqStats:
    stream: str
    length: int
    by_reason: dict[str, int]  # most frequent first
    by_source: dict[str, int]
    oldest_id: str | None
    oldest_age_s: float | None  # from the dead letter's id: when it was written


def stats(client: Client, stream: str) -> DlqStats:
    """Counts of the whole DLQ by reason and by source stream, and its oldest letter (one XRANGE walk)."""
    check_dlq(client, stream)
    reasons: dict[str, int] = {}
    sources: dict[str, int] = {}
    oldest: str | None = None
    last = xrevrange(client, dlq_key(stream), 1)
    for rows in _walk(client, stream, text(last[0][0])) if last else iter(()):
        for eid, raw in rows:
            d = _dead_letter(stream, eid, raw)
            oldest = oldest or d.id
            reasons[d.reason or "(none)"] = reasons.get(d.reason or "(none)", 0) + 1
            sources[d.source] = sources.get(d.source, 0) + 1
    age = None if oldest is None else max(0.0, (now_ms() - int(oldest.partition("-")[0])) / 1000)
    return DlqStats(
        stream,
        sum(reasons.values()),
        dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        dict(sorted(sources.items(), key=lambda kv: -kv[1])),
        oldest,
        age,
    )


def show(
    client: Client, stream: str, dlq_id: str, max_entry_bytes: int, max_age_days: int = DEFAULT_MAX_AGE_DAYS
) -> DeadLetter | None:
    """One dead letter with all its fields, and whether its original fields would decode now."""
    rows = xrange(client, dlq_key(stream), dlq_id, dlq_id, 1)
    if not rows:
        return None
    eid, raw = rows[0]
    letter = _dead_letter(stream, eid, raw)
    original = {k: v for k, v in raw.items() if k not in META_FIELDS}
    result = decode_entry(eid, original, now_ms(), max_entry_bytes, max_age_days)
    letter.decodes_now = isinstance(result, Accepted)
    letter.decode_error = None if isinstance(result, Accepted) else result.reason
    return letter


def _walk(client: Client, stream: str, upto: str) -> Iterator[Rows]:
    """The DLQ in chunks, oldest first, up to ``upto`` (dead letters added meanwhile are left alone)."""
    start = "-"
    while True:
        rows = xrange(client, dlq_key(stream), start, upto, CHUNK)
        if not rows:
            return
        yield rows
        start = "(" + text(rows[-1][0])


@dataclass
class ReplayResult:
    stream: str
    dry_run: bool
    replayed: list[dict[str, str]] = field(default_factory=list)  # {dlq_id, source, source_id, new_id}
    missing: list[str] = field(default_factory=list)  # requested ids not (or no longer) in the DLQ
    skipped: list[dict[str, str]] = field(default_factory=list)  # {dlq_id, why}
    still_failing: list[dict[str, str]] = field(default_factory=list)  # {dlq_id, reason}: kept in the DLQ


def _decode_problem(d: DeadLetter, max_entry_bytes: int, max_age_days: int) -> str | None:
    """Why the letter's original fields would be dead-lettered again if replayed now (None: they decode)."""
    original = {k.encode(): v.encode() for k, v in d.fields.items()}
    stamp = now_ms()
    result = decode_entry(f"{stamp}-0".encode(), original, stamp, max_entry_bytes, max_age_days)
    return None if isinstance(result, Accepted) else result.reason


def replay(
    client: Client,
    stream: str,
    ids: Sequence[str] | None,
    *,
    dry_run: bool = False,
    max_entry_bytes: int = 64 * 1024,
    max_age_days: int = DEFAULT_MAX_AGE_DAYS,
    force: bool = False,
) -> ReplayResult:
    """Move dead letters (``ids``, or all of them when None) back to their source stream, oldest first.

    A letter whose original fields still fail to decode (with these limits) stays in the DLQ and
    is listed in ``still_failing``: replaying it would only make a new dead letter of it. With
    ``force`` it is replayed anyway (and listed there too).
    """
    check_dlq(client, stream)
    result = ReplayResult(stream=stream, dry_run=dry_run)
    script = client.register_script(_REPLAY_LUA)
    if ids is None:
        last = xrevrange(client, dlq_key(stream), 1)
        chunks: Iterator[Rows] = _walk(client, stream, text(last[0][0])) if last else iter(())
    else:
        chunks = iter([_fetch(client, stream, list(dict.fromkeys(ids)), result)])
    log = replay_log_key(stream)
    for rows in chunks:
        letters = []
        for eid, raw in rows:
            d = _dead_letter(stream, eid, raw)
            problem = _decode_problem(d, max_entry_bytes, max_age_days) if d.fields else None
            if problem is not None:
                result.still_failing.append({"dlq_id": d.id, "reason": problem})
            if problem is None or force:
                letters.append(d)
        if dry_run:
            for d in letters:
                if d.fields:
                    result.replayed.append(_move(d, ""))
                else:
                    result.skipped.append(_skip(d))
            continue
        now = str(now_ms())
        calls = [([dlq_key(stream), d.source, log], [d.id, now]) for d in letters]
        for d, (outcome, new_id) in zip(letters, run_script(client, script, calls), strict=True):
            status = text(outcome)
            if status == "replayed":
                result.replayed.append(_move(d, text(new_id)))
            elif status == "empty":
                result.skipped.append(_skip(d))
            else:
                result.missing.append(d.id)
    return result


def _move(d: DeadLetter, new_id: str) -> dict[str, str]:
    return {"dlq_id": d.id, "source": d.source, "source_id": d.source_id or "", "new_id": new_id}


def _skip(d: DeadLetter) -> dict[str, str]:
    return {"dlq_id": d.id, "why": "the dead letter has no original fields to replay"}


def _fetch(client: Client, stream: str, ids: Sequence[str], result: ReplayResult) -> Rows:
    rows = []
    for eid in ids:
        found = xrange(client, dlq_key(stream), eid, eid, 1)
        if found:
            rows.append(found[0])
        else:
            result.missing.append(eid)
    return rows


def count_before(client: Client, stream: str, before_id: str) -> int:
    """How many dead letters have an id lower than ``before_id``."""
    total, start = 0, "-"
    while True:
        rows = xrange(client, dlq_key(stream), start, "(" + before_id, 1000)
        total += len(rows)
        if len(rows) < 1000:
            return total
        start = "(" + text(rows[-1][0])


def purge(client: Client, stream: str, before_id: str) -> int:
    """Delete the dead letters with an id lower than ``before_id`` (exact XTRIM MINID); returns how
    many. The marks of their source entries go too once those entries have left the stream
    (:func:`~streamproc.redis.deadletters.prune_marks`)."""
    removed = int(client.xtrim(dlq_key(stream), minid=before_id, approximate=False))
    prune_marks(client, stream)
    return removed


def id_for_age(age_ms: int) -> str:
    """The entry id of "``age_ms`` ago": dead letters below it are older than that."""
    return f"{max(0, now_ms() - age_ms)}-0"
