"""Settings: one frozen object, built once, passed explicitly.

Precedence, highest first: command-line flags, ``STREAMPROC_*`` environment
variables, the TOML file (``--config`` / ``STREAMPROC_CONFIG``), defaults.
Secrets may also come from systemd credentials (``$CREDENTIALS_DIRECTORY``).
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, cast
from urllib.parse import urlsplit

import msgspec
import msgspec.inspect
import psycopg
from psycopg.conninfo import conninfo_to_dict

from streamproc.core.keys import cluster_key_problem
from streamproc.errors import ConfigError
from streamproc.logs import hide
from streamproc.urlmask import SECRET_PARAMS, database_url_problem
from streamproc.urlmask import mask_database_url as mask_database_url  # re-exported: callers import it from here
from streamproc.urlmask import mask_url as mask_url  # re-exported: callers import it from here

ENV_PREFIX: Final = "STREAMPROC_"
# STREAMPROC_* variables that are not settings of the daemon: the TOML file, `maintain`'s
# retention, failpoints, the producer's URL, container images, the test servers, passwords.
OTHER_ENV: Final = frozenset(
    ENV_PREFIX + n
    for n in ("CONFIG", "RETAIN", "FAILPOINTS", "PRODUCER_URL", "IMAGE", "REDIS_IMAGE", "POSTGRES_IMAGE", "BASE_IMAGE")
)
SECRET_FIELDS: Final = ("visitor_secret",)
# Settings whose empty environment variable means something (no parameters kept, the secret from
# a systemd credential, no country database); for every other setting an empty value is a mistake.
EMPTY_ALLOWED: Final = frozenset({"path_keep_params", "visitor_secret", "country_db"})
SCHEMA_PATTERN: Final = r"^[a-z_][a-z0-9_]{0,62}$"
# The most stream keys one `{LOW..HIGH}` range may expand to.
MAX_STREAMS_PER_RANGE: Final = 4096


def default_consumer() -> str:
    return socket.gethostname() or "streamproc"


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Every knob of the daemon. Units are in the names."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False  # redis_url names one seed node of a Redis Cluster
    database_url: str = "postgresql://127.0.0.1:5432/streamproc"
    db_schema: Annotated[str, msgspec.Meta(pattern=SCHEMA_PATTERN)] = "streamproc"
    streams: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)] = ("events",)
    group: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "streamproc"
    consumer: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = msgspec.field(
        default_factory=default_consumer
    )
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    # While the group is behind (a read came back full), each read asks for twice as many
    # entries, up to this: more events folded per rollup row, fewer rows written per event
    # (BENCHMARKS.md). At or below batch_size: every read asks for batch_size.
    backlog_batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 10_000
    block_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 2000
    min_idle_ms: Annotated[int, msgspec.Meta(ge=1)] = 60_000
    reclaim_interval_ms: Annotated[int, msgspec.Meta(ge=1)] = 5_000
    # At least 3: an entry is delivered in a batch at most twice; from the third delivery on it
    # is handed out alone (see streamproc.daemon.redelivery).
    max_deliveries: Annotated[int, msgspec.Meta(ge=3, le=1000)] = 5
    drain_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 30.0
    max_entry_bytes: Annotated[int, msgspec.Meta(ge=256)] = 64 * 1024
    max_keys_per_batch: Annotated[int, msgspec.Meta(ge=10)] = 10_000
    # Events whose `ts` is older than this when written to the stream go to the DLQ (raise it for a backfill).
    max_event_age_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 30
    # Page-view and click paths as analytics tools count them: no scheme/host, no fragment, no
    # query string but these parameters (streamproc.core.urls). False: paths counted as sent.
    normalize_paths: bool = True
    path_keep_params: tuple[str, ...] = ()
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
    # `$` (only entries added later), `0` (everything in the stream) or an entry id `ms` / `ms-seq`.
    group_start_id: Annotated[str, msgspec.Meta(pattern=r"^(\$|\d{1,20}(-\d{1,20})?)$")] = "0"
    visitor_secret: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"  # any case on input
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9464
    metrics_addr: str = "127.0.0.1"
    metrics_interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    # /healthz fails once the main loop has not turned for this long (it turns every block_ms).
    liveness_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0
    # The longest a daemon transaction may sit waiting on the daemon while holding row locks
    # (a frozen or stuck worker): Postgres ends the session after this long.
    idle_in_transaction_timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=3_600_000)] = 15_000

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

    def secrets(self) -> list[str]:
        """Every password in the settings, as libpq and as a URL parser read them (a raw
        ``#`` or ``?`` in a password splits it differently): for the log scrubber."""
        found = [self.visitor_secret or ""]
        for url in (self.redis_url, self.database_url):
            with contextlib.suppress(ValueError):
                found.append(urlsplit(url).password or "")
        try:
            parsed = conninfo_to_dict(self.database_url)
        except psycopg.Error:
            parsed = {}
        found += [str(parsed.get(k, "")) for k in SECRET_PARAMS]
        return [s for s in found if s]

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


_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_streams(spec: object) -> tuple[str, ...]:
    """``"events:{0..3},audit"`` -> events:{0}, events:{1}, events:{2}, events:{3}, audit.

    ``spec``: a comma-separated string or a list of strings. Raises ConfigError for any
    other shape, a reversed range or one naming more than MAX_STREAMS_PER_RANGE streams."""
    if isinstance(spec, str):
        items = spec.split(",")
    elif isinstance(spec, list | tuple) and all(isinstance(item, str) for item in spec):
        items = list(spec)
    else:
        raise ConfigError(
            f"invalid streams (STREAMPROC_STREAMS / --streams): expected a string or a list of strings,"
            f' got {_kind(spec)} (e.g. streams = ["events"])'
        )
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
        if hi < lo:
            raise ConfigError(f"invalid stream range {item!r}: expected {{LOW..HIGH}} with LOW <= HIGH")
        if hi - lo + 1 > MAX_STREAMS_PER_RANGE:
            raise ConfigError(
                f"invalid stream range {item!r}: it names {hi - lo + 1} streams, at most"
                f" {MAX_STREAMS_PER_RANGE} are allowed per range"
            )
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
        if value == "" and name not in EMPTY_ALLOWED:
            raise ConfigError(
                f"{env_name(name)} is set but empty: give it a value or remove the line to use the default"
            )
        if value is not None and value != "":
            merged[name] = value
    for name, value in (overrides or {}).items():
        if value is not None:
            merged[name] = value
    if "streams" in merged:
        merged["streams"] = expand_streams(merged["streams"])
    if isinstance(merged.get("log_level"), str):
        merged["log_level"] = merged["log_level"].lower()
    if isinstance(merged.get("path_keep_params"), str):
        merged["path_keep_params"] = tuple(p.strip() for p in merged["path_keep_params"].split(",") if p.strip())
    try:
        settings = msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc, merged)) from None
    hide(*settings.secrets())
    url_problem = database_url_problem(settings.database_url)
    if url_problem:
        raise ConfigError(url_problem)
    addr_problem = metrics_addr_problem(settings.metrics_addr)
    if addr_problem:
        raise ConfigError(addr_problem)
    if settings.redis_cluster:
        problem = cluster_key_problem(settings.streams)
        if problem:
            raise ConfigError(f"invalid streams (STREAMPROC_STREAMS / --streams): {problem}")
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8, as TOML requires"
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    section = data.get("streamproc", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [streamproc] must be a table")
    if section is not data:
        beside = sorted(k for k in data if k != "streamproc")
        if beside:
            raise ConfigError(
                f"config file {path}: {', '.join(beside)} outside [streamproc]; put every setting"
                " under [streamproc] or every setting at top level"
            )
    problems = []
    for key in sorted(section):
        if key not in FIELDS:
            kind = "table" if isinstance(section[key], dict) else "setting"
            problems.append(f"unknown {kind} {key!r}{_did_you_mean(key, FIELDS)}")
        else:
            problem = _type_problem(key, section[key])
            if problem:
                problems.append(f"{key} {problem}")
    if problems:
        raise ConfigError(f"config file {path}: " + "; ".join(problems))
    return dict(section)


def _kind(value: object) -> str:
    """A value's TOML kind in words, for messages."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list | tuple):
        odd = [item for item in value if not isinstance(item, str)]
        return f"a list holding {_kind(odd[0])}" if odd else "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _expects(t: msgspec.inspect.Type) -> tuple[tuple[type, ...], str]:
    """The Python types a TOML value of a setting of type ``t`` may have, and their name in words."""
    if isinstance(t, msgspec.inspect.UnionType):
        kinds = [_expects(u) for u in t.types if not isinstance(u, msgspec.inspect.NoneType)]
        return kinds[0]
    if isinstance(t, msgspec.inspect.BoolType):
        return (bool,), "true or false"
    if isinstance(t, msgspec.inspect.IntType):
        return (int,), "an integer"
    if isinstance(t, msgspec.inspect.FloatType):
        return (int, float), "a number"
    if isinstance(t, msgspec.inspect.VarTupleType):
        return (list, str), "a list of strings (or one comma-separated string)"
    return (str,), "a string"


def _type_problem(field: str, value: object) -> str | None:
    """What is wrong with the kind of a TOML value for ``field`` (a list where a number is
    expected, a number in a list of strings...), or None. Ranges are checked later."""
    (info,) = (f for f in _INFO.fields if f.name == field)
    allowed, words = _expects(info.type)
    wrong = not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)
    if isinstance(value, list) and not all(isinstance(item, str) for item in value):
        wrong = True
    return f"must be {words}, not {_kind(value)}" if wrong else None


def _did_you_mean(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning line per ``STREAMPROC_*`` variable that is no setting (a typo is otherwise
    silently ignored). Warnings, not errors: a systemd env file may be shared with other tools."""
    env = os.environ if environ is None else environ
    known = {env_name(f) for f in FIELDS} | OTHER_ENV
    lines = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        if name.startswith(ENV_PREFIX + "TEST_") or name.endswith("_PASSWORD"):
            continue
        close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), [k.removeprefix(ENV_PREFIX) for k in known])
        hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else " (`streamproc run --help` lists the settings)"
        lines.append(f"{name} is not a streamproc setting and is ignored{hint}")
    return lines


