"""A `streamproc run` flag for every setting, built from :class:`streamproc.config.Settings`.

One help line per setting lives here; the flag, its type, the environment variable, the
TOML key and the default are derived from the settings declaration, so a new setting
cannot lack a flag (``tests/test_config_cli.py`` checks this module, ``run --help`` and the
README's table agree).
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Final

import msgspec
import typer

from streamproc.config import SECRET_FIELDS, Settings, env_name

FLAG_NAMES: Final = {"db_schema": "--schema"}

HELP: Final = {
    "redis_url": "Redis URL (redis://, rediss://, redis+sentinel://).",
    "redis_cluster": "The Redis URL names one seed node of a Redis Cluster.",
    "database_url": "Postgres URL or key=value DSN.",
    "db_schema": "Postgres schema of streamproc's tables.",
    "streams": "Comma-separated stream keys; `events:{0..7}` ranges expand.",
    "group": "Consumer group (created with MKSTREAM at start if missing).",
    "consumer": "Stable consumer name, unique per instance.",
    "batch_size": "Entries per read (1-100000).",
    "backlog_batch_size": "While behind (a read came back full), reads double up to this many entries.",
    "block_ms": "XREADGROUP BLOCK in ms (1-60000).",
    "min_idle_ms": "Reclaim entries idle this long on other consumers, in ms.",
    "reclaim_interval_ms": "How often to look for stalled entries, in ms.",
    "max_deliveries": "Dead-letter an entry delivered more often than this (3-1000).",
    "drain_timeout_s": "Deadline to finish the batch in hand on SIGTERM, in s.",
    "max_entry_bytes": "Larger entries are dead-lettered (at least 256).",
    "max_keys_per_batch": "Distinct values per attribute in one batch; later new ones count under `(other)`.",
    "max_event_age_days": "Dead-letter events whose `ts` is older than this when written (1-3650).",
    "normalize_paths": "Count paths without scheme, host, query string (but --path-keep-params) and fragment.",
    "path_keep_params": "Comma-separated query parameters kept in normalised paths, e.g. page,lang.",
    "flushers": "Batches committed at once, each by its own thread and Postgres connection (1-8).",
    "uniques": "exact (set rows) or approximate (HyperLogLog; needs the hll extension).",
    "ledger_retention_s": "Minimum exactly-once ledger retention, in s (at least 3600).",
    "enrich": "Derive browser, OS, device (from `ua`) and country (from `ip`).",
    "filter_bots": "Count bots' page views and clicks in bots_daily only.",
    "country_db": "MaxMind-format .mmdb (GeoLite2 / DB-IP Country or City) for countries.",
    "session_timeout_s": "A derived session ends after this long without events, in s (0: off).",
    "group_start_id": "Where a newly created group starts: $ (new entries), 0 (all) or an entry id.",
    "log_level": "debug, info, warning or error (any case).",
    "metrics_port": "Port of /metrics, /healthz and /ready; 0 disables; one per instance.",
    "metrics_addr": "Address to serve metrics on (0.0.0.0: every interface).",
    "metrics_interval_s": "How often lag, pending and DLQ gauges are read and the servers probed, in s.",
    "liveness_timeout_s": "/healthz fails once the main loop has not turned for this long, in s.",
    "idle_in_transaction_timeout_ms": "Postgres ends a daemon transaction left waiting this long, in ms.",
}


def flag_name(field: str) -> str:
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


def default_text(field: msgspec.structs.FieldInfo) -> str:
    if field.name == "consumer":
        return "the host name"
    value = field.default
    if value is None or value == ():
        return "none"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _annotation(field: msgspec.structs.FieldInfo) -> Any:
    help_text = f"{HELP[field.name]} [env: {env_name(field.name)}; TOML: {field.name}; default: {default_text(field)}]"
    default = field.default
    if isinstance(default, bool):
        base = field.name.replace("_", "-")
        return Annotated[
            bool | None,
            typer.Option(f"--{base}/--no-{base}", help=help_text, show_default=False, rich_help_panel="Switches"),
        ]
    kind: type = str
    if isinstance(default, int):
        kind = int
    elif isinstance(default, float):
        kind = float
    return Annotated[
        kind | None,
        typer.Option(flag_name(field.name), help=help_text, show_default=False, rich_help_panel="Settings"),
    ]


def setting_fields() -> list[msgspec.structs.FieldInfo]:
    """Every setting that has a flag: all but secrets (a flag's value is visible in `ps`)."""
    return [f for f in msgspec.structs.fields(Settings) if f.name not in SECRET_FIELDS]


def setting_parameters() -> list[inspect.Parameter]:
    """Keyword-only parameters, one per setting, each defaulting to None (not given)."""
    return [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_annotation(f))
        for f in setting_fields()
    ]
