"""Every Postgres failure classified once: the entry's fault, a transient condition, or configuration.

:func:`classify` is the one place that reads SQLSTATEs and libpq's connection
messages; the sink, migrate and maintain translate psycopg errors with
:func:`translate` into streamproc's error tree, so the daemon acts on the
class, never on a message:

- ``ENTRY`` (:class:`~streamproc.errors.EntryRejected`): the data cannot be
  stored (SQLSTATE class 22 data exception, 23 integrity constraint, 54
  program limit such as an index row too large). The worker isolates the
  entry and dead-letters it with Postgres's message.
- ``TRANSIENT`` (:class:`~streamproc.errors.TransactionAborted` for a
  transaction the server aborted, :class:`~streamproc.errors.SinkUnavailable`
  otherwise): back off and retry in process; entries stay pending.
- ``PERMANENT`` (:class:`~streamproc.errors.SinkMisconfigured`, exit 2): a
  missing privilege, a wrong password, database or role, a URL libpq cannot
  parse. Retrying cannot help and restarting must not add deliveries.
- ``SCHEMA`` (:class:`~streamproc.errors.SchemaNotReady`, exit 2): the schema
  lacks tables or columns the code needs: run ``streamproc migrate``.
"""

from __future__ import annotations

import enum
import re
from typing import Final

import psycopg
from psycopg.conninfo import conninfo_to_dict

from streamproc.errors import (
    EntryRejected,
    SchemaNotReady,
    SinkError,
    SinkMisconfigured,
    SinkUnavailable,
    TransactionAborted,
)
from streamproc.portprobe import speaks_redis


class Fault(enum.Enum):
    ENTRY = "entry"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    SCHEMA = "schema"


# SQLSTATE classes (first two characters) and codes; a code wins over its class.
_ENTRY_CLASSES: Final = {"22", "23", "54"}
_TRANSIENT_CLASSES: Final = {"08", "40", "53", "57", "58", "XX"}
_PERMANENT_CLASSES: Final = {"28", "3D", "0A", "2B"}
_CODES: Final = {
    "25006": Fault.TRANSIENT,  # read-only transaction: a standby, or a primary being demoted
    "25P03": Fault.TRANSIENT,  # idle-in-transaction timeout ended our session
    "55P03": Fault.TRANSIENT,  # lock_timeout
    "55006": Fault.TRANSIENT,  # object in use
    "55000": Fault.TRANSIENT,  # object not in prerequisite state (e.g. a partition being attached)
    "42501": Fault.PERMANENT,  # insufficient privilege
    "42P01": Fault.SCHEMA,  # undefined table
    "42703": Fault.SCHEMA,  # undefined column
    "42883": Fault.SCHEMA,  # undefined function (an extension or migration missing)
    "3F000": Fault.SCHEMA,  # invalid schema name
    "57P04": Fault.PERMANENT,  # database dropped
}
_TRANSACTION_ABORTED: Final = {"40001", "40P01", "55P03", "57014"}  # the same batch may simply be retried

# libpq reports a failed connection without an SQLSTATE: only its message tells.
_PERMANENT_CONNECT: Final = re.compile(
    r"password authentication failed|authentication failed|role \S+ does not exist"
    r"|database \S+ does not exist|no pg_hba\.conf entry|pg_hba\.conf rejects|permission denied"
    r"|password is required|no password supplied|server does not support SSL|SSL is required"
    r"|certificate|invalid (?:connection option|sslmode|integer value|port)"
    r"|unsupported startup parameter|not allowed to log in|invalid dsn|missing \"=\""
    # An option libpq itself refuses before any network I/O (every `invalid <option> value`:
    # sslmode, target_session_attrs, gssencmode, channel_binding, load_balance_hosts, require_auth,
    # ssl_min_protocol_version...), a hostaddr that is no address, a missing key file.
    r"|invalid \"?\w+\"? value|invalid value \S+ for (?:minimum|maximum) SSL protocol version"
    r"|invalid SSL protocol version range|could not parse network address|private key",
    re.IGNORECASE,
)


