"""Operational commands (status, pending, dlq, consumers, trim, top...): registered on the main app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the operational commands to ``app``."""
