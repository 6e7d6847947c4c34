"""Every Redis failure classified once, at the edge (README "Failure classification").

:func:`classify` maps an exception raised by redis-py (or by the server through
it) to one of the classes of the README's table; :func:`translate` turns it
into streamproc's own error, which the daemon and the CLI act on:

- transient (unreachable, failover in progress, READONLY, LOADING, paused,
  MASTERDOWN, TRYAGAIN, BUSY, OOM, MISCONF, ...) -> :class:`SourceUnavailable`:
  the daemon backs off and retries in process, entries stay pending;
- permanent (NOPERM, WRONGPASS, a server that does not speak Redis, a wrong
  key type, an unknown command, a TLS certificate the URL's CA does not verify,
  ...) -> :class:`SourceMisconfigured`: one line, exit 2;
- a redirect (MOVED, ASK) depends on the client: on a cluster client
  (``cluster=True``) it is the slot map changing under the command (a slot being
  migrated or just migrated, a failover) that outlasted redis-py's own
  redirection handling, or came back from a per-slot MULTI/EXEC, which redis-py
  does not redirect with ASKING: transient, and :func:`slot_map_changed` tells
  the caller to refresh its slot map; on a plain client it means the URL names a
  cluster node and ``redis_cluster`` is not set: permanent;
- vanished group or stream (NOGROUP, ``UNBLOCKED the stream key no longer
  exists``) -> :class:`GroupMissing`: exit 3, never recreated implicitly.

No Redis error is an entry's fault: the daemon's commands carry entry ids, and
the one that carries an entry's fields (the dead-letter XADD) is binary-safe.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

import redis.exceptions as rx

from streamproc.errors import GroupMissing, SourceError, SourceMisconfigured, SourceUnavailable
from streamproc.portprobe import speaks_postgres, speaks_redis


class Kind(enum.Enum):
    TRANSIENT = 2
    PERMANENT = 3
    VANISHED = 4


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str  # what happened, in words, with the server's own text


# Error codes (first word of a Redis error reply) of transient server conditions.
_TRANSIENT_CODES: Final = {
    "READONLY": "the server is a read-only replica (a failover in progress, or the URL names a replica)",
    "LOADING": "the server is loading its data set",
    "MASTERDOWN": "the replica lost its primary",
    "TRYAGAIN": "a cluster slot is being migrated",
    "CLUSTERDOWN": "the cluster is down",
    "BUSY": "the server is busy running a script",
    "OOM": "the server is out of memory (maxmemory reached)",
    "MISCONF": "the server cannot persist to disk and refuses writes",
    "NOREPLICAS": "not enough replicas acknowledge writes",
    "UNBLOCKED": "the server changed role while the read waited (a failover)",
}
_REDIRECT_CODES: Final = ("MOVED", "ASK")
_SLOT_MAP_CHANGED: Final = (
    "the cluster's slot map changed under the command (a slot being migrated or just migrated,"
    " or a failover): refreshing it"
)
_CLUSTER_HINT: Final = (
    "the server is a Redis Cluster node: set redis_cluster = true (STREAMPROC_REDIS_CLUSTER=1)"
    " and name any node as the seed in the Redis URL"
)
# Error codes that say the setup is wrong: one line, exit 2.
_PERMANENT_CODES: Final = {
    "NOPERM": "the Redis user lacks a permission (see deploy/redis/streamproc.acl)",
    "WRONGPASS": "wrong Redis user name or password in the Redis URL",
    "NOAUTH": "Redis needs a password: put it in the Redis URL",
    "WRONGTYPE": "a configured stream key holds another type of value",
    "NOPROTO": "the server does not speak the requested protocol version",
    "CROSSSLOT": "keys of several hash slots in one command: give the stream names one hash tag",
    "NOSCRIPT": "the server forgot a script",
}
# The client refused the server's TLS certificate: the URL's CA did not sign it, or it names
# another host (Python words both "certificate verify failed"). No retry can help.
_TLS_REFUSED: Final = re.compile(r"certificate verify failed", re.IGNORECASE)
_TLS_HINT: Final = (
    "TLS to Redis refused: the server's certificate is not verified by ssl_ca_certs of the Redis URL"
    " (give the CA that signed it) or names another host than the URL's"
)
# A rediss:// client whose handshake gets no answer: a plain-text port reads the TLS hello as
# an unfinished command and waits, so the client times out.
TLS_SILENT_HINT: Final = "no TLS handshake answer: is the port a TLS port? (rediss:// needs Redis's tls-port)"
_STREAM_GONE: Final = re.compile(r"stream key no longer exists|consumer group .* no longer exists")
_PIPELINE_PREFIX: Final = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: ", re.DOTALL)


def error_code(exc: BaseException) -> str:
    """The first word of a Redis error reply (``NOGROUP``, ``READONLY``...); '' if none."""
    code = getattr(exc, "status_code", None)
    if isinstance(code, str) and code:
        return code
    text = _PIPELINE_PREFIX.sub("", str(exc))
    word = text.split(" ", 1)[0]
    return word if word.isupper() and word.isalpha() else ""


def no_such_key(exc: BaseException) -> bool:
    """Whether ``exc`` is the reply to a command on a key that does not exist (``ERR no such key``,
    as XINFO answers for a missing stream): an answer about the data, not a failure. Any other
    error reply (BUSY, MASTERDOWN, NOPERM...) says nothing about the key: :func:`classify` it."""
    return isinstance(exc, rx.ResponseError) and "no such key" in _PIPELINE_PREFIX.sub("", str(exc)).lower()


def stream_gone(exc: BaseException) -> bool:
    """Whether ``exc`` says the stream or its group is gone (NOGROUP, ``UNBLOCKED the stream
    key no longer exists``). On a cluster a blocked read gets the latter when MIGRATE moves its
    stream to another node: check the group through the cluster client before believing it."""
    return error_code(exc) == "NOGROUP" or bool(_STREAM_GONE.search(_PIPELINE_PREFIX.sub("", str(exc))))


def slot_map_changed(exc: BaseException) -> bool:
    """Whether ``exc`` says the cluster's slot map moved under a command: a MOVED or ASK
    redirect (redis-py's MovedError / AskError, also inside a pipeline's reply) or redis-py's
    ``TTL exhausted`` (it followed redirects, or retried TRYAGAIN, until it gave up)."""
    if isinstance(exc, rx.AskError) or error_code(exc) in _REDIRECT_CODES:  # MovedError is an AskError
        return True
    return isinstance(exc, rx.ClusterError) and "TTL exhausted" in str(exc)


def _redirect(exc: BaseException, text: str) -> str:
    """The redirect in the server's words: redis-py strips the code off MovedError / AskError."""
    code = error_code(exc) or ("MOVED" if isinstance(exc, rx.MovedError) else "ASK")
    return text if text.startswith(code) else f"{code} {text}"


