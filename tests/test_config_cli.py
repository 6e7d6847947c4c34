"""Configuration that says what is wrong: a flag per setting, typos caught, values explained."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
import typer.main
from typer.core import TyperGroup

from streamproc.cli.app import app
from streamproc.cli.run_options import flag_name, setting_fields
from streamproc.config import FIELDS, SECRET_FIELDS, Settings, env_name, load_settings, unknown_environment
from streamproc.daemon import metrics
from streamproc.daemon.health import Health
from streamproc.errors import ConfigError
from tests.test_config import run_cli

ROOT = Path(__file__).resolve().parent.parent
SECRET_ENV = {"STREAMPROC_VISITOR_SECRET": "x" * 20}


def run_flags() -> set[str]:
    command = typer.main.get_command(app)
    assert isinstance(command, TyperGroup)
    return {opt for param in command.commands["run"].params for opt in (*param.opts, *param.secondary_opts)}


def test_every_setting_is_a_run_flag_and_a_readme_row() -> None:
    """Each setting but the secret has a `run` flag, and the README's table names its variable,
    flag and TOML key in one row (a new setting without them fails here)."""
    flags = run_flags()
    assert {f.name for f in setting_fields()} == set(FIELDS) - set(SECRET_FIELDS)
    assert {"--metrics-port", "--flushers", "--reclaim-interval-ms", "--no-enrich"} <= flags
    readme = (ROOT / "README.md").read_text()
    for field in FIELDS:
        row = re.search(rf"^\| `{env_name(field)}` \|(.*)$", readme, re.MULTILINE)
        assert row is not None, f"README has no row for {env_name(field)}"
        assert f"| `{field}` |" in row.group(1), f"README row of {field} lacks its TOML key"
        if field not in SECRET_FIELDS:
            assert flag_name(field) in flags
            assert f"`{flag_name(field)}`" in row.group(1), f"README row of {field} lacks {flag_name(field)}"


def test_run_flags_reach_the_settings() -> None:
    """A flag that is not otherwise checked still reaches validation: `--flushers 99` exits 2 naming it."""
    res = run_cli("run", "--flushers", "99", "--log-level", "DEBUG", env=SECRET_ENV)
    assert res.returncode == 2, res.stderr
    assert "invalid flushers (STREAMPROC_FLUSHERS / --flushers)" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"STREAMPROC_GROUP_START_ID": "banana"}, "invalid group_start_id (STREAMPROC_GROUP_START_ID"),
        ({"STREAMPROC_METRICS_ADDR": "999.1.1.1"}, "'999.1.1.1' is not an IP address"),
        ({"STREAMPROC_LOG_LEVEL": "loud"}, "choose one of debug, error, info, warning"),
        ({"STREAMPROC_UNIQUES": "some"}, "choose one of approximate, exact"),
    ],
)
def test_invalid_values_exit_2_and_say_what_is_wrong(env: dict[str, str], needle: str) -> None:
    """Values that used to exit 1 (a restart loop) or blame the port are configuration errors, exit 2."""
    res = run_cli("run", env={**SECRET_ENV, **env})
    assert res.returncode == 2, res.stderr
    assert needle in " ".join(res.stderr.split())
    assert "Traceback" not in res.stderr


def test_log_level_and_start_ids_accepted() -> None:
    """Log levels in any case; `$`, `0` and entry ids as where a group starts."""
    assert load_settings(environ={"STREAMPROC_LOG_LEVEL": "DEBUG"}).log_level == "debug"
    for start in ("$", "0", "1700000000000", "1700000000000-3"):
        assert load_settings(environ={"STREAMPROC_GROUP_START_ID": start}).group_start_id == start


def test_misspelt_environment_variables_warn_with_a_suggestion() -> None:
    """Unknown STREAMPROC_* variables are a warning line each (an env file may be shared), with a
    "did you mean"; the variables of other tools and of the tests are not reported."""
    lines = unknown_environment(
        {"STREAMPROC_BATCHSIZE": "5", "STREAMPROC_STREAM": "x", "STREAMPROC_CONFIG": "f", "STREAMPROC_TEST_X": "1"}
    )
    assert lines == [
        "STREAMPROC_BATCHSIZE is not a streamproc setting and is ignored (did you mean STREAMPROC_BATCH_SIZE?)",
        "STREAMPROC_STREAM is not a streamproc setting and is ignored (did you mean STREAMPROC_STREAMS?)",
    ]
    res = run_cli("run", "--batch-size", "0", env={**SECRET_ENV, "STREAMPROC_BATCHSIZE": "5"})
    assert res.returncode == 2
    assert "warning: STREAMPROC_BATCHSIZE is not a streamproc setting" in res.stderr


def test_unknown_toml_keys_and_tables_exit_2_with_a_suggestion(tmp_path: Path) -> None:
    """A typo in the daemon's TOML file is an error (exit 2) with the nearest setting named."""
    cfg = tmp_path / "streamproc.toml"
    cfg.write_text("[streamproc]\nbatch_sise = 3\n[streamproc.metrics]\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, config_file=cfg)
    assert "unknown setting 'batch_sise' (did you mean 'batch_size'?)" in str(info.value)
    assert "unknown table 'metrics'" in str(info.value)
    cfg.write_text("[streamproc]\nbatch_size = 3\n[stremproc]\ngroup = 'g'\n")
    with pytest.raises(ConfigError, match=r"stremproc outside \[streamproc\]"):
        load_settings(environ={}, config_file=cfg)
    res = run_cli("run", "--config", str(cfg), env=SECRET_ENV)
    assert res.returncode == 2 and "stremproc outside [streamproc]" in res.stderr


def test_metrics_address_not_on_this_host_names_the_address() -> None:
    """An address that is valid but not this host's blames STREAMPROC_METRICS_ADDR, not the port."""
    with pytest.raises(ConfigError) as info:
        metrics.serve(9, "192.0.2.1", Health(60))  # TEST-NET-1: never an address of this host
    assert "set STREAMPROC_METRICS_ADDR" in str(info.value)
    assert "METRICS_PORT" not in str(info.value)


def test_defaults_are_shown_once() -> None:
    """Every flag's help names its variable, TOML key and default in one bracket, nothing else."""
    defaults = {f.name: f for f in msgspec.structs.fields(Settings)}
    res = run_cli("run", "--help", env={"COLUMNS": "400"})
    text = " ".join(res.stdout.split())
    for field in setting_fields():
        assert f"[env: {env_name(field.name)}; TOML: {field.name}; default:" in text, field.name
    assert defaults["batch_size"].default == 1000 and "default: 1000]" in text
    assert "[default:" not in text.replace("[default: no-drain]", "")
