"""A throwaway PgBouncer in transaction pooling mode in front of a local Postgres.

Configured as production poolers usually are: ``pool_mode = transaction``,
``ignore_startup_parameters = extra_float_digits, options`` (so a client's
startup ``options`` are dropped, not refused) and a small server pool, so that
several clients really share server connections. Used by the tests; the
Debian/Ubuntu package is ``pgbouncer``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from streamproc.dev.localservers import ServerError, _as_postgres_user, _wait_for_port, free_port

INSTALL_HINT = "install it with `sudo apt-get install -y pgbouncer` on Debian/Ubuntu"


@dataclass
class PgBouncer:
    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    user: str
    database: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # SIGINT: shut down at once (a group: runuser too)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_pgbouncer(database_url: str, pool_size: int = 4) -> PgBouncer:
    """Start PgBouncer on a free loopback port, pooling by transaction the database of
    ``database_url`` (a local server that trusts its user: no password is configured)."""
    target = conninfo_to_dict(database_url)
    user, database = str(target.get("user", "postgres")), str(target.get("dbname", "postgres"))
    binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
    if binary is None:
        raise ServerError(f"`pgbouncer` not found: {INSTALL_HINT}")
    prefix = _as_postgres_user()  # PgBouncer refuses to run as root
    directory = Path(tempfile.mkdtemp(prefix="streamproc-pgbouncer-"))
    port = free_port()
    (directory / "userlist.txt").write_text(f'"{user}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        "\n".join(
            [
                "[databases]",
                f"* = host={target.get('host', '127.0.0.1')} port={target.get('port', 5432)}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {directory / 'userlist.txt'}",
                "pool_mode = transaction",
                "ignore_startup_parameters = extra_float_digits, options",
                f"default_pool_size = {pool_size}",
                "max_client_conn = 500",
                f"logfile = {directory / 'pgbouncer.log'}",
                "",
            ]
        )
    )
    if prefix:
        shutil.chown(directory, "postgres", "postgres")
        for path in directory.iterdir():
            shutil.chown(path, "postgres", "postgres")
    with open(directory / "stdout.log", "ab") as out:
        proc = subprocess.Popen(
            [*prefix, binary, str(directory / "pgbouncer.ini")],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = PgBouncer(port, directory, proc, user, database)
    try:
        _wait_for_port(port, proc, directory / "pgbouncer.log")
    except BaseException:
        server.stop()
        raise
    return server
