"""The checked-in JSON Schema is the one generated from the msgspec types."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from streamproc.cli.app import app
from streamproc.core.events import schema_text

CHECKED_IN = Path(__file__).resolve().parent.parent / "schemas" / "event.schema.json"


def test_checked_in_schema_matches_msgspec_types() -> None:
    """Regenerate with `streamproc schema -o schemas/event.schema.json` when the types change."""
    assert CHECKED_IN.read_text() == schema_text()


def test_schema_command_prints_the_schema() -> None:
    """`streamproc schema` prints valid JSON naming every event type."""
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    mapping = schema["discriminator"]["mapping"]
    assert sorted(mapping) == ["api_request", "click", "conversion", "custom", "page_view"]
    assert sorted(schema["$defs"]["Click"]["required"]) == ["path", "site", "ts", "type", "x", "y"]
