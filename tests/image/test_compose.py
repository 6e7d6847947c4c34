"""compose.yaml, brought up as the README says: Redis, Postgres, `setup` once, two replicas.

Needs a Docker engine, Compose (`docker compose` or `docker-compose`) and the daemon's image
(STREAMPROC_TEST_IMAGE); Redis and Postgres images come from STREAMPROC_TEST_REDIS_IMAGE and
STREAMPROC_TEST_POSTGRES_IMAGE when set. Compose makes its own network for the project; the
project is taken down with its volumes at the end, and nothing of it may be left.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
N_EVENTS = 300
N_VISITORS = 40


class Compose:
    """One Compose project in a directory of its own."""

    def __init__(self, command: list[str], directory: Path, env: dict[str, str]) -> None:
        self.command = command
        self.directory = directory
        self.env = env
        self.project = "streamproc-t" + secrets.token_hex(4)

    def __call__(self, *args: str, timeout_s: float = 180) -> str:
        res = subprocess.run(
            [*self.command, "--project-name", self.project, *args],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        assert res.returncode == 0, f"compose {' '.join(args)} exited {res.returncode}:\n{res.stdout}{res.stderr}"
        return res.stdout

    def redis(self, *args: str) -> str:
        return self("exec", "-T", "redis", "redis-cli", *args).strip()


def compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed")


@pytest.fixture
def compose(tmp_path: Path) -> Iterator[Compose]:
    """compose.yaml in an empty directory with its secrets made as the README makes them."""
    shutil.copy(ROOT / "compose.yaml", tmp_path / "compose.yaml")
    (tmp_path / ".secrets").mkdir()
    password = secrets.token_hex(16)
    (tmp_path / ".secrets" / "visitor_secret").write_text(secrets.token_hex(32) + "\n")
    (tmp_path / ".secrets" / "postgres_password").write_text(password + "\n")
    (tmp_path / ".secrets" / "database_url").write_text(f"postgresql://streamproc:{password}@postgres/analytics\n")
    for path in (tmp_path / ".secrets").iterdir():
        path.chmod(0o644)  # read by the images' non-root users
    env = dict(os.environ, STREAMPROC_IMAGE=os.environ.get("STREAMPROC_TEST_IMAGE") or "streamproc")
    for name in ("REDIS", "POSTGRES"):
        if os.environ.get(f"STREAMPROC_TEST_{name}_IMAGE"):
            env[f"STREAMPROC_{name}_IMAGE"] = os.environ[f"STREAMPROC_TEST_{name}_IMAGE"]
    c = Compose(compose_command(), tmp_path, env)
    try:
        yield c
    finally:
        c("down", "--volumes", "--remove-orphans", "--timeout", "45")
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={c.project}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert not left, f"containers left by compose down: {left}"


def group_field(info: str, field: str) -> int:
    lines = info.splitlines()
    return int(lines[lines.index(field) + 1])


def test_compose_up_two_replicas_count_produced_events_once(compose: Compose) -> None:
    """`compose up`: `setup` runs once and exits 0, two replicas join the group under their
    own hostnames; produced page views are all counted once, as `report --json` shows."""
    compose("up", "-d", "--no-build")
    wait_for(lambda: len(compose("ps", "-q", "streamproc").split()) == 2, what="two replicas")
    wait_for(lambda: compose.redis("XINFO", "GROUPS", "events").count("\n") > 0, what="the consumer group")
    # A replica joins the group once ready (after loading the user-agent database).
    wait_for(
        lambda: compose.redis("XINFO", "CONSUMERS", "events", "streamproc").count("name") == 2,
        timeout_s=180,
        what="both replicas to join the group",
    )

    ts_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    script = (
        f"for i in $(seq 1 {N_EVENTS}); do redis-cli XADD events '*' type page_view site shop.example"
        f" ts {ts_ms} path / visitor v$((i % {N_VISITORS})) > /dev/null; done"
    )
    compose("exec", "-T", "redis", "sh", "-c", script)

    def drained() -> bool:
        info = compose.redis("XINFO", "GROUPS", "events")
        return group_field(info, "lag") == 0 and group_field(info, "pending") == 0

    wait_for(drained, timeout_s=120, what="the replicas to drain the stream")
    day = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).date().isoformat()
    out = compose("run", "--rm", "--no-deps", "streamproc", "report", "--site", "shop.example",
                  "--from", day, "--to", day, "--json")  # fmt: skip
    report = json.loads(out[out.index("{") :])
    assert report["pageviews"] == N_EVENTS
    assert report["visitors"] == N_VISITORS
    assert report["top_paths"] == [{"path": "/", "views": N_EVENTS, "visitors": N_VISITORS}]
    consumers = compose.redis("XINFO", "CONSUMERS", "events", "streamproc").splitlines()
    hostnames = {compose("exec", "-T", "--index", str(i), "streamproc", "hostname").strip() for i in (1, 2)}
    assert {consumers[i + 1] for i, line in enumerate(consumers) if line == "name"} == hostnames
