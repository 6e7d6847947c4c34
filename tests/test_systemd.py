"""The systemd deployment: unit files checked offline, sd_notify and credentials live.

systemd is not PID 1 in CI containers, so the units are checked with
``systemd-analyze verify`` / ``security --offline``, and the daemon's side of
the contract (sd_notify datagrams, ``$CREDENTIALS_DIRECTORY``) is exercised
against a real daemon process and a real AF_UNIX datagram socket.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from streamproc.config import FIELDS, Settings, env_name, load_settings
from streamproc.core.fold import Hasher
from tests.conftest import READY_TIMEOUT_S, Daemons, exit_code

ROOT = Path(__file__).resolve().parent.parent
UNIT_DIR = ROOT / "deploy" / "systemd"
UNITS = ("streamproc.service", "streamproc@.service")
EXEC_START = "ExecStart=/opt/streamproc/.venv/bin/streamproc "
# Measured with systemd 252: 1.1 for both units. A little headroom, so a new
# systemd that scores one more item does not fail the build, but a dropped
# hardening line (PrivateNetwork-sized, 0.5) does.
MAX_EXPOSURE = 1.5

SITE = "shop.example"
EVENTS = [
    {"type": "page_view", "site": SITE, "ts": "1700000000000", "path": "/", "visitor": "v1", "session": "s1"},
    {"type": "page_view", "site": SITE, "ts": "1700000001000", "path": "/a", "visitor": "v2", "session": "s2"},
    {"type": "click", "site": SITE, "ts": "1700000002000", "path": "/", "x": "0.5", "y": "0.5"},
    {"type": "api_request", "site": SITE, "ts": "1700000003000", "method": "GET", "route": "/api", "status": "200",
     "duration_ms": "12"},
    {"type": "custom", "site": SITE, "ts": "1700000004000", "name": "signup"},
]  # fmt: skip


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    assert path, "systemd-analyze is missing: apt-get install systemd (./setup.sh does)"
    return path


def installable_copy(unit: str, tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's binary (verify checks it exists)."""
    binary = Path(sys.executable).parent / "streamproc"
    assert binary.is_file(), f"{binary} missing: is the package installed in this venv?"
    text = (UNIT_DIR / unit).read_text()
    assert text.count(EXEC_START) == 1, f"{unit}: expected one {EXEC_START!r}"
    copy = tmp_path / unit
    copy.write_text(text.replace(EXEC_START, f"ExecStart={binary} "))
    return copy


