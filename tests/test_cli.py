"""CLI edges: bad arguments, unreachable servers, unmigrated schema — clear lines, right exit codes."""

from __future__ import annotations

from streamproc.dev.localservers import free_port
from streamproc.postgres.migrate import load_migrations
from tests.test_config import run_cli


def test_bad_dates_exit_2() -> None:
    """A malformed or reversed date range is a usage error (exit 2) naming the flag."""
    res = run_cli("report", "--site", "s", "--from", "2026-13-01", "--to", "2026-01-02")
    assert res.returncode == 2 and "--from" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("report", "--site", "s", "--from", "2026-01-03", "--to", "2026-01-02")
    assert res.returncode == 2 and "--to is before --from" in res.stderr


def test_unreachable_postgres_exits_1_with_one_line() -> None:
    """`migrate` against a closed port fails with exit 1 and a one-line reason, no traceback,
    and the password of the URL is not echoed."""
    url = f"postgresql://app:hunter2@127.0.0.1:{free_port()}/x"
    res = run_cli("migrate", "--database-url", url)
    assert res.returncode == 1
    assert "cannot connect to Postgres" in res.stderr
    assert "Traceback" not in res.stderr and "hunter2" not in res.stderr


def test_report_on_unmigrated_schema_says_run_migrate(database_url: str) -> None:
    """Reading a schema that was never migrated tells the user to run `streamproc migrate` (exit 2)."""
    res = run_cli(
        "report",
        "--site",
        "s",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-01",
        "--database-url",
        database_url,
        "--schema",
        "never_migrated",
    )
    assert res.returncode == 2 and "streamproc migrate" in res.stderr, res.stderr


def test_migrate_is_idempotent(database_url: str, ns: str) -> None:
    """A second `migrate` applies nothing and says the schema is up to date."""
    first = run_cli("migrate", "--database-url", database_url, "--schema", ns, "--json")
    assert first.returncode == 0 and "001_init" in first.stdout, first.stderr
    again = run_cli("migrate", "--database-url", database_url, "--schema", ns)
    assert again.returncode == 0 and "up to date" in again.stdout


def test_help_explains_commands() -> None:
    """Every command has help text with examples."""
    res = run_cli("run", "--help")
    assert res.returncode == 0 and "Examples" in res.stdout and "STREAMPROC_BATCH_SIZE" in res.stdout


def test_setup_provisions_schema_and_groups(redis_url: str, database_url: str, ns: str) -> None:
    """`streamproc setup` migrates and creates the consumer group on every stream; a second
    run changes nothing."""
    import json

    args = (
        "setup",
        "--redis-url",
        redis_url,
        "--database-url",
        database_url,
        "--schema",
        ns,
        "--streams",
        f"{ns}:{{0..2}}",
        "--group",
        "g",
        "--json",
    )
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["migrations_applied"] == [f"{m.version:03d}_{m.name}" for m in load_migrations()]
    assert data["migrations_applied"][:5] == [
        "001_init",
        "002_partitioning",
        "003_producer_digest",
        "004_cheaper_hot_path",
        "005_capped_entries",
    ]
    assert data["partitions_created"] > 0
    assert data["groups_created"] == [f"{ns}:{{{i}}}" for i in range(3)]
    again = json.loads(run_cli(*args).stdout)
    assert again["migrations_applied"] == [] and again["groups_created"] == []
