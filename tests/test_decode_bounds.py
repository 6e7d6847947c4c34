"""Bounds hold after normalisation (revenue rounded to its currency's minor unit), and a lone
UTF-16 surrogate escape in the JSON form is named as what it is."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from streamproc.core.decode import Accepted, Rejected, decode_entry
from tests.test_decode import EID, NOW_MS, as_flat, conversion, custom, page_view


def forms(event: dict[str, Any]) -> list[dict[bytes, bytes]]:
    """The same event in the flat form and in the JSON form (revenue as a JSON string)."""
    return [as_flat(event), {b"event": json.dumps(event).encode()}]


@pytest.mark.parametrize(
    ("revenue", "currency", "rounded"),
    [
        ("999999999999.9999999", "EUR", "1000000000000.00"),
        ("999999999999.995", "EUR", "1000000000000.00"),
        ("-999999999999.995", "EUR", "-1000000000000.00"),
        ("999999999999.5", "JPY", "1000000000000"),
        ("999999999999.9995", "BHD", "1000000000000.000"),
        ("999999999999.9999995", None, "1000000000000.000000"),
    ],
)
def test_revenue_that_rounds_to_10_to_the_12_is_rejected_in_both_forms(
    revenue: str, currency: str | None, rounded: str
) -> None:
    """|revenue| < 10^12 is checked on the amount that would be stored (after rounding half-even
    to the minor unit: 0, 2, 3 or 6 places), and the reason says the bound and the rounded amount."""
    for fields in forms(conversion(revenue=revenue, currency=currency)):
        result = decode_entry(EID, fields, NOW_MS)
        assert isinstance(result, Rejected), result
        assert "below 10^12" in result.reason
        assert f"rounds to {rounded}" in result.reason
        assert result.reason.endswith("at `$.revenue`")


@pytest.mark.parametrize(
    ("revenue", "currency", "kept"),
    [
        ("999999999999.994", "EUR", "999999999999.99"),
        ("999999999999.4", "JPY", "999999999999"),
        ("999999999999.9994", "BHD", "999999999999.999"),
        ("-999999999999.9999994", None, "-999999999999.999999"),
    ],
)
def test_revenue_just_below_the_bound_after_rounding_is_kept(revenue: str, currency: str | None, kept: str) -> None:
    """The largest amounts that round to below 10^12 are accepted, rounded, in both forms."""
    for fields in forms(conversion(revenue=revenue, currency=currency)):
        result = decode_entry(EID, fields, NOW_MS)
        assert isinstance(result, Accepted), result
        assert str(result.event.revenue) == kept
        assert result.event.revenue == Decimal(kept)


@pytest.mark.parametrize(
    ("text", "escape", "where"),
    [
        ('{"type":"page_view","site":"s","ts":%d,"path":"/a\\ud800b"}', "\\ud800", "`$.path`"),
        ('{"type":"page_view","site":"s","ts":%d,"path":"/a\\uD800"}', "\\ud800", "`$.path`"),
        ('{"type":"page_view","site":"s","ts":%d,"path":"/a\\udc00b"}', "\\udc00", "`$.path`"),
        ('{"type":"page_view","site":"s","ts":%d,"path":"/a\\ud800\\u0041"}', "\\ud800", "`$.path`"),
        ('{"type":"custom","site":"s","ts":%d,"name":"n","props":{"k":["x","\\ud83d"]}}', "\\ud83d", "`$.props.k[1]`"),
        ('{"type":"page_view","site":"s","ts":%d,"path":"/","\\udfff":1}', "\\udfff", "a key of `$`"),
    ],
)
def test_a_lone_surrogate_escape_is_named_with_its_field(text: str, escape: str, where: str) -> None:
    """msgspec says "Input data was truncated" for `"/a\\ud800b"`; the reason says what is wrong
    (invalid Unicode, a lone surrogate escape), which escape, and where."""
    result = decode_entry(EID, {b"event": (text % NOW_MS).encode()}, NOW_MS)
    assert isinstance(result, Rejected), result
    assert result.reason == (
        f"`event` field is not valid JSON: invalid Unicode: a lone surrogate escape ({escape})"
        f" not part of a UTF-16 pair - at {where}"
    )


def test_a_surrogate_pair_is_one_character_and_other_json_errors_keep_their_message() -> None:
    """A proper pair (an emoji) decodes; a truncated document still says it was truncated."""
    ok = decode_entry(EID, {b"event": json.dumps(page_view(path="/a\U0001f600")).encode()}, NOW_MS)
    assert isinstance(ok, Accepted) and ok.event.path == "/a\U0001f600"  # type: ignore[union-attr]
    cut = decode_entry(EID, {b"event": json.dumps(custom(props={"k": "\\u"}))[:-3].encode()}, NOW_MS)
    assert isinstance(cut, Rejected)
    assert cut.reason == "`event` field is not valid JSON: Input data was truncated"