def unit_settings(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (UNIT_DIR / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)", value)
    assert m, f"unexpected time span {value!r}"
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


# --- the unit files, offline ------------------------------------------------------


@pytest.mark.parametrize("unit", UNITS)
def test_units_pass_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    """Both units load with no warning about them; the template is checked as instance ``@1``.

    ``systemd-analyze verify`` exits 0 on unknown keys and bad values (it only
    logs them), so any output line naming our unit is a failure too. Lines about
    other units (container noise) are ignored.
    """
    copy = installable_copy(unit, tmp_path)
    paths = [copy]
    if unit.endswith("@.service"):  # also as a concrete instance, with %i = 1
        instance = tmp_path / unit.replace("@.", "@1.")
        shutil.copy(copy, instance)
        paths.append(instance)
    proc = subprocess.run(
        [systemd_analyze(), "verify", *map(str, paths)], capture_output=True, text=True, timeout=30, check=False
    )
    output = proc.stdout + proc.stderr
    ours = [line for line in output.splitlines() if "streamproc" in line]
    assert proc.returncode == 0, output
    assert ours == [], "\n".join(ours)


@pytest.mark.parametrize("unit", UNITS)
def test_units_exposure_score_stays_low(unit: str, tmp_path: Path) -> None:
    """``systemd-analyze security`` rates the sandbox 'OK' (1.1 when written), below MAX_EXPOSURE."""
    copy = installable_copy(unit, tmp_path)
    proc = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    score = float(m.group(1))
    assert score < MAX_EXPOSURE, f"{unit}: exposure {score}\n{proc.stdout}"


@pytest.mark.parametrize("unit", UNITS)
def test_unit_timeouts_cover_the_daemons_deadlines(unit: str) -> None:
    """TimeoutStopSec outlasts the drain deadline; the watchdog outlasts one idle loop iteration.

    Pins the coupling between the unit and the daemon's defaults: a longer
    ``drain_timeout_s`` or ``block_ms`` default must come with new unit values.
    """
    unit_cfg = unit_settings(unit)
    defaults = Settings()
    assert unit_cfg["Type"] == ["notify"]
    assert unit_cfg["NotifyAccess"] == ["main"]
    assert seconds(unit_cfg["TimeoutStopSec"][0]) >= defaults.drain_timeout_s + 10
    # WATCHDOG=1 goes out at most every WatchdogSec/2, once per loop iteration;
    # an iteration stuck in a read lasts at most the Redis socket timeout.
    assert seconds(unit_cfg["WatchdogSec"][0]) / 2 > defaults.socket_timeout_s
    assert "ExecStartPre" not in unit_cfg, "migrations are a deploy step, not part of the unit"
    assert {c.split(":", 1)[0] for c in unit_cfg["LoadCredential"]} == {"visitor_secret", "redis_url", "database_url"}


def test_env_example_documents_every_setting() -> None:
    """streamproc.env.example names every STREAMPROC_* setting; its active lines are valid defaults."""
    text = (UNIT_DIR / "streamproc.env.example").read_text()
    missing = [env_name(f) for f in FIELDS if env_name(f) not in text]
    assert missing == [], f"undocumented settings: {missing}"
    active = dict(
        line.split("=", 1) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )
    assert set(active) <= {env_name(f) for f in FIELDS}, set(active)
    for secret in ("STREAMPROC_VISITOR_SECRET", "STREAMPROC_REDIS_URL", "STREAMPROC_DATABASE_URL"):
        assert secret not in active, f"{secret} belongs in a credential file, not the env file"
    assert load_settings(environ=active) == load_settings(environ={})


# --- the daemon's side, live --------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A real AF_UNIX datagram socket, as systemd's $NOTIFY_SOCKET."""
    path = str(tmp_path / "notify.sock")
    assert len(path) < 100, f"socket path too long for AF_UNIX: {path}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.settimeout(0.1)
        yield sock, path
    finally:
        sock.close()


def receive_until(
    sock: socket.socket, into: list[list[str]], done: Callable[[list[list[str]]], bool], timeout_s: float, what: str
) -> None:
    """Append each datagram (as its lines) to ``into`` until ``done(into)``, within a deadline."""
    deadline = time.monotonic() + timeout_s
    while not done(into):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; got {into}")
        with contextlib.suppress(TimeoutError):
            into.append(sock.recv(4096).decode().split("\n"))


def has(message: list[str], line: str) -> bool:
    return line in message


def counted_status(message: list[str]) -> bool:
    return any(re.match(r"STATUS=\d+ counted", line) for line in message)


def produce(r: redis.Redis, stream: str) -> None:
    for event in EVENTS:
        r.xadd(stream, event)  # type: ignore[arg-type]  # str fields are accepted


def test_sd_notify_protocol_against_a_real_daemon(
    make_settings: Callable[..., Settings],
    schema: str,
    r: redis.Redis,
    stream: str,
    daemons: Daemons,
    notify_socket: tuple[socket.socket, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """READY=1 (with STATUS) first, then WATCHDOG=1 pings and a counted STATUS; STOPPING=1 on SIGTERM, exit 0.

    The daemon runs as systemd would start it: ``$NOTIFY_SOCKET`` names a
    datagram socket and ``$WATCHDOG_USEC`` asks for pings (``WATCHDOG_PID``
    unset, so this process is the one watched).
    """
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    sock, path = notify_socket
    produce(r, stream)
    proc = daemons.start(make_settings(), NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000")
    got: list[list[str]] = []

    def running(msgs: list[list[str]]) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}:\n{daemons.logs()}")
        pings = sum(has(m, "WATCHDOG=1") for m in msgs)
        return pings >= 2 and any(map(counted_status, msgs))

    def started(msgs: list[list[str]]) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}:\n{daemons.logs()}")
        return any(has(m, "READY=1") for m in msgs)

    # The start-up (user-agent rules compiled before READY=1) has its own, generous bound.
    receive_until(sock, got, started, READY_TIMEOUT_S, "READY=1")
    receive_until(sock, got, running, 30, "two WATCHDOG pings and a counted STATUS after READY")
    proc.send_signal(signal.SIGTERM)
    receive_until(sock, got, lambda msgs: any(has(m, "STOPPING=1") for m in msgs), 15, "STOPPING=1")
    assert exit_code(proc, 30) == 0, daemons.logs()
    with contextlib.suppress(TimeoutError):  # anything sent between STOPPING=1 and exit
        while True:
            got.append(sock.recv(4096).decode().split("\n"))

    first = got[0]
    assert has(first, "READY=1") and any(line.startswith("STATUS=") for line in first), got
    assert sum(has(m, "READY=1") for m in got) == 1, got
    want = f"STATUS={len(EVENTS)} counted, 0 dead-lettered, 0 duplicates;"
    assert any(line.startswith(want) for m in got for line in m), got
    stopping = [i for i, m in enumerate(got) if has(m, "STOPPING=1")]
    assert len(stopping) == 1, got
    last_alive = max(i for i, m in enumerate(got) if has(m, "WATCHDOG=1") or has(m, "READY=1") or counted_status(m))
    assert stopping[0] > last_alive, got


def test_visitor_secret_from_credentials_directory(
    make_settings: Callable[..., Settings],
    schema: str,
    r: redis.Redis,
    stream: str,
    daemons: Daemons,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With STREAMPROC_VISITOR_SECRET empty, visitor hashes are keyed with ``$CREDENTIALS_DIRECTORY/visitor_secret``.

    This is how ``LoadCredential=visitor_secret:...`` reaches it under systemd.
    The stored hashes are checked against the file's secret, so a fallback to
    any other key would fail.
    """
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    secret = "credential-file-secret-0123456789abcdef"
    (credentials / "visitor_secret").write_text(secret + "\n")  # systemd keeps the file's newline
    produce(r, stream)
    proc = daemons.start(
        make_settings(), "--drain", STREAMPROC_VISITOR_SECRET="", CREDENTIALS_DIRECTORY=str(credentials)
    )
    assert exit_code(proc, 60) == 0, daemons.logs()
    assert secret not in daemons.logs()
    with psycopg.connect(database_url, options=f"-c search_path={schema}") as conn:
        rows: list[Any] = conn.execute(
            "SELECT visitor FROM path_visitors_daily WHERE site = %s ORDER BY path", (SITE,)
        ).fetchall()
        conn.rollback()
    hasher = Hasher(secret.encode())
    assert [row[0] for row in rows] == [hasher.visitor(SITE, "v1"), hasher.visitor(SITE, "v2")]
    assert r.xpending(stream, "g")["pending"] == 0
