"""Mergeable latency histogram with bounded relative error.

Durations fall into logarithmically spaced buckets (the DDSketch layout): bucket
``i`` holds values in ``(gamma**(i-1), gamma**i]``. Merging two histograms is
adding counts bucket by bucket, which Postgres does inside the upsert. Any
quantile read back is within ``RELATIVE_ERROR`` of a true sample value of that
rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final

RELATIVE_ERROR: Final = 0.02
GAMMA: Final = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA: Final = math.log(GAMMA)
MIN_MS: Final = 0.001
ZERO_BUCKET: Final = -32768  # values below MIN_MS, reported as 0


def bucket_of(duration_ms: float) -> int:
    if duration_ms < MIN_MS:
        return ZERO_BUCKET
    return math.ceil(math.log(duration_ms) / _LOG_GAMMA)


def bucket_value(bucket: int) -> float:
    """The representative value of a bucket (relative error <= RELATIVE_ERROR)."""
    if bucket == ZERO_BUCKET:
        return 0.0
    return 2 * GAMMA**bucket / (GAMMA + 1)


def quantiles(counts: Mapping[int, int], qs: Iterable[float]) -> list[float | None]:
    """Nearest-rank quantiles (rank ``ceil(q * n)``) from bucket counts."""
    total = sum(counts.values())
    if total == 0:
        return [None for _ in qs]
    ordered = sorted(counts.items())
    out: list[float | None] = []
    for q in qs:
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bucket, n in ordered:
            seen += n
            if seen >= rank:
                out.append(bucket_value(bucket))
                break
    return out