def classify(exc: psycopg.Error) -> Fault:
    """The class of a psycopg error raised by a real server (or by libpq).

    An error without an SQLSTATE came from libpq: a connection that failed or was
    lost, classified by its message (a wrong password or database is PERMANENT,
    anything else TRANSIENT). An SQLSTATE nobody listed is TRANSIENT: retried with
    an alert rather than a reason to drop data or to stop.
    """
    state = exc.sqlstate
    if state is None:
        if isinstance(exc, (psycopg.DataError, psycopg.IntegrityError)):  # refused before sending (a NUL in text)
            return Fault.ENTRY
        if isinstance(exc, psycopg.ProgrammingError) or _PERMANENT_CONNECT.search(str(exc)):
            return Fault.PERMANENT
        return Fault.TRANSIENT
    if state in _CODES:
        return _CODES[state]
    klass = state[:2]
    if klass in _ENTRY_CLASSES:
        return Fault.ENTRY
    if klass in _PERMANENT_CLASSES:
        return Fault.PERMANENT
    return Fault.TRANSIENT


def translate(exc: psycopg.Error, doing: str, schema: str = "", role: str = "") -> SinkError:
    """streamproc's error for ``exc``, with a message that says what to do.

    ``doing`` names the step ("commit", "connect", "migrate"...); ``role`` is the
    Postgres user, named in the advice on a missing privilege. The caller raises the
    result ``from exc``.
    """
    fault = classify(exc)
    text = first_line(exc)
    if fault is Fault.ENTRY:
        return EntryRejected(f"Postgres rejected the data ({exc.sqlstate or 'client-side'}): {text}")
    if fault is Fault.SCHEMA:
        where = f"schema {schema!r}" if schema else "the database"
        return SchemaNotReady(f"{where} is not migrated for this streamproc ({text}); run `streamproc migrate`")
    if fault is Fault.PERMANENT:
        return SinkMisconfigured(f"Postgres refused the {doing}: {text}. {_advice(exc, schema, role)}")
    if exc.sqlstate in _TRANSACTION_ABORTED:
        return TransactionAborted(f"transaction aborted, will retry: {text}")
    if exc.sqlstate is None:
        return SinkUnavailable(f"cannot connect to Postgres ({doing}): {text}")
    return SinkUnavailable(f"Postgres unavailable during {doing}: {text}")


def translate_connect(exc: psycopg.Error, database_url: str, schema: str = "") -> SinkError:
    """:func:`translate` for a failed connection to ``database_url``. libpq's first message
    (an SSLRequest or a StartupMessage) carries no newline, so a Redis server on that port waits
    for the rest of a command and never answers: the connection times out, which alone looks
    transient. A host:port of the URL that answers a Redis ``PING`` is certainly no Postgres
    server: configuration (SinkMisconfigured). A port that answers nothing stays transient."""
    error = translate(exc, "connection", schema)
    if not isinstance(error, SinkUnavailable) or "timeout expired" not in str(exc):
        return error
    for host, port in _addresses(database_url):
        if speaks_redis((host, port)):
            return SinkMisconfigured(
                f"the Postgres URL points at a Redis server ({host}:{port} answers a Redis PING, not the"
                " Postgres protocol): set STREAMPROC_DATABASE_URL / --database-url to the Postgres server"
            )
    return error


def _addresses(database_url: str) -> list[tuple[str, int]]:
    """The TCP host:port pairs of a Postgres URL (none for Unix sockets or a URL libpq cannot read)."""
    try:
        parts = conninfo_to_dict(database_url)
    except psycopg.Error:
        return []
    hosts = str(parts.get("hostaddr") or parts.get("host") or "").split(",")
    ports = str(parts.get("port") or "5432").split(",")
    ports += [ports[-1]] * (len(hosts) - len(ports))
    out = []
    for host, port in zip(hosts, ports, strict=False):
        if host and not host.startswith("/") and port.isdigit():
            out.append((host, int(port)))
    return out


_DENIED_ON: Final = re.compile(r"permission denied for (?:table|relation|sequence|schema) (\S+)")


def _advice(exc: psycopg.Error, schema: str, role: str) -> str:
    text = str(exc)
    if exc.sqlstate == "42501":
        m = _DENIED_ON.search(text)
        target = f"{schema}.{m.group(1)}" if m and schema and "schema" not in m.group(0) else "the table"
        grant = "USAGE ON SCHEMA" if m and "schema" in m.group(0) else "SELECT, INSERT, UPDATE ON"
        on = m.group(1) if m and "schema" in m.group(0) else target
        return (
            f"Grant it: `GRANT {grant} {on} TO {role or '<the daemon role>'}` (deploy/postgres/roles.sql"
            " lists every grant the daemon needs), then start the daemon again; no entry was dead-lettered"
        )
    if "password" in text or "authentication" in text:
        return "Check the user and password in STREAMPROC_DATABASE_URL"
    if "does not exist" in text:
        return "Check the role and database names in STREAMPROC_DATABASE_URL"
    return "Check STREAMPROC_DATABASE_URL and the server's settings"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
