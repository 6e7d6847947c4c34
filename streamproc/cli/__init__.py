"""The `streamproc` command line; the app and its commands are in :mod:`streamproc.cli.app`."""

from __future__ import annotations


def main() -> None:
    """The console script ``streamproc`` (imports the app only when run)."""
    from streamproc.cli.app import main as run

    run()
