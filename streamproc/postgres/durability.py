"""Postgres settings that make a COMMIT less than durable, for ``streamproc check``.

The daemon acknowledges entries in Redis only after Postgres answered COMMIT. With
``fsync = off``, ``synchronous_commit = off`` or ``full_page_writes = off`` a crash of the
Postgres server (or its host) can lose transactions it already reported committed: the
entries are acked by then, so the events they carried are lost for good.
"""

from __future__ import annotations

from typing import Final

import psycopg

from streamproc.postgres.faults import translate
from streamproc.postgres.session import Timeouts, connect

UNSAFE: Final = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
WHY: Final = {
    "fsync": "writes are not forced to disk",
    "synchronous_commit": "COMMIT returns before its WAL is on disk",
    "full_page_writes": "a torn page after a crash cannot be repaired",
}


def unsafe_settings(database_url: str, schema: str) -> dict[str, str]:
    """Setting name -> its value, for each of :data:`UNSAFE` set to its unsafe value (``pg_settings``
    is readable by every role); empty when commits are durable. Raises
    :class:`~streamproc.errors.SinkUnavailable` / ``SinkMisconfigured`` like the other checks."""
    with connect(database_url, schema, "streamproc-check", Timeouts(), autocommit=True) as conn:
        try:
            rows = conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(UNSAFE),)
            ).fetchall()
        except psycopg.Error as exc:
            raise translate(exc, "check", schema) from exc
    values = {str(name): str(value) for name, value in rows}
    return {name: values[name] for name, bad in UNSAFE.items() if values.get(name) == bad}


def warning(name: str, value: str) -> str:
    """The one line ``check`` prints for an unsafe setting."""
    return (
        f"{name} = {value}: {WHY[name]}; a crash of the Postgres server can lose committed events the"
        f" daemon has already acknowledged in Redis (set {name} = on)"
    )