def classify(exc: BaseException, *, cluster: bool = False) -> Verdict:
    """The class of a Redis failure.

    ``exc`` is what redis-py raised (or a :class:`StreamprocError` already
    translated, which keeps its class); ``cluster``: it came through a Redis Cluster
    client (``redis_cluster = true``), which decides what a MOVED or ASK means.
    Returns a :class:`Verdict`; never raises.
    """
    if isinstance(exc, GroupMissing):
        return Verdict(Kind.VANISHED, str(exc))
    if isinstance(exc, SourceUnavailable):
        return Verdict(Kind.TRANSIENT, str(exc))
    if isinstance(exc, SourceError):
        return Verdict(Kind.PERMANENT, str(exc))
    text = _PIPELINE_PREFIX.sub("", str(exc))
    code = error_code(exc)
    # Authentication errors are ConnectionError subclasses in redis-py: test them first.
    if isinstance(exc, rx.AuthenticationError | rx.AuthenticationWrongNumberOfArgsError | rx.AuthorizationError):
        return Verdict(Kind.PERMANENT, f"Redis refused the credentials of the Redis URL: {text}")
    if isinstance(exc, rx.NoPermissionError) or code == "NOPERM":
        return Verdict(Kind.PERMANENT, f"{_PERMANENT_CODES['NOPERM']}: {text}")
    if stream_gone(exc):
        return Verdict(Kind.VANISHED, f"the stream or its consumer group vanished while the daemon ran: {text}")
    if isinstance(exc, rx.InvalidResponse):
        return Verdict(Kind.PERMANENT, f"the server at the Redis URL does not speak the Redis protocol ({text})")
    if isinstance(exc, rx.AskError) or code in _REDIRECT_CODES:
        if cluster:
            return Verdict(Kind.TRANSIENT, f"{_SLOT_MAP_CHANGED}: {_redirect(exc, text)}")
        return Verdict(Kind.PERMANENT, f"{_CLUSTER_HINT}: {_redirect(exc, text)}")
    if cluster and slot_map_changed(exc):
        return Verdict(Kind.TRANSIENT, f"{_SLOT_MAP_CHANGED}: redis-py gave up following redirects ({text})")
    if isinstance(exc, rx.ReadOnlyError | rx.BusyLoadingError | rx.OutOfMemoryError | rx.TryAgainError):
        return Verdict(Kind.TRANSIENT, f"{_TRANSIENT_CODES.get(code, 'Redis is not ready')}: {text}")
    if isinstance(exc, rx.ClusterDownError | rx.SlotNotCoveredError | rx.MaxConnectionsError):
        return Verdict(Kind.TRANSIENT, f"Redis unavailable: {text}")
    if isinstance(exc, rx.ConnectionError) and _TLS_REFUSED.search(text):
        return Verdict(Kind.PERMANENT, f"{_TLS_HINT}: {text}")
    if isinstance(exc, rx.ConnectionError | rx.TimeoutError | ConnectionError | TimeoutError):
        return Verdict(Kind.TRANSIENT, f"Redis unreachable: {text}")
    if code in _TRANSIENT_CODES:
        return Verdict(Kind.TRANSIENT, f"{_TRANSIENT_CODES[code]}: {text}")
    if code in _PERMANENT_CODES:
        return Verdict(Kind.PERMANENT, f"{_PERMANENT_CODES[code]}: {text}")
    if isinstance(exc, rx.ResponseError) and "unknown command" in text.lower():
        return Verdict(Kind.PERMANENT, f"the Redis server lacks a command streamproc needs (Redis >= 7): {text}")
    if isinstance(exc, rx.ClusterError | rx.RedisClusterException):
        if "CROSSSLOT" in text or "same key slot" in text:
            return Verdict(Kind.PERMANENT, f"{_PERMANENT_CODES['CROSSSLOT']}: {text}")
        return Verdict(Kind.TRANSIENT, f"Redis Cluster unavailable: {text}")
    # Any other error reply: the server refuses what the configuration asks of it.
    return Verdict(Kind.PERMANENT, f"Redis refused a command: {text}")


