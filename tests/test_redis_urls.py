"""Redis URLs the daemon cannot work with: one line naming the setting, exit 2, every command.

Malformed URLs, URLs of other servers (a real Postgres, an HTTP-speaking socket),
options that would defeat the daemon's BLOCK guard or change reply shapes, and
credentials Redis refuses. Before any of these reached the code, they ended in a
traceback and exit 1, or in endless "Redis unreachable" retries.
"""

from __future__ import annotations

import pytest

from streamproc.errors import ConfigError
from streamproc.redis.url import parse_redis_url
from tests.chaos.conftest import host_port
from tests.conftest import SECRET
from tests.test_config import run_cli
from tests.test_redis_classify import _http_like_server

# Commands that talk to Redis, with the arguments they need besides the URL.
COMMANDS: list[tuple[str, ...]] = [
    ("run",),
    ("setup", "--skip-migrate"),
    ("status",),
    ("pending",),
    ("dlq", "list"),
    ("consumers", "list"),
    ("trim", "--dry-run"),
]


def bad_urls(database_url: str, redis_url: str) -> dict[str, str]:
    pg_host, pg_port = host_port(database_url)
    return {
        "no scheme": "localhost:6379",
        "http": "http://127.0.0.1:6379/0",
        "a Postgres scheme": database_url,
        "mysql": "mysql://127.0.0.1:3306/x",
        "port not a number": "redis://127.0.0.1:port/0",
        "database not a number": "redis://127.0.0.1:6379/zero",
        "socket_timeout": f"{redis_url}?socket_timeout=1",
        "socket_connect_timeout": f"{redis_url}?socket_connect_timeout=0.01",
        "health_check_interval": f"{redis_url}?health_check_interval=1",
        "retry_on_timeout": f"{redis_url}?retry_on_timeout=true",
        "max_connections": f"{redis_url}?max_connections=1",
        "RESP3": f"{redis_url}?protocol=3",
        "decode_responses": f"{redis_url}?decode_responses=true",
        "sentinel without service": "redis+sentinel://127.0.0.1:26379",
        "port 0": "redis://127.0.0.1:0/0",
        "a TLS option on redis://": f"{redis_url}?ssl_cert_reqs=required",
        "an empty TLS option on redis://": f"{redis_url}?ssl_ca_certs=",
        "a TLS option on unix://": "unix:///tmp/redis.sock?ssl_certfile=/etc/hosts",
        "an invalid ssl_cert_reqs": f"rediss://{redis_url.partition('://')[2]}?ssl_cert_reqs=banana",
        "an invalid ssl_check_hostname": f"rediss://{redis_url.partition('://')[2]}?ssl_check_hostname=maybe",
        "a missing CA file": f"rediss://{redis_url.partition('://')[2]}?ssl_ca_certs=/nonexistent/ca.pem",
        "a missing key file": f"rediss://{redis_url.partition('://')[2]}?ssl_keyfile=/nonexistent/k.pem",
        "an empty option": f"rediss://{redis_url.partition('://')[2]}?ssl_ca_certs=",
        "a Postgres server": f"redis://{pg_host}:{pg_port}/0",
        "an HTTP server": f"redis://127.0.0.1:{_http_like_server()}/0",
    }


