"""Throwaway Postgres login roles with the daemon's grants, for tests that need another user."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict


@contextmanager
def daemon_role(database_url: str, schema: str, role: str, password: str = "role-pw-0") -> Iterator[str]:
    """Create ``role`` (LOGIN, ``password``) with the grants deploy/postgres/roles.sql gives the
    daemon on ``schema``; yields a URL that logs in as it. Dropped afterwards."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
        conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        conn.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        conn.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"')
    try:
        yield url_as(database_url, role, password)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def url_as(database_url: str, user: str, password: str | None = None) -> str:
    """``database_url``'s server and database, as ``user`` (``password`` written raw, as a user
    would paste it: libpq, not a URL parser, decides where it ends)."""
    parts = conninfo_to_dict(database_url)
    host, port, dbname = parts.get("host", "127.0.0.1"), parts.get("port", "5432"), parts.get("dbname", "")
    auth = f"{user}:{password}" if password is not None else user
    return f"postgresql://{auth}@{host}:{port}/{dbname}"
