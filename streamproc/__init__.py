"""streamproc: Redis Streams -> Postgres analytics rollups, counted exactly once."""

from __future__ import annotations

__version__ = "0.1.0"
