"""streamproc's own error tree; library errors are translated at the edges."""

from __future__ import annotations


class StreamprocError(Exception):
    """Base of every error streamproc raises on purpose."""

    exit_code = 1


class ConfigError(StreamprocError):
    """Settings are missing or invalid. The message names the setting."""

    exit_code = 2


class SourceError(StreamprocError):
    """Redis side."""


class SourceUnavailable(SourceError):
    """Redis cannot be reached (after retries, where the caller retries)."""


class SourceMisconfigured(SourceError):
    """Redis refuses what the configuration asks (wrong password, missing permission, not a
    Redis server, an unsupported URL option): retrying cannot help, so exit 2."""

    exit_code = 2


class GroupMissing(SourceError):
    """The consumer group vanished (Redis restarted empty?) and may not be recreated.

    Its own exit code, so systemd units can refuse to restart on it
    (``RestartPreventExitStatus=``): a restart would recreate the group.
    """

    exit_code = 3


class SinkError(StreamprocError):
    """Postgres side."""


class SinkUnavailable(SinkError):
    """Postgres cannot be reached or the transaction could not be committed."""


class TransactionAborted(SinkUnavailable):
    """Postgres aborted the batch transaction (lock timeout, deadlock, ...): retry it."""


class SchemaNotReady(SinkError):
    """The database lacks streamproc's tables: run `streamproc migrate`."""

    exit_code = 2


class SinkMisconfigured(SinkError):
    """Postgres refuses for a reason no retry can fix: a missing privilege, a wrong
    password, role or database, a URL libpq cannot parse. The message says what to do."""

    exit_code = 2


class EntryRejected(SinkError):
    """Postgres rejects the data itself (SQLSTATE class 22, 23 or 54): the entry that
    carries it goes to the dead-letter stream with this message as its reason."""


class ShutdownTimeout(StreamprocError):
    """The batch in hand could not be finished within the drain deadline."""
