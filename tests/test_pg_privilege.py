"""A missing Postgres privilege is a configuration problem: exit 2 before any entry is delivered.

Restarts must never push good entries towards max_deliveries (and the dead-letter
stream): the daemon checks the grants it needs before it reads anything.
"""

from __future__ import annotations

import json

from tests.conftest import Daemons
from tests.pgroles import daemon_role

N = 50


def page_view(n: int) -> dict[str, str]:
    return {"event": json.dumps({"type": "page_view", "site": "priv.example", "ts": 1763800000000 + n, "path": "/"})}


def test_revoked_insert_exits_2_naming_the_grant_and_restarts_deliver_nothing(
    make_settings, schema, database_url: str, r, stream, pg, daemons: Daemons
) -> None:
    """INSERT revoked on one rollup table: each of three runs exits 2 with one error line naming
    the role, the table and the GRANT to run, before reading any entry (none pending, none
    dead-lettered). Granted again, the next run counts every entry."""
    for n in range(N):
        r.xadd(stream, page_view(n))
    role = f"{schema}_daemon"
    with daemon_role(database_url, schema, role) as url:
        run_without_then_with_insert(make_settings(database_url=url), schema, role, r, stream, pg, daemons)


def run_without_then_with_insert(settings, schema: str, role: str, r, stream: str, pg, daemons: Daemons) -> None:
    pg.execute(f'REVOKE INSERT ON pageviews_daily FROM "{role}"')
    for _ in range(3):
        proc = daemons.start(settings, "--drain")
        assert proc.wait(timeout=120) == 2, daemons.logs()[-3000:]
        assert r.xpending(stream, "g")["pending"] == 0
    fatal = [json.loads(line) for line in daemons.logs().splitlines() if '"fatal"' in line]
    assert len(fatal) == 3
    grant = f"GRANT INSERT ON {schema}.pageviews_daily TO {role}"
    assert all(grant in line["error"] and line["kind"] == "SinkMisconfigured" for line in fatal), fatal
    assert "Traceback" not in daemons.logs()
    assert r.xlen(f"{stream}:dlq") == 0

    pg.execute(f'GRANT INSERT ON pageviews_daily TO "{role}"')
    proc = daemons.start(settings, "--drain")
    assert proc.wait(timeout=120) == 0, daemons.logs()[-3000:]
    assert r.xlen(f"{stream}:dlq") == 0
    assert pg.execute("SELECT sum(views)::int FROM pageviews_daily").fetchone() == (N,)


def test_no_usage_on_the_schema_names_the_grant_not_migrate(
    make_settings, schema, database_url: str, r, stream, pg, daemons: Daemons
) -> None:
    """A role that may connect but lacks USAGE on the schema sees none of its tables, which
    used to read "the database is not migrated: run streamproc migrate" (wrong advice: migrating
    again changes nothing). It exits 2 naming the role and the `GRANT USAGE ON SCHEMA` to run,
    before reading any entry; granted, the next run counts every entry."""
    for n in range(N):
        r.xadd(stream, page_view(n))
    role = f"{schema}_daemon"
    with daemon_role(database_url, schema, role) as url:
        pg.execute(f'REVOKE USAGE ON SCHEMA "{schema}" FROM "{role}"')
        settings = make_settings(database_url=url)
        proc = daemons.start(settings, "--drain")
        assert proc.wait(timeout=120) == 2, daemons.logs()[-3000:]
        fatal = [json.loads(line) for line in daemons.logs().splitlines() if '"fatal"' in line]
        assert len(fatal) == 1, daemons.logs()[-3000:]
        assert f"GRANT USAGE ON SCHEMA {schema} TO {role}" in fatal[0]["error"], fatal
        assert "migrate" not in fatal[0]["error"] and fatal[0]["kind"] == "SinkMisconfigured", fatal
        assert r.xlen(f"{stream}:dlq") == 0
        assert all(int(g["pending"]) == 0 for g in r.xinfo_groups(stream))
        pg.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        proc = daemons.start(settings, "--drain")
        assert proc.wait(timeout=120) == 0, daemons.logs()[-3000:]
    assert pg.execute("SELECT sum(views)::int FROM pageviews_daily").fetchone() == (N,)
