"""Array literals (streamproc.core.wire) read back by a real Postgres as the values they were built from."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.core.wire import array_literal

# Postgres text holds any Unicode but NUL; psycopg cannot encode lone surrogates.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
PROPS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def conn(servers: tuple[str, str, Any]) -> Any:
    with psycopg.connect(servers[1], autocommit=True) as c:
        yield c


def read_back(conn: Any, literal: str, sql_type: str) -> list[Any]:
    row = conn.execute(f"SELECT %t::{sql_type}[]", (literal,)).fetchone()
    assert row is not None
    return list(row[0])


@PROPS
@given(values=st.lists(st.one_of(TEXT, st.sampled_from(['"', "\\", "NULL", "", " a ", "{,}", "é\u2028"])), max_size=8))
def test_text_columns_come_back_unchanged(conn, values: list[str]) -> None:
    assert read_back(conn, array_literal(values, text=True), "text") == values


@PROPS
@given(values=st.lists(st.one_of(st.none(), TEXT), max_size=6))
def test_text_columns_with_nulls(conn, values: list[str | None]) -> None:
    assert read_back(conn, array_literal(values, text=True), "text") == values


@PROPS
@given(values=st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=8))
def test_bigint_columns_come_back_unchanged(conn, values: list[int | None]) -> None:
    assert read_back(conn, array_literal(values, text=False), "bigint") == values


@PROPS
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=8))
def test_float_columns_come_back_exactly(conn, values: list[float]) -> None:
    assert read_back(conn, array_literal(values, text=False), "double precision") == values


@PROPS
@given(values=st.lists(st.decimals(allow_nan=False, allow_infinity=False, places=4), max_size=8))
def test_numeric_columns_come_back_exactly(conn, values: list[Decimal]) -> None:
    assert read_back(conn, array_literal(values, text=False), "numeric") == values


def test_the_fast_path_is_not_fooled_by_quotes_that_balance() -> None:
    """Two elements whose quotes and backslashes would pass a naive check still get escaped."""
    assert array_literal(['a"', '"b'], text=True) == '{"a\\"","\\"b"}'
    assert array_literal(["x\\"], text=True) == '{"x\\\\"}'
    assert array_literal([], text=True) == "{}"
