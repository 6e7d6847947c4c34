"""Settings: precedence, validation messages, secrets kept out of output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamproc.config import expand_streams, load_settings, mask_url
from streamproc.errors import ConfigError


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    """A flag beats the environment, which beats the TOML file, which beats defaults."""
    cfg = tmp_path / "streamproc.toml"
    cfg.write_text('[streamproc]\nbatch_size = 10\ngroup = "from-file"\nblock_ms = 300\n')
    s = load_settings(
        {"batch_size": 30}, environ={"STREAMPROC_BATCH_SIZE": "20", "STREAMPROC_GROUP": "from-env"}, config_file=cfg
    )
    assert (s.batch_size, s.group, s.block_ms, s.max_deliveries) == (30, "from-env", 300, 5)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"STREAMPROC_BATCH_SIZE": "abc"}, "invalid batch_size (STREAMPROC_BATCH_SIZE / --batch-size)"),
        ({"STREAMPROC_BATCH_SIZE": "0"}, "invalid batch_size"),
        ({"STREAMPROC_BLOCK_MS": "999999"}, "invalid block_ms"),
        ({"STREAMPROC_MAX_DELIVERIES": "-1"}, "invalid max_deliveries"),
        ({"STREAMPROC_STREAMS": "a,a"}, "names a stream twice"),
        ({"STREAMPROC_STREAMS": "ev:{5..1}"}, "invalid stream range"),
        ({"STREAMPROC_DB_SCHEMA": "Robert'); DROP"}, "invalid db_schema"),
    ],
)
def test_invalid_settings_name_the_setting(env: dict[str, str], needle: str) -> None:
    """Each invalid value gives a ConfigError naming the env var and flag to fix."""
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(environ=env)
    assert needle in str(info.value)


def test_config_file_errors(tmp_path: Path) -> None:
    """Missing file, bad TOML and unknown keys are all clear errors."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={}, config_file=tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("batch_size = [")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(environ={}, config_file=bad)
    bad.write_text("[streamproc]\nbatch_sise = 3\n")
    with pytest.raises(ConfigError, match=r"unknown setting.*batch_sise"):
        load_settings(environ={}, config_file=bad)


def test_stream_ranges_expand() -> None:
    """`events:{0..2}` expands to three hash-tagged stream keys."""
    assert expand_streams("events:{0..2}, audit") == ("events:{0}", "events:{1}", "events:{2}", "audit")


def test_secrets_are_masked_and_read_from_credentials(tmp_path: Path) -> None:
    """Passwords in URLs and the visitor secret never appear in redacted settings;
    systemd credentials supply secrets."""
    (tmp_path / "visitor_secret").write_text("s3cr3t-s3cr3t-s3cr3t\n")
    s = load_settings(
        {"database_url": "postgresql://app:hunter2@db:5432/x", "redis_url": "redis://:pw@r:6379/0"},
        environ={"CREDENTIALS_DIRECTORY": str(tmp_path)},
    )
    assert s.visitor_secret == "s3cr3t-s3cr3t-s3cr3t"
    text = repr(s.redacted())
    for secret in ("hunter2", "s3cr3t", ":pw@"):
        assert secret not in text
    assert mask_url("postgresql://app:hunter2@db:5432/x") == "postgresql://app:***@db:5432/x"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "streamproc", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_config_exits_2_with_one_line() -> None:
    """`streamproc run` with an invalid setting prints one actionable line and exits 2."""
    res = run_cli("run", env={"STREAMPROC_BATCH_SIZE": "lots", "STREAMPROC_VISITOR_SECRET": "x" * 20})
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "STREAMPROC_BATCH_SIZE" in lines[0], res.stderr


def test_missing_visitor_secret_exits_2() -> None:
    """The daemon refuses to start without the key for visitor hashes, and says how to make one."""
    res = run_cli("run")
    assert res.returncode == 2
    assert "STREAMPROC_VISITOR_SECRET" in res.stderr and "openssl rand" in res.stderr
