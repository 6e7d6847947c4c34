"""Paths and referrers as analytics tools count them. Pure: no sockets, no clocks.

**Paths** (``page_view`` and ``click``), with ``normalize_paths`` on (the default):
a full URL keeps only its path (``https://shop.example/a?b#c`` -> ``/a``); the query
string is dropped except the parameters named in ``path_keep_params``, kept in the
order sent; the fragment is dropped; an empty path is ``/``. Off: paths are counted as
sent.

**Referrers** are counted by host: a referrer without a scheme
(``google.com/search?q=x``) is read as a URL too; the host is lower-cased, loses a
trailing dot and a leading ``www.``, and an internationalised name is shown in
Unicode whether it came as Unicode or as punycode (``idna``, UTS 46). A referrer from
the site itself is internal, not a traffic source: it counts as no referrer (``""``).
Same site means the same host, a subdomain of the site, or the same registrable
domain (``blog.shop.co.uk`` and ``shop.co.uk``), by the Public Suffix List snapshot
bundled with ``tldextract``; it is never fetched (no network at run time).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

import idna
import tldextract

MEMO_SIZE: Final = 65_536


@functools.cache
def _suffixes() -> tldextract.TLDExtract:
    """The bundled Public Suffix List snapshot (private domains such as github.io included): no
    download (no URLs), no cache directory."""
    return tldextract.TLDExtract(
        cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True, include_psl_private_domains=True
    )


class UrlRules:
    """The path and referrer rules above, memoised per distinct input.

    ``normalize_paths``: apply the path rule (else :meth:`path` returns its argument).
    ``keep_params``: query parameters kept in a normalised path (``("page", "lang")``).
    """

    def __init__(self, normalize_paths: bool = True, keep_params: Sequence[str] = ()) -> None:
        self.normalize_paths = normalize_paths
        self.keep_params = frozenset(keep_params)
        self.path = functools.lru_cache(maxsize=MEMO_SIZE)(self._path)
        self.referrer = functools.lru_cache(maxsize=MEMO_SIZE)(self._referrer)

    def warm_up(self) -> None:
        """Build the Public Suffix List trie now (~50 ms of CPU) rather than on the first referrer
        of the first batch; the daemon calls it before ``ready``, with its other rule loading."""
        _suffixes()("example.com")

    def _path(self, path: str) -> str:
        """The path as counted (see the module docstring)."""
        if not self.normalize_paths:
            return path
        if "://" in path or path.startswith("//"):
            try:
                parts = urlsplit(path)
            except ValueError:
                return path
            rest, query = parts.path, parts.query
        else:
            rest, _, query = path.partition("#")[0].partition("?")
        kept = "&".join(p for p in query.split("&") if p and p.partition("=")[0] in self.keep_params)
        rest = rest or "/"
        return f"{rest}?{kept}" if kept else rest

    def _referrer(self, referrer: str, site: str) -> str:
        """The referrer's normalised host, or ``""`` for none, an unreadable one or the site itself."""
        host = referrer_host(referrer)
        if not host or same_site(host, host_name(site)):
            return ""
        return host


def referrer_host(referrer: str | None) -> str:
    """The normalised host of a referrer URL (scheme optional), or ``""``."""
    if not referrer:
        return ""
    text = referrer.strip()
    if "://" not in text and not text.startswith("//"):
        if text.startswith("/") or ":" in text.partition("/")[0]:
            return ""  # a bare path, or "mailto:"-like: no host
        text = "//" + text
    try:
        host = urlsplit(text).hostname
    except ValueError:
        return ""
    return host_name(host or "")


def host_name(host: str) -> str:
    """``WWW.Example.org.`` -> ``example.org``; ``xn--mnchen-3ya.de`` -> ``münchen.de``."""
    host = host.strip().lower().rstrip(".")
    if not host:
        return ""
    if not host.isascii() or "xn--" in host:
        with contextlib.suppress(idna.IDNAError):  # not a valid IDN: kept as sent, lower-cased
            host = idna.decode(idna.encode(host, uts46=True))
    if host.startswith("www.") and "." in host[4:]:
        host = host[4:]
    return host


def same_site(host: str, site_host: str) -> bool:
    """``host`` is ``site_host``, a subdomain of it, or shares its registrable domain."""
    if not site_host:
        return False
    if host == site_host or host.endswith("." + site_host):
        return True
    mine = _registrable(site_host)
    return bool(mine) and mine == _registrable(host)


@functools.lru_cache(maxsize=MEMO_SIZE)
def _registrable(host: str) -> str:
    parts = _suffixes()(host)
    return parts.top_domain_under_public_suffix if parts.suffix else ""
