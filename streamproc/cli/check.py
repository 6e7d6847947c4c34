"""`streamproc check`: a self-test of the configuration and both servers, one line per check.

Exit codes: 0 every check ok (warnings allowed); 1 at least one check failed;
2 the configuration itself is invalid (nothing could be checked).
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

import redis.exceptions as rx
import typer

from streamproc.cli.options import ConfigOpt, friendly, out, settings_from
from streamproc.cli.run_options import setting_parameters
from streamproc.config import Settings, mask_url
from streamproc.errors import StreamprocError

Status = Literal["ok", "warn", "fail"]

EXIT_CODES = "Exit codes: 0 every check ok (warnings allowed); 1 a check failed; 2 invalid configuration."


@dataclass
class Check:
    name: str
    status: Status
    detail: str


def _non_default(settings: Settings) -> str:
    shown = settings.redacted()
    defaults = Settings(consumer=settings.consumer).redacted()
    changed = [
        f"{k}={','.join(v) if isinstance(v, list) else v}"
        for k, v in shown.items()
        if v != defaults[k] and k != "visitor_secret"
    ]
    return ", ".join(changed) if changed else "all defaults"


def _config_checks(settings: Settings) -> list[Check]:
    checks = [Check("config", "ok", f"consumer {settings.consumer}; {_non_default(settings)}")]
    try:
        settings.require_secret()
        checks.append(Check("visitor secret", "ok", "set"))
    except StreamprocError as exc:
        checks.append(Check("visitor secret", "fail", str(exc)))
    return checks


def _redis_checks(settings: Settings) -> list[Check]:
    from streamproc.redis import durability, preflight
    from streamproc.redis.classify import translate
    from streamproc.redis.client import connect
    from streamproc.redis.url import parse_redis_url

    where = mask_url(settings.redis_url)
    client = connect(settings.redis_url, cluster=settings.redis_cluster, socket_timeout=10.0)
    checks: list[Check] = []
    try:
        by_node = preflight.server_facts_by_node(client, settings.streams)
        for node, facts in by_node.items():  # on a cluster, each primary holding a stream
            major = int((facts.version or "0").split(".")[0])
            status: Status = "ok" if major >= 7 else "fail"
            extra = "" if status == "ok" else " (streamproc needs Redis 7 or later)"
            at = f"node {node} of the cluster at {where}" if node else where
            checks.append(Check(_on("redis", node), status, f"Redis {facts.version} ({facts.mode}) at {at}{extra}"))
        perms = preflight.probe_permissions(client, settings.streams, settings.group, settings.consumer)
        if perms.denied:
            denied = "; ".join(perms.denied)
            checks.append(
                Check("redis permissions", "fail", f"denied: {denied} (deploy/redis/streamproc.acl grants them)")
            )
        else:
            checks.append(Check("redis permissions", "ok", f"{perms.checked} commands the daemon sends, all allowed"))
        for stream, state in preflight.group_presence(client, settings.streams, settings.group).items():
            checks.append(_group_check(stream, settings.group, state))
        for node, facts in by_node.items():
            eviction = _eviction_check(facts.maxmemory_policy)
            checks.append(Check(_on(eviction.name, node), eviction.status, eviction.detail))
        for node, kept in durability.persistence(client, settings.streams).items():
            ok, detail = durability.check_line(kept)
            checks.append(Check(_on("redis persistence", node), "ok" if ok else "warn", detail))
    except (rx.RedisError, rx.RedisClusterException) as exc:
        target = parse_redis_url(settings.redis_url, cluster=settings.redis_cluster)
        error = translate(
            exc,
            group=settings.group,
            cluster=settings.redis_cluster,
            probe=target.address,
            tls=target.scheme == "rediss",
        )
        checks.append(Check("redis", "fail", f"{where}: {error}"))
    finally:
        client.close()
    return checks


def _on(name: str, node: str) -> str:
    """A check's name, with the cluster node it is about (none on a single Redis)."""
    return f"{name} {node}" if node else name


def _group_check(stream: str, group: str, state: str) -> Check:
    if state == "ok":
        return Check(f"group {stream}", "ok", f"group {group} on stream {stream}")
    if state == "denied":
        return Check(f"group {stream}", "fail", "cannot tell: the Redis user may not read this stream")
    what = "stream" if state == "no stream" else "group"
    return Check(
        f"group {stream}", "fail", f"no {what}: create the group with `streamproc setup` (as an admin Redis user)"
    )


