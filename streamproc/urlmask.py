"""Passwords out of URLs: Redis and Postgres URLs (and libpq key=value strings) as they may
be logged or printed, read the way the client that uses them reads them."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

SECRET_PARAMS: Final = ("password", "sslpassword", "ssl_password", "sentinel_password")
_DSN_PASSWORD = re.compile(r"(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """Hide passwords: ``redis://user:secret@host`` -> ``redis://user:***@host``.

    A Postgres URL or key=value DSN is shown as libpq reads it
    (:func:`mask_database_url`); for others, ``?password=`` style query
    parameters are masked too, and multi-host and IPv6 netlocs kept intact.
    """
    if _is_postgres(url):
        return mask_database_url(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    query = "&".join(
        f"{k}=***" if k.lower() in SECRET_PARAMS else (f"{k}={v}" if sep else k)
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://")) or "://" not in url


def mask_database_url(url: str) -> str:
    """A Postgres URL or DSN with its passwords masked, rebuilt from what libpq parses.

    libpq reads ``postgresql://app:pa#ss@db/x`` as password ``pa#ss`` (a URL parser
    would stop at ``#``) and ``postgresql://app:p@ss@db/x`` as password ``p`` on host
    ``ss@db``: a host's text before ``@`` is masked too. Never raises.
    """
    try:
        parts = {k: str(v) for k, v in conninfo_to_dict(url).items()}
    except psycopg.Error:
        return "<a database URL libpq cannot parse>"
    for key in SECRET_PARAMS:
        if key in parts:
            parts[key] = "***"
    if "@" in parts.get("host", ""):
        parts["host"] = ",".join(re.sub(r"^.*@", "***@", h) for h in parts["host"].split(","))
    if "://" not in url:
        return make_conninfo(**parts)
    scheme = url.partition("://")[0]
    user = quote(parts.pop("user", ""), safe="")
    password = ":" + parts.pop("password") if "password" in parts else ""
    hosts, ports = parts.pop("host", "").split(","), parts.pop("port", "").split(",")
    if any(h.startswith("/") for h in hosts):  # Unix sockets: keep them as a parameter
        parts["host"], hosts = ",".join(hosts), [""]
    if len(ports) < len(hosts):
        ports += [ports[-1]] * (len(hosts) - len(ports))
    netloc = ",".join(
        (f"[{h}]" if ":" in h else h) + (f":{p}" if p else "") for h, p in zip(hosts, ports, strict=False)
    )
    auth = f"{user}{password}@" if user or password else ""
    dbname = quote(parts.pop("dbname", ""), safe="")
    query = "&".join(f"{k}={quote(v, safe='/,:*')}" for k, v in parts.items())
    return f"{scheme}://{auth}{netloc}/{dbname}" + (f"?{query}" if query else "")


def database_url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as a Postgres URL, without quoting it (it may hold a password)."""
    if "://" in url and not _is_postgres(url):
        return f"STREAMPROC_DATABASE_URL must start with postgresql:// (it starts with {url.partition('://')[0]}://)"
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return (
            "STREAMPROC_DATABASE_URL is not a URL or key=value string libpq can read;"
            " percent-encode special characters in the password (`@` as %40, `/` as %2F)"
        )
    if "@" in str(parts.get("host", "")):
        return (
            f"STREAMPROC_DATABASE_URL has a host with `@` in it ({mask_database_url(url)}): a raw `@` in the"
            " password? Write it as %40"
        )
    return None
