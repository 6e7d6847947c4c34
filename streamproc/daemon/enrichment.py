"""The daemon's side of enrichment: the enricher its settings ask for, and the derived
sessions of each batch, written in the batch's transaction (docs/sessions.md)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from streamproc.config import Settings
from streamproc.core.decode import Accepted
from streamproc.core.enrich import Enricher
from streamproc.core.fold import Hasher
from streamproc.core.rollups import BOTS, Shard
from streamproc.core.sessionize import producer_session_points, session_points, without_producer_sessions
from streamproc.daemon import metrics
from streamproc.postgres.batch import BatchTransaction

log = structlog.get_logger("streamproc")


class Enrichment:
    """``enricher``: None when enrichment and bot filtering are both off. ``gap_ms``: the
    session timeout, 0 when sessions are not derived."""

    def __init__(self, settings: Settings, hasher: Hasher) -> None:
        self.hasher = hasher
        self.approximate = settings.approximate_uniques
        self.gap_ms = settings.session_timeout_s * 1000
        self.retention_ms = settings.ledger_retention_s * 1000
        self.enricher: Enricher | None = None
        if settings.enrich or settings.filter_bots:
            self.enricher = Enricher(
                derive=settings.enrich,
                filter_bots=settings.filter_bots,
                country_db=Path(settings.country_db) if settings.country_db and settings.enrich else None,
            )

    def warm_up(self) -> None:
        if self.enricher is not None:
            self.enricher.warm_up()
            log.info(
                "enrichment ready",
                user_agents=self.enricher.derive or self.enricher.filter_bots,
                filter_bots=self.enricher.filter_bots,
                country_db=str(self.enricher.countries.path) if self.enricher.countries else None,
                session_timeout_s=self.gap_ms // 1000 or None,
            )

    def with_sessions(
        self, tx: BatchTransaction, counted: Sequence[Accepted], shards: Mapping[str, Shard]
    ) -> tuple[dict[str, Shard], tuple[int, int]]:
        """``shards`` plus the rows of the derived sessions of the ``counted`` entries, and
        (sessions started, runs merged) for :meth:`committed`."""
        if not self.gap_ms:
            return dict(shards), (0, 0)
        points = session_points(counted, self.hasher, self.enricher)
        producer = producer_session_points(counted, self.hasher, self.enricher)  # own runs (docs/sessions.md)
        keep_from_ms = int(time.time() * 1000) - self.retention_ms  # the ledger's horizon (docs/sessions.md)
        derived = tx.derive_sessions(points, self.gap_ms, self.approximate, keep_from_ms, producer)
        shards = without_producer_sessions(shards, self.approximate)
        return derived.into(shards, self.approximate), (derived.started, derived.merged)

    def committed(self, shards: Mapping[str, Shard], sessions: tuple[int, int]) -> None:
        """Count, once the batch committed, what enrichment did in it."""
        bots = shards.get(BOTS.table)
        if bots is not None and bots.rows:
            metrics.BOT_EVENTS.inc(sum(row[0] for row in bots.rows.values()))
        if self.gap_ms:
            metrics.DERIVED_SESSIONS.labels("started").inc(sessions[0])
            metrics.DERIVED_SESSIONS.labels("merged").inc(sessions[1])
