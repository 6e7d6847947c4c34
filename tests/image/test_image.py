"""The daemon's container image, run for real: migrate, drain, report, health, graceful stop.

Needs a Docker engine on this machine and the image built from the repository's Dockerfile
(name in STREAMPROC_TEST_IMAGE, default ``streamproc``); neither missing is a skip. The
containers share the host's network and reach the session's Redis and Postgres on loopback.
Not collected by a plain ``pytest``: run ``pytest tests/image`` (``setup.sh test`` does).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import docker.errors
import psycopg
import pytest
import redis
from testcontainers.core.container import DockerContainer

from streamproc.dev.localservers import free_port
from streamproc.dev.synth import Generator, produce
from tests.conftest import SECRET, wait_for
from tests.testservers import docker_engine
from tests.truth import assert_report_matches, day_of, expected_report, malformed, valid_events

N_EVENTS = 5_000


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The image under test, which must exist on an engine that answers."""
    name = os.environ.get("STREAMPROC_TEST_IMAGE") or "streamproc"
    engine = docker_engine(os.environ)
    if engine is None:
        pytest.fail(f"no Docker engine answers (DOCKER_HOST={os.environ.get('DOCKER_HOST', '<unset>')})")
    try:
        engine.images.get(name)
    except docker.errors.ImageNotFound:
        pytest.fail(
            f"image {name!r} not found: build it with `docker build -t {name} .` (or set STREAMPROC_TEST_IMAGE)"
        )
    finally:
        engine.close()
    yield name


@pytest.fixture
def secrets_dir(tmp_path: Path, database_url: str) -> Path:
    """Secrets as files, one per setting, as compose mounts them under /run/secrets."""
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / "database_url").write_text(database_url + "\n")
    (directory / "visitor_secret").write_text(SECRET + "\n")
    for path in (directory, *directory.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the image runs as a non-root user
    tmp_path.chmod(0o755)
    return directory


@pytest.fixture
def dropped_schema(database_url: str, ns: str) -> Iterator[str]:
    """A schema name of this test's own, which the image's `migrate` creates; dropped afterwards."""
    yield ns
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{ns}" CASCADE')


def container(image: str, env: Mapping[str, str], secrets: Path, *args: str) -> DockerContainer:
    c = DockerContainer(image).with_command(list(args)).with_kwargs(network_mode="host")
    c.with_envs(**env, CREDENTIALS_DIRECTORY="/run/secrets")
    return c.with_volume_mapping(str(secrets), "/run/secrets", "ro")


@contextmanager
def started(c: DockerContainer) -> Iterator[DockerContainer]:
    c.start()
    try:
        yield c
    finally:
        c.stop()


def run_to_end(image: str, env: Mapping[str, str], secrets: Path, *args: str) -> str:
    """Run one command of the image to its end; its stdout, or AssertionError with its output."""
    with started(container(image, env, secrets, *args)) as c:
        status = c.get_wrapped_container().wait(timeout=120)["StatusCode"]
        out, err = c.get_logs()
    assert status == 0, f"`streamproc {' '.join(args)}` exited {status}: {out.decode()[-2000:]}{err.decode()[-2000:]}"
    return out.decode()


def drained(r: redis.Redis, stream: str, group: str) -> bool:
    groups = {g["name"].decode(): g for g in r.xinfo_groups(stream)}
    return group in groups and groups[group]["lag"] == 0 and groups[group]["pending"] == 0


def test_image_drains_events_and_reports_the_truth(
    image: str, redis_url: str, dropped_schema: str, secrets_dir: Path, r: redis.Redis, stream: str
) -> None:
    """The image's `migrate`, then its daemon (consumer named after the container's hostname,
    secrets read from files, metrics and HEALTHCHECK on the published port, non-root), process
    produced events; after a graceful stop every figure of its `report --json` equals the truth
    computed independently, and every malformed entry is in the DLQ."""
    env = {
        "STREAMPROC_REDIS_URL": redis_url,
        "STREAMPROC_DB_SCHEMA": dropped_schema,
        "STREAMPROC_STREAMS": stream,
        "STREAMPROC_GROUP": "g",
        "STREAMPROC_BLOCK_MS": "200",
        "STREAMPROC_METRICS_PORT": str(free_port()),
    }
    run_to_end(image, env, secrets_dir, "migrate")
    entries = list(Generator(seed=11, days=2, bad_ratio=0.01).entries(N_EVENTS))
    produce(r, stream, entries)

    with started(container(image, env, secrets_dir, "run")) as daemon:
        wait_for(lambda: drained(r, stream, "g"), timeout_s=180, what="the daemon container to drain the stream")
        wrapped = daemon.get_wrapped_container()
        wrapped.reload()
        health = wrapped.client.images.get(image).attrs["Config"]["Healthcheck"]["Test"]
        assert health[0] == "CMD"
        probe = wrapped.exec_run(health[1:])
        assert probe.exit_code == 0, probe.output.decode()
        assert wrapped.exec_run(["id", "-u"]).output.decode().strip() != "0"
        consumers = [c["name"].decode() for c in r.xinfo_consumers(stream, "g")]
        assert consumers == [wrapped.attrs["Config"]["Hostname"]]
        wrapped.stop(timeout=30)  # SIGTERM: finish the batch in hand, then exit
        assert wrapped.wait(timeout=60)["StatusCode"] == 0, wrapped.logs().decode()[-3000:]

    events = valid_events(entries)
    days = sorted({day_of(e["ts"]) for e in events})
    for site in sorted({e["site"] for e in events}):
        out = run_to_end(
            image,
            env,
            secrets_dir,
            "report",
            "--site",
            site,
            "--from",
            days[0].isoformat(),
            "--to",
            days[-1].isoformat(),
            "--json",
        )
        got: dict[str, Any] = json.loads(out)
        assert_report_matches(got, expected_report(events, site, days[0], days[-1]))
    assert r.xlen(f"{stream}:dlq") == len(malformed(entries)) > 0
