"""Settings: one frozen object, built once, passed explicitly.

Precedence, highest first: command-line flags, ``STREAMPROC_*`` environment
variables, the TOML file (``--config`` / ``STREAMPROC_CONFIG``), defaults.
Secrets may also come from systemd credentials (``$CREDENTIALS_DIRECTORY``).
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from streamproc.core.keys import cluster_key_problem
from streamproc.errors import ConfigError

ENV_PREFIX: Final = "STREAMPROC_"
SECRET_FIELDS: Final = ("visitor_secret",)


def default_consumer() -> str:
    return socket.gethostname() or "streamproc"


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Every knob of the daemon. Units are in the names."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False  # redis_url names one seed node of a Redis Cluster
    database_url: str = "postgresql://127.0.0.1:5432/streamproc"
    db_schema: Annotated[str, msgspec.Meta(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "streamproc"
    streams: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)] = ("events",)
    group: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "streamproc"
    consumer: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = msgspec.field(
        default_factory=default_consumer
    )
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    block_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 2000
    min_idle_ms: Annotated[int, msgspec.Meta(ge=1)] = 60_000
    reclaim_interval_ms: Annotated[int, msgspec.Meta(ge=1)] = 5_000
    # At least 3: after a crash, an entry's neighbours are delivered twice more before the
    # worker isolates the culprit (see Worker.recover_own_pending).
    max_deliveries: Annotated[int, msgspec.Meta(ge=3, le=1000)] = 5
    drain_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    max_entry_bytes: Annotated[int, msgspec.Meta(ge=256)] = 64 * 1024
    max_keys_per_batch: Annotated[int, msgspec.Meta(ge=10)] = 10_000
    # Events whose `ts` is older than this when written to the stream go to the DLQ (raise it for a backfill).
    max_event_age_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 30
    # Batches committed at once, each by its own thread and Postgres connection.
    flushers: Annotated[int, msgspec.Meta(ge=1, le=8)] = 2
    # exact: one set row per visitor (and session) per day; approximate: HyperLogLog sketches.
    uniques: Literal["exact", "approximate"] = "exact"
    ledger_retention_s: Annotated[int, msgspec.Meta(ge=3600)] = 7 * 86_400
    # Server-side enrichment (README "Enrichment"): browser/OS/device from `ua`, country from `ip`
    # (with country_db, a MaxMind-format .mmdb), bots filtered into bots_daily, and sessions
    # derived for events without one (a session ends after session_timeout_s without events; 0: off).
    enrich: bool = True
    filter_bots: bool = True
    country_db: str | None = None
    session_timeout_s: Annotated[int, msgspec.Meta(ge=0, le=86_400)] = 1800
    group_start_id: str = "0"
    visitor_secret: str | None = None
    log_level: Annotated[str, msgspec.Meta(pattern=r"^(debug|info|warning|error)$")] = "info"
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9464
    metrics_addr: str = "127.0.0.1"
    metrics_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0

    @property
    def approximate_uniques(self) -> bool:
        return self.uniques == "approximate"

    @property
    def socket_timeout_s(self) -> float:
        """Client socket timeout: always longer than the longest BLOCK."""
        return self.block_ms / 1000 + 10.0

    def require_secret(self) -> bytes:
        if not self.visitor_secret:
            raise ConfigError(
                "STREAMPROC_VISITOR_SECRET is not set: it keys the visitor/session hashes."
                " Generate one with `openssl rand -hex 32` and keep it stable."
            )
        if len(self.visitor_secret) < 16:
            raise ConfigError("STREAMPROC_VISITOR_SECRET must be at least 16 characters long")
        return self.visitor_secret.encode()[:64]

    def redacted(self) -> dict[str, Any]:
        """Settings safe to log or print: passwords and secrets masked."""
        out = msgspec.structs.asdict(self)
        out["redis_url"] = mask_url(self.redis_url)
        out["database_url"] = mask_url(self.database_url)
        for name in SECRET_FIELDS:
            if out[name]:
                out[name] = "***"
        out["streams"] = list(self.streams)
        return out


FIELDS: Final = tuple(f.name for f in msgspec.structs.fields(Settings))


def env_name(field: str) -> str:
    names = {"database_url": "DATABASE_URL", "redis_url": "REDIS_URL"}
    return ENV_PREFIX + names.get(field, field.upper())


_SECRET_PARAMS: Final = ("password", "sslpassword", "ssl_password", "sentinel_password")
_DSN_PASSWORD = re.compile(r"(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """Hide passwords: ``redis://user:secret@host`` -> ``redis://user:***@host``.

    Also masks ``?password=`` style query parameters, key=value DSNs
    (``host=db password=secret``) and keeps multi-host and IPv6 netlocs intact.
    """
    if "://" not in url:
        return _DSN_PASSWORD.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    query = "&".join(
        f"{k}=***" if k.lower() in _SECRET_PARAMS else (f"{k}={v}" if sep else k)
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_streams(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"events:{0..3},audit"`` -> events:{0}, events:{1}, events:{2}, events:{3}, audit."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        m = _RANGE.search(item)
        if m is None:
            out.append(item)
            continue
        lo, hi = int(m.group(1)), int(m.group(2))
        if hi < lo or hi - lo > 4096:
            raise ConfigError(f"invalid stream range {item!r}: expected {{LOW..HIGH}} with LOW <= HIGH")
        out.extend(f"{item[: m.start()]}{{{i}}}{item[m.end() :]}" for i in range(lo, hi + 1))
    if len(set(out)) != len(out):
        raise ConfigError(f"stream list names a stream twice: {', '.join(out)}")
    return tuple(out)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Build the settings from flags (``overrides``), environment and TOML file."""
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    path = config_file or (Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG") else None)
    if path is not None:
        merged.update(_read_toml(path))
    merged.update(_read_credentials(env))
    for name in FIELDS:
        value = env.get(env_name(name))
        if value is not None and value != "":
            merged[name] = value
    for name, value in (overrides or {}).items():
        if value is not None:
            merged[name] = value
    if "streams" in merged:
        merged["streams"] = expand_streams(merged["streams"])
    try:
        settings = msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc)) from None
    if settings.redis_cluster:
        problem = cluster_key_problem(settings.streams)
        if problem:
            raise ConfigError(f"invalid streams (STREAMPROC_STREAMS / --streams): {problem}")
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    section = data.get("streamproc", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [streamproc] must be a table")
    unknown = sorted(set(section) - set(FIELDS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return dict(section)


def _read_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """Secrets handed over by systemd ``LoadCredential=`` (one file per setting)."""
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return {}
    out = {}
    for name in (*SECRET_FIELDS, "redis_url", "database_url"):
        path = Path(directory) / name
        if path.is_file():
            out[name] = path.read_text().strip()
    return out


def _explain(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    m = re.search(r"at `\$\.(\w+)", text)
    if m is None:
        return f"invalid settings: {text}"
    field = m.group(1)
    flag = "--" + field.replace("_", "-")
    detail = text.split(" - at ")[0]
    return f"invalid {field} ({env_name(field)} / {flag}): {detail}"