def test_parser_refuses_what_the_daemon_cannot_honour(database_url: str, redis_url: str) -> None:
    """The URL parser alone refuses every malformed form and every owned option (the two
    server cases need a connection and are covered by the command test)."""
    for name, url in bad_urls(database_url, redis_url).items():
        if name in ("a Postgres server", "an HTTP server"):
            parse_redis_url(url)
            continue
        with pytest.raises(ConfigError, match="Redis URL"):
            parse_redis_url(url)
    assert parse_redis_url(f"{redis_url}?protocol=2&client_name=x").kwargs["protocol"] == 2


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_every_command_refuses_bad_redis_urls_with_exit_2(
    command: tuple[str, ...], database_url: str, redis_url: str, ns: str
) -> None:
    """Each bad URL: exit 2, a line on stderr mentioning the Redis URL, no traceback. `run` and
    `status` get every bad URL; the other commands share their connection code and get one URL
    of each kind (malformed, an owned option, a server that is not Redis)."""
    env = {
        "STREAMPROC_DATABASE_URL": database_url,
        "STREAMPROC_DB_SCHEMA": ns,
        "STREAMPROC_STREAMS": f"{ns}:events",
        "STREAMPROC_VISITOR_SECRET": SECRET,
        "STREAMPROC_METRICS_PORT": "0",
    }
    urls = bad_urls(database_url, redis_url)
    if command[0] not in ("run", "status"):
        urls = {k: urls[k] for k in ("no scheme", "socket_timeout", "a Postgres server")}
    for name, url in urls.items():
        res = run_cli(*command, env={**env, "STREAMPROC_REDIS_URL": url})
        # Not counting the daemon's JSON log lines: the human-readable error is one line.
        lines = [line for line in res.stderr.splitlines() if line.strip() and not line.startswith("{")]
        assert res.returncode == 2, (name, res.returncode, res.stderr[-2000:])
        assert "Traceback" not in res.stderr and len(lines) == 1, (name, res.stderr[-2000:])
        assert any("Redis URL" in line for line in lines), (name, res.stderr)


def test_option_messages_say_what_to_do(redis_url: str) -> None:
    """Port 0 (redis-py would connect to 6379), TLS options on a plain URL (silently ignored),
    values redis-py would misread and files that do not exist are each named with the fix."""
    tls = f"rediss://{redis_url.partition('://')[2]}"
    cases = {
        "redis://127.0.0.1:0/0": "port 0 is no port Redis listens on",
        f"{redis_url}?ssl_cert_reqs=banana": "?ssl_cert_reqs= is a TLS option but the URL is not a TLS URL: use rediss://",
        f"{tls}?ssl_cert_reqs=banana": "?ssl_cert_reqs=banana is invalid; choose one of none, optional, required",
        f"{tls}?ssl_ca_certs=/nonexistent": "?ssl_ca_certs=/nonexistent: no such file on this host",
        f"{tls}?ssl_ca_path=/nonexistent": "?ssl_ca_path=/nonexistent: no such directory on this host",
        f"{tls}?ssl_ca_certs=": "?ssl_ca_certs= has no value",
    }
    for url, needle in cases.items():
        with pytest.raises(ConfigError) as info:
            parse_redis_url(url)
        assert needle in str(info.value), url
    assert parse_redis_url(f"{tls}?ssl_cert_reqs=none&ssl_check_hostname=false").kwargs["ssl_cert_reqs"] == "none"


@pytest.mark.parametrize("command", [("run",), ("status",)], ids=lambda c: c[0])
def test_an_empty_redis_url_is_refused(command: tuple[str, ...]) -> None:
    """`STREAMPROC_REDIS_URL=` (an env file line left empty) is a mistake, not the default URL."""
    res = run_cli(*command, env={"STREAMPROC_REDIS_URL": "", "STREAMPROC_VISITOR_SECRET": SECRET})
    assert res.returncode == 2, res.stderr
    assert "STREAMPROC_REDIS_URL is set but empty" in res.stderr and "Traceback" not in res.stderr


def test_refused_credentials_exit_2(redis_url: str, database_url: str, ns: str, r) -> None:  # type: ignore[no-untyped-def]
    """A wrong password (WRONGPASS) is a configuration problem: `run` and `status` exit 2 at once
    instead of retrying forever as if Redis were unreachable."""
    r.execute_command("ACL", "SETUSER", f"{ns}-user", "on", ">right", "~*", "+@all")
    try:
        url = redis_url.replace("redis://", f"redis://{ns}-user:wrong@")
        env = {
            "STREAMPROC_REDIS_URL": url,
            "STREAMPROC_DATABASE_URL": database_url,
            "STREAMPROC_DB_SCHEMA": ns,
            "STREAMPROC_STREAMS": f"{ns}:events",
            "STREAMPROC_VISITOR_SECRET": SECRET,
            "STREAMPROC_METRICS_PORT": "0",
        }
        for command in (("run",), ("status",)):
            res = run_cli(*command, env=env)
            assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
            assert "wrong" not in res.stderr.replace("wrong Redis user", ""), "the password was echoed"
    finally:
        r.execute_command("ACL", "DELUSER", f"{ns}-user")