def metrics_addr_problem(addr: str) -> str | None:
    """What makes ``addr`` unusable as the metrics bind address (an IP address or a host name)."""
    try:
        ipaddress.ip_address(addr.strip("[]"))
    except ValueError:
        if re.fullmatch(r"[\d.]+", addr) or ":" in addr or not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", addr):
            return (
                f"invalid metrics_addr (STREAMPROC_METRICS_ADDR / --metrics-addr): {addr!r} is not an IP"
                " address (IPv4: four numbers 0-255) or a host name; 127.0.0.1 serves this host only,"
                " 0.0.0.0 every interface"
            )
    return None


def _read_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """Secrets handed over by systemd ``LoadCredential=`` (one file per setting)."""
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return {}
    out = {}
    for name in (*SECRET_FIELDS, "redis_url", "database_url"):
        path = Path(directory) / name
        if path.is_file():
            try:
                out[name] = path.read_bytes().decode("utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = (
                    "is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"cannot be read ({exc.strerror})"
                )
                raise ConfigError(
                    f"the systemd credential {path} {reason}: write the {name} setting there as UTF-8"
                ) from None
    return out


def _explain(exc: msgspec.ValidationError, given: Mapping[str, Any]) -> str:
    text = str(exc)
    m = re.search(r"at `\$\.(\w+)", text)
    if m is None:
        return f"invalid settings: {text}"
    field = m.group(1)
    flag = "--schema" if field == "db_schema" else "--" + field.replace("_", "-")
    detail = text.split(" - at ")[0]
    choices = [f.type for f in _INFO.fields if f.name == field and isinstance(f.type, msgspec.inspect.LiteralType)]
    if choices:
        detail += "; choose one of " + ", ".join(map(str, choices[0].values))
    if field == "group_start_id":
        detail = "expected $ (new entries only), 0 (the whole stream) or an entry id such as 1700000000000-0"
    elif field == "db_schema":
        detail = "expected lower-case letters, digits and underscores, at most 63 characters, not starting with a digit"
    elif field == "streams":
        detail = "name at least one stream key, e.g. events or events:{0..7}"
    detail = _in_words(detail)
    value = given.get(field)
    if isinstance(value, str | int | float) and field not in (*SECRET_FIELDS, "redis_url", "database_url"):
        detail += f", got {value!r}"
    return f"invalid {field} ({env_name(field)} / {flag}): {detail}"


_WORDS: Final = {
    "`int`": "an integer",
    "`float`": "a number",
    "`bool`": "true or false",
    "`str`": "a string",
    "`array`": "a list",
}


def _in_words(detail: str) -> str:
    """msgspec's ``Expected `int`, got `str``` as a person would say it: ``expected an integer``."""
    m = re.fullmatch(r"Expected (`\w+`)(?:, got `\w+`)?(.*)", detail)
    if m is None:
        return detail
    return f"expected {_WORDS.get(m.group(1), m.group(1))}{m.group(2)}"


_INFO: Final = cast(msgspec.inspect.StructType, msgspec.inspect.type_info(Settings))