def _eviction_check(policy: str | None) -> Check:
    if policy is None:
        return Check(
            "maxmemory-policy",
            "warn",
            "unknown: this user may run neither CONFIG GET nor INFO (an admin: redis-cli CONFIG GET maxmemory-policy)",
        )
    if policy == "noeviction":
        return Check("maxmemory-policy", "ok", "noeviction")
    status: Status = "fail" if policy.startswith("allkeys") else "warn"
    return Check(
        "maxmemory-policy",
        status,
        f"{policy}: Redis may evict keys under memory pressure (streams, dead letters, groups);"
        " set maxmemory-policy noeviction",
    )


def _postgres_checks(settings: Settings) -> list[Check]:
    from streamproc.postgres.preflight import postgres_facts

    where = mask_url(settings.database_url)
    try:
        facts = postgres_facts(settings.database_url, settings.db_schema, settings.approximate_uniques)
    except StreamprocError as exc:
        return [Check("postgres", "fail", f"{where}: {exc}")]
    checks = [Check("postgres", "ok", f"PostgreSQL {facts.version} at {where} as role {facts.role}")]
    checks += _durability_checks(settings)
    if settings.approximate_uniques:
        checks.append(Check("hll extension", "fail" if facts.hll else "ok", facts.hll or "installed"))
    if facts.schema:
        checks.append(Check("schema", "fail", facts.schema))
        return checks
    if facts.schema_unreadable:
        checks.append(Check("schema", "warn", f"role {facts.role} may not read schema_migrations (see grants)"))
    else:
        checks.append(Check("schema", "ok", f"schema {settings.db_schema} migrated"))
    checks.append(Check("grants", "fail" if facts.grants else "ok", facts.grants or f"role {facts.role} has them all"))
    if facts.partitions_unknown:
        checks.append(Check("partitions", "warn", f"cannot tell as role {facts.role}: {facts.partitions_unknown}"))
    elif facts.partitions_missing:
        detail = f"{facts.partitions_missing} partition(s) missing ahead: run `streamproc maintain` (daily timer)"
        checks.append(Check("partitions", "warn", detail))
    else:
        checks.append(Check("partitions", "ok", "created ahead"))
    return checks


def _durability_checks(settings: Settings) -> list[Check]:
    """One warn line per setting that makes an acknowledged COMMIT less than durable."""
    from streamproc.postgres import durability

    try:
        unsafe = durability.unsafe_settings(settings.database_url, settings.db_schema)
    except StreamprocError as exc:
        return [Check("postgres durability", "warn", f"cannot tell: {exc}")]
    if not unsafe:
        return [Check("postgres durability", "ok", "fsync, synchronous_commit and full_page_writes on")]
    return [Check(name, "warn", durability.warning(name, value)) for name, value in unsafe.items()]


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in order; never raises for a server's failure (that is a failed check)."""
    steps: list[Callable[[Settings], list[Check]]] = [_config_checks, _redis_checks, _postgres_checks]
    return [check for step in steps for check in step(settings)]


def check(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.", show_default=False)] = False,
    **settings: Any,
) -> None:
    """Check the configuration and both servers as the daemon would use them, changing nothing.

    Takes the same settings as `run` (flags, STREAMPROC_*, --config). One line per
    check: ok, warn or fail. Checks: the effective configuration (passwords masked),
    Redis reachable and its version, every command the daemon sends allowed for its
    user, each stream and the group present, maxmemory-policy noeviction, persistence
    (appendonly or save points); Postgres reachable, commits durable (fsync,
    synchronous_commit, full_page_writes on), the schema migrated, the daemon's grants, partitions created ahead, the
    hll extension (approximate uniques).

    Exit codes: 0 every check ok (warnings allowed); 1 a check failed; 2 invalid configuration.

    Examples:

        streamproc check

        streamproc check --json | jq '.checks[] | select(.status != "ok")'

        set -a; . /etc/streamproc/streamproc.env; set +a; streamproc check   # as a unit would
    """
    effective = settings_from(config, **settings)
    checks = run_checks(effective)
    worst = "fail" if any(c.status == "fail" for c in checks) else "ok"
    if as_json:
        shown = effective.redacted()  # the visitor secret is "***" when set
        doc = {"status": worst, "config": shown, "checks": [asdict(c) for c in checks]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            out.print(f"{c.status:<4}  {c.name:<{width}}  {c.detail}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(1 if worst == "fail" else 0)


_PARAMETERS = [p for p in inspect.signature(check, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
check.__signature__ = inspect.Signature([*_PARAMETERS, *setting_parameters()])  # type: ignore[attr-defined]
check = friendly(check)
