"""A reader that closes stdout early (`streamproc status | head -1`) ends every command quietly with 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis

from tests.test_ops import dlq_fill, produce, subprocess_env

COMMANDS = [
    ("--help",),
    ("--version",),
    ("status", "--group", "g"),
    ("status", "--group", "g", "--json"),
    ("dlq", "stats"),
    ("dlq", "stats", "--json"),
    ("dlq", "list"),
    ("dlq", "list", "--json"),
    ("pending", "--group", "g"),
]


def run_into_closed_pipe(args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI with stdout on a pipe whose reading end is closed before the child starts:
    its first write meets EPIPE, with no timing involved."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "streamproc", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_closed_stdout_ends_the_command_quietly_with_0(
    redis_url: str, r: redis.Redis, stream: str, args: tuple[str, ...]
) -> None:
    """Human and --json output alike: exit 0, nothing on stderr (no traceback, no
    "Exception ignored"), so `set -o pipefail` scripts keep working."""
    produce(r, stream, 3)
    r.xgroup_create(stream, "g", id="0")
    r.xreadgroup("g", "c1", {stream: ">"}, count=2)
    dlq_fill(r, stream, 200)
    env = {**subprocess_env(), "STREAMPROC_REDIS_URL": redis_url, "STREAMPROC_STREAMS": stream}
    res = run_into_closed_pipe(args, env)
    assert (res.returncode, res.stderr) == (0, "")


def test_a_real_error_keeps_its_exit_code_when_stdout_is_closed(stream: str) -> None:
    """The quiet exit is for the closed pipe only: an unreachable Redis still says so and exits 1."""
    env = {**subprocess_env(), "STREAMPROC_REDIS_URL": "redis://127.0.0.1:1", "STREAMPROC_STREAMS": stream}
    res = run_into_closed_pipe(("status", "--group", "g"), env)
    assert res.returncode == 1
    assert "Redis unreachable" in res.stderr
