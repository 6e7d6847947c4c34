"""The per-event hot path computes exactly what its plain definitions say: stored hashes
and derived session ids never change with the code that computes them (a visitor counted
before an upgrade is the same visitor after it), and entry ids split the same from bytes
and from text."""

from __future__ import annotations

import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.core.entryid import split_entry_id
from streamproc.core.fold import HASH_MEMO_SIZE, Hasher
from streamproc.core.sessionize import Merged, merge, session_id
from streamproc.daemon.accounting import _id_range
from streamproc.redis.source import Batch

SECRET = b"k" * 32
GAP = 1_800_000
text_st = st.text(min_size=0, max_size=30)


def keyed(person: bytes, key: bytes, *parts: str) -> int:
    """The documented hash: blake2b-64 keyed by ``key``, over the parts joined by NUL."""
    h = hashlib.blake2b(key=key, digest_size=8, person=person)
    h.update("\0".join(parts).encode())
    return int.from_bytes(h.digest(), "big", signed=True)


@settings(max_examples=200, deadline=None)
@given(text_st, text_st, text_st, st.integers(0, 40_000))
def test_visitor_session_and_anonymous_hashes_are_the_documented_ones(site: str, value: str, ua: str, day: int) -> None:
    """Visitor, session and ip+ua hashes equal blake2b over ``site NUL value`` with their keys."""
    h = Hasher(SECRET)
    assert h.visitor(site, value) == keyed(b"visitor", SECRET, site, value)
    assert h.session(site, value) == keyed(b"session", SECRET, site, value)
    salt = hashlib.blake2b(str(day).encode(), key=SECRET, person=b"daysalt").digest()
    assert h.anonymous(site, day, value, ua) == keyed(b"ip+ua", salt, site, value, ua)


@settings(max_examples=200, deadline=None)
@given(text_st, st.integers(-(2**63), 2**63 - 1), st.integers(0, 4 * 10**12))
def test_derived_session_ids_are_the_documented_ones(site: str, visitor: int, first_ms: int) -> None:
    """A derived session's id is blake2b-64 (person ``derived``) of ``site NUL visitor NUL first_ms``."""
    digest = hashlib.blake2b(f"{site}\0{visitor}\0{first_ms}".encode(), digest_size=8, person=b"derived").digest()
    assert session_id(site, visitor, first_ms) == int.from_bytes(digest, "big", signed=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5 * GAP), st.booleans()), min_size=1, max_size=30))
def test_a_visitor_without_stored_runs_gets_the_runs_of_its_sorted_points(points: list[tuple[int, bool]]) -> None:
    """With no stored runs, merge() cuts the time-sorted points (ties in arrival order) where
    more than the gap passes, and names each run after its first point."""
    ordered = sorted(points, key=lambda p: p[0])
    want: list[list[tuple[int, bool]]] = [[ordered[0]]]
    for p in ordered[1:]:
        if p[0] - want[-1][-1][0] > GAP:
            want.append([p])
        else:
            want[-1].append(p)
    got = merge("s", 5, [], points, GAP)
    assert got == [Merged(session_id("s", 5, g[0][0]), g[0][0], g[-1][0], [], g, None) for g in want]


def test_entry_ids_split_alike_from_bytes_and_text() -> None:
    """Bytes and str ids give the same (ms, seq); a missing seq is 0; a malformed id raises ValueError."""
    rnd = random.Random(7)
    for _ in range(500):
        ms, seq = rnd.randrange(2**64), rnd.randrange(2**64)
        assert split_entry_id(f"{ms}-{seq}".encode()) == split_entry_id(f"{ms}-{seq}") == (ms, seq)
    assert split_entry_id(b"17-") == split_entry_id("17") == (17, 0)
    for bad in (b"x-1", "x-1", b"\xff-1", b""):
        try:
            split_entry_id(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


def test_a_batch_log_line_names_its_lowest_and_highest_entry_ids() -> None:
    """The batch's id range is ordered as Redis orders ids (numerically), over all its streams."""
    ids = [b"1700000000000-10", b"1700000000000-9", b"999-0", b"1700000000001-0", b"1700000000000-0"]
    batch = Batch(entries={"a": [(eid, {}) for eid in ids[:3]], "b": [(eid, {}) for eid in ids[3:]]})
    want = sorted(ids, key=lambda e: tuple(int(x) for x in e.split(b"-")))
    assert _id_range(batch) == {"first_id": want[0].decode(), "last_id": want[-1].decode()}
    assert _id_range(Batch()) == {}


def test_the_hash_memos_stay_bounded_and_answer_like_the_definition() -> None:
    """More distinct visitors and sessions than the memo holds: each memo stays within its
    bound, and a hash answered from the memo is the computed one."""
    h = Hasher(SECRET)
    for i in range(HASH_MEMO_SIZE + 100):
        assert h.visitor("s", f"v{i}") == h.visitor("s", f"v{i}")
        h.session("s", f"x{i}")
    assert len(h._visitors) <= HASH_MEMO_SIZE and len(h._sessions) <= HASH_MEMO_SIZE
    for i in (0, HASH_MEMO_SIZE + 99):
        assert h.visitor("s", f"v{i}") == keyed(b"visitor", SECRET, "s", f"v{i}")
        assert h.session("s", f"x{i}") == keyed(b"session", SECRET, "s", f"x{i}")
