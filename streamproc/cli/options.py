"""Pieces every command module shares: the error edge, consoles, common options.

Kept apart from :mod:`streamproc.cli.app` so command modules can import them in any
order without a circular import.
"""

from __future__ import annotations

import functools
import inspect
import os
import select
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType

from streamproc.config import Settings, load_settings, unknown_environment
from streamproc.errors import StreamprocError
from streamproc.logs import scrub

P = ParamSpec("P")
T = TypeVar("T")

err = Console(stderr=True)
out = Console()


def friendly(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn streamproc errors into one clear line and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except StreamprocError as exc:
            err.print(f"[bold red]streamproc: error:[/] {escape(scrub(str(exc)))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("streamproc: interrupted")
            raise typer.Exit(130) from None

    return wrapper


# --- help without a value placeholder on flags -------------------------------------


def _plain_flags(params: list[Any]) -> list[Any]:
    """Flags take no value: show no ``<bool>`` placeholder for them (typer shows one by default)."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A typer command whose --help shows no value placeholder on flags."""

    def get_params(self, ctx: Any) -> list[Any]:  # ctx: the vendored click Context typer keeps private
        return _plain_flags(super().get_params(ctx))


class Group(TyperGroup):
    """A typer command group whose --help shows no value placeholder on flags and whose
    commands end quietly (exit 0) when the reader of stdout goes away."""

    def get_params(self, ctx: Any) -> list[Any]:  # ctx: the vendored click Context typer keeps private
        return _plain_flags(super().get_params(ctx))

    def make_context(self, *args: Any, **kwargs: Any) -> Any:  # --help, --version print while parsing
        try:
            return super().make_context(*args, **kwargs)
        except BrokenPipeError:
            reader_gone()
            raise

    def invoke(self, ctx: Any) -> Any:  # ctx: the vendored click Context typer keeps private
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            reader_gone()
            raise


# --- a reader that stops reading (`streamproc status | head -1`) ----------------------


def stdout_closed() -> bool:
    """True when stdout is a pipe or socket whose reading end is gone (poll says POLLERR/POLLHUP)."""
    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno() if sys.__stdout__ else 1, select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError):
        return False
    return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in events)


def reader_gone() -> None:
    """Called on a BrokenPipeError: when stdout's reader is gone, end quietly with exit 0
    (raises ``typer.Exit(0)``); otherwise return so the caller re-raises."""
    if stdout_closed():
        silence_stdout()
        raise typer.Exit(0) from None


def quiet_on_closed_stdout() -> None:
    """Make every rich console (ours and typer's help) end with exit 0, not rich's 1, when
    stdout's reader is gone; a closed stderr keeps rich's own handling. Called once by ``main``."""
    rich_default = Console.on_broken_pipe

    def on_broken_pipe(self: Console) -> None:
        if stdout_closed():
            self.quiet = True
            reader_gone()
        rich_default(self)

    Console.on_broken_pipe = on_broken_pipe  # type: ignore[method-assign]  # one rule for the whole CLI


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again
    (the Python docs' "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.__stdout__.fileno() if sys.__stdout__ else 1)
    os.close(devnull)


def flush_stdout() -> None:
    """Flush stdout at exit; a reader gone by then changes nothing but where the rest goes."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
    except (OSError, ValueError):
        pass


class App(typer.Typer):
    """``typer.Typer`` whose groups and commands are :class:`Group` and :class:`Command`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=Group, **kwargs)

    def command(
        self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        return super().command(name, cls=cls or Command, **kwargs)


# --- options several commands share, declared once ------------------------------------


def option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    """A keyword parameter ``name: annotation = default`` for :func:`with_options`."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def own_options(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    return list(inspect.signature(fn, eval_str=True).parameters.values())


def with_options(
    fn: Callable[..., None],
    own: Sequence[inspect.Parameter],
    shared: Sequence[inspect.Parameter],
    run: Callable[[dict[str, Any], dict[str, Any]], None],
    *,
    before: Sequence[inspect.Parameter] = (),
) -> Callable[..., None]:
    """A command whose --help and parser take the ``before`` options, its ``own``, then the ``shared``
    ones; each call runs ``run(before_and_shared_values, own_values)`` (by name) under :func:`friendly`.
    Named and documented as ``fn``."""
    common = [*before, *shared]

    @functools.wraps(fn)
    def command(**options: Any) -> None:
        given = {p.name: options.pop(p.name) for p in common}
        run(given, options)

    everything = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in (*before, *own, *shared)]
    command.__signature__ = inspect.Signature(everything)  # type: ignore[attr-defined]  # typer reads it
    return friendly(command)


# --- shared options ----------------------------------------------------------

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file [env: STREAMPROC_CONFIG].", show_default=False)
]
RedisOpt = Annotated[
    str | None, typer.Option("--redis-url", help="Redis URL [env: STREAMPROC_REDIS_URL].", show_default=False)
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="Postgres URL [env: STREAMPROC_DATABASE_URL].", show_default=False),
]
SchemaOpt = Annotated[
    str | None,
    typer.Option(
        "--schema",
        help="Postgres schema for streamproc's tables [env: STREAMPROC_DB_SCHEMA] (default streamproc).",
        show_default=False,
    ),
]
UniquesOpt = Annotated[
    str | None,
    typer.Option(
        "--uniques",
        help="exact (a set row per visitor and session per day) or approximate (HyperLogLog sketches,"
        " needs the Postgres hll extension) [env: STREAMPROC_UNIQUES] (default exact).",
        show_default=False,
    ),
]


def settings_from(config: Path | None, **flags: Any) -> Settings:
    """The settings from flags, environment and ``config``; a warning line per misspelt variable."""
    for line in unknown_environment():
        err.print(f"streamproc: warning: {escape(line)}", highlight=False, soft_wrap=True)
    return load_settings(overrides=flags, config_file=config)
