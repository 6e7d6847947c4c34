"""Pure pieces: histogram error bound, derived upsert SQL, shard merging, hashing."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot as redis_key_slot

from streamproc.core import rollups as R
from streamproc.core.fold import Hasher, profile_hash
from streamproc.core.histogram import RELATIVE_ERROR, bucket_of, bucket_value, quantiles
from streamproc.core.keys import cluster_key_problem, key_slot
from streamproc.core.urls import referrer_host


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0.001, max_value=8.64e7, allow_nan=False), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.95, 0.99]),
)
def test_quantiles_stay_within_relative_error(values: list[float], q: float) -> None:
    """Any quantile read from the histogram is within 2 % of the true nearest-rank value."""
    counts: dict[int, int] = {}
    for v in values:
        counts[bucket_of(v)] = counts.get(bucket_of(v), 0) + 1
    got = quantiles(counts, [q])[0]
    true = sorted(values)[max(1, math.ceil(q * len(values))) - 1]
    assert got is not None
    assert abs(got - true) <= RELATIVE_ERROR * true * 1.0001


def test_zero_durations_read_back_as_zero() -> None:
    """Durations below a microsecond share the zero bucket."""
    assert bucket_value(bucket_of(0.0)) == 0.0
    assert quantiles({}, [0.5]) == [None]


def test_upsert_sql_applies_rows_in_key_order() -> None:
    """Every derived upsert sorts by its key columns (no deadlocks between workers) and merges
    measures by their declared rule."""
    sql = R.API_REQUESTS.upsert_sql()
    keys = "site, hour, method, route, status_class"
    order = "t.site, t.hour, t.method, t.route, t.status_class"
    assert f"ORDER BY {order} ON CONFLICT ({keys})" in sql
    assert "duration_min_ms = LEAST(api_hourly.duration_min_ms, EXCLUDED.duration_min_ms)" in sql
    assert "duration_max_ms = GREATEST(api_hourly.duration_max_ms, EXCLUDED.duration_max_ms)" in sql
    assert "requests = api_hourly.requests + EXCLUDED.requests" in sql
    assert R.SITE_VISITORS.upsert_sql().endswith("DO NOTHING")
    assert "ORDER BY t.site, t.day, t.visitor, t.profile ON CONFLICT (site, day, visitor, profile)" in (
        R.SITE_VISITORS.upsert_sql()
    )


def test_shard_merges_by_rule() -> None:
    """A shard keeps one row per key: sums add, min/max keep the extreme."""
    shard = R.Shard(R.API_REQUESTS)
    key = ("s", 1, "GET", "/", 2)
    shard.merge(key, (1, 0, 5.0, 5.0, 5.0))
    shard.merge(key, (1, 1, 2.0, 2.0, 2.0))
    assert list(zip(*shard.columns(), strict=True)) == [(*key, 2, 1, 7.0, 2.0, 5.0)]


def test_visitor_hash_is_keyed_and_per_site() -> None:
    """Same visitor, other site or other secret: another hash; never the clear id."""
    a, b = Hasher(b"k" * 32), Hasher(b"j" * 32)
    assert a.visitor("s1", "v") == a.visitor("s1", "v")
    assert a.visitor("s1", "v") != a.visitor("s2", "v")
    assert a.visitor("s1", "v") != b.visitor("s1", "v")
    assert a.visitor("s1", "v") != a.session("s1", "v")


def test_hashes_are_stable_across_versions() -> None:
    """Stored visitor, session and profile ids must hash the same in every release, or a
    visitor counted before an upgrade is counted again after it. The values of the first release."""
    h = Hasher(b"k" * 32)
    assert h.visitor("s1", "v") == -4121853516769899212
    assert h.session("s1", "v") == -6095897801356026725
    assert h.visitor("shop.example", "visitor-\u00e9") == -3687881995993161153
    assert h.anonymous("s", 20000, "203.0.113.9", "Firefox") == -6520846860150095994
    assert profile_hash(("a", "", "b", "", "", "", "", "")) == -3115683650724350858


def test_referrer_host() -> None:
    """Referrers are reduced to their host; junk gives the empty value."""
    assert referrer_host("https://www.google.com/search?q=1") == "google.com"
    assert referrer_host(None) == ""
    assert referrer_host("http://[bad") == ""


def test_every_rollup_with_measures_has_a_count() -> None:
    """Taking a repeat's sums back drops a row whose counts fall to zero (no counted event
    touched it): that needs an integer count in every rollup that has measures."""
    for rollup in (*R.ALL, *R.APPROXIMATE_UNIQUES):
        if rollup.measures:
            assert any(m.merge is R.Merge.SUM and m.kind is R.Kind.BIGINT for m in rollup.measures), rollup.table


def test_taking_back_a_repeat_drops_rows_only_it_touched() -> None:
    shard = R.Shard(R.API_REQUESTS)
    shard.merge(("s", 1, "GET", "/a", 2), (1, 0, 10.0, 10.0, 10.0))
    shard.merge(("s", 1, "GET", "/a", 2), (1, 0, 30.0, 30.0, 30.0))  # the repeat
    shard.merge(("s", 1, "GET", "/b", 2), (1, 0, 5.0, 5.0, 5.0))  # only the repeat touched /b
    repeats = R.Shard(R.API_REQUESTS)
    repeats.merge(("s", 1, "GET", "/a", 2), (1, 0, 30.0, 30.0, 30.0))
    repeats.merge(("s", 1, "GET", "/b", 2), (1, 0, 5.0, 5.0, 5.0))
    out = shard.without_sums_of(repeats)
    assert out.rows == {("s", 1, "GET", "/a", 2): [1, 0, 10.0, 10.0, 30.0]}
    assert shard.rows[("s", 1, "GET", "/a", 2)][0] == 2, "the batch's own fold is left as it was"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40) | st.text(alphabet="ab{}:-0", max_size=20).map(str.encode))
def test_core_key_slot_is_redis_py_key_slot(key: bytes) -> None:
    """The core's slot rule (hash tags included) gives the slot redis-py's cluster client routes to."""
    assert key_slot(key) == redis_key_slot(key)


def test_cluster_key_problem_names_streams_without_a_hash_tag() -> None:
    """`events:{0}` keeps its dead letters in its slot; `events` does not and is named in the problem."""
    assert cluster_key_problem(["events:{0}", "events:{1}"]) is None
    problem = cluster_key_problem(["events:{0}", "events"])
    assert problem is not None
    assert "events has none" in problem
