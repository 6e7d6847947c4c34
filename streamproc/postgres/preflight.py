"""What ``streamproc check`` asks Postgres: version, schema, grants, partitions, hll."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import psycopg.errors

from streamproc.errors import StreamprocError
from streamproc.postgres.faults import translate
from streamproc.postgres.grants import check_privileges
from streamproc.postgres.migrate import check_migrated
from streamproc.postgres.partitions import maintain
from streamproc.postgres.session import Timeouts, connect


@dataclass
class PostgresFacts:
    """Each field: None when fine, else the one-line problem; ``version`` the server's."""

    version: str = ""
    role: str = ""
    schema: str | None = None
    schema_unreadable: bool = False  # the role may not read schema_migrations (a grant is missing)
    grants: str | None = None
    hll: str | None = None
    partitions_missing: int = 0
    partitions_unknown: str | None = None  # why the plan could not be made as this role


def postgres_facts(database_url: str, schema: str, approximate: bool) -> PostgresFacts:
    """Read what the daemon needs of Postgres, changing nothing.

    Raises :class:`~streamproc.errors.SinkUnavailable` / ``SinkMisconfigured`` when the server
    cannot be reached or refuses the connection.
    """
    facts = PostgresFacts()
    with connect(database_url, schema, "streamproc-check", Timeouts(), autocommit=True) as conn:
        try:
            row = conn.execute("SELECT current_setting('server_version'), current_user").fetchone()
            facts.version, facts.role = (str(row[0]), str(row[1])) if row else ("", "")
            if approximate:
                hll = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'hll'").fetchone()
                facts.hll = None if hll else "uniques = approximate, but the hll extension is not installed"
        except psycopg.Error as exc:
            raise translate(exc, "check", schema) from exc
        try:
            check_migrated(conn, approximate)
        except StreamprocError as exc:
            facts.schema = str(exc)
            return facts
        except psycopg.errors.InsufficientPrivilege:
            facts.schema_unreadable = True
        try:
            check_privileges(conn, approximate)
        except StreamprocError as exc:
            facts.grants = str(exc)
        except psycopg.Error as exc:
            facts.grants = str(translate(exc, "check", schema))
    try:
        plan = maintain(database_url, schema, drop=False, dry_run=True)
    except StreamprocError as exc:
        facts.partitions_unknown = str(exc)
        return facts
    facts.partitions_missing = len(plan.created)
    return facts
