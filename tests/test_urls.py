"""Referrers and paths as analytics tools count them (streamproc.core.urls), pure and end to end."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from streamproc.cli.app import app
from streamproc.core import urls
from streamproc.core.urls import UrlRules, referrer_host
from tests.conftest import Daemons

SITE = "shop.example.com"


@pytest.mark.parametrize(
    ("referrer", "host"),
    [
        ("google.com/search?q=x", "google.com"),  # no scheme: was counted as direct traffic
        ("https://google.com/search?q=x", "google.com"),
        ("https://google.com.", "google.com"),
        ("https://www.google.com./search", "google.com"),
        ("HTTPS://WWW.Google.COM:443/", "google.com"),
        ("www.example.org", "example.org"),
        ("https://example.org/", "example.org"),
        ("https://münchen.de/", "münchen.de"),
        ("https://xn--mnchen-3ya.de/", "münchen.de"),
        ("https://MÜNCHEN.de", "münchen.de"),
        ("https://bücher.example/x", "bücher.example"),
        ("https://xn--bcher-kva.example/", "bücher.example"),
        ("android-app://com.google.android.gm/", "com.google.android.gm"),
        ("https://www.com/", "www.com"),  # `www.` only goes when a domain remains
        ("/relative/path", ""),
        ("mailto:someone@example.org", ""),
        ("http://[bad", ""),
        ("", ""),
    ],
)
def test_referrer_hosts_are_normalised(referrer: str, host: str) -> None:
    """Scheme-less referrers, trailing dots, `www.`, case and IDN/punycode give one host each."""
    assert referrer_host(referrer) == host


@pytest.mark.parametrize(
    ("referrer", "site", "counted"),
    [
        ("https://shop.example.com/cart", "shop.example.com", ""),
        ("https://www.shop.example.com/", "shop.example.com", ""),
        ("https://blog.shop.example.com/", "shop.example.com", ""),
        ("https://example.com/", "shop.example.com", ""),  # same registrable domain
        ("https://blog.shop.co.uk/", "shop.co.uk", ""),
        ("https://other.co.uk/", "shop.co.uk", "other.co.uk"),  # co.uk is a public suffix
        ("https://evil-shop.example.com.attacker.net/", "shop.example.com", "evil-shop.example.com.attacker.net"),
        ("https://google.com/", "shop.example.com", "google.com"),
        ("https://xn--mnchen-3ya.de/", "münchen.de", ""),
        ("https://a.github.io/", "b.github.io", "a.github.io"),  # github.io is a public suffix
    ],
)
def test_same_site_referrers_are_internal(referrer: str, site: str, counted: str) -> None:
    """A referrer from the site itself (same host, a subdomain, the same registrable domain by the
    Public Suffix List) is internal navigation, counted as no referrer."""
    assert UrlRules().referrer(referrer, site) == counted


@pytest.mark.parametrize(
    ("path", "keep", "counted"),
    [
        ("/pricing", (), "/pricing"),
        ("/pricing?utm_source=x&fbclid=1", (), "/pricing"),
        ("/pricing#plans", (), "/pricing"),
        ("/pricing?a=1#frag?b=2", (), "/pricing"),
        ("https://shop.example.com/pricing?x=1#y", (), "/pricing"),
        ("//shop.example.com/pricing", (), "/pricing"),
        ("https://shop.example.com", (), "/"),
        ("?q=1", (), "/"),
        ("/search?q=shoes&page=2&utm_source=x", ("page", "lang"), "/search?page=2"),
        ("/search?lang=de&page=2", ("page", "lang"), "/search?lang=de&page=2"),
        ("/p?filter[color]=red", (), "/p"),
        ("/user/{id}[/{name}]", (), "/user/{id}[/{name}]"),
    ],
)
def test_paths_are_normalised(path: str, keep: tuple[str, ...], counted: str) -> None:
    """Scheme and host, the query string (but the kept parameters) and the fragment are stripped."""
    assert UrlRules(keep_params=keep).path(path) == counted


def test_paths_are_kept_as_sent_when_normalisation_is_off() -> None:
    """`normalize_paths = false` counts paths as sent."""
    raw = "https://shop.example.com/p?x=1#y"
    assert UrlRules(normalize_paths=False).path(raw) == raw


def test_public_suffix_list_is_the_bundled_snapshot_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suffix list comes from tldextract's bundled snapshot: with every socket refused, a fresh
    extractor still knows co.uk and github.io, and nothing tried to connect."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, *args: Any) -> None:
        attempts.append(args)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    urls._suffixes.cache_clear()
    urls._registrable.cache_clear()
    try:
        assert urls._registrable("a.b.co.uk") == "b.co.uk"
        assert urls._registrable("x.y.github.io") == "y.github.io"
    finally:
        urls._suffixes.cache_clear()
        urls._registrable.cache_clear()
    assert attempts == []


def test_sources_and_pages_count_normalised_values(
    make_settings: Any, schema: str, r: redis.Redis, stream: str, daemons: Daemons
) -> None:
    """Through a real daemon: referrer variants of one host are one row, the site's own pages are not
    a source, and links with query strings, fragments or a full URL count as one path."""
    now = int(time.time() * 1000)
    refs = ["google.com/search?q=x", "https://google.com", "https://www.google.com.", "https://Google.com/x"]
    refs += ["https://xn--mnchen-3ya.de/", "https://münchen.de/"]
    refs += [f"https://{SITE}/cart", f"https://www.{SITE}/", "https://blog.example.com/"]  # internal
    paths = ["/pricing", "/pricing?utm_source=x", "/pricing#plans", f"https://{SITE}/pricing?a=1", "/p?page=2&x=1"]
    for i, ref in enumerate(refs):
        ev = {"type": "page_view", "site": SITE, "ts": now - 60_000, "path": paths[i % len(paths)], "referrer": ref}
        r.xadd(stream, {"event": json.dumps(ev)})
    settings = make_settings(path_keep_params=("page",))
    assert daemons.start(settings, "--drain", STREAMPROC_PATH_KEEP_PARAMS="page").wait(timeout=120) == 0
    base = ["--database-url", settings.database_url, "--schema", settings.db_schema, "--json", "--last", "1d"]
    res = CliRunner().invoke(app, ["report", "sources", "--site", SITE, *base])
    assert res.exit_code == 0, res.output
    referrers = {row["value"]: row["views"] for row in json.loads(res.stdout)["dimensions"]["referrer"]}
    assert referrers == {"google.com": 4, "münchen.de": 2, "": 3}
    res = CliRunner().invoke(app, ["report", "pages", "--site", SITE, *base])
    pages = {p["path"]: p["views"] for p in json.loads(res.stdout)["paths"]}
    assert pages == {"/pricing": 8, "/p?page=2": 1}
