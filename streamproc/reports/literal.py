"""Producer strings shown literally on a terminal.

Every string in a report may come from a producer (site, path, route, selector, name,
referrer, UTM and dimension values, currency). A :class:`LiteralConsole` does not
interpret rich markup (``/user/{id}[/{name}]``, ``button[type=submit]``) or emoji codes
in them, and shows control characters (ESC, newlines, bidi overrides) as ``\\xNN`` /
``\\uNNNN`` escapes instead of letting them reach the terminal; :func:`literal` makes a
report view print through one whatever console it is handed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Final

from rich.console import Console
from rich.text import Text

# C0 and C1 control characters, DEL, and the invisible ones that reorder or break lines.
_INVISIBLE: Final = (*range(0x20), 0x7F, *range(0x80, 0xA0))
_FORMAT: Final = (0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_VISIBLE: Final = {c: f"\\x{c:02x}" for c in _INVISIBLE} | {c: f"\\u{c:04x}" for c in _FORMAT}


def visible(text: str) -> str:
    """``text`` with every control or invisible formatting character as a ``\\xNN``/``\\uNNNN`` escape."""
    return text.translate(_VISIBLE)


class LiteralConsole(Console):
    """A console that shows every string literally: no markup, no emoji codes, no highlighting,
    control characters made visible (:func:`visible`). Styles given as arguments still apply."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs.update(markup=False, emoji=False, highlight=False)
        return super().render_str(visible(text), **kwargs)


def literal_console(console: Console) -> LiteralConsole:
    """A :class:`LiteralConsole` writing where ``console`` writes, with its width and colours."""
    if isinstance(console, LiteralConsole):
        return console
    return LiteralConsole(
        file=console.file,
        width=console.width,
        color_system=console.color_system,  # the name it was built with, or None
        force_terminal=console.is_terminal,
        no_color=console.no_color,
    )


View = Callable[[Console, dict[str, Any]], None]


def literal(view: View) -> View:
    """Make a report view print through :func:`literal_console` whatever console it is given."""

    @functools.wraps(view)
    def wrapper(console: Console, data: dict[str, Any]) -> None:
        view(literal_console(console), data)

    wrapper.literal = True  # type: ignore[attr-defined]  # tests check every view is wrapped
    return wrapper
