"""`streamproc maintain`: partitions ahead, retention behind (registered on the main app)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the maintenance command(s) to ``app``."""
