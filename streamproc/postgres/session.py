"""Postgres connections that behave the same directly and through a transaction pooler.

A transaction-pooling PgBouncer hands each transaction to whichever server
connection is free: session state (startup ``options``, ``SET``, prepared
statements, session advisory locks) is lost or, worse, leaks to another
client. So a :class:`Session`:

- sends no startup ``options`` and no session ``SET``; it sets the schema
  (``search_path``) and the timeouts with ``set_config(..., true)`` (that is
  ``SET LOCAL``) as the first statement of every transaction it opens;
- never prepares statements (``prepare_threshold=None``; PgBouncer 1.21+
  could track them with ``max_prepared_statements``, older ones cannot);
- takes advisory locks inside a transaction (:func:`advisory_xact_lock`).

How long a transaction of the daemon can hold row locks is bounded whatever
state its client is in: ``statement_timeout`` while a statement runs,
``idle_in_transaction_session_timeout`` between statements (each statement
ends with a Sync, so the server is "idle in transaction" as soon as it
waits on the client: no pipeline mode inside a transaction), server-side TCP
keepalives and ``tcp_user_timeout`` for a client host or network that is
gone, ``client_connection_check_interval`` for a client that disconnects
while a statement runs. On Postgres 17, ``transaction_timeout`` bounds the
whole transaction too (not set here: the servers we support start at 15).
The client side gets keepalives and a TCP user timeout of its own, so a lost
server never leaves the daemon waiting on a dead socket.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import pq

from streamproc.postgres.faults import translate_connect

CONNECT_TIMEOUT_S: Final = 5
# Client side: notice a server (or network) that is gone within about half a minute.
CLIENT_KEEPALIVES: Final[dict[str, Any]] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


@dataclass(frozen=True)
class Timeouts:
    """The per-transaction limits (milliseconds; 0 means none)."""

    statement_ms: int = 30_000
    lock_ms: int = 10_000
    idle_in_transaction_ms: int = 15_000
    client_check_ms: int = 5_000  # client_connection_check_interval
    keepalives_idle_s: int = 10  # server side, for a client host or network that is gone
    keepalives_interval_s: int = 5
    keepalives_count: int = 3
    tcp_user_timeout_ms: int = 30_000

    def settings(self, schema: str) -> list[tuple[str, str]]:
        """``(name, value)`` pairs for ``set_config(name, value, true)``."""
        return [
            ("search_path", f'"{schema}", public'),
            ("statement_timeout", str(self.statement_ms)),
            ("lock_timeout", str(self.lock_ms)),
            ("idle_in_transaction_session_timeout", str(self.idle_in_transaction_ms)),
            ("client_connection_check_interval", str(self.client_check_ms)),
            ("tcp_keepalives_idle", str(self.keepalives_idle_s)),
            ("tcp_keepalives_interval", str(self.keepalives_interval_s)),
            ("tcp_keepalives_count", str(self.keepalives_count)),
            ("tcp_user_timeout", str(self.tcp_user_timeout_ms)),
        ]


class Session(psycopg.Connection[Any]):
    """A connection whose every transaction starts by setting the schema and the timeouts.

    Open it with :func:`connect`. ``with session.transaction():`` sets them when it
    opens a transaction (not for a nested savepoint); code that runs statements in
    psycopg's implicit transaction calls :meth:`begin` first.
    """

    schema: str = "public"
    timeouts: Timeouts = Timeouts()

    @contextmanager
    def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> Iterator[psycopg.Transaction]:
        opens = self.pgconn.transaction_status == pq.TransactionStatus.IDLE
        with super().transaction(savepoint_name, force_rollback) as tx:
            if opens:
                self._set_local()
            yield tx

    def begin(self) -> None:
        """Start psycopg's implicit transaction (not in autocommit) with the settings applied;
        a no-op inside a transaction that already has them."""
        if self.pgconn.transaction_status == pq.TransactionStatus.IDLE:
            self._set_local()

    def _set_local(self) -> None:
        pairs = self.timeouts.settings(self.schema)
        calls = ", ".join(["set_config(%s, %s, true)"] * len(pairs))
        self.execute(f"SELECT {calls}".encode(), [v for pair in pairs for v in pair])


def connect(
    database_url: str,
    schema: str,
    application_name: str = "streamproc",
    timeouts: Timeouts | None = None,
    autocommit: bool = False,
) -> Session:
    """Open a :class:`Session` on ``schema``.

    Raises :class:`~streamproc.errors.SinkUnavailable` (retry) or
    :class:`~streamproc.errors.SinkMisconfigured` (exit 2), as
    :func:`streamproc.postgres.faults.translate` classifies the failure.
    """
    try:
        conn = Session.connect(
            database_url,
            application_name=application_name,
            connect_timeout=CONNECT_TIMEOUT_S,
            prepare_threshold=None,
            autocommit=autocommit,
            **CLIENT_KEEPALIVES,
        )
    except psycopg.Error as exc:
        raise translate_connect(exc, database_url, schema) from exc
    conn.schema = schema
    conn.timeouts = timeouts or Timeouts()
    return conn


@contextmanager
def advisory_xact_lock(database_url: str, key: tuple[int, ...], wait: bool, application_name: str) -> Iterator[bool]:
    """Hold an advisory lock for the ``with`` block: yields whether it was taken.

    The lock belongs to a transaction kept open on a connection of its own, so it
    holds through a transaction-pooling PgBouncer (which pins that transaction to one
    server connection) and ends with the block, or with this process. ``wait``
    waits for it without a lock timeout; otherwise a held lock yields False at once.
    """
    placeholders = ", ".join(["%s"] * len(key))
    function = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
    conn = connect(
        database_url, "public", application_name, Timeouts(statement_ms=0, lock_ms=0, idle_in_transaction_ms=0)
    )
    try:
        conn.begin()
        row = conn.execute(f"SELECT {function}({placeholders})".encode(), key).fetchone()
        taken = wait or bool(row and row[0])
        yield taken
    finally:
        conn.close()  # rolls the transaction back: the lock ends with it