def translate(
    exc: BaseException,
    hint: str = "",
    *,
    group: str | None = None,
    probe: tuple[str, int] | None = None,
    cluster: bool = False,
    tls: bool = False,
) -> SourceError:
    """streamproc's error for ``exc`` (raise it ``from exc``).

    ``hint``: what to do, appended to a permanent problem's message.
    ``cluster``: ``exc`` came through a Redis Cluster client (see :func:`classify`).
    ``group``: the consumer group, named in the vanished-group message.
    ``probe``: the host and port of the Redis URL. A server that closes the connection
    without a word is transient (a proxy with no backend does that during a failover)
    unless it answers the Postgres protocol: then the URL points at Postgres (permanent).
    ``tls``: the URL is rediss://. A TLS connection that fails or times out to a port that
    answers a plain-text PING is a plain-text port (permanent); if the port does not answer
    that either, the retry says that the TLS handshake went unanswered.
    """
    verdict = classify(exc, cluster=cluster)
    if verdict.kind is Kind.TRANSIENT:
        if probe is not None and "closed by server" in str(exc) and speaks_postgres(probe):
            return SourceMisconfigured(
                f"the Redis URL points at a Postgres server ({probe[0]}:{probe[1]} answers the Postgres"
                " protocol): set STREAMPROC_REDIS_URL / --redis-url to the Redis server"
            )
        if tls and probe is not None and _connecting(exc):
            if speaks_redis(probe):
                return SourceMisconfigured(
                    f"the Redis URL is rediss:// (TLS) but {probe[0]}:{probe[1]} answers plain-text Redis:"
                    " use redis:// for this port, or Redis's tls-port, in STREAMPROC_REDIS_URL / --redis-url"
                )
            return SourceUnavailable(f"{verdict.reason} ({TLS_SILENT_HINT})")
        return SourceUnavailable(verdict.reason)
    if verdict.kind is Kind.VANISHED:
        if isinstance(exc, GroupMissing):
            return exc
        named = f"consumer group {group!r}: " if group else ""
        return GroupMissing(
            f"{named}{verdict.reason}. The stream was deleted, flushed or evicted, or Redis restarted"
            " empty. Not recreating the group, so no data is skipped unknowingly: run `streamproc setup`"
            " once you have checked."
        )
    if isinstance(exc, SourceError):
        return exc
    return SourceMisconfigured(f"{verdict.reason}; {hint}" if hint else verdict.reason)


def _connecting(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure to set a connection up (timeout, TLS error, reset)."""
    text = str(exc).lower()
    return isinstance(exc, rx.ConnectionError | rx.TimeoutError) and (
        "connecting" in text or "ssl" in text or "tls" in text or "closed by server" in text
    )
