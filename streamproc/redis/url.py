"""The Redis URL: checked once, before any connection, and turned into client arguments.

Accepted forms (README "Redis URL"):

- ``redis://[[user]:password@]host[:port][/db][?option=value...]``, ``rediss://`` for TLS,
  ``unix:///path/to/redis.sock[?db=N]``;
- ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?...]``:
  the hosts are Redis Sentinels (port 26379 by default), ``service`` the name they
  monitor (``sentinel monitor <service> ...``); the user and password are those of the
  data nodes, ``?sentinel_username=`` / ``?sentinel_password=`` those of the sentinels
  (when they have ``requirepass``); ``rediss+sentinel://`` speaks TLS to both.

Options the daemon sets itself are refused, not silently overridden: a URL
``?socket_timeout=1`` would cut every ``XREADGROUP BLOCK`` short; ``?protocol=3``
(RESP3) changes reply shapes; ``?decode_responses=`` would turn entries into text.
Every problem is a :class:`ConfigError` (exit 2) naming the setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.connection import parse_url

from streamproc.config import mask_url
from streamproc.errors import ConfigError

SETTING: Final = "the Redis URL (STREAMPROC_REDIS_URL / --redis-url)"
SENTINEL_PORT: Final = 26379
SCHEMES: Final = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")

# URL options passed on to the client as they are.
_ALLOWED: Final = frozenset(
    {
        "db",
        "username",
        "password",
        "client_name",
        "socket_keepalive",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ca_data",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
        "ssl_include_verify_flags",
        "ssl_exclude_verify_flags",
    }
)
_SENTINEL_ONLY: Final = frozenset({"sentinel_username", "sentinel_password"})
_TLS_ONLY: Final = frozenset(name for name in _ALLOWED if name.startswith("ssl_"))
_BOOLEANS: Final = {"true", "false", "1", "0", "yes", "no", "on", "off"}
# Options naming a file (or, for ssl_ca_path, a directory) that must exist when the daemon starts.
_FILES: Final = {"ssl_ca_certs": "file", "ssl_certfile": "file", "ssl_keyfile": "file", "ssl_ca_path": "directory"}
_CERT_REQS: Final = ("none", "optional", "required")
# Options whose value the daemon owns: its socket timeout must outlast the longest BLOCK,
# and it retries and reconnects itself.
_OWNED: Final = frozenset(
    {
        "socket_timeout",
        "timeout",
        "socket_connect_timeout",
        "health_check_interval",
        "retry_on_timeout",
        "retry_on_error",
        "max_connections",
        "socket_read_size",
    }
)


@dataclass(frozen=True)
class RedisUrl:
    """A checked Redis URL. ``kwargs`` go to the client of the data node(s)."""

    url: str
    scheme: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    @property
    def address(self) -> tuple[str, int] | None:
        """Host and port of a plain TCP URL (None for a socket path or Sentinel)."""
        host, port = self.kwargs.get("host"), self.kwargs.get("port", 6379)
        return (str(host), int(port)) if host and not self.is_sentinel else None


def parse_redis_url(url: str, *, cluster: bool = False) -> RedisUrl:
    """Check ``url`` and split it into client arguments.

    Raises :class:`ConfigError` (exit 2) with one line naming the problem.
    """
    shown = mask_url(url)
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ConfigError(
            f"{SETTING} must start with redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://"
            f" (got {shown!r}); for example redis://127.0.0.1:6379/0"
        )
    scheme = scheme.lower()
    if cluster and scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"{SETTING}: with redis_cluster = true the URL names one cluster node (redis:// or rediss://)"
        )
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        _check_options(query, sentinel=scheme.endswith("+sentinel"), tls=scheme.startswith("rediss"))
        if scheme.endswith("+sentinel"):
            return _sentinel(url, parts.netloc, parts.path, query, tls=scheme.startswith("rediss"))
        if scheme != "unix" and not parts.hostname:
            raise ConfigError(f"{SETTING} names no host: {shown!r}")
        if parts.port == 0:  # raises ValueError on a port that is not a number
            # redis-py reads port 0 as "no port" and connects to 6379: refuse it.
            raise ConfigError(
                f"{SETTING}: port 0 is no port Redis listens on; give the server's port (6379 by default)"
            )
        if scheme != "unix" and parts.path.strip("/"):
            _db(unquote(parts.path).strip("/"))
        kwargs: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
    except ValueError as exc:
        raise ConfigError(f"{SETTING} is invalid ({exc}): {shown!r}") from None
    kwargs.pop("connection_class", None)
    if scheme == "rediss":
        kwargs["ssl"] = True
    elif scheme == "unix":
        kwargs["unix_socket_path"] = kwargs.pop("path", None)
    return RedisUrl(url, scheme, kwargs)


def _check_options(query: list[tuple[str, str]], *, sentinel: bool, tls: bool) -> None:
    for name, value in query:
        if name in _TLS_ONLY and not tls:
            raise ConfigError(
                f"{SETTING}: ?{name}= is a TLS option but the URL is not a TLS URL: use rediss:// (or"
                " rediss+sentinel://) for TLS, or remove the option"
            )
        if name == "protocol":
            if value.strip() != "2":
                raise ConfigError(
                    f"{SETTING}: ?protocol={value} is not supported; streamproc speaks RESP2 with Redis:"
                    " remove the option"
                )
        elif name in _OWNED:
            raise ConfigError(
                f"{SETTING}: ?{name}= is set by streamproc itself (the socket timeout outlasts every"
                " XREADGROUP BLOCK, block_ms + 10 s; it retries and reconnects with its own backoff):"
                " remove the option"
            )
        elif name not in _ALLOWED and not (sentinel and name in _SENTINEL_ONLY):
            raise ConfigError(f"{SETTING}: unknown or unsupported option ?{name}=; remove it")
        if name == "db":
            _db(value)
        _check_value(name, value)


def _check_value(name: str, value: str) -> None:
    """Refuse a value the client would silently drop (an empty one), read as something else
    (``ssl_check_hostname=banana`` is true to redis-py) or fail on later (a missing file)."""
    if name in _SENTINEL_ONLY or name in ("password", "username", "client_name"):
        return
    if value == "":
        raise ConfigError(f"{SETTING}: ?{name}= has no value; give one or remove the option")
    if name == "ssl_cert_reqs" and value not in _CERT_REQS:
        raise ConfigError(f"{SETTING}: ?ssl_cert_reqs={value} is invalid; choose one of {', '.join(_CERT_REQS)}")
    if name in ("ssl_check_hostname", "socket_keepalive") and value.lower() not in _BOOLEANS:
        raise ConfigError(f"{SETTING}: ?{name}={value} is invalid; choose true or false")
    kind = _FILES.get(name)
    if kind is not None:
        path = Path(value)
        if not (path.is_dir() if kind == "directory" else path.is_file()):
            raise ConfigError(f"{SETTING}: ?{name}={value}: no such {kind} on this host; give the path of the {kind}")


def _db(text: str) -> int:
    try:
        db = int(text)
    except ValueError:
        raise ConfigError(f"{SETTING}: the database must be a number, got {text!r}") from None
    if db < 0:
        raise ConfigError(f"{SETTING}: the database must be >= 0, got {db}")
    return db


def _sentinel(url: str, netloc: str, path: str, query: list[tuple[str, str]], *, tls: bool) -> RedisUrl:
    userinfo, at, hostlist = netloc.rpartition("@")
    sentinels = tuple(_host_port(h) for h in hostlist.split(",") if h.strip())
    if not sentinels:
        raise ConfigError(f"{SETTING} names no sentinel: expected redis+sentinel://host:26379,.../service/0")
    steps = [unquote(p) for p in path.split("/") if p]
    if not steps or len(steps) > 2:
        raise ConfigError(
            f"{SETTING} must name the Sentinel service and optionally the database:"
            f" redis+sentinel://host:26379,.../SERVICE/0 (got {mask_url(url)!r})"
        )
    options = dict(query)
    kwargs: dict[str, Any] = {k: v for k, v in options.items() if k not in _SENTINEL_ONLY}
    kwargs["db"] = _db(steps[1]) if len(steps) == 2 else _db(options.get("db", "0"))
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            kwargs["username"] = unquote(user)
        if colon:
            kwargs["password"] = unquote(password)
    sentinel_kwargs: dict[str, Any] = {}
    if "sentinel_username" in options:
        sentinel_kwargs["username"] = options["sentinel_username"]
    if "sentinel_password" in options:
        sentinel_kwargs["password"] = options["sentinel_password"]
    if tls:
        kwargs["ssl"] = True
        sentinel_kwargs["ssl"] = True
        sentinel_kwargs.update({k: v for k, v in kwargs.items() if k.startswith("ssl_")})
    return RedisUrl(url, "redis+sentinel", kwargs, sentinels, steps[0], sentinel_kwargs)


def _host_port(item: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [::1]:26379
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ConfigError(f"{SETTING}: a sentinel address has no host: {item!r}")
    try:
        port = int(port_text) if port_text else SENTINEL_PORT
    except ValueError:
        raise ConfigError(f"{SETTING}: sentinel port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{SETTING}: sentinel port {port} is out of range")
    return host, port
