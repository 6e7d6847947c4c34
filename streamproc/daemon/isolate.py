"""Find the entries Postgres rejects as data, so that their neighbours commit.

When a batch's transaction fails with :class:`~streamproc.errors.EntryRejected`
(SQLSTATE class 22, 23 or 54: a numeric overflow, a counter past its range, a
row no partition takes), the batch is split in halves, each committed in a
transaction of its own, recursively. An entry that fails alone is the culprit:
it leaves the batch and goes to the dead-letter stream with Postgres's message.
All in this process, on the entry's first delivery: no crash, no restart, no
delivery added to its neighbours. ``k`` culprits in ``n`` entries cost about
``2·k·log2(n)`` transactions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import structlog

from streamproc.core.decode import Accepted, Decoded, Rejected
from streamproc.daemon import metrics
from streamproc.errors import EntryRejected
from streamproc.postgres.batch import Claim
from streamproc.redis.source import Batch

log = structlog.get_logger("streamproc")

Part = Sequence[tuple[str, Accepted]]  # (stream, entry), in batch order
Culprit = tuple[str, Accepted, str]  # (stream, entry, Postgres's message)


def by_stream(part: Part) -> dict[str, list[Accepted]]:
    out: dict[str, list[Accepted]] = {}
    for stream, item in part:
        out.setdefault(stream, []).append(item)
    return out


def isolate(part: Part, commit: Callable[[Part], Claim], reason: str) -> tuple[list[Claim], list[Culprit]]:
    """``part`` failed as a whole with ``reason``: commit its halves apart, recursively.

    ``commit(part)`` folds and commits the entries of ``part`` in one transaction
    (retrying transient failures itself) and returns its claim, or raises
    :class:`EntryRejected`. Returns the claims of the parts that committed and the
    culprits, each with the message of its own failure. Any other error propagates.
    """
    if len(part) == 1:
        stream, item = part[0]
        return [], [(stream, item, reason)]
    middle = len(part) // 2
    claims: list[Claim] = []
    culprits: list[Culprit] = []
    for half in (part[:middle], part[middle:]):
        try:
            claims.append(commit(half))
        except EntryRejected as exc:
            more_claims, more_culprits = isolate(half, commit, str(exc))
            claims += more_claims
            culprits += more_culprits
    return claims, culprits


def merged(claims: Sequence[Claim]) -> Claim:
    """One claim for the parts of a batch, as if it had committed at once."""
    out = Claim(
        [item for c in claims for item in c.counted],
        sum(c.duplicates for c in claims),
        [item for c in claims for item in c.skipped],
    )
    out.refolded = any(c.refolded for c in claims)
    return out


def reject(decoded: Mapping[str, Decoded], batch: Batch | None, culprits: Sequence[Culprit]) -> None:
    """Move each culprit from its stream's accepted to its rejected, with Postgres's message
    as the reason and its original fields (from ``batch``) for the dead-letter stream."""
    fields = {s: dict(entries) for s, entries in batch.entries.items()} if batch is not None else {}
    for stream, item, why in culprits:
        d = decoded[stream]
        d.accepted[:] = [a for a in d.accepted if a is not item]
        d.rejected.append(Rejected(item.entry_id, fields.get(stream, {}).get(item.entry_id) or {}, why))
        metrics.POSTGRES_REJECTED.labels(stream).inc()
        log.warning("entry rejected by Postgres", stream=stream, entry_id=item.entry_id.decode(), reason=why)
