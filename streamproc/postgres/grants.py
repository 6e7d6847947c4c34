"""The privileges the daemon needs, checked before it reads a single entry.

A privilege missing at commit time would be found only after entries were
read, and each restart would add a delivery to them until good entries reach
``max_deliveries``. Checked at start, a missing grant is a configuration error
(exit 2) while no entry has been delivered.
"""

from __future__ import annotations

import re
from typing import Any, Final

import psycopg

from streamproc.core import rollups as R
from streamproc.errors import SinkMisconfigured
from streamproc.postgres.faults import translate
from streamproc.postgres.session import Session

WRITE: Final = ("SELECT", "INSERT", "UPDATE")
LEDGER: Final = {"applied_ranges": ("SELECT", "INSERT"), "producer_ids": ("SELECT", "INSERT")}
OTHERS: Final = {"streams": ("SELECT", "INSERT"), "schema_migrations": ("SELECT",)}


def needed(approximate: bool) -> dict[str, tuple[str, ...]]:
    """Table -> privileges the batch path uses (pruning's DELETE is housekeeping: not required)."""
    rollups = R.ALL + (R.APPROXIMATE_UNIQUES if approximate else ())
    out = {rollup.table: WRITE for rollup in rollups}
    return {**out, **LEDGER, **OTHERS}


def check_privileges(conn: Session, approximate: bool) -> None:
    """Raise :class:`SinkMisconfigured` (exit 2) naming the role, each table that lacks a
    privilege and the GRANT that gives it; return when every one is there.

    A failure of the check itself is translated like any other (:func:`.faults.translate`).
    """
    wanted = needed(approximate)
    tables = [t for t, privileges in wanted.items() for _ in privileges]
    privileges = [p for ps in wanted.values() for p in ps]
    try:
        with conn.transaction():
            role_row = conn.execute("SELECT current_user, current_schema()").fetchone()
            rows = conn.execute(
                "SELECT t, p FROM unnest(%s::text[], %s::text[]) AS w(t, p)"
                " WHERE to_regclass(t) IS NOT NULL AND NOT has_table_privilege(to_regclass(t), p)"
                " ORDER BY t, p",
                (tables, privileges),
            ).fetchall()
    except psycopg.Error as exc:
        raise translate(exc, "privilege check", conn.schema) from exc
    if not rows:
        return
    role, schema = role_row if role_row else ("<role>", conn.schema)
    missing: dict[str, list[str]] = {}
    for table, privilege in rows:
        missing.setdefault(table, []).append(privilege)
    grants = "; ".join(f"GRANT {', '.join(ps)} ON {schema}.{t} TO {role}" for t, ps in missing.items())
    raise SinkMisconfigured(
        f"the Postgres role {role} lacks privileges the daemon needs: `{grants}`"
        " (deploy/postgres/roles.sql lists every grant); no entry was read, start the daemon again once granted"
    )


def schema_usage_problem(conn: psycopg.Connection[Any], schema: str) -> str | None:
    """The one-line problem when the connected role may not use ``schema`` (no USAGE: its
    tables then look missing, as if the schema were not migrated), else None (also when the
    schema does not exist). Raises psycopg.Error if the question itself fails."""
    with conn.transaction():
        row = conn.execute(
            "SELECT current_user, has_schema_privilege(n.oid, 'USAGE') FROM pg_namespace n WHERE n.nspname = %s",
            (schema,),
        ).fetchone()
    if row is None or row[1]:
        return None
    role = _ident(str(row[0]))
    return (
        f"the Postgres role {role} may not use schema {schema} (no USAGE privilege, so its tables look"
        f" missing): run `GRANT USAGE ON SCHEMA {_ident(schema)} TO {role}` as the schema's owner"
        " (deploy/postgres/roles.sql lists every grant), then start again; no entry was read"
    )


def _ident(name: str) -> str:
    """``name`` as SQL would need it written: plain when it may be, else double-quoted."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'
