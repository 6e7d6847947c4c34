"""Versioned, idempotent SQL migrations from ``sql/NNN_name.sql``.

``sql/approximate/1NN_name.sql`` hold the tables of approximate uniques
(HyperLogLog, ``hll`` extension): applied only when that mode is asked for,
so an install that never uses it needs no extension.

Each file runs once, in its own transaction, recorded in
``schema_migrations`` with a checksum. An advisory lock, held by a transaction of
its own (so that it holds, and ends, through a transaction-pooling PgBouncer),
makes concurrent ``streamproc migrate`` runs (several hosts deploying at once) safe.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg import sql

from streamproc.errors import SchemaNotReady, SinkError, SinkMisconfigured
from streamproc.postgres.faults import translate
from streamproc.postgres.grants import schema_usage_problem
from streamproc.postgres.session import Session, Timeouts, advisory_xact_lock, connect

_NAME: Final = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_LOCK_KEY: Final = 0x5354_5250  # "STRP"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Path:
    """``streamproc/sql`` in a wheel (force-included there), else ``sql/`` beside the package in a checkout."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "sql", package.parent / "sql"):
        if candidate.is_dir():
            return candidate
    raise SinkError("cannot find streamproc's sql/ migrations directory")


def approximate_dir() -> Path:
    return migrations_dir() / "approximate"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    out = []
    for path in sorted((directory or migrations_dir()).glob("*.sql")):
        m = _NAME.match(path.name)
        if m is None:
            raise SinkError(f"migration file {path.name} is not named NNN_name.sql")
        out.append(Migration(int(m.group(1)), m.group(2), path.read_text()))
    return out


def wanted(approximate: bool) -> list[Migration]:
    return load_migrations() + (load_migrations(approximate_dir()) if approximate else [])


def migrate(database_url: str, schema: str, approximate: bool = False) -> list[Migration]:
    """Apply pending migrations (with ``approximate``, those of approximate uniques too);
    returns those applied by this call."""
    applied: list[Migration] = []
    try:
        with advisory_xact_lock(database_url, (_LOCK_KEY,), True, "streamproc-migrate"):
            conn = connect(database_url, schema, "streamproc-migrate", Timeouts(statement_ms=0), autocommit=True)
            try:
                _migrate(conn, schema, approximate, applied)
            finally:
                conn.close()
    except psycopg.Error as exc:
        raise translate(exc, "migration", schema) from exc
    return applied


def _migrate(conn: Session, schema: str, approximate: bool, applied: list[Migration]) -> None:
    with conn.transaction():
        exists = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (schema,)).fetchone()
        if not (exists and exists[0]):  # CREATE SCHEMA IF NOT EXISTS would still need CREATE on the database
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    with conn.transaction():
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
    for mig in wanted(approximate):
        if mig.version in done:
            if done[mig.version] != mig.checksum:
                raise SinkError(
                    f"migration {mig.version:03d}_{mig.name} changed after it was applied;"
                    " add a new migration instead of editing an applied one"
                )
            continue
        with conn.transaction():
            try:
                conn.execute(mig.sql.encode())
            except (psycopg.errors.FeatureNotSupported, psycopg.errors.UndefinedFile) as exc:
                raise SinkError(_HLL_MISSING.format(error=str(exc).strip())) from exc
            except psycopg.errors.InsufficientPrivilege as exc:
                if "extension" not in str(exc):
                    raise
                missing = _GIST_MISSING if "btree_gist" in str(exc) else _HLL_MISSING
                raise SinkError(missing.format(error=str(exc).strip())) from exc
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (mig.version, mig.name, mig.checksum),
            )
        applied.append(mig)


_GIST_MISSING: Final = (
    "the exactly-once ledger (migration 009) needs the Postgres `btree_gist` extension, which the"
    " migrating role may not create ({error}). Have a superuser run `CREATE EXTENSION btree_gist"
    " SCHEMA public` in this database (deploy/postgres/roles.sql does), or grant the role CREATE on"
    " the database, then migrate again"
)
_HLL_MISSING: Final = (
    "approximate uniques need the Postgres `hll` extension ({error}). Install it on the database"
    " server (Debian/Ubuntu: `apt-get install postgresql-<version>-hll`), have a superuser run"
    " `CREATE EXTENSION hll SCHEMA public` in this database, then migrate again"
)


def _schema_of(conn: psycopg.Connection[Any]) -> str:
    """The schema the connection works in: a Session's own, else the first of its search_path."""
    schema = getattr(conn, "schema", None)
    if isinstance(schema, str) and schema:
        return schema
    with conn.transaction():
        row = conn.execute("SELECT current_setting('search_path')").fetchone()
    first = str(row[0]).split(",")[0].strip().strip('"') if row else ""
    return first or "public"


def check_migrated(conn: psycopg.Connection[Any], approximate: bool = False) -> None:
    """Fail early with a clear message when the schema lags behind the code."""
    try:
        with conn.transaction():
            present = {v for (v,) in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    except psycopg.errors.UndefinedTable:
        problem = schema_usage_problem(conn, _schema_of(conn))
        if problem:
            raise SinkMisconfigured(problem) from None
        raise SchemaNotReady("the database is not migrated: run `streamproc migrate`") from None
    missing = sorted({m.version for m in load_migrations()} - present)
    if missing:
        raise SchemaNotReady(
            f"the database schema lacks migration(s) {', '.join(f'{v:03d}' for v in missing)}"
            " that this streamproc needs: run `streamproc migrate`"
        )
    if approximate and {m.version for m in load_migrations(approximate_dir())} - present:
        raise SchemaNotReady(
            "uniques = approximate, but the schema lacks its tables: run `streamproc migrate`"
            " with STREAMPROC_UNIQUES=approximate (needs the Postgres `hll` extension)"
        )
