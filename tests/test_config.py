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


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("streams = 5", "streams must be a list of strings (or one comma-separated string), not a number (5)"),
        (
            'streams = ["a", 5]',
            "streams must be a list of strings (or one comma-separated string), not a list holding a number (5)",
        ),
        ("streams = {a=1}", "streams must be a list of strings (or one comma-separated string), not a table"),
        ("batch_size = true", "batch_size must be an integer, not a boolean (true)"),
        ("batch_size = [1]", "batch_size must be an integer, not a list holding a number (1)"),
        ('enrich = "yes"', "enrich must be true or false, not a string ('yes')"),
        ("country_db = 3", "country_db must be a string, not a number (3)"),
        ('drain_timeout_s = "30"', "drain_timeout_s must be a number, not a string ('30')"),
        (
            "drain_timeout_s = inf",
            "invalid drain_timeout_s (STREAMPROC_DRAIN_TIMEOUT_S / --drain-timeout-s): expected a number <= 86400.0",
        ),
        ("metrics_interval_s = nan", "invalid metrics_interval_s"),
        ("liveness_timeout_s = -inf", "invalid liveness_timeout_s"),
    ],
)
def test_toml_values_of_the_wrong_kind_are_config_errors(tmp_path: Path, toml: str, needle: str) -> None:
    """Every TOML setting is checked for its kind (integer, number, boolean, string, list of strings)
    and every number for being finite and in range: a ConfigError naming the setting, never a
    TypeError from deeper down nor a table silently read as its keys."""
    cfg = tmp_path / "streamproc.toml"
    cfg.write_text(f"[streamproc]\n{toml}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, config_file=cfg)
    assert needle in str(info.value)


def test_toml_kinds_that_are_right_are_taken(tmp_path: Path) -> None:
    """An integer where a number is expected and one comma-separated string for a list are fine."""
    cfg = tmp_path / "streamproc.toml"
    cfg.write_text('[streamproc]\ndrain_timeout_s = 3\nstreams = "a, b"\npath_keep_params = ["q"]\n')
    s = load_settings(environ={}, config_file=cfg)
    assert (s.drain_timeout_s, s.streams, s.path_keep_params) == (3.0, ("a", "b"), ("q",))


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """TOML is UTF-8: a Latin-1 file is refused with the byte offset, not a UnicodeDecodeError."""
    cfg = tmp_path / "streamproc.toml"
    cfg.write_bytes('[streamproc]\ngroup = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 25\): save it as UTF-8"):
        load_settings(environ={}, config_file=cfg)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        (
            {"STREAMPROC_DRAIN_TIMEOUT_S": "inf"},
            "invalid drain_timeout_s (STREAMPROC_DRAIN_TIMEOUT_S / --drain-timeout-s):"
            " expected a number <= 86400.0, got 'inf'",
        ),
        ({"STREAMPROC_DRAIN_TIMEOUT_S": "nan"}, "expected a number > 0.0, got 'nan'"),
        ({"STREAMPROC_METRICS_INTERVAL_S": "1e308"}, "invalid metrics_interval_s"),
        (
            {"STREAMPROC_BATCH_SIZE": "1.5"},
            "invalid batch_size (STREAMPROC_BATCH_SIZE / --batch-size): expected an integer, got '1.5'",
        ),
        ({"STREAMPROC_STREAMS": "events:{0..100000}"}, "it names 100001 streams, at most 4096 are allowed per range"),
        (
            {"STREAMPROC_DB_SCHEMA": 'a"b'},
            "expected lower-case letters, digits and underscores, at most 63 characters,"
            " not starting with a digit, got 'a\"b'",
        ),
        ({"STREAMPROC_REDIS_URL": ""}, "STREAMPROC_REDIS_URL is set but empty: give it a value or remove the line"),
        ({"STREAMPROC_DATABASE_URL": ""}, "STREAMPROC_DATABASE_URL is set but empty"),
        ({"STREAMPROC_BATCH_SIZE": ""}, "STREAMPROC_BATCH_SIZE is set but empty"),
        (
            {"STREAMPROC_STREAMS": ", ,"},
            "invalid streams (STREAMPROC_STREAMS / --streams): name at least one stream key",
        ),
        ({"STREAMPROC_ENRICH": "banana"}, "invalid enrich (STREAMPROC_ENRICH / --enrich): expected true or false"),
    ],
)
def test_environment_values_are_explained_in_words(env: dict[str, str], needle: str) -> None:
    """Numbers finite and in range, the real limit of a stream range, the schema rule and the
    expected kind said in words (no regex, no `Expected int, got str`); empty is not 'default'."""
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    assert needle in str(info.value)
    assert "^[" not in str(info.value) and "`" not in str(info.value)


def test_empty_values_that_mean_something_stay_allowed() -> None:
    """An empty list of kept parameters, and an empty secret next to a systemd credential."""
    s = load_settings(environ={"STREAMPROC_PATH_KEEP_PARAMS": "", "STREAMPROC_COUNTRY_DB": ""})
    assert (s.path_keep_params, s.country_db) == ((), None)


@pytest.mark.parametrize("command", [["run"], ["check"], ["status"]])
@pytest.mark.parametrize("toml", ["streams = 5", 'streams = ["a", 5]', b'group = "caf\xe9"'])
def test_malformed_config_files_exit_2_for_every_command(tmp_path: Path, command: list[str], toml: str | bytes) -> None:
    """`run`, `check` and `status` with a malformed TOML file: one line, exit 2, no traceback."""
    cfg = tmp_path / "streamproc.toml"
    cfg.write_bytes(b"[streamproc]\n" + (toml if isinstance(toml, bytes) else toml.encode()) + b"\n")
    res = run_cli(*command, "--config", str(cfg), env={"STREAMPROC_VISITOR_SECRET": "x" * 20})
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "config file" in lines[0], res.stderr


def test_a_credential_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """A systemd credential file in Latin-1: a ConfigError naming the file, not a UnicodeDecodeError."""
    (tmp_path / "redis_url").write_bytes("redis://:caf\u00e9@127.0.0.1:6379/0".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"the systemd credential .*redis_url is not UTF-8 text"):
        load_settings(environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
