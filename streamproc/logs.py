"""structlog setup: JSON lines off a TTY (journald-friendly), console on a TTY.

Libraries log through the standard ``logging`` module (psycopg's ``error ignored
terminating <psycopg.Pipeline [BAD]>`` after a lost connection, redis-py's
warnings) and Python's ``warnings``: both are routed into structlog, so every
line the daemon writes is one JSON object, scrubbed like the others.
"""

from __future__ import annotations

import logging
import sys

import structlog

_hidden: set[str] = set()


def hide(*secrets: str) -> None:
    """Never print these strings (passwords as the settings hold them): every log line and
    every error line the CLI prints shows ``***`` instead. Strings under 3 characters are
    ignored (masking them would garble every line)."""
    _hidden.update(s for s in secrets if len(s) >= 3)


def scrub(text: str) -> str:
    """``text`` with every hidden string replaced by ``***``."""
    for secret in sorted(_hidden, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _scrub_event(_logger: object, _name: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    if _hidden:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = scrub(value)
    return event


def configure(level: str = "info", json: bool | None = None) -> None:
    use_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if use_json else structlog.dev.set_exc_info,
            _scrub_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _route_stdlib_logging()


class _ToStructlog(logging.Handler):
    """Hands a standard ``logging`` record to structlog: one JSON line, with the library's
    logger name and the traceback if any."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format string must not lose the line
            message = str(record.msg)
        fields: dict[str, object] = {"logger": record.name}
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        structlog.get_logger(record.name).log(record.levelno, message, **fields)


def _route_stdlib_logging() -> None:
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _ToStructlog)] + [_ToStructlog()]
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
